"""A user manager's session bus: the one at /run/user/UID/bus if something serves it, else
Debian's `dbus-daemon --session` started there, in session.slice/dbus.service."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from dataclasses import dataclass

from backends.base import BackendError, CgroupBackend
from compat.unitname import cgroup_path
from shim.core import spawn

log = logging.getLogger(__name__)

# systemd.special(7): session.slice holds the services essential to the session, and
# dbus-user-session's dbus.service (the user bus) is one of them
SLICE = "session.slice"
UNIT = "dbus.service"
DESCRIPTION = "D-Bus User Message Bus"
START_TIMEOUT = 30.0


class SessionBusError(Exception):
    """No session bus could be reached or started."""


@dataclass(frozen=True, slots=True)
class Started:
    """A dbus-daemon this manager started, and where it runs."""

    process: asyncio.subprocess.Process
    cgroup: str
    address: str


def socket_of(address: str) -> str | None:
    """The socket path of a `unix:path=...` address (the only kind a user bus has here)."""
    for part in address.split(";"):
        kind, _, rest = part.partition(":")
        if kind != "unix":
            continue
        for kv in rest.split(","):
            key, _, value = kv.partition("=")
            if key == "path":
                return value
    return None


async def reachable(path: str) -> bool:
    """Whether something accepts connections on the socket."""
    try:
        _reader, writer = await asyncio.open_unix_connection(path)
    except OSError:
        return False
    writer.close()
    return True


async def ensure(address: str, backend: CgroupBackend, environment: list[str]) -> Started | None:
    """Make sure ADDRESS is served: None if something already does, else the dbus-daemon
    started for it (listening when this returns)."""
    path = socket_of(address)
    if path is None or await reachable(path):
        return None
    daemon = shutil.which("dbus-daemon")
    if daemon is None:
        raise SessionBusError(
            f"nothing serves {address} and dbus-daemon is not installed (package dbus-daemon)"
        )
    if os.path.exists(path):
        os.unlink(path)  # a stale socket nobody listens on
    cgroup = cgroup_path(UNIT, SLICE)
    argv = (daemon, "--session", f"--address=unix:path={path}", "--nofork", "--nopidfile",
            "--print-address=1")  # fmt: skip
    env = dict(e.split("=", 1) for e in environment)
    env["DBUS_SESSION_BUS_ADDRESS"] = f"unix:path={path}"
    try:
        backend.create(cgroup)
        proc = await spawn.start(argv, backend, cgroup, env=env)
    except (spawn.SpawnError, BackendError) as e:
        raise SessionBusError(f"cannot start the session bus: {e}") from None
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)
    except TimeoutError:
        line = b""
    if not line.startswith(b"unix:"):
        if proc.returncode is None:
            proc.kill()
        rest = await proc.stdout.read()
        await proc.wait()
        reason = (line + rest).decode(errors="replace").strip() or "no address printed"
        raise SessionBusError(f"dbus-daemon --session failed: {reason}")
    log.info("started the session bus on %s (PID %d)", path, proc.pid)
    return Started(proc, cgroup, f"unix:path={path}")


async def follow(started: Started) -> None:
    """Log what the session bus writes (its warnings), until it exits."""
    assert started.process.stdout is not None
    async for raw in started.process.stdout:
        log.info("%s: %s", UNIT, raw.decode(errors="replace").rstrip("\n"))
    status = await started.process.wait()
    log.info("%s: exited with status %d", UNIT, status)
