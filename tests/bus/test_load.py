"""Load: StartTransientUnit/StopUnit cycles from 50 concurrent clients all end `done`, leave
no unit or cgroup behind, and the daemon's memory comes back (within 10%) afterwards.

1,000 cycles here; `make stress` sets SCOPESHIM_STRESS_CYCLES for a larger run. Counts and
memory are asserted, never times.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from tests.conftest import ROOT, PrivateBus, sleeper

CLIENTS = 50
CYCLES = int(os.environ.get("SCOPESHIM_STRESS_CYCLES", "1000"))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


class Worker:
    """One client with one process that it moves from scope to scope."""

    def __init__(self, index: int, address: str) -> None:
        self.index = index
        self.address = address
        self.proc = sleeper()
        self.results: list[str] = []
        self._jobs: dict[str, asyncio.Future[str]] = {}
        self._early: dict[str, str] = {}  # JobRemoved seen before the reply was handled

    async def run(self, cycles: int) -> None:
        bus = await MessageBus(bus_address=self.address).connect()
        bus.add_message_handler(self._on_signal)
        await self._call(bus, "AddMatch", "s", ["type='signal',sender='org.freedesktop.systemd1',"
                         "member='JobRemoved'"], dbus=True)  # fmt: skip
        try:
            for n in range(cycles):
                name = f"load-{self.index}-{n}.scope"
                props = [
                    ["PIDs", Variant("au", [self.proc.pid])],
                    ["KillMode", Variant("s", "none")],
                ]
                await self._job(
                    bus, "StartTransientUnit", "ssa(sv)a(sa(sv))", [name, "fail", props, []]
                )
                await self._job(bus, "StopUnit", "ss", [name, "replace"])
        finally:
            bus.disconnect()
            await bus.wait_for_disconnect()

    def _on_signal(self, m: Message) -> None:
        if m.member == "JobRemoved":
            fut = self._jobs.pop(m.body[1], None)
            if fut is None:
                self._early[m.body[1]] = m.body[3]
            elif not fut.done():
                fut.set_result(m.body[3])

    async def _call(
        self, bus: MessageBus, member: str, sig: str, body: list[object], dbus: bool = False
    ) -> Message:
        reply = await bus.call(
            Message(
                destination="org.freedesktop.DBus" if dbus else "org.freedesktop.systemd1",
                path="/org/freedesktop/DBus" if dbus else "/org/freedesktop/systemd1",
                interface="org.freedesktop.DBus" if dbus else "org.freedesktop.systemd1.Manager",
                member=member,
                signature=sig,
                body=body,
            )
        )
        assert reply is not None
        return reply

    async def _job(self, bus: MessageBus, member: str, sig: str, body: list[object]) -> None:
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        reply = await self._call(bus, member, sig, body)
        if reply.message_type is not MessageType.METHOD_RETURN:
            self.results.append(f"{member}: {reply.error_name} {reply.body}")
            return
        # the reply goes out first, but its JobRemoved may be dispatched before we get here
        path = reply.body[0]
        if path in self._early:
            self.results.append(self._early.pop(path))
            return
        self._jobs[path] = fut
        self.results.append(await asyncio.wait_for(fut, 30))


async def manager_call(address: str, member: str) -> Message:
    bus = await MessageBus(bus_address=address).connect()
    try:
        reply = await bus.call(
            Message(destination="org.freedesktop.systemd1", path="/org/freedesktop/systemd1",
                    interface="org.freedesktop.systemd1.Manager", member=member)
        )  # fmt: skip
        assert reply is not None
        return reply
    finally:
        bus.disconnect()
        await bus.wait_for_disconnect()


async def until_serving(address: str) -> None:
    """Until the daemon owns its name and answers (no clock: pytest's timeout ends a hang)."""
    while (await manager_call(address, "ListUnits")).message_type is not MessageType.METHOD_RETURN:
        await asyncio.sleep(0.05)


async def until_no_scope(address: str) -> None:
    """Until the daemon lists no scope: every stopped one collected, its cgroup removed."""
    while any(u[0].endswith(".scope") for u in (await manager_call(address, "ListUnits")).body[0]):
        await asyncio.sleep(0.05)


async def run_load(address: str, cycles: int) -> list[str]:
    workers = [Worker(i, address) for i in range(CLIENTS)]
    try:
        await asyncio.gather(*(w.run(cycles // CLIENTS) for w in workers))
    finally:
        for w in workers:
            w.proc.kill()
            w.proc.wait()
    return [r for w in workers for r in w.results]


async def test_concurrent_cycles_all_done_nothing_left_memory_back(
    private_bus: PrivateBus, tmp_path: Path
) -> None:
    daemon = subprocess.Popen(
        [sys.executable, "-m", "shim", "serve", "--address", private_bus.address, "--backend",
         "fake", "--cgroup-root", str(tmp_path / "cg"), "--state-dir", str(tmp_path / "state")],
        cwd=ROOT,
    )  # fmt: skip
    try:
        await until_serving(private_bus.address)
        warm = await run_load(private_bus.address, CLIENTS * 2)  # first-use allocations
        assert set(warm) == {"done"}
        before = rss_kib(daemon.pid)
        results = await run_load(private_bus.address, CYCLES)
        await until_no_scope(private_bus.address)
        after = rss_kib(daemon.pid)
        assert len(results) == 2 * (CYCLES // CLIENTS) * CLIENTS
        assert set(results) == {"done"}, [r for r in results if r != "done"][:5]
        left = list((tmp_path / "cg").rglob("*.scope"))
        assert left == []
        assert after <= before * 1.10, f"RSS {before} KiB before, {after} KiB after"
        print(f"load: {len(results)} jobs done; RSS {before} -> {after} KiB")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(10)
