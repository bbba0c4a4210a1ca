"""Inside the sandbox: an unmodified systemd-logind (the installed 252, or 254/257 that
tests/e2e/get-logind.sh fetched) runs a whole session lifecycle on scopeshim with the real
cgroup2 backend: CreateSession as pam_systemd calls it, the session and its user as logind and
systemd1 show them, ReleaseSession, the leader's exit, and logind dropping session and user.

Usage: scenario_logind.py [--logind PATH] [--uid UID]; prints one JSON object per step, the
last one ("logs") with what logind and the daemon complained about.

The helpers here (logind start, signal log, login1 and systemd1 reads, log excerpts) are
shared with scenario_pam.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from compat.buspath import unit_path
from tests.e2e.inside import CGROOT, call, connect, report, start_scopeshim, stop, wait_name

INSTALLED_LOGIND = "/lib/systemd/systemd-logind"
LOGIN1 = "org.freedesktop.login1"
SYSTEMD1 = "org.freedesktop.systemd1"
# logind.conf(5): no VTs, no key handling, no idle action on a test machine; users are
# stopped as soon as their last session is gone
LOGIND_CONF = """[Login]
NAutoVTs=0
ReserveVT=0
KillUserProcesses=no
HandlePowerKey=ignore
HandleSuspendKey=ignore
HandleHibernateKey=ignore
HandleLidSwitch=ignore
IdleAction=ignore
UserStopDelaySec=0
"""


def logind_version(path: str) -> str:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    return (out.stdout.splitlines() or [out.stderr.strip()])[0]


def start_logind(path: str, run: Path) -> subprocess.Popen[bytes]:
    Path("/run/systemd/logind.conf.d").mkdir(parents=True, exist_ok=True)
    Path("/run/systemd/logind.conf.d/e2e.conf").write_text(LOGIND_CONF)
    with open(run / "logind.log", "wb") as log:
        return subprocess.Popen(
            [path],
            stdout=log,
            stderr=log,
            env={
                **os.environ,
                "SYSTEMD_LOG_LEVEL": "debug",
                "SYSTEMD_LOG_TARGET": "console",
                "SYSTEMD_LOG_COLOR": "0",
            },
        )


class Signals:
    """Every signal of systemd1 and login1 from now on, as (member, first argument)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    @classmethod
    async def attach(cls, bus: MessageBus) -> Signals:
        self = cls()

        def feed(m: Message) -> None:
            if m.message_type is MessageType.SIGNAL and m.member in (
                "UnitNew",
                "UnitRemoved",
                "JobNew",
                "JobRemoved",
                "SessionNew",
                "SessionRemoved",
                "UserNew",
                "UserRemoved",
            ):
                # JobRemoved(u o s s): the unit name is the interesting argument
                self.seen.append((m.member, m.body[2] if m.member == "JobRemoved" else m.body[0]))

        bus.add_message_handler(feed)
        for sender in (SYSTEMD1, LOGIN1):
            await call(
                bus,
                "AddMatch",
                "s",
                [f"type='signal',sender='{sender}'"],
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                destination="org.freedesktop.DBus",
            )
        return self

    async def wait(self, member: str, first: Any, timeout: float = 30) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (member, first) not in self.seen:
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True


def plain(value: Any) -> Any:
    """dbus-fast values as JSON-friendly Python values."""
    if hasattr(value, "value") and hasattr(value, "signature"):
        return plain(value.value)
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


async def get_all(
    bus: MessageBus, destination: str, path: str, interface: str, names: tuple[str, ...]
) -> dict[str, Any]:
    """These properties of one object, or {"error": ...} when the object does not answer."""
    reply = await bus.call(
        Message(
            destination=destination,
            path=path,
            interface="org.freedesktop.DBus.Properties",
            member="GetAll",
            signature="s",
            body=[interface],
        )
    )
    assert reply is not None
    if reply.message_type is MessageType.ERROR:
        return {"error": reply.error_name, "message": reply.body[0] if reply.body else ""}
    return {k: plain(v) for k, v in reply.body[0].items() if k in names}


SESSION_PROPS = ("Id", "Name", "User", "Scope", "State", "Class", "Type", "Leader", "Active")
USER_PROPS = ("UID", "Name", "State", "RuntimePath", "Slice", "Service", "Sessions")


async def login1_session(bus: MessageBus, session_id: str) -> dict[str, Any]:
    path = f"/org/freedesktop/login1/session/{session_id}"
    return await get_all(bus, LOGIN1, path, "org.freedesktop.login1.Session", SESSION_PROPS)


async def login1_user(bus: MessageBus, uid: int) -> dict[str, Any]:
    path = f"/org/freedesktop/login1/user/_{uid}"
    return await get_all(bus, LOGIN1, path, "org.freedesktop.login1.User", USER_PROPS)


async def unit_state(bus: MessageBus, unit: str) -> dict[str, Any]:
    return await get_all(
        bus,
        SYSTEMD1,
        unit_path(unit),
        "org.freedesktop.systemd1.Unit",
        ("LoadState", "ActiveState", "SubState"),
    )


def runtime_dir(uid: int) -> dict[str, Any]:
    path = Path(f"/run/user/{uid}")
    if not path.is_dir():
        return {"exists": False}
    st = path.stat()
    return {"exists": True, "owner": st.st_uid, "mount": os.path.ismount(path)}


def cgroup_dir(relative: str) -> dict[str, Any]:
    path = CGROOT / relative.lstrip("/")
    if not path.is_dir():
        return {"exists": False}
    procs = (path / "cgroup.procs").read_text().split()
    return {"exists": True, "procs": [int(p) for p in procs]}


_CALL = re.compile(
    r"Sent message type=method_call .*destination=(\S+) path=(\S+) interface=(\S+) "
    r"member=(\S+) cookie=(\d+)"
)
_ERROR = re.compile(
    r"Got message type=error .*reply_cookie=(\d+) .*error-name=(\S+) error-message=(.*)"
)
_SENT_ERROR = re.compile(r"Sent message type=error .*error-name=(\S+) error-message=(.*)")
_COMPLAINT = re.compile(r"(?i)\b(fail|error|refus|cannot|could not|unable|masked|not loaded)")


def log_excerpt(run: Path, limit: int = 40) -> dict[str, Any]:
    """What went wrong, from the logs: the systemd1 calls logind made that were answered
    with an error, the errors logind itself replied, logind's other complaints, and the
    daemon's warnings and errors."""
    calls: dict[str, str] = {}
    refused: list[str] = []
    replied: list[str] = []
    complaints: list[str] = []
    logind_log = run / "logind.log"
    lines = logind_log.read_text(errors="replace").splitlines() if logind_log.exists() else []
    for line in lines:
        if m := _CALL.search(line):
            dest, path, iface, member, cookie = m.groups()
            calls[cookie] = f"{dest} {path} {iface.rsplit('.', 1)[-1]}.{member}"
        elif m := _ERROR.search(line):
            cookie, name, text = m.groups()
            what = calls.get(cookie, "?")
            if name.endswith(".UnknownObject") and "/job/" in what:
                continue  # Job.State of a finished job: the normal answer
            refused.append(f"{what} -> {name}: {text}")
        elif m := _SENT_ERROR.search(line):
            replied.append(f"{m.group(1)}: {m.group(2)}")
        elif "message type=" not in line and _COMPLAINT.search(line):
            complaints.append(line)
    daemon_log = run / "scopeshim.log"
    daemon = [
        line
        for line in (
            daemon_log.read_text(errors="replace") if daemon_log.exists() else ""
        ).splitlines()
        if re.search(r" (WARNING|ERROR|CRITICAL) |Traceback|Error:", line)
    ]
    return {
        "refused_calls": refused[-limit:],
        "logind_replied_errors": replied[-limit:],
        "logind_complaints": complaints[-limit:],
        "daemon": daemon[-limit:],
        "logind_tail": lines[-15:],
    }


async def readline(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any] | None:
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout)
    except TimeoutError:
        return None
    return json.loads(line) if line.strip() else None


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logind", default=INSTALLED_LOGIND)
    parser.add_argument("--uid", type=int, default=0)
    args = parser.parse_args()
    uid: int = args.uid
    run = Path(os.environ["SCOPESHIM_E2E_RUN"])
    report(step="logind", version=logind_version(args.logind))
    daemon = start_scopeshim()
    bus = await connect()
    logind = client = None
    try:
        await wait_name(bus, SYSTEMD1)
        signals = await Signals.attach(bus)
        logind = start_logind(args.logind, run)
        await wait_name(bus, LOGIN1)
        client = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("login_client.py")), str(uid)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        created = await readline(client, 60) or {"ok": False, "error": "no answer in 60 s"}
        report(step="created", **created)
        if not created["ok"]:
            return
        session_id = created["session"]
        unit = f"session-{session_id}.scope"
        user_slice = f"user.slice/user-{uid}.slice"
        report(
            step="open",
            session=await login1_session(bus, session_id),
            user=await login1_user(bus, uid),
            scope=await unit_state(bus, unit),
            scope_cgroup=cgroup_dir(f"{user_slice}/{unit}"),
            runtime_dir=runtime_dir(uid),
        )

        assert client.stdin is not None
        client.stdin.write("\n")
        client.stdin.flush()
        released = await readline(client, 30) or {"ok": False, "error": "no answer in 30 s"}
        client_exit = await asyncio.to_thread(client.wait, 10)
        report(
            step="released",
            ok=released["ok"],
            client_exit=client_exit,
            scope_removed=await signals.wait("UnitRemoved", unit),
            session_removed=await signals.wait("SessionRemoved", session_id),
            user_removed=await signals.wait("UserRemoved", uid),
            slice_removed=await signals.wait("UnitRemoved", f"user-{uid}.slice", 10),
            scope_cgroup=cgroup_dir(f"{user_slice}/{unit}"),
            slice_cgroup=cgroup_dir(user_slice),
            runtime_dir=runtime_dir(uid),
            session=await login1_session(bus, session_id),
        )
    finally:
        if client is not None and client.poll() is None:
            client.kill()
            client.wait()
        bus.disconnect()
        if logind is not None:
            report(step="logind-exit", exit=stop(logind))
        report(step="stopped", exit=stop(daemon))
        report(step="logs", **log_excerpt(run))


if __name__ == "__main__":
    asyncio.run(main())
