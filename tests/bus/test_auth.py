"""Authorization: reads are open; changes need uid 0 or polkit's yes (python-dbusmock's
polkitd template); a non-root caller never moves a process it does not own."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from backends.fake import FakeBackend
from shim.bus.daemon import Options, serve
from shim.core.policy import Policy
from tests.conftest import start_bus

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching to uid nobody needs root")
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
    bus = start_bus(open_dir, everyone=True)
    yield bus.address
    bus.process.terminate()
    bus.process.wait(10)


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


@needs_root
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


@needs_root
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


WALK = r"""
import asyncio, json, sys
import xml.etree.ElementTree as ET
from dbus_fast import Message, Variant
from dbus_fast.aio import MessageBus

def dummy(sig):
    # one value of each complete type in SIG
    out, i = [], 0
    def one(i):
        c = sig[i]
        if c in "sg":
            return "", i + 1
        if c == "o":
            return "/", i + 1
        if c in "ybnqiuxtdh":
            return (0.0 if c == "d" else 0), i + 1
        if c == "v":
            return Variant("s", ""), i + 1
        if c == "a":
            j = skip(i + 1)
            return ({} if sig[i + 1] == "{" else b"" if sig[i + 1] == "y" else []), j
        if c == "(":
            vals, j = [], i + 1
            while sig[j] != ")":
                v, j = one(j)
                vals.append(v)
            return vals, j + 1
        raise ValueError(sig)
    def skip(i):
        c = sig[i]
        if c == "a":
            return skip(i + 1)
        if c in "({":
            close = ")" if c == "(" else "}"
            j = i + 1
            while sig[j] != close:
                j = skip(j)
            return j + 1
        return i + 1
    while i < len(sig):
        v, i = one(i)
        out.append(v)
    return out

async def main(address, paths):
    bus = await MessageBus(bus_address=address).connect()
    results = []
    for path in paths:
        reply = await bus.call(Message(destination="org.freedesktop.systemd1", path=path,
            interface="org.freedesktop.DBus.Introspectable", member="Introspect"))
        for iface in ET.fromstring(reply.body[0]).findall("interface"):
            name = iface.get("name")
            if not name.startswith("org.freedesktop.systemd1."):
                continue
            for method in iface.findall("method"):
                sig = "".join(a.get("type") for a in method.findall("arg")
                              if a.get("direction", "in") == "in")
                for interface in (name, None):
                    r = await bus.call(Message(destination="org.freedesktop.systemd1",
                        path=path, interface=interface, member=method.get("name"),
                        signature=sig, body=dummy(sig)))
                    results.append([path, name, interface is not None, method.get("name"),
                                    r.error_name])
    print(json.dumps(results))

asyncio.run(main(sys.argv[1], sys.argv[2:]))
"""

# org.freedesktop.systemd1(5) "Security": reading, Subscribe/Unsubscribe and Ref/Unref are
# open to every client; everything else changes the system and needs authorization
OPEN_MEMBERS = {
    "GetUnit", "GetUnitByPID", "GetUnitByPIDFD", "GetUnitByInvocationID",
    "GetUnitByControlGroup", "LoadUnit",
    "ListUnits", "ListUnitsFiltered", "ListUnitsByPatterns", "ListUnitsByNames", "ListJobs",
    "GetJob", "GetUnitProcesses", "Subscribe", "Unsubscribe", "RefUnit", "UnrefUnit", "Ref",
    "Unref", "GetProcesses", "GetAfter", "GetBefore",
}  # fmt: skip


@needs_root
async def test_every_mutating_member_is_refused_for_nobody(
    shim: FakeBackend, bus_address: str, open_dir: Path, processes
) -> None:
    """Walk every member of the introspection data of the manager, a scope, a slice, a
    service and a job, as uid 65534, with the interface named and without: each member that
    changes something is refused with AccessDenied, the others are not (issue 15, finding 6:
    Scope.AttachProcesses named with its interface went unchecked)."""
    stubborn = processes(ignore_term=True)
    props = f"[('PIDs', <[uint32 {stubborn.pid}]>), ('Delegate', <true>), ('TimeoutStopUSec', <uint64 600000000>)]"  # noqa: E501
    status, out = await gdbus(bus_address, STU, "walk.scope", "fail", props, "[]", uid=0)
    assert status == 0, out
    for _ in range(100):
        if shim.cgroup_of(stubborn.pid) == "/system.slice/walk.scope":
            break
        await asyncio.sleep(0.02)
    status, out = await gdbus(
        bus_address, "org.freedesktop.systemd1.Manager.StopUnit", "walk.scope", "replace", uid=0
    )
    assert status == 0, out
    job = out.split("'")[1]  # the stop job waits for the SIGKILL timeout
    script = open_dir / "walk.py"
    script.write_text(WALK)
    script.chmod(0o644)
    unit = "/org/freedesktop/systemd1/unit/"
    paths = ["/org/freedesktop/systemd1", unit + "walk_2escope", unit + "system_2eslice",
             unit + "user_401000_2eservice", job]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
        sys.executable, str(script), bus_address, *paths,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out_bytes, _ = await proc.communicate()
    results = json.loads(out_bytes)
    wrong = []
    for path, iface, named, member, error in results:
        refused = error == "org.freedesktop.DBus.Error.AccessDenied"
        if refused == (member in OPEN_MEMBERS):
            wrong.append(f"{iface}.{member} on {path} (interface named: {named}): {error}")
    assert wrong == []
    members = {(r[1], r[3]) for r in results}
    assert ("org.freedesktop.systemd1.Scope", "AttachProcesses") in members
    assert ("org.freedesktop.systemd1.Slice", "AttachProcesses") in members
    assert len(results) > 80
    # nothing was moved or stopped by the walk
    assert shim.cgroup_of(stubborn.pid) == "/system.slice/walk.scope"


def test_one_table_covers_every_member() -> None:
    """Every method of every systemd1 interface served has its entry in auth.ACTIONS, and a
    member without an interface needs what it needs on any interface that has it."""
    from shim.bus import auth, jobs, manager, units
    from shim.bus.router import Interface

    served = [manager.MANAGER, jobs.JOB] + [
        v for v in vars(units).values() if isinstance(v, Interface)
    ]
    missing = [(i.name, m) for i in served for m in i.methods if (i.name, m) not in auth.ACTIONS]
    assert missing == []
    assert auth.action_for("org.freedesktop.systemd1.Scope", "AttachProcesses") == auth.MANAGE_UNITS
    assert auth.action_for("org.freedesktop.systemd1.Slice", "AttachProcesses") == auth.MANAGE_UNITS
    assert auth.action_for(None, "AttachProcesses") == auth.MANAGE_UNITS
    assert auth.action_for(None, "GetProcesses") is None
    assert auth.action_for("org.freedesktop.systemd1.Unit", "NotAMember") == auth.MANAGE_UNITS
    assert auth.action_for("org.freedesktop.DBus.Peer", "Ping") is None
