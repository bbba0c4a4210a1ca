"""Helpers for scenarios that run inside tests/e2e/sandbox.sh (root, private bus and cgroupfs)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

ROOT = Path(__file__).resolve().parents[2]
# the sandbox's cgroup2 tree: /sys/fs/cgroup/unified (hybrid view) or /sys/fs/cgroup (--unified)
CGROOT = Path(os.environ.get("SCOPESHIM_E2E_CGROOT", "/sys/fs/cgroup/unified"))
ADDRESS = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", "")


def report(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def start_scopeshim(backend: str = "cgroup2") -> subprocess.Popen[bytes]:
    """scopeshim on the sandbox's bus with the e2e configuration; its log is appended to
    RUN/scopeshim.log (a restart after a crash writes on where the first run stopped)."""
    log = open(Path(os.environ["SCOPESHIM_E2E_RUN"]) / "scopeshim.log", "ab")  # noqa: SIM115
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shim",
            "serve",
            "--system",
            "--backend",
            backend,
            "--cgroup-root",
            str(CGROOT),
            "--state-dir",
            "/run/scopeshim",
            "--log-level",
            "debug",
            "--config",
            str(Path(__file__).with_name("scopeshim-e2e.toml")),
            # root's systemctl/systemd-run 257+ talk only there (the sandbox's own /run)
            "--private-socket",
            "/run/systemd/private",
        ],
        cwd=ROOT,
        stdout=log,
        stderr=log,
    )


def stop(proc: subprocess.Popen[Any], timeout: float = 10) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


async def connect() -> MessageBus:
    return await MessageBus(bus_address=ADDRESS, negotiate_unix_fd=True).connect()


async def wait_name(bus: MessageBus, name: str, timeout: float = 15) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        reply = await bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="NameHasOwner",
                signature="s",
                body=[name],
            )
        )
        if reply is not None and reply.body and reply.body[0]:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{name} did not appear on the bus")


async def call(
    bus: MessageBus,
    member: str,
    signature: str = "",
    body: list[Any] | None = None,
    *,
    path: str = "/org/freedesktop/systemd1",
    interface: str = "org.freedesktop.systemd1.Manager",
    destination: str = "org.freedesktop.systemd1",
) -> Message:
    reply = await bus.call(
        Message(
            destination=destination,
            path=path,
            interface=interface,
            member=member,
            signature=signature,
            body=body or [],
        )
    )
    assert reply is not None
    if reply.message_type is MessageType.ERROR:
        raise RuntimeError(f"{member}: {reply.error_name}: {reply.body}")
    return reply


def cgroup_of(pid: int) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        return next(line.strip()[3:] for line in f if line.startswith("0::"))


async def subscribe(bus: MessageBus, members: tuple[str, ...]) -> asyncio.Queue[Message]:
    """A queue of systemd1's signals with these member names, from now on."""
    queue: asyncio.Queue[Message] = asyncio.Queue()
    bus.add_message_handler(lambda m: queue.put_nowait(m) if m.member in members else None)
    await call(
        bus,
        "AddMatch",
        "s",
        ["type='signal',sender='org.freedesktop.systemd1'"],
        path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus",
        destination="org.freedesktop.DBus",
    )
    return queue
