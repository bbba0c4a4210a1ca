"""Inside the sandbox: N consecutive logind sessions opened and closed on scopeshim (the real
cgroup2 backend, an unmodified logind, UserStopDelaySec=0, so that every cycle also starts and
stops the user: runtime directory mounted and unmounted, user slice made and removed).

Each cycle: a leader process (sh) is made the leader of a new session (CreateSession, as root,
naming its PID, as pam_systemd names its own), starts a child inside the session, then the
session is released (ReleaseSession, FIFO closed) and both processes end; the cycle is over
when logind has dropped the session and the user and scopeshim the scope and the slice.
Afterwards nothing may be left: no session or user on login1, no session or user unit on
systemd1 (ListUnits), no cgroup below user.slice, no mount under /run/user, no process.

Usage: scenario_cycles.py [--logind PATH] [--user root|unprivileged] [--cycles N]
Prints {"step": "setup"} and {"step": "cycles", "ok": ..., ...} as JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from dbus_fast import Message, MessageType

from tests.e2e.inside import connect, report, wait_name
from tests.e2e.logind_kit import (
    INSTALLED_LOGIND,
    LOGIN1,
    LOGIN1_MANAGER,
    LOGIN1_PATH,
    ROOT_USER,
    SYSTEMD1,
    Daemon,
    Signals,
    cgroup_of,
    private_user,
    runtime_dir,
)
from tests.e2e.scenario_logind import Run

# the leader waits for its session's id, starts a child inside the session, releases the
# session from inside it (ReleaseSession answers only callers in a session: pam_systemd's
# close_session runs in the login process), then lives on as `sleep` until it is ended
LEADER = (
    "read sid; sleep 3600 & echo $!; busctl --system call org.freedesktop.login1"
    " /org/freedesktop/login1 org.freedesktop.login1.Manager ReleaseSession s $sid"
    " && echo released || echo failed; exec sleep 3600"
)


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


async def cycle(r: Run, n: int) -> str | None:
    """One session's life; None when all went as it should, else what did not."""
    uid = r.uid
    mark = r.signals.mark()
    leader = subprocess.Popen(
        ["sh", "-c", LEADER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    fifo = -1
    try:
        reply = await r.bus.call(
            Message(
                destination=LOGIN1,
                path=LOGIN1_PATH,
                interface=LOGIN1_MANAGER,
                member="CreateSession",
                signature="uusssssussbssa(sv)",
                body=[uid, leader.pid, "scopeshim-e2e", "tty", "user", "", "", 0, "", "",
                      False, "", "", []],
            )
        )  # fmt: skip
        assert reply is not None
        if reply.message_type is MessageType.ERROR:
            return f"cycle {n}: CreateSession: {reply.error_name}: {reply.body}"
        sid, _path, runtime, fd_index = reply.body[:4]
        fifo = reply.unix_fds[fd_index] if reply.unix_fds else -1
        scope_cgroup = f"/user.slice/user-{uid}.slice/session-{sid}.scope"
        assert leader.stdin is not None and leader.stdout is not None
        if runtime != f"/run/user/{uid}" or runtime_dir(uid).get("mount") != "tmpfs":
            return f"cycle {n}: runtime dir {runtime}: {runtime_dir(uid)}"
        leader.stdin.write(f"{sid}\n")
        leader.stdin.flush()
        child = int(await asyncio.to_thread(leader.stdout.readline))
        where = {pid: cgroup_of(pid) for pid in (leader.pid, child)}
        if set(where.values()) != {scope_cgroup}:
            return f"cycle {n}: processes not in {scope_cgroup}: {where}"
        released = (await asyncio.to_thread(leader.stdout.readline)).strip()
        if released != "released":
            return f"cycle {n}: ReleaseSession from inside the session: {released}"
        os.close(fifo)
        fifo = -1
        for pid in (child, leader.pid):
            os.kill(pid, signal.SIGTERM)
        await asyncio.to_thread(leader.wait, 10)
        for member, arg in (
            ("UnitRemoved", f"session-{sid}.scope"),
            ("SessionRemoved", sid),
            ("UserRemoved", uid),
            ("UnitRemoved", f"user-{uid}.slice"),
        ):
            if await r.signals.wait(mark, member, arg, timeout=15) is None:
                return f"cycle {n}: no {member} {arg} in 15 s"
        return None
    finally:
        if fifo >= 0:
            os.close(fifo)
        if leader.poll() is None:
            leader.kill()
            leader.wait()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logind", default=INSTALLED_LOGIND)
    parser.add_argument("--user", choices=("root", "unprivileged"), default="unprivileged")
    parser.add_argument("--cycles", type=int, default=200)
    args = parser.parse_args()
    run = Path(os.environ["SCOPESHIM_E2E_RUN"])
    user = ROOT_USER if args.user == "root" else private_user(run / "etc")
    r = Run(args, user, run)
    report(step="setup", logind=r.version, uid=user.uid, user=user.name, cycles=args.cycles)
    r.daemon = Daemon()
    r.bus = await connect()
    try:
        await wait_name(r.bus, SYSTEMD1)
        r.signals = await Signals.attach(r.bus)
        await r.start_logind()
        first_mark = r.signals.mark()
        # the daemon's footprint once it has served one session (imports, caches warmed)
        await cycle(r, 0)
        rss_before, fds_before = rss_kb(r.daemon.pid), open_fds(r.daemon.pid)
        failures: list[str] = []
        durations: list[float] = []
        start = time.monotonic()
        for n in range(1, args.cycles + 1):
            t = time.monotonic()
            failure = await cycle(r, n)
            durations.append(time.monotonic() - t)
            if failure is not None:
                failures.append(failure)
                await r.force_clean()
        seconds = time.monotonic() - start
        left = await r.settle(10)
        jobs = r.signals.job_ids(first_mark)
        opened = len(r.signals.since(first_mark, "SessionNew"))
        result: dict[str, Any] = {
            "cycles": args.cycles,
            "failed": len(failures),
            "failures": failures[:10],
            "sessions_opened": opened,
            "seconds": round(seconds, 2),
            "cycle_ms": {
                "median": round(statistics.median(durations) * 1000, 1),
                "max": round(max(durations) * 1000, 1),
            },
            "left": left,
            "job_ids_increase": jobs == sorted(set(jobs)),
            "jobs": len(jobs),
            "daemon_rss_kb": [rss_before, rss_kb(r.daemon.pid)],
            "daemon_fds": [fds_before, open_fds(r.daemon.pid)],
        }
        result["ok"] = not failures and not left and result["job_ids_increase"]
        report(step="cycles", **result)
    finally:
        if r.logind is not None:
            r.logind.terminate()
            r.logind.wait(10)
        r.daemon.stop()
        r.bus.disconnect()


if __name__ == "__main__":
    asyncio.run(main())
