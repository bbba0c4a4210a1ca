"""Authorization: reads are open; changes need uid 0 or polkit's yes (python-dbusmock's
polkitd template); a non-root caller never moves a process it does not own."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from backends.fake import FakeBackend
from shim.bus.daemon import Options, serve
from shim.core.policy import Policy
from tests.conftest import BUS_CONFIG

NOBODY = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching to uid nobody needs root")
MANAGER = ("org.freedesktop.systemd1", "/org/freedesktop/systemd1")
STU = "org.freedesktop.systemd1.Manager.StartTransientUnit"


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory uid nobody can reach (pytest's tmp_path is root's only)."""
    d = Path(tempfile.mkdtemp(prefix="scopeshim-test-auth-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)


@pytest.fixture
def bus_address(open_dir: Path) -> Iterator[str]:
    conf = open_dir / "bus.conf"
    # a session-type bus admits only its owner unless told otherwise
    config = BUS_CONFIG.replace(
        '<policy context="default">', '<policy context="default">\n    <allow user="*"/>'
    )
    conf.write_text(config.format(socket=open_dir / "bus.sock"))
    proc = subprocess.Popen(
        ["dbus-daemon", f"--config-file={conf}", "--nofork", "--nopidfile", "--print-address=1"],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    address = proc.stdout.readline().decode().strip()
    proc.stdout.close()
    yield address
    proc.terminate()
    proc.wait(10)


@pytest.fixture
async def shim(bus_address: str, open_dir: Path) -> AsyncIterator[FakeBackend]:
    backend = FakeBackend(open_dir / "cgroupfs")
    service = await serve(Options(address=bus_address, policy=Policy.harmless(open_dir)), backend)
    yield backend
    service.close()
    service.manager.close()
    service.bus.disconnect()
    await service.bus.wait_for_disconnect()
    backend.close()


async def gdbus(address: str, method: str, *args: str, uid: int = NOBODY) -> tuple[int, str]:
    """gdbus call as UID; (exit status, output with the error name when it failed)."""
    dest, path = MANAGER
    command = ["gdbus", "call", "--address", address, "--dest", dest, "--object-path", path,
               "--method", method, *args]  # fmt: skip
    if uid != 0:
        command = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *command]
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode().strip()


def scope_args(name: str, pid: int) -> list[str]:
    return [name, "fail", f"[('PIDs', <[uint32 {pid}]>)]", "[]"]


@pytest.fixture
def nobody_sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "300"], user=NOBODY, group=NOBODY, extra_groups=[])
    yield proc
    proc.kill()
    proc.wait()


async def test_reads_are_open_changes_need_root(
    shim: FakeBackend, bus_address: str, nobody_sleeper: subprocess.Popen[bytes]
) -> None:
    status, out = await gdbus(bus_address, "org.freedesktop.systemd1.Manager.ListUnits")
    assert status == 0 and "-.slice" in out
    # no polkit on this bus: a non-root caller is refused, and nothing is created
    status, out = await gdbus(bus_address, STU, *scope_args("n.scope", nobody_sleeper.pid))
    assert status != 0
    assert "org.freedesktop.DBus.Error.AccessDenied: Permission denied" in out
    assert not shim.exists("/system.slice/n.scope")
    status, out = await gdbus(bus_address, "org.freedesktop.systemd1.Manager.Reload")
    assert "AccessDenied" in out
    # root may
    status, out = await gdbus(bus_address, STU, *scope_args("r.scope", nobody_sleeper.pid), uid=0)
    assert status == 0, out
    for _ in range(100):
        if shim.cgroup_of(nobody_sleeper.pid) == "/system.slice/r.scope":
            break
        await asyncio.sleep(0.02)
    assert shim.cgroup_of(nobody_sleeper.pid) == "/system.slice/r.scope"
    status, out = await gdbus(
        bus_address, "org.freedesktop.systemd1.Manager.KillUnit", "r.scope", "all", "0"
    )
    assert "AccessDenied" in out


@pytest.fixture
async def polkit(bus_address: str) -> AsyncIterator[str]:
    """python-dbusmock's polkitd template on the bus, allowing manage-units only."""
    python = "/usr/bin/python3"
    probe = subprocess.run([python, "-c", "import dbusmock"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("python3-dbusmock is not installed (apt-get install python3-dbusmock)")
    env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": bus_address}
    proc = subprocess.Popen(
        [python, "-m", "dbusmock", "--session", "--template", "polkitd"],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            check = subprocess.run(
                ["gdbus", "call", "--address", bus_address, "--dest", "org.freedesktop.DBus",
                 "--object-path", "/org/freedesktop/DBus", "--method",
                 "org.freedesktop.DBus.NameHasOwner", "org.freedesktop.PolicyKit1"],
                capture_output=True, text=True,
            )  # fmt: skip
            if "true" in check.stdout:
                break
            await asyncio.sleep(0.05)
        subprocess.run(
            ["gdbus", "call", "--address", bus_address, "--dest", "org.freedesktop.PolicyKit1",
             "--object-path", "/org/freedesktop/PolicyKit1/Authority", "--method",
             "org.freedesktop.DBus.Mock.SetAllowed", "['org.freedesktop.systemd1.manage-units']"],
            check=True, capture_output=True,
        )  # fmt: skip
        yield bus_address
    finally:
        proc.terminate()
        proc.wait(10)


async def test_polkit_decides_for_non_root_callers(
    shim: FakeBackend,
    polkit: str,
    nobody_sleeper: subprocess.Popen[bytes],
    processes,
) -> None:
    status, out = await gdbus(polkit, STU, *scope_args("own.scope", nobody_sleeper.pid))
    assert status == 0, out  # polkit says yes to manage-units
    for _ in range(100):
        if shim.cgroup_of(nobody_sleeper.pid) == "/system.slice/own.scope":
            break
        await asyncio.sleep(0.02)
    assert shim.cgroup_of(nobody_sleeper.pid) == "/system.slice/own.scope"
    # ... but never for a process that is not the caller's
    roots = processes()
    status, out = await gdbus(polkit, STU, *scope_args("theirs.scope", roots.pid))
    assert f"AccessDenied: Process {roots.pid} not owned by client's UID. Refusing." in out
    assert shim.cgroup_of(roots.pid) is None
    # reload-daemon was not granted
    status, out = await gdbus(polkit, "org.freedesktop.systemd1.Manager.Reload")
    assert "AccessDenied" in out
