"""The configuration file: [serve], [units] and [power] tables, each error naming its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from shim.config import ConfigError, load
from shim.core.policy import DEFAULT_POWER_ACTIONS, RECORD, Kind, Policy, UserManager


def write(tmp_path: Path, text: str) -> str:
    conf = tmp_path / "scopeshim.toml"
    conf.write_text(text)
    return str(conf)


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    settings = load(write(tmp_path, ""))
    assert settings["backend"] == "auto"
    assert settings["policy"] == Policy()
    assert settings["policy"].power_actions == DEFAULT_POWER_ACTIONS


def test_units_and_power_tables(tmp_path: Path) -> None:
    settings = load(
        write(
            tmp_path,
            '[units]\nuser_manager = "exec"\nuser_manager_command = ["/usr/bin/mgr", "%i"]\n'
            'runtime_dir_helper = ""\nautovt_command = ["/sbin/agetty", "%I"]\n'
            '[power]\nrecord_file = "/tmp/x.log"\nsuspend = "record"\n'
            'poweroff = ["/sbin/openrc-shutdown", "-p", "now"]\n',
        )
    )
    policy: Policy = settings["policy"]
    assert policy.user_manager is UserManager.EXEC
    assert policy.power_actions["suspend.target"] == RECORD
    assert policy.power_actions["poweroff.target"] == ("/sbin/openrc-shutdown", "-p", "now")
    assert policy.power_actions["reboot.target"] == DEFAULT_POWER_ACTIONS["reboot.target"]
    user = policy.handler_for("user@1000.service")
    assert user is not None and user.kind is Kind.SIMPLE
    assert user.start == ("/usr/bin/mgr", "1000") and user.user == "1000"
    runtime = policy.handler_for("user-runtime-dir@1000.service")
    assert runtime is not None and runtime.kind is Kind.NOOP
    getty = policy.handler_for("autovt@tty3.service")
    assert getty is not None and getty.start == ("/sbin/agetty", "tty3")
    assert policy.handler_for("foo.service") is None
    assert policy.handler_for("user@01.service") is None  # not a UID as systemd writes it


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[units]\nuser_manager = "maybe"\n', "units.user_manager"),
        ('[units]\nuser_manager = "exec"\n', "units"),
        ("[units]\nrunime_dir_helper = 1\n", "units.runime_dir_helper"),
        ('[power]\nsuspend = "now"\n', "power.suspend"),
        ("[powr]\n", "powr"),
        ("[serve]\nbackend = 3\n", "serve.backend"),
    ],
)
def test_bad_files_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(write(tmp_path, text))
    assert f": {key}" in str(e.value)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        load(str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="line 1"):
        load(write(tmp_path, "[units\n"))


def test_errors_name_the_line_too(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[serve]\nlog_level = "info"\n\n[units]\n# the policy\nuser_manager = "maybe"\n'
    )
    with pytest.raises(ConfigError) as e:
        load(path)
    assert str(e.value).startswith(f"{path}:6: units.user_manager: ")


def test_user_manager_defaults_and_zygote_key(tmp_path: Path) -> None:
    """user@UID.service is scopeshim's user manager by default: Type=notify-like, Delegate=yes
    with init.scope, as the user, forked from the zygote; user_manager_zygote = false (or a
    command) runs `serve --user` for each user instead."""
    handler = Policy().handler_for("user@1000.service")
    assert handler is not None
    assert (handler.kind, handler.user, handler.delegate, handler.subcgroup) == (
        Kind.NOTIFY, "1000", True, "init.scope",
    )  # fmt: skip
    assert handler.requires == ("user-runtime-dir@1000.service",)
    assert handler.zygote == ("serve", "--user", "--notify-ready")
    assert handler.start[-3:] == ("serve", "--user", "--notify-ready")
    policy = load(write(tmp_path, "[units]\nuser_manager_zygote = false\n"))["policy"]
    forked = policy.handler_for("user@1000.service")
    assert forked is not None and forked.zygote == ()
    with_command = Policy(user_manager_command=("/bin/mgr", "%i")).handler_for("user@7.service")
    assert with_command is not None
    assert (with_command.start, with_command.zygote) == (("/bin/mgr", "7"), ())
    # a user manager's own policy has none of the system's units
    user = Policy.for_user_instance()
    for name in ("user@1000.service", "user-runtime-dir@1000.service", "poweroff.target"):
        assert user.handler_for(name) is None
    with pytest.raises(ConfigError, match=r"units\.user_manager_zygote"):
        load(write(tmp_path, '[units]\nuser_manager_zygote = "maybe"\n'))
