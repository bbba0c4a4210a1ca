"""D-Bus activation: a private dbus-daemon whose <servicedir> holds the installed activation
file (its Exec pointed at the staged entry point, with the fake backend and a temporary state
directory so that nothing on the host changes) starts scopeshim on the first call; with
exit_on_idle the daemon leaves and the next call starts it again."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import idle_witness
from tests.packaging.conftest import PREFIX, SYSTEMD1, Installed

pytestmark = pytest.mark.timeout(600)

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <servicedir>{servicedir}</servicedir>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""


@dataclass
class Bus:
    address: str
    log: Path
    process: subprocess.Popen[bytes]


def busctl(address: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["busctl", f"--address={address}", "--timeout=50", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def owner_pid(address: str) -> int | None:
    """The PID owning org.freedesktop.systemd1, asking the bus driver (no activation)."""
    r = busctl(
        address, "call", "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
        "GetConnectionUnixProcessID", "s", SYSTEMD1,
    )  # fmt: skip
    return int(r.stdout.split()[1]) if r.returncode == 0 else None


def activated_bus(installed: Installed, top: Path, *extra: str) -> Iterator[Bus]:
    if shutil.which("dbus-daemon") is None or shutil.which("busctl") is None:
        pytest.skip("dbus-daemon and busctl are needed (make deps)")
    services = top / "services"
    services.mkdir()
    text = installed.activation_file.read_text()
    installed_exec = f"Exec={PREFIX}/lib/scopeshim/activate"
    assert installed_exec in text
    # what the helper runs where no init knows scopeshim, with the staged paths
    staged_exec = " ".join(
        [
            f"Exec={installed.scopeshim} serve --system --config {installed.config}",
            f"--backend fake --cgroup-root {top}/cgroupfs --state-dir {top}/state",
            "--log-target stderr",
            *extra,
        ]
    )
    (services / f"{SYSTEMD1}.service").write_text(text.replace(installed_exec, staged_exec))
    socket = top / "bus.sock"
    (top / "bus.conf").write_text(BUS_CONFIG.format(socket=socket, servicedir=services))
    log = top / "dbus-daemon.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            ["dbus-daemon", f"--config-file={top / 'bus.conf'}", "--nofork", "--nopidfile",
             "--print-address=1"],
            stdout=subprocess.PIPE,
            stderr=err,
        )  # fmt: skip
    assert proc.stdout is not None
    address = proc.stdout.readline().decode().strip()
    proc.stdout.close()
    assert address, log.read_text()
    try:
        yield Bus(address, log, proc)
    finally:
        pid = owner_pid(address)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            wait_gone(address, 20)
        proc.terminate()
        proc.wait(timeout=10)


def wait_gone(address: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if owner_pid(address) is None:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def bus(installed: Installed, open_tmp: Path) -> Iterator[Bus]:
    yield from activated_bus(installed, open_tmp)


@pytest.fixture
def idle_bus(installed: Installed, open_tmp: Path) -> Iterator[Bus]:
    yield from activated_bus(installed, open_tmp, "--exit-on-idle", "1")


def version(address: str) -> subprocess.CompletedProcess[str]:
    return busctl(
        address, "get-property", SYSTEMD1, "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager", "Version",
    )  # fmt: skip


def test_the_first_call_starts_scopeshim(installed: Installed, bus: Bus) -> None:
    assert owner_pid(bus.address) is None  # nothing runs before the call
    r = version(bus.address)
    assert r.returncode == 0, r.stderr + bus.log.read_text()
    assert r.stdout.strip() == 's "252"'
    log = bus.log.read_text()
    assert f"Activating service name='{SYSTEMD1}'" in log
    assert f"Successfully activated service '{SYSTEMD1}'" in log
    # the owner is the staged entry point's interpreter, running the installed package
    pid = owner_pid(bus.address)
    assert pid is not None
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert argv[1:4] == [b"-I", b"-m", b"shim"], argv
    assert argv[0].decode().startswith(str(installed.destdir)), argv
    # later calls reach the same daemon
    assert version(bus.address).returncode == 0
    assert owner_pid(bus.address) == pid


def test_exit_on_idle_and_activation_again(idle_bus: Bus, open_tmp: Path) -> None:
    assert version(idle_bus.address).returncode == 0
    first = owner_pid(idle_bus.address)
    assert first is not None
    # a scope with a live process keeps it past its idle period: a daemon with nothing and
    # the same --exit-on-idle leaves twice meanwhile ...
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        r = busctl(
            idle_bus.address, "call", SYSTEMD1, "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager", "StartTransientUnit", "ssa(sv)a(sa(sv))",
            "kept.scope", "fail", "1", "PIDs", "au", "1", str(sleeper.pid), "0",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        idle_witness(open_tmp / "witness", "1")
        assert owner_pid(idle_bus.address) == first, idle_bus.log.read_text()
    finally:
        sleeper.kill()
        sleeper.wait()
    # ... and once its process is gone (the scope with it), nothing is left: the daemon
    # leaves by itself (exit 0) ...
    assert wait_gone(idle_bus.address, 30), "scopeshim did not exit when idle"
    # ... and the next call starts it again
    r = version(idle_bus.address)
    assert r.returncode == 0, r.stderr + idle_bus.log.read_text()
    second = owner_pid(idle_bus.address)
    assert second is not None and second != first
    assert idle_bus.log.read_text().count(f"Successfully activated service '{SYSTEMD1}'") == 2
