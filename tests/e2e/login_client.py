"""Opens a logind session the way pam_systemd does (CreateSession with this process as the
leader), prints it as JSON, holds it until a line arrives on stdin, then releases it.

Runs inside tests/e2e/sandbox.sh with the project's venv Python (dbus-fast).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

LOGIN1 = ("org.freedesktop.login1", "/org/freedesktop/login1", "org.freedesktop.login1.Manager")


async def main() -> int:
    uid = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    bus = await MessageBus(
        bus_address=os.environ["DBUS_SYSTEM_BUS_ADDRESS"], negotiate_unix_fd=True
    ).connect()
    dest, path, iface = LOGIN1
    reply = await bus.call(
        Message(
            destination=dest,
            path=path,
            interface=iface,
            member="CreateSession",
            signature="uusssssussbssa(sv)",
            body=[
                uid,
                os.getpid(),
                "scopeshim-e2e",
                "tty",
                "user",
                "",
                "",
                0,
                "",
                "",
                False,
                "",
                "",
                [],
            ],
        )
    )
    assert reply is not None
    if reply.message_type is MessageType.ERROR:
        print(
            json.dumps(
                {
                    "event": "created",
                    "ok": False,
                    "error": reply.error_name,
                    "message": reply.body[0] if reply.body else "",
                }
            ),
            flush=True,
        )
        return 1
    session_id, object_path, runtime_path, fd_index, *_ = reply.body
    fifo = reply.unix_fds[fd_index] if reply.unix_fds else -1
    with open("/proc/self/cgroup") as f:
        cgroup = next(line.strip() for line in f if line.startswith("0::"))
    print(
        json.dumps(
            {
                "event": "created",
                "ok": True,
                "session": session_id,
                "path": object_path,
                "runtime_path": runtime_path,
                "pid": os.getpid(),
                "cgroup": cgroup,
            }
        ),
        flush=True,
    )
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    release = await bus.call(
        Message(
            destination=dest,
            path=path,
            interface=iface,
            member="ReleaseSession",
            signature="s",
            body=[session_id],
        )
    )
    if fifo >= 0:
        os.close(fifo)
    ok = release is not None and release.message_type is MessageType.METHOD_RETURN
    print(json.dumps({"event": "released", "ok": ok}), flush=True)
    bus.disconnect()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
