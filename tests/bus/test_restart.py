"""kill -9 and a restart lose nothing: units, their processes and settings come back from the
state directory; a job in flight at the crash is answered as failed; job ids never go back."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from dbus_fast import Message, Variant
from dbus_fast.aio import MessageBus

from tests.conftest import ROOT, Client, PrivateBus

UNIT = "org.freedesktop.systemd1.Unit"
A = "/org/freedesktop/systemd1/unit/a_2escope"


class Daemon:
    """scopeshim as a real process (so that it can be killed), fake backend, state on disk."""

    def __init__(self, address: str, tmp: Path) -> None:
        self.command = [
            sys.executable, "-m", "shim", "serve", "--address", address, "--backend", "fake",
            "--cgroup-root", str(tmp / "cgroupfs"), "--state-dir", str(tmp / "state"),
        ]  # fmt: skip
        self.log = tmp / "scopeshim.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command, cwd=ROOT, stdout=log, stderr=log)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(10)


@pytest.fixture
def shim(private_bus: PrivateBus, tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(private_bus.address, tmp_path)
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.kill(signal.SIGTERM)


@pytest.fixture
async def bus_client(private_bus: PrivateBus) -> AsyncIterator[Client]:
    bus = await MessageBus(bus_address=private_bus.address).connect()
    c = Client(bus)
    bus.add_message_handler(c._on_message)
    await c.ok(
        "AddMatch",
        "s",
        ["type='signal',sender='org.freedesktop.systemd1'"],
        path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus",
        destination="org.freedesktop.DBus",
    )
    yield c
    bus.disconnect()
    await bus.wait_for_disconnect()


async def wait_owner(client: Client, present: bool = True) -> None:
    for _ in range(300):
        (has,) = await client.ok(
            "NameHasOwner",
            "s",
            ["org.freedesktop.systemd1"],
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            destination="org.freedesktop.DBus",
        )
        if has is present:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError("org.freedesktop.systemd1 did not come (or go)")


def job_removed(path: str) -> object:
    return lambda m: isinstance(m, Message) and m.member == "JobRemoved" and m.body[1] == path


async def test_kill_9_and_restart_lose_nothing(shim: Daemon, bus_client: Client, processes) -> None:
    c = bus_client
    shim.start()
    await wait_owner(c)
    sleeper, stubborn = processes(), processes(ignore_term=True)
    props = [
        ["PIDs", Variant("au", [sleeper.pid])],
        ["Slice", Variant("s", "user-1000.slice")],
        ["Description", Variant("s", "kept across the crash")],
        ["MemoryMax", Variant("t", 1 << 30)],
    ]
    (job,) = await c.ok("StartTransientUnit", "ssa(sv)a(sa(sv))", ["a.scope", "fail", props, []])
    await c.wait_signal(job_removed(job))
    invocation = await c.get(A, UNIT, "InvocationID")
    props = [
        ["PIDs", Variant("au", [stubborn.pid])],
        ["TimeoutStopUSec", Variant("t", 600 * 10**6)],
    ]
    (job,) = await c.ok("StartTransientUnit", "ssa(sv)a(sa(sv))", ["b.scope", "fail", props, []])
    await c.wait_signal(job_removed(job))
    (stop_job,) = await c.ok("StopUnit", "ss", ["b.scope", "replace"])  # waits for SIGKILL
    await asyncio.sleep(0.3)  # let the state reach the disk (written once per iteration)

    shim.kill()
    await wait_owner(c, present=False)
    c.signals.clear()
    shim.start()
    await wait_owner(c)

    # the job in flight is answered, as failed
    lost = await c.wait_signal(job_removed(stop_job))
    assert lost.body[3] == "failed"
    # the scope is back as it was, with its process and settings
    assert await c.get(A, UNIT, "ActiveState") == "active"
    assert await c.get(A, UNIT, "Description") == "kept across the crash"
    assert await c.get(A, UNIT, "InvocationID") == invocation
    assert await c.get(A, "org.freedesktop.systemd1.Scope", "MemoryMax") == 1 << 30
    procs = await c.ok("GetUnitProcesses", "s", ["a.scope"])
    assert [p[1] for p in procs[0]] == [sleeper.pid]
    # job ids never go back
    (job,) = await c.ok("StopUnit", "ss", ["a.scope", "replace"])
    assert int(job.rsplit("/", 1)[1]) > int(stop_job.rsplit("/", 1)[1])
    await c.wait_signal(job_removed(job))
    # and the empty scope is still noticed after the restart
    await c.ok("KillUnit", "ssi", ["b.scope", "all", signal.SIGKILL])
    await c.wait_signal(lambda m: m.member == "UnitRemoved" and m.body[0] == "b.scope")
    assert stubborn.wait(5) == -signal.SIGKILL
    assert sleeper.wait(5) == -signal.SIGTERM
