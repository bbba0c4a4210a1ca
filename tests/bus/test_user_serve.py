"""`scopeshim serve --user` as a command (fake backend): it starts the session bus at
$XDG_RUNTIME_DIR/bus when nobody serves it (session.slice/dbus.service), says READY=1, and
the unmodified systemctl --user, systemd-run --user --scope and
dbus-update-activation-environment --systemd work against it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shim.core.instance import user_cgroup
from tests.conftest import ROOT

UID = os.getuid()
PREFIX = user_cgroup(UID)


@dataclass
class UserManager:
    process: subprocess.Popen[str]
    runtime: Path
    env: dict[str, str]

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=60)


def _kill_session_bus(runtime: Path) -> None:
    """The dbus-daemon the manager started runs in its own session: end it by the PID the
    manager logged ("started the session bus on PATH (PID N)")."""
    found = re.search(
        r"started the session bus on \S+ \(PID (\d+)\)", (runtime / "log").read_text()
    )
    if found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(found.group(1)), signal.SIGTERM)


@pytest.fixture
def user_manager() -> Iterator[UserManager]:
    if shutil.which("dbus-daemon") is None:
        pytest.skip("dbus-daemon is not installed (apt-get install dbus-daemon)")
    runtime = Path(tempfile.mkdtemp(prefix="scopeshim-user-"))
    env = {
        "PATH": os.environ["PATH"],
        "XDG_RUNTIME_DIR": str(runtime),
        "HOME": str(runtime),
        "PYTHONPATH": str(ROOT),
    }
    with open(runtime / "log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shim", "serve", "--user", "--backend", "fake",
             "--notify-ready"],
            env=env, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT,
        )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    client_env = {**env, "DBUS_SESSION_BUS_ADDRESS": f"unix:path={runtime}/bus"}
    try:
        assert line == "READY=1", (runtime / "log").read_text()
        yield UserManager(proc, runtime, client_env)
    finally:
        proc.terminate()
        proc.wait(30)
        proc.stdout.close()
        _kill_session_bus(runtime)
        shutil.rmtree(runtime, ignore_errors=True)


def test_session_bus_started_in_session_slice(user_manager: UserManager) -> None:
    out = user_manager.run("systemctl", "--user", "list-units", "--all", "--no-legend", "--plain")
    assert out.returncode == 0, out.stderr
    units = {line.split()[0]: line.split()[1:4] for line in out.stdout.splitlines()}
    assert units["dbus.service"] == ["loaded", "active", "running"]
    assert units["init.scope"] == ["loaded", "active", "running"]
    assert units["session.slice"] == ["loaded", "active", "active"]
    out = user_manager.run("systemctl", "--user", "show", "dbus.service", "-P", "ControlGroup")
    assert out.stdout.strip() == PREFIX + "/session.slice/dbus.service"
    out = user_manager.run("systemctl", "--user", "show", "session.slice", "-P", "Description")
    assert out.stdout.strip() == "User Core Session Slice"
    assert (user_manager.runtime / "systemd").is_dir()


def test_systemctl_user_environment(user_manager: UserManager) -> None:
    out = user_manager.run("systemctl", "--user", "show-environment")
    assert out.returncode == 0, out.stderr
    assert f"XDG_RUNTIME_DIR={user_manager.runtime}" in out.stdout.splitlines()
    assert user_manager.run("systemctl", "--user", "set-environment", "FOO=bar").returncode == 0
    env = {**user_manager.env, "IMPORTED": "yes"}
    out = subprocess.run(["systemctl", "--user", "import-environment", "IMPORTED"], env=env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    out = user_manager.run("dbus-update-activation-environment", "--systemd", "--verbose", "X=1")
    assert "ignoring --systemd" not in out.stderr, out.stderr
    lines = user_manager.run("systemctl", "--user", "show-environment").stdout.splitlines()
    assert {"FOO=bar", "IMPORTED=yes", "X=1"} <= set(lines)
    assert user_manager.run("systemctl", "--user", "unset-environment", "FOO").returncode == 0
    lines = user_manager.run("systemctl", "--user", "show-environment").stdout.splitlines()
    assert "FOO=bar" not in lines


def test_systemd_run_user_scope(user_manager: UserManager) -> None:
    out = user_manager.run(
        "systemd-run", "--user", "--scope", "--unit", "run-t1", "-p", "TasksMax=10",
        "sh", "-c", "systemctl --user show run-t1.scope -P ControlGroup -P TasksMax -P Slice",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.split()) == sorted(
        ["10", PREFIX + "/app.slice/run-t1.scope", "app.slice"]
    )


def test_flatpak_call_sequence_over_the_private_socket(user_manager: UserManager) -> None:
    """flatpak's exact calls (tests/e2e/flatpak_scope.py, GDBus) on
    $XDG_RUNTIME_DIR/systemd/private: the scope starts in app.slice and JobRemoved reaches
    the peer-to-peer connection without Subscribe."""
    probe = subprocess.run(["/usr/bin/python3", "-c", "import gi"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("python3-gi is not installed (apt-get install python3-gi)")
    private = user_manager.runtime / "systemd" / "private"
    assert private.is_socket()
    out = user_manager.run(
        "/usr/bin/python3", str(ROOT / "tests/e2e/flatpak_scope.py"), "org.example.App",
        str(private),
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    assert result["unit"].startswith("app-flatpak-org.example.App-")
    assert result["removed"] == {"unit": result["unit"], "result": "done"}
    # another user may not even connect (the socket admits its user only)
    if os.geteuid() == 0:
        # the directories open, so that only the socket's own check can refuse
        user_manager.runtime.chmod(0o755)
        (user_manager.runtime / "systemd").chmod(0o755)
        other = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3",
             str(ROOT / "tests/e2e/flatpak_scope.py"), "org.example.App", str(private)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert other.returncode != 0
        error = json.loads(other.stdout)["error"]
        assert "No systemd user session" not in error, error
