"""`make install` into a temporary DESTDIR: the tree, the private Python environment, the
shipped configuration (loaded by shim/config.py, every key documented), the man pages, the
D-Bus files and every init's service definition; reinstall and uninstall."""

from __future__ import annotations

import ast
import configparser
import os
import re
import shutil
import stat
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from shim.config import load
from shim.core.policy import DEFAULT_POWER_ACTIONS, Policy
from tests.packaging.conftest import PREFIX, ROOT, SYSTEMD1, Installed, make_install

pytestmark = pytest.mark.timeout(600)

LIB = f"{PREFIX}/lib/scopeshim"
SHARE = f"{PREFIX}/share/scopeshim"
# every file `make install` writes with the default INIT (sysvinit), outside LIBDIR
EXPECTED = {
    f"{PREFIX}/sbin/scopeshim": 0o755,
    "/etc/scopeshim/scopeshim.toml": 0o644,
    f"{SHARE}/scopeshim.toml": 0o644,
    f"{PREFIX}/share/man/man8/scopeshim.8": 0o644,
    f"{PREFIX}/share/man/man5/scopeshim.toml.5": 0o644,
    f"/usr/local/share/dbus-1/system-services/{SYSTEMD1}.service": 0o644,
    "/etc/dbus-1/system.d/scopeshim.conf": 0o644,
    "/etc/init.d/scopeshim": 0o755,
    "/etc/default/scopeshim": 0o644,
    "/etc/init.d/systemd-logind": 0o755,
    f"{SHARE}/init/sysvinit/init.d/scopeshim": 0o755,
    f"{SHARE}/init/sysvinit/default/scopeshim": 0o644,
    f"{SHARE}/init/sysvinit/init.d/systemd-logind": 0o755,
    f"{SHARE}/init/openrc/init.d/scopeshim": 0o755,
    f"{SHARE}/init/openrc/conf.d/scopeshim": 0o644,
    f"{SHARE}/init/openrc/init.d/systemd-logind": 0o755,
    f"{SHARE}/init/runit/scopeshim/run": 0o755,
    f"{SHARE}/init/runit/scopeshim/check": 0o755,
    f"{SHARE}/init/runit/scopeshim/log/run": 0o755,
    f"{SHARE}/init/runit/systemd-logind/run": 0o755,
    f"{SHARE}/init/runit/systemd-logind/check": 0o755,
    f"{SHARE}/init/s6/scopeshim/run": 0o755,
    f"{SHARE}/init/s6/scopeshim/type": 0o644,
    f"{SHARE}/init/s6/scopeshim/notification-fd": 0o644,
    f"{SHARE}/init/s6/scopeshim/dependencies.d/dbus": 0o644,
    f"{SHARE}/init/s6/systemd-logind/run": 0o755,
    f"{SHARE}/init/s6/systemd-logind/type": 0o644,
    f"{SHARE}/init/s6/systemd-logind/dependencies.d/scopeshim": 0o644,
    f"{SHARE}/init/upstart/scopeshim.conf": 0o644,
    f"{SHARE}/init/upstart/systemd-logind.conf": 0o644,
}
# where INIT=... puts each init's definition (beyond sysvinit's above)
IN_PLACE = {
    "openrc": ["/etc/init.d/scopeshim", "/etc/conf.d/scopeshim", "/etc/init.d/systemd-logind"],
    "runit": [
        "/etc/sv/scopeshim/run",
        "/etc/sv/scopeshim/check",
        "/etc/sv/scopeshim/log/run",
        "/etc/sv/systemd-logind/run",
        "/etc/sv/systemd-logind/check",
    ],
    "s6": [
        "/etc/s6/sv/scopeshim/run",
        "/etc/s6/sv/scopeshim/type",
        "/etc/s6/sv/scopeshim/notification-fd",
        "/etc/s6/sv/scopeshim/dependencies.d/dbus",
        "/etc/s6/sv/systemd-logind/run",
        "/etc/s6/sv/systemd-logind/type",
        "/etc/s6/sv/systemd-logind/dependencies.d/scopeshim",
    ],
    "upstart": ["/etc/init/scopeshim.conf", "/etc/init/systemd-logind.conf"],
}
SHELL_SCRIPTS = [
    f"{PREFIX}/sbin/scopeshim",
    f"{LIB}/activate",
    "/etc/init.d/scopeshim",
    "/etc/init.d/systemd-logind",
    f"{SHARE}/init/openrc/init.d/scopeshim",
    f"{SHARE}/init/openrc/init.d/systemd-logind",
    f"{SHARE}/init/runit/scopeshim/run",
    f"{SHARE}/init/runit/scopeshim/check",
    f"{SHARE}/init/runit/scopeshim/log/run",
    f"{SHARE}/init/runit/systemd-logind/run",
    f"{SHARE}/init/runit/systemd-logind/check",
    f"{SHARE}/init/s6/scopeshim/run",
    f"{SHARE}/init/s6/systemd-logind/run",
]


def files_under(top: Path) -> set[str]:
    return {"/" + str(p.relative_to(top)) for p in top.rglob("*") if not p.is_dir()}


def text_files(installed: Installed) -> dict[str, str]:
    return {path: installed.path(path).read_text() for path in EXPECTED}


# --- the tree -------------------------------------------------------------------------------


def test_the_tree_holds_exactly_the_expected_files(installed: Installed) -> None:
    outside_lib = {p for p in files_under(installed.destdir) if not p.startswith(LIB + "/")}
    assert outside_lib == set(EXPECTED)
    for path, mode in EXPECTED.items():
        st = installed.path(path).stat()
        assert stat.S_IMODE(st.st_mode) == mode, path
    assert set(installed.manifest()) == set(EXPECTED) | {f"{LIB}/activate"}


def test_the_package_lives_in_its_own_environment(installed: Installed) -> None:
    lib = installed.path(LIB)
    assert (lib / "pyvenv.cfg").exists()
    assert "include-system-site-packages = false" in (lib / "pyvenv.cfg").read_text()
    site = list(lib.glob("lib/python3*/site-packages"))
    assert len(site) == 1
    for module in ("shim", "compat", "backends", "dbus_fast", "pydantic"):
        assert (site[0] / module).is_dir(), module
    # nothing importable outside the environment: no top-level shim/compat/backends elsewhere
    for path in installed.destdir.rglob("*.py"):
        assert str(path).startswith(str(lib) + "/"), path
    for name in ("site-packages", "dist-packages"):
        for path in installed.destdir.rglob(name):
            assert str(path).startswith(str(lib) + "/"), path
    # no pip or console scripts naming the staging directory
    assert sorted(p.name for p in (lib / "bin").iterdir()) == ["python", "python3", "python3.11"]


def test_nothing_names_the_staging_directory(installed: Installed) -> None:
    staged = str(installed.destdir)
    for path in installed.destdir.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.suffix not in (".pyc", ".so"):
            assert staged.encode() not in path.read_bytes(), path


def test_every_placeholder_is_substituted(installed: Installed) -> None:
    for path, text in text_files(installed).items():
        assert not re.search(r"@[A-Z_]+@", text), path


def test_the_entry_point_runs_the_environment_isolated(installed: Installed, tmp_path) -> None:
    wrapper = installed.scopeshim.read_text()
    assert wrapper.startswith("#!/bin/sh\n")
    assert f"{LIB}" in wrapper and "-I -m shim" in wrapper
    # run from elsewhere, with a hostile environment: the installed code answers
    (tmp_path / "shim").mkdir()
    (tmp_path / "shim" / "__init__.py").write_text("raise SystemExit('wrong shim imported')\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)}
    r = subprocess.run(
        [str(installed.scopeshim), "serve", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "--exit-on-idle" in r.stdout
    code = "import shim, sys; print(shim.__file__); print(sys.prefix)"
    r = subprocess.run(
        [str(installed.path(f"{LIB}/bin/python3")), "-I", "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    module, prefix = r.stdout.split()
    assert module.startswith(str(installed.path(LIB)) + "/lib/")
    assert prefix == str(installed.path(LIB))


# --- the configuration ------------------------------------------------------------------------


def config_keys() -> dict[str, set[str]]:
    """The keys shim/config.py accepts, per table, read from its pydantic models' source (so a
    key added there and missing from the shipped file or the man page fails this test)."""
    tree = ast.parse((ROOT / "shim" / "config.py").read_text())
    keys: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name in ("Serve", "Units", "Power"):
            table = keys.setdefault(node.name.lower(), set())
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    name = item.target.id
                    if isinstance(item.value, ast.Call):
                        for kw in item.value.keywords:
                            if kw.arg == "alias" and isinstance(kw.value, ast.Constant):
                                name = str(kw.value.value)
                    table.add(name)
    assert set(keys) == {"serve", "units", "power"}
    return keys


def documented(text: str) -> dict[str, set[str]]:
    """Per table, the keys the file shows as `key = value` lines (commented out or not)."""
    found: dict[str, set[str]] = {}
    table = ""
    for line in text.splitlines():
        if m := re.match(r"^\[([a-z]+)\]$", line):
            table = m.group(1)
        elif m := re.match(r"^(?:# )?([a-z][a-z_-]*) = ", line):
            found.setdefault(table, set()).add(m.group(1))
    return found


def uncommented(text: str) -> str:
    return re.sub(r"(?m)^# ([a-z][a-z_-]* = )", r"\1", text)


def test_the_shipped_configuration_loads_as_the_defaults(installed: Installed) -> None:
    settings = load(str(installed.config))
    assert settings["policy"] == Policy()
    assert settings["backend"] == "auto" and settings["state_dir"] is None
    assert settings["log_target"] == "syslog"  # the one key the file sets
    assert installed.config.read_text() == (ROOT / "packaging" / "scopeshim.toml").read_text()


def test_the_shipped_configuration_documents_every_key(installed: Installed) -> None:
    text = installed.config.read_text()
    assert documented(text) == config_keys()


def test_every_documented_value_is_valid_and_the_default(installed: Installed, tmp_path) -> None:
    conf = tmp_path / "all-keys.toml"
    conf.write_text(uncommented(installed.config.read_text()))
    settings = load(str(conf))
    # the [units] and [power] values shown are the defaults the daemon uses
    assert settings["policy"] == Policy()
    assert settings["policy"].power_actions == DEFAULT_POWER_ACTIONS
    assert settings["log_level"] == "info" and settings["version"] == "252"
    assert settings["mark_booted"] is False and settings["system"] is False


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ('backend = "cgroup9"', "serve.backend"),
        ("exit_on_idle = 0", "serve.exit_on_idle"),
        ('user_manager = "exec"', "units"),
        ('suspend = "now"', "power.suspend"),
        ("log_levl = 1", "serve.log_levl"),
    ],
)
def test_the_daemon_refuses_a_bad_edit_of_the_shipped_file_naming_the_key(
    installed: Installed, tmp_path, change: str, key: str
) -> None:
    """An admin's mistake in the installed file: the installed command exits 2 and names the
    key (the loader's own tests are tests/test_config.py)."""
    name = change.split(" = ")[0]
    text = installed.config.read_text()
    table = key.split(".")[0]
    if f"# {name} = " in text:
        text = re.sub(rf"(?m)^# {name} = .*$", change, text)
    else:
        text = text.replace("[serve]\n", f"[serve]\n{change}\n")
    conf = tmp_path / "scopeshim.toml"
    conf.write_text(text)
    r = subprocess.run(
        [str(installed.scopeshim), "serve", "--config", str(conf), "--backend", "fake"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    # FILE:LINE: KEY: reason, LINE being the edited line (or the table's header)
    wanted = f"{name} =" if "." in key else f"[{table}]"  # a table-wide error: its header
    line = next(n for n, raw in enumerate(text.splitlines(), 1) if raw.startswith(wanted))
    assert f"{conf}:{line}: {key}: " in r.stderr and "Traceback" not in r.stderr


# --- man pages ------------------------------------------------------------------------------


def render(page: Path, width: int = 80) -> str:
    r = subprocess.run(
        ["man", "--warnings", "-l", str(page)],
        env={**os.environ, "MANWIDTH": str(width), "MAN_KEEP_FORMATTING": "0", "LC_ALL": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr
    return re.sub(r".\x08", "", r.stdout).replace("\u2010", "-").replace("\u2212", "-")


@pytest.mark.parametrize("page", ["man8/scopeshim.8", "man5/scopeshim.toml.5"])
def test_man_pages_are_clean_troff(installed: Installed, page: str) -> None:
    if shutil.which("groff") is None or shutil.which("man") is None:
        pytest.skip("groff or man is not installed")
    path = installed.path(f"{PREFIX}/share/man/{page}")
    r = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr
    text = render(path)
    name, section = Path(page).name.rsplit(".", 1)
    assert text.startswith(f"{name.upper()}({section})")
    assert "\nNAME\n" in text and "\nSEE ALSO\n" in text


def test_scopeshim_8_documents_every_option_and_the_files(installed: Installed) -> None:
    if shutil.which("man") is None:
        pytest.skip("man is not installed")
    text = " ".join(render(installed.path(f"{PREFIX}/share/man/man8/scopeshim.8"), 200).split())
    # every option of `serve` (the daemon's stable contract); `replay` is named
    r = subprocess.run(
        [str(installed.scopeshim), "serve", "--help"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    options = set(re.findall(r"(--[a-z][a-z-]+)", r.stdout)) - {"--help"}
    assert "scopeshim serve" in text and "scopeshim replay" in text
    assert options >= {"--address", "--system", "--config", "--exit-on-idle", "--mark-booted"}
    for option in sorted(options):
        assert option in text, option
    for path in (
        "/usr/local/sbin/scopeshim",
        "/etc/scopeshim/scopeshim.toml",
        f"/usr/local/share/dbus-1/system-services/{SYSTEMD1}.service",
        "/etc/dbus-1/system.d/scopeshim.conf",
        "/etc/init.d/scopeshim",
        "update-rc.d scopeshim defaults",
    ):
        assert path in text, path
    assert "the first directory listed in the configuration file takes precedence" in text


def test_scopeshim_toml_5_documents_every_key(installed: Installed) -> None:
    if shutil.which("man") is None:
        pytest.skip("man is not installed")
    text = render(installed.path(f"{PREFIX}/share/man/man5/scopeshim.toml.5"), 200)
    for table, keys in config_keys().items():
        assert f"\n[{table}]\n" in text, table
        for key in keys:
            assert re.search(rf"(?m)^\s+{re.escape(key)} \(", text), key


# --- D-Bus files ----------------------------------------------------------------------------


def test_the_activation_file_starts_the_installed_command(installed: Installed) -> None:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(installed.activation_file.read_text())
    service = parser["D-BUS Service"]
    assert service["Name"] == SYSTEMD1
    assert service["User"] == "root"
    # the start is handed to the init (INIT=sysvinit here), as SystemdService= hands it to
    # systemd; the helper runs scopeshim itself only where the init does not know it
    assert service["Exec"].split() == [f"{LIB}/activate"]
    assert "SystemdService" not in service  # no systemd to hand the activation to
    helper = installed.path(f"{LIB}/activate").read_text()
    assert "INIT=sysvinit\n" in helper
    assert "/etc/init.d/scopeshim start" in helper
    assert (
        f'DAEMON="{PREFIX}/sbin/scopeshim serve --system --config /etc/scopeshim/scopeshim.toml"'
        in helper
    )


def test_the_policy_is_well_formed_and_lets_only_root_own_and_change(installed: Installed) -> None:
    root = ET.parse(installed.policy).getroot()
    assert root.tag == "busconfig"
    policies = {
        p.get("user") or p.get("context"): [(r.tag, dict(r.attrib)) for r in p]
        for p in root.findall("policy")
    }
    assert set(policies) == {"root", "default"}
    assert ("allow", {"own": SYSTEMD1}) in policies["root"]
    assert ("allow", {"send_destination": SYSTEMD1}) in policies["root"]
    default = policies["default"]
    assert default[:2] == [("deny", {"own": SYSTEMD1}), ("deny", {"send_destination": SYSTEMD1})]
    allowed = {(a.get("send_interface"), a.get("send_member")) for tag, a in default[2:]}
    for mutating in ("StartTransientUnit", "StartUnit", "StopUnit", "KillUnit", "AbandonScope"):
        assert ("org.freedesktop.systemd1.Manager", mutating) not in allowed
    for reading in ("GetUnit", "ListUnits", "Subscribe", "GetUnitByPID", "RefUnit"):
        assert ("org.freedesktop.systemd1.Manager", reading) in allowed
    assert ("org.freedesktop.DBus.Properties", "Get") in allowed
    assert ("org.freedesktop.DBus.Properties", "Set") not in allowed


# --- service definitions --------------------------------------------------------------------


@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_shell_scripts_parse(installed: Installed, script: str) -> None:
    path = installed.path(script)
    assert path.read_text().startswith("#!"), script
    r = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_the_lsb_script_orders_itself_around_logind(installed: Installed) -> None:
    text = installed.path("/etc/init.d/scopeshim").read_text()
    header = text[text.index("### BEGIN INIT INFO") : text.index("### END INIT INFO")]
    fields = {
        k.strip("# "): v.strip()
        for k, v in (line.split(":", 1) for line in header.splitlines()[1:] if ":" in line)
    }
    assert fields["Provides"] == "scopeshim"
    assert "dbus" in fields["Required-Start"].split()
    assert "systemd-logind" in fields["X-Start-Before"].split()
    assert "systemd-logind" in fields["X-Stop-After"].split()
    assert fields["Default-Start"] == "2 3 4 5" and fields["Default-Stop"] == "0 1 6"
    assert "DAEMON=/usr/local/sbin/scopeshim" in text
    assert "CONFIG=/etc/scopeshim/scopeshim.toml" in text


def test_every_init_runs_the_installed_command(installed: Installed) -> None:
    command = "/usr/local/sbin/scopeshim"
    config = "--config /etc/scopeshim/scopeshim.toml"
    openrc = installed.path(f"{SHARE}/init/openrc/init.d/scopeshim").read_text()
    assert openrc.startswith("#!/sbin/openrc-run\n")
    assert f'command="{command}"' in openrc and 'supervisor="supervise-daemon"' in openrc
    assert "need dbus" in openrc and "before systemd-logind" in openrc
    for runner in ("runit/scopeshim/run", "s6/scopeshim/run"):
        text = installed.path(f"{SHARE}/init/{runner}").read_text()
        assert f"exec {command} serve --system {config}" in text, runner
        assert "--log-target stderr" in text
    assert installed.path(f"{SHARE}/init/s6/scopeshim/type").read_text() == "longrun\n"
    upstart = installed.path(f"{SHARE}/init/upstart/scopeshim.conf").read_text()
    stanzas = {line.split()[0] for line in upstart.splitlines() if line and line[0] != "#"}
    assert stanzas == {"description", "start", "stop", "respawn", "exec"}
    assert "start on started dbus or starting systemd-logind" in upstart
    assert f"exec {command} serve --system {config}" in upstart


def test_sysvinit_and_openrc_cannot_both_be_installed(tmp_path) -> None:
    r = subprocess.run(
        ["make", "-s", "install", f"DESTDIR={tmp_path}", "INIT=sysvinit openrc"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0 and "choose one" in r.stderr
    assert not any(tmp_path.iterdir())


# --- reinstall, other inits, uninstall ------------------------------------------------------


def test_reinstall_keeps_a_changed_configuration_and_uninstall_removes_the_rest(
    installed: Installed, tmp_path
) -> None:
    """A copy of the installed tree, its configuration edited; `make install` again with the
    other inits in place (openrc, runit, s6, upstart), then `make uninstall`."""
    destdir = tmp_path / "dest"
    shutil.copytree(installed.destdir, destdir, symlinks=True)
    conf = destdir / "etc/scopeshim/scopeshim.toml"
    edited = conf.read_text() + "\n# local change\n"
    conf.write_text(edited)

    out = make_install(destdir, "INIT=openrc runit s6 upstart")
    assert "kept /etc/scopeshim/scopeshim.toml" in out
    assert conf.read_text() == edited
    assert (destdir / "etc/scopeshim/scopeshim.toml.dist").read_text() == (
        installed.config.read_text()
    )
    for paths in IN_PLACE.values():
        for path in paths:
            assert (destdir / path.lstrip("/")).exists(), path
    assert (destdir / "etc/init.d/scopeshim").read_text().startswith("#!/sbin/openrc-run")

    r = subprocess.run(
        ["make", "-s", "uninstall", f"DESTDIR={destdir}", f"PREFIX={PREFIX}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    left = files_under(destdir)
    # the first install's sysvinit files were not in the second manifest: they stay, as the
    # changed configuration does; everything the second install wrote is gone
    assert left == {
        "/etc/scopeshim/scopeshim.toml",
        "/etc/default/scopeshim",
    }, left
    assert not (destdir / LIB.lstrip("/")).exists()


def test_a_failed_reinstall_leaves_the_installed_environment(installed: Installed, tmp_path):
    """pip cannot get the dependencies (no index): make install fails, and what was
    installed still runs."""
    destdir = tmp_path / "dest"
    shutil.copytree(installed.destdir, destdir, symlinks=True)
    offline = {"PIP_FIND_LINKS": "", "PIP_EXTRA_INDEX_URL": "", "PIP_CONFIG_FILE": os.devnull}
    r = subprocess.run(
        ["make", "-s", "install", f"DESTDIR={destdir}", f"PREFIX={PREFIX}",
         f"PIP_INSTALL_ARGS=--no-index --find-links {tmp_path / 'no-wheels'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **offline},
    )  # fmt: skip
    assert r.returncode != 0
    assert "pip could not install scopeshim" in r.stderr
    assert files_under(destdir) == files_under(installed.destdir)
    r = subprocess.run(
        [str(destdir / PREFIX.lstrip("/") / "sbin/scopeshim"), "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
