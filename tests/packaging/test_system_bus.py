"""The installed D-Bus files on a real system bus started from the distribution's own
configuration (dbus-daemon --system, messagebus, the setuid launch helper), next to Debian's
Exec=/bin/false activation file and policy, in tests/e2e/sandbox.sh with the staged tree
mounted at its real paths (scenario_system_bus.py): which activation file wins, and the
policy. dbus-daemon(1) on <servicedir>: "If a particular service is found in more than one
<servicedir>, the first directory listed in the configuration file takes precedence";
<standard_system_servicedirs/> lists /usr/local/share/dbus-1/system-services first."""

from __future__ import annotations

import sys

import pytest

from tests.packaging.conftest import DISTRO_SERVICE, HERE, Installed, by_step, run_in_sandbox

pytestmark = pytest.mark.timeout(600)

REJECTED = "org.freedesktop.DBus.Error.AccessDenied: Rejected send message"
# dbus-daemon's words when the launch helper ran /bin/false (it exited 1)
BIN_FALSE = "Launch helper exited with unknown return code 1"


@pytest.fixture(scope="module")
def steps(installed: Installed) -> dict[str, dict]:
    events, proc = run_in_sandbox(
        sys.executable, str(HERE / "scenario_system_bus.py"), str(installed.destdir), timeout=240
    )
    found = by_step(events)
    log = found.get("dbus_log", {}).get("text", "")
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{log}"
    found["_why"] = {"log": log, "stderr": proc.stderr}
    return found


def test_the_distribution_s_file_is_there(steps) -> None:
    setup = steps["setup"]
    assert setup["bus_started"] is True, steps["_why"]
    if setup["distro_service"] is None:
        pytest.skip(f"{DISTRO_SERVICE} does not exist here: nothing to take precedence over")
    assert "Exec=/bin/false" in setup["distro_service"]
    assert "scopeshim.conf" in setup["policies"]


def test_the_first_call_activates_the_installed_scopeshim(steps) -> None:
    step = steps["activation"]
    assert step["rc"] == 0, steps["_why"]
    assert step["stdout"].strip() == 's "252"'
    assert step["owner_before"] is None and step["owner"] is not None
    assert step["owner_cmdline"][0].startswith("/usr/local/sbin/")
    assert step["owner_cmdline"][1:] == [
        "-I", "-m", "shim", "serve", "--system", "--config", "/etc/scopeshim/scopeshim.toml",
    ]  # fmt: skip
    assert "(using servicehelper)" in steps["_why"]["log"]
    # activation handed the start to the init: its pidfile names the owner, status agrees
    assert step["init_pid"] == step["owner"] and step["init_status"] == 0, step
    assert step["daemons"] == [step["owner"]], step


def test_the_boot_and_activation_racing_give_one_daemon_the_init_s(steps) -> None:
    """The init script's start and logind's first call at once (issue: OpenRC and runit
    boots ended with an activated copy owning the name and the init restarting its own)."""
    assert steps["before_race"]["gone"] is True
    step = steps["race"]
    assert step["rc"] == 0 and step["stdout"].strip() == 's "252"', step
    assert step["daemons"] == [step["owner"]], step
    assert step["init_pid"] == step["owner"] and step["init_status"] == 0, step


def test_nobody_reads_but_is_refused_changes_at_the_bus_and_root_changes(steps) -> None:
    step = steps["policy"]
    for name, r in step["reads"].items():
        assert r["rc"] == 0, (name, r)
    for name, r in step["mutations"].items():
        assert r["rc"] != 0 and REJECTED in r["stderr"], (name, r)
    assert step["root_start"]["rc"] == 0, step["root_start"]
    assert "/pkg-test.scope" in step["sleeper_cgroup"], step["sleeper_cgroup"]
    assert step["root_stop"]["rc"] == 0, step["root_stop"]
    assert step["sleeper_exit"] != 0  # the stop job ended it


@pytest.mark.parametrize("where", ["etc_snippet", "system_local"])
def test_a_servicedir_in_etc_does_not_take_precedence(steps, where: str) -> None:
    """A <servicedir> in /etc/dbus-1/system.d/*.conf or /etc/dbus-1/system-local.conf is
    listed after <standard_system_servicedirs/>: Debian's /bin/false wins there."""
    if steps["setup"]["distro_service"] is None:
        pytest.skip(f"{DISTRO_SERVICE} does not exist here")
    step = steps[where]
    assert step["reload"]["rc"] == 0
    assert step["rc"] != 0 and BIN_FALSE in step["stderr"], step
    assert step["owner"] is None


def test_the_usr_local_file_wins_again_once_back(steps) -> None:
    step = steps["restored"]
    assert step["rc"] == 0 and step["owner"] is not None, step
