"""Known traps from systemd's own tracker, each handled at least as well as systemd 257."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from dbus_fast import Variant

from tests.conftest import Client, Daemon

UNIT = "org.freedesktop.systemd1.Unit"


def job_removed(path: str) -> object:
    return lambda m: m.member == "JobRemoved" and m.body[1] == path


async def start(client: Client, name: str, *props: list[object]) -> list[object]:
    (job,) = await client.ok(
        "StartTransientUnit", "ssa(sv)a(sa(sv))", [name, "fail", list(props), []]
    )
    done = await client.wait_signal(job_removed(job))
    return list(done.body)


async def test_scope_empty_right_after_start_goes_away(daemon: Daemon, client: Client) -> None:
    """systemd issue 36781: a scope whose only process is already gone when the job runs
    must not stay active forever; here it ends inactive and is collected."""
    proc = subprocess.Popen(["true"])
    try:
        await start(client, "gone.scope", ["PIDs", Variant("au", [proc.pid])])
        await client.wait_signal(lambda m: m.member == "UnitRemoved" and m.body[0] == "gone.scope")
        assert "gone.scope" not in daemon.manager.units
        assert not daemon.backend.exists("/system.slice/gone.scope")
    finally:
        proc.wait()


async def test_pid_of_another_unit_moves_without_replace(
    daemon: Daemon, client: Client, processes
) -> None:
    """systemd issue 26925: PIDs already in another scope, job mode fail: the process moves to
    the new scope, and the old one, now empty, goes inactive and is collected."""
    proc = processes()
    await start(client, "first.scope", ["PIDs", Variant("au", [proc.pid])])
    body = await start(client, "second.scope", ["PIDs", Variant("au", [proc.pid])])
    assert body[3] == "done"
    assert daemon.backend.cgroup_of(proc.pid) == "/system.slice/second.scope"
    await client.wait_signal(lambda m: m.member == "UnitRemoved" and m.body[0] == "first.scope")
    path = "/org/freedesktop/systemd1/unit/second_2escope"
    assert await client.get(path, UNIT, "ActiveState") == "active"


CALLER = """
import asyncio, sys
from dbus_fast import Message, Variant
from dbus_fast.aio import MessageBus
async def main():
    bus = await MessageBus(bus_address=sys.argv[1]).connect()
    reply = await bus.call(Message(
        destination="org.freedesktop.systemd1", path="/org/freedesktop/systemd1",
        interface="org.freedesktop.systemd1.Manager", member="StartTransientUnit",
        signature="ssa(sv)a(sa(sv))",
        body=["me.scope", "fail", [["PIDs", Variant("au", [0])]], []]))
    print(reply.message_type.name, flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""


async def test_pid_0_is_the_caller(daemon: Daemon, client: Client) -> None:
    """systemd issue 24613: PIDs=[0] means the calling process."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CALLER, daemon.address, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        assert (await proc.stdout.readline()).strip() == b"METHOD_RETURN"
        for _ in range(100):
            if daemon.backend.cgroup_of(proc.pid) == "/system.slice/me.scope":
                break
            await asyncio.sleep(0.02)
        assert daemon.backend.cgroup_of(proc.pid) == "/system.slice/me.scope"
    finally:
        proc.kill()
        await proc.wait()
    await client.wait_signal(lambda m: m.member == "UnitRemoved" and m.body[0] == "me.scope")
