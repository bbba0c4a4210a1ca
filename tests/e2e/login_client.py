"""A login the way pam_systemd makes one: CreateSession with this process as the leader,
then processes of the user inside the session; steered through stdin.

Usage: login_client.py UID [--gid GID] [--children]

It prints one JSON line per event: first {"event": "created", ...} with the session, its
runtime directory, the leader's cgroup and, with --children, the PIDs of the user's
processes it started inside the session (a `sleep`, and a `sh` with a `sleep` of its own:
child, grandchild), running as UID:GID, and what the fd in the reply is (/proc/self/fd's
link: the session FIFO up to 257; logind 258+ has no FIFO). Then it answers each line of stdin:

  release        ReleaseSession (what pam_systemd's close_session does), then close the FIFO
  kill-children  SIGKILL the processes it started
  exit           exit 0 (the processes it started keep running)

End of stdin is "exit". SIGTERM and SIGHUP end it (the default actions), as they end a login
process when logind stops the session's scope.

Runs inside tests/e2e/sandbox.sh with the project's venv Python (dbus-fast).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

LOGIN1 = ("org.freedesktop.login1", "/org/freedesktop/login1", "org.freedesktop.login1.Manager")


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def start_children(uid: int, gid: int) -> list[int]:
    """The user's processes: `sleep`, and `sh` with a `sleep` of its own (PIDs in that order:
    child, child, grandchild). They are never waited for."""
    drop = [] if uid == 0 else ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
    devnull = subprocess.DEVNULL
    sleeper = subprocess.Popen([*drop, "sleep", "3600"], stdin=devnull, stdout=devnull)
    shell = subprocess.Popen(
        [*drop, "sh", "-c", "sleep 3600 & echo $!; wait"],
        stdin=devnull,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert shell.stdout is not None
    grandchild = int(shell.stdout.readline())
    shell.stdout.close()
    for pid in (sleeper.pid, grandchild):  # until they are `sleep` (exec'd), a second at most
        for _ in range(100):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f.read().startswith(b"sleep"):
                        break
            except OSError:
                break
            time.sleep(0.01)
    return [sleeper.pid, shell.pid, grandchild]


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("uid", type=int)
    parser.add_argument("--gid", type=int, default=None)
    parser.add_argument("--children", action="store_true")
    args = parser.parse_args()
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
            # uid, leader, service, type, class, desktop, seat, vtnr, tty, display, remote,
            # remote user, remote host, properties (pam_systemd's order)
            body=[args.uid, os.getpid(), "scopeshim-e2e", "tty", "user", "", "", 0, "", "",
                  False, "", "", []],
        )
    )  # fmt: skip
    assert reply is not None
    if reply.message_type is MessageType.ERROR:
        say(
            event="created",
            ok=False,
            error=reply.error_name,
            message=reply.body[0] if reply.body else "",
        )
        return 1
    session_id, object_path, runtime_path, fd_index, _uid, seat, vtnr, existing = reply.body
    fifo = reply.unix_fds[fd_index] if reply.unix_fds else -1
    with open("/proc/self/cgroup") as f:
        cgroup = next(line.strip()[3:] for line in f if line.startswith("0::"))
    children = start_children(args.uid, args.gid or 0) if args.children else []
    # from now on children that die are reaped by the kernel (set after they started: an
    # ignored SIGCHLD would be inherited through exec and break the shell's `wait`)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    say(
        event="created",
        ok=True,
        session=session_id,
        path=object_path,
        runtime_path=runtime_path,
        seat=seat,
        vtnr=vtnr,
        existing=existing,
        pid=os.getpid(),
        fifo=os.readlink(f"/proc/self/fd/{fifo}") if fifo >= 0 else None,
        cgroup=cgroup,
        children=children,
    )
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line in ("", "exit"):
            break
        if line == "release":
            answer = await bus.call(
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
                fifo = -1
            error = None
            if answer is None or answer.message_type is MessageType.ERROR:
                error = answer.error_name if answer is not None else "no answer"
            say(event="released", ok=error is None, error=error)
        elif line == "kill-children":
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            say(event="children-killed", pids=children)
        else:
            say(event="error", message=f"unknown command {line!r}")
    bus.disconnect()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
