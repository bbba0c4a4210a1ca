"""User-scope creation latency on the user manager: StartTransientUnit of a scope until its
JobRemoved, through the private socket ($XDG_RUNTIME_DIR/systemd/private, peer to peer, as
flatpak and systemd-run --user call it) and through the session bus (the dbus-daemon
--session the manager starts), p50/p99; and the manager's start (`serve --user` until
READY=1, the fork-free command form). Fake backend: the engine and bus paths, not cgroupfs.

Usage: bench/user_scopes.py [--scopes 300] [--json FILE]

Not part of `make bench`'s driver (a separate peer); nothing here is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.user_memory import start_exec  # noqa: E402
from tests.bus.peer_client import PeerClient  # noqa: E402

SYSTEMD1 = "org.freedesktop.systemd1"
PATH = "/org/freedesktop/systemd1"
IFACE = "org.freedesktop.systemd1.Manager"
STU = "ssa(sv)a(sa(sv))"


def start_manager(runtime: Path) -> tuple[subprocess.Popen[str], float]:
    """bench/user_memory.py's user manager, and how long it took to say READY=1 (ms)."""
    t0 = time.perf_counter()
    proc = start_exec(runtime)
    return proc, (time.perf_counter() - t0) * 1000


def summary(ms: list[float]) -> dict[str, float]:
    q = statistics.quantiles(ms, n=100)
    return {"n": len(ms), "p50_ms": round(q[49], 3), "p99_ms": round(q[98], 3),
            "mean_ms": round(statistics.fmean(ms), 3)}  # fmt: skip


def body(name: str, pid: int) -> list[Any]:
    return [name, "fail", [["PIDs", Variant("au", [pid])]], []]


class Peer(PeerClient):
    """The tests' peer-to-peer client, woken on every read (its wait_signal polls every
    10 ms, which would be measured here)."""

    arrived: asyncio.Event

    def _read(self) -> None:
        super()._read()
        self.arrived.set()


async def via_private(socket_path: str, pid: int, n: int) -> list[float]:
    peer = await Peer.connect(socket_path)
    assert isinstance(peer, Peer)
    peer.arrived = asyncio.Event()
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        seen = len(peer.signals)
        (job,) = await peer.ok("StartTransientUnit", STU, body(f"bench-p{i}.scope", pid))
        while not any(m.member == "JobRemoved" and m.body[1] == job for m in peer.signals[seen:]):
            peer.arrived.clear()
            await asyncio.wait_for(peer.arrived.wait(), 10)
        out.append((time.perf_counter() - t0) * 1000)
    peer.close()
    return out


async def via_session_bus(address: str, pid: int, n: int) -> list[float]:
    bus = await MessageBus(bus_address=address).connect()
    finished: set[str] = set()
    waiting: dict[str, asyncio.Future[None]] = {}

    def on(m: Message) -> None:
        if m.member == "JobRemoved":
            finished.add(m.body[1])
            if m.body[1] in waiting and not waiting[m.body[1]].done():
                waiting[m.body[1]].set_result(None)

    bus.add_message_handler(on)
    match = f"type='signal',sender='{SYSTEMD1}',member='JobRemoved'"
    await bus.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                           interface="org.freedesktop.DBus", member="AddMatch", signature="s",
                           body=[match]))  # fmt: skip
    out = []
    loop = asyncio.get_running_loop()
    for i in range(n):
        t0 = time.perf_counter()
        reply = await bus.call(Message(destination=SYSTEMD1, path=PATH, interface=IFACE,
                                       member="StartTransientUnit", signature=STU,
                                       body=body(f"bench-b{i}.scope", pid)))  # fmt: skip
        assert reply is not None and reply.message_type is MessageType.METHOD_RETURN, reply
        job = reply.body[0]
        if job not in finished:  # JobRemoved may come before the reply is read
            waiting[job] = loop.create_future()
            await asyncio.wait_for(waiting[job], 10)
        out.append((time.perf_counter() - t0) * 1000)
    bus.disconnect()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scopes", type=int, default=300)
    parser.add_argument("--json")
    args = parser.parse_args()
    if shutil.which("dbus-daemon") is None:
        raise SystemExit("dbus-daemon is not installed")
    runtime = Path(tempfile.mkdtemp(prefix="scopeshim-uscope-"))
    sleeper = subprocess.Popen(["sleep", "3600"])
    manager = None
    try:
        manager, start_ms = start_manager(runtime)
        private = asyncio.run(via_private(str(runtime / "systemd/private"), sleeper.pid,
                                          args.scopes))  # fmt: skip
        session = asyncio.run(via_session_bus(f"unix:path={runtime}/bus", sleeper.pid,
                                              args.scopes))  # fmt: skip
        result = {"manager_start_ms": round(start_ms, 1), "private_socket": summary(private),
                  "session_bus": summary(session)}  # fmt: skip
    finally:
        sleeper.kill()
        sleeper.wait()
        if manager is not None:
            manager.terminate()
            manager.wait(10)
        shutil.rmtree(runtime, ignore_errors=True)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
