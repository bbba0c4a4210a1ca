"""Inside tests/e2e/sandbox.sh: what the logind scenarios share. An unmodified systemd-logind
started and restarted with logind.conf drop-ins, a test user that exists only in the sandbox,
a log of systemd1's and login1's signals, reads of both services, loginctl of the logind
version under test, what logind's and the daemon's logs say went wrong, and an inventory of
what a session can leave behind (sessions, users, units, cgroups, mounts, processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from compat.buspath import unit_name_from_path, unit_path
from tests.e2e.inside import CGROOT, call, start_scopeshim, stop

INSTALLED_LOGIND = "/lib/systemd/systemd-logind"
LOGIN1 = "org.freedesktop.login1"
LOGIN1_PATH = "/org/freedesktop/login1"
LOGIN1_MANAGER = "org.freedesktop.login1.Manager"
SYSTEMD1 = "org.freedesktop.systemd1"
USER = "scopeshim-e2e"  # the unprivileged test user (only in the sandbox's /etc/passwd copy)
FIRST_UID = 4711

# logind.conf(5): no VTs, no key handling, no idle action on a test machine; users are
# stopped as soon as their last session is gone. Scenarios override single keys.
LOGIND_CONF = {
    "NAutoVTs": "0",
    "ReserveVT": "0",
    "KillUserProcesses": "no",
    "HandlePowerKey": "ignore",
    "HandleSuspendKey": "ignore",
    "HandleHibernateKey": "ignore",
    "HandleLidSwitch": "ignore",
    "IdleAction": "ignore",
    "UserStopDelaySec": "0",
}
LOGIND_DROPIN = Path("/run/systemd/logind.conf.d/e2e.conf")


def logind_version(path: str) -> str:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    return (out.stdout.splitlines() or [out.stderr.strip()])[0]


def major(version_line: str) -> int:
    """ "systemd 254 (254.26-1~bpo12+1)" -> 254."""
    return int(version_line.split()[1])


class FdStore:
    """What a service manager gives logind: $NOTIFY_SOCKET, whose FDSTORE=1 messages hand it
    file descriptors to keep (sd_pid_notify_with_fds(3)), given back at the next start as
    $LISTEN_FDS/$LISTEN_FDNAMES (sd_listen_fds(3)), as systemd does for systemd-logind.service
    (FileDescriptorStoreMax=). logind 256+ keeps each session leader's pidfd there and, without
    it, drops the sessions when it restarts."""

    def __init__(self, path: str = "/run/scopeshim-e2e-notify") -> None:
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind(path)
        self.fds: list[tuple[str, int]] = []  # (name, fd) in the order they came
        self.messages: list[str] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                text, fds, _flags, _addr = socket.recv_fds(self.sock, 65536, 64)
            except OSError:
                return
            fields = dict(
                line.split("=", 1) for line in text.decode(errors="replace").splitlines()
                if "=" in line
            )  # fmt: skip
            name = fields.get("FDNAME", "stored")
            with self._lock:
                self.messages.append(text.decode(errors="replace"))
                if fields.get("FDSTOREREMOVE") == "1":
                    for n, fd in [x for x in self.fds if x[0] == name]:
                        os.close(fd)
                        self.fds.remove((n, fd))
                if fields.get("FDSTORE") == "1":
                    self.fds.extend((name, fd) for fd in fds)
                    fds = []
            for fd in fds:
                os.close(fd)

    def stored(self) -> list[str]:
        with self._lock:
            return [name for name, _fd in self.fds]

    def launcher(self, command: list[str]) -> tuple[list[str], dict[str, str], tuple[int, ...]]:
        """argv, environment and pass_fds that start COMMAND with the stored fds as 3, 4, ...
        and $LISTEN_PID its own PID (a Python exec shim: the PID is known only after fork)."""
        with self._lock:
            fds = [fd for _name, fd in self.fds]
            names = [name for name, _fd in self.fds]
        shim = (
            "import fcntl,os,sys\n"
            "fds=[int(x) for x in os.environ.pop('E2E_FDS').split(',') if x]\n"
            "high=[fcntl.fcntl(fd,fcntl.F_DUPFD,1000) for fd in fds]\n"
            "for i,fd in enumerate(high): os.dup2(fd,3+i)\n"
            "for fd in set(high+fds)-set(range(3,3+len(fds))): os.close(fd)\n"
            "if fds: os.environ.update(LISTEN_PID=str(os.getpid()),LISTEN_FDS=str(len(fds)))\n"
            "else: os.environ.pop('LISTEN_FDNAMES',None)\n"
            "os.execvp(sys.argv[1],sys.argv[1:])\n"
        )
        env = {
            "NOTIFY_SOCKET": self.path,
            "E2E_FDS": ",".join(map(str, fds)),
            "LISTEN_FDNAMES": ":".join(names),
        }
        return [sys.executable, "-S", "-c", shim, *command], env, tuple(fds)


def start_logind(
    path: str, run: Path, fdstore: FdStore | None = None, **conf: str
) -> subprocess.Popen[bytes]:
    """logind with the test drop-in (LOGIND_CONF updated with CONF) in /run/systemd (the
    sandbox's private /run), debug logging appended to RUN/logind.log; with FDSTORE, what a
    service manager gives it (see FdStore)."""
    LOGIND_DROPIN.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{k}={v}" for k, v in {**LOGIND_CONF, **conf}.items()]
    LOGIND_DROPIN.write_text("[Login]\n" + "\n".join(lines) + "\n")
    env = {
        **os.environ,
        "SYSTEMD_LOG_LEVEL": "debug",
        "SYSTEMD_LOG_TARGET": "console",
        "SYSTEMD_LOG_COLOR": "0",
    }
    argv, fds = [path], ()
    if fdstore is not None:
        argv, extra, fds = fdstore.launcher(argv)
        env.update(extra)
    with open(run / "logind.log", "ab") as log:
        return subprocess.Popen(argv, stdout=log, stderr=log, env=env, pass_fds=fds)


def version_tool(logind: str, tool: str) -> list[str]:
    """The command that runs TOOL (loginctl, busctl) of the same systemd build as LOGIND: the
    installed one for the installed logind, else a wrapper next to get-logind.sh's runner
    (same loader and library path, the tool's binary instead of logind's)."""
    if logind == INSTALLED_LOGIND:
        return [tool]
    runner = Path(logind)
    root = runner.parent / "root"
    binary = next((p for d in ("usr/bin", "bin") if (p := root / d / tool).is_file()), None)
    if binary is None:
        return [tool]
    script = runner.read_text()
    found = re.search(r'"\$root/[^"]*systemd-logind"', script)
    if found is None:
        return [tool]
    rel = binary.relative_to(root)
    return ["sh", "-c", script.replace(found.group(0), f'"$root/{rel}"'), str(runner)]


def through_loader(logind: str, program: str) -> list[str]:
    """The command that runs PROGRAM (a host binary, e.g. pamtester) on the libraries of
    LOGIND's build: the runner's loader and library path (its own libpam, libc), so that
    the build's pam_systemd.so can be loaded into it; plain PROGRAM for the installed one."""
    if logind == INSTALLED_LOGIND:
        return [program]
    runner = Path(logind)
    script = runner.read_text()
    found = re.search(r'"\$root/[^"]*systemd-logind"', script)
    if found is None:
        return [program]
    return ["sh", "-c", script.replace(found.group(0), f'"{program}"'), str(runner)]


def own_pam_systemd(logind: str) -> str:
    """pam_systemd.so of LOGIND's build (get-logind.sh unpacked it); the installed one's
    name (found by libpam) for the installed logind."""
    if logind == INSTALLED_LOGIND:
        return "pam_systemd.so"
    root = Path(logind).parent / "root"
    found = sorted(root.glob("**/security/pam_systemd.so"))
    return str(found[0]) if found else "pam_systemd.so"


# loginctl (252) refuses to talk to the bus unless /run/systemd/system marks systemd as PID 1
# ("System has not been booted with systemd as init system (PID 1). Can't operate."), a check
# of its own that has nothing to do with the service manager. It gets that marker in a
# throw-away mount namespace of its own; logind, pam_systemd and the daemon never see it.
_BOOTED = (
    "mount -t tmpfs -o size=1m,mode=755 scopeshim-booted /run/systemd"
    ' && mkdir /run/systemd/system && exec "$@"'
)


def run_booted(command: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """COMMAND with /run/systemd/system present for it alone (see _BOOTED)."""
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", _BOOTED, "sh", *command],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ---- the test user ------------------------------------------------------------------------


def free_id(table: str, start: int = FIRST_UID) -> int:
    """A number no entry of /etc/passwd or /etc/group uses (field 3)."""
    used = {
        int(fields[2])
        for line in Path(table).read_text().splitlines()
        if len(fields := line.split(":")) > 2 and fields[2].isdigit()
    }
    return next(i for i in range(start, 60000) if i not in used)


@dataclass(frozen=True)
class TestUser:
    name: str
    uid: int
    gid: int
    home: str


def private_user(work: Path, name: str = USER) -> TestUser:
    """Bind-mount copies of /etc/passwd and /etc/group that add user NAME (uid 4711 or the
    next free one) over the originals, in this mount namespace only: the host's files are
    never written."""
    uid = free_id("/etc/passwd")
    gid = free_id("/etc/group", uid)
    home = f"/run/home/{name}"
    Path(home).mkdir(parents=True)
    os.chown(home, uid, gid)
    work.mkdir(parents=True, exist_ok=True)
    passwd, group = work / "passwd", work / "group"
    shutil.copy2("/etc/passwd", passwd)
    shutil.copy2("/etc/group", group)
    with passwd.open("a") as f:
        f.write(f"{name}:x:{uid}:{gid}:scopeshim e2e login:{home}:/bin/sh\n")
    with group.open("a") as f:
        f.write(f"{name}:x:{gid}:\n")
    for source, target in ((passwd, "/etc/passwd"), (group, "/etc/group")):
        subprocess.run(["mount", "--bind", str(source), target], check=True)
    return TestUser(name, uid, gid, home)


ROOT_USER = TestUser("root", 0, 0, "/root")


def private_sys_power() -> None:
    """A /sys/power of this mount namespace that offers suspend (the host's may offer none,
    and logind refuses Suspend then): a tmpfs with state, mem_sleep and disk. Nothing here
    writes it; scopeshim only records suspend.target."""
    power = Path("/sys/power")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=755", "scopeshim-power",
                    str(power)], check=True)  # fmt: skip
    (power / "state").write_text("freeze mem disk\n")
    (power / "mem_sleep").write_text("s2idle [deep]\n")
    (power / "disk").write_text("[platform] shutdown reboot suspend\n")


# ---- signals ------------------------------------------------------------------------------

WATCHED = (
    "UnitNew", "UnitRemoved", "JobNew", "JobRemoved", "Reloading", "SessionNew",
    "SessionRemoved", "UserNew", "UserRemoved", "PrepareForShutdown", "PrepareForSleep",
)  # fmt: skip


def plain(value: Any) -> Any:
    """dbus-fast values as JSON-friendly Python values."""
    if hasattr(value, "value") and hasattr(value, "signature"):
        return plain(value.value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


@dataclass
class Event:
    t: float  # time.monotonic()
    member: str
    args: list[Any]
    unit: str | None = None  # PropertiesChanged of a systemd1 unit: its name

    def brief(self) -> str:
        return f"{self.member}{tuple(self.args)!r}" + (f" {self.unit}" if self.unit else "")


class Signals:
    """Every signal of systemd1 and login1 from now on: WATCHED members with their arguments,
    and the ActiveState/SubState changes of systemd1's units."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    @classmethod
    async def attach(cls, bus: MessageBus) -> Signals:
        self = cls()

        def feed(m: Message) -> None:
            if m.message_type is not MessageType.SIGNAL:
                return
            now = time.monotonic()
            if m.member in WATCHED and m.interface in (
                "org.freedesktop.systemd1.Manager",
                LOGIN1_MANAGER,
            ):
                self.events.append(Event(now, m.member, plain(list(m.body))))
            elif (
                m.member == "PropertiesChanged"
                and m.body
                and m.body[0] == "org.freedesktop.systemd1.Unit"
            ):
                changed = {
                    k: plain(v)
                    for k, v in m.body[1].items()
                    if k in ("ActiveState", "SubState", "LoadState")
                }
                if changed:
                    unit = unit_name_from_path(m.path or "")
                    self.events.append(Event(now, "PropertiesChanged", [changed], unit))

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

    def mark(self) -> int:
        return len(self.events)

    def since(self, mark: int, member: str | None = None) -> list[Event]:
        return [e for e in self.events[mark:] if member is None or e.member == member]

    def find(self, mark: int, member: str, *args: Any) -> Event | None:
        """The first MEMBER signal after MARK whose first arguments are ARGS (JobNew and
        JobRemoved: matched on the unit name, their third argument)."""
        for e in self.events[mark:]:
            if e.member != member:
                continue
            got = e.args[2:3] if member in ("JobNew", "JobRemoved") else e.args[: len(args)]
            if list(got) == list(args[:1] if member in ("JobNew", "JobRemoved") else args):
                return e
        return None

    async def wait(self, mark: int, member: str, *args: Any, timeout: float = 20) -> Event | None:
        deadline = time.monotonic() + timeout
        while (found := self.find(mark, member, *args)) is None:
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.02)
        return found

    def states(self, mark: int, unit: str) -> list[str]:
        """UNIT's ActiveState/SubState changes after MARK, as "active/abandoned" strings."""
        out: list[str] = []
        active = sub = "?"
        for e in self.events[mark:]:
            if e.member == "PropertiesChanged" and e.unit == unit:
                active = e.args[0].get("ActiveState", active)
                sub = e.args[0].get("SubState", sub)
                out.append(f"{active}/{sub}")
        return out

    def job_ids(self, mark: int = 0) -> list[int]:
        return [int(e.args[0]) for e in self.since(mark, "JobNew")]


# ---- reads --------------------------------------------------------------------------------


async def bus_call(
    bus: MessageBus,
    destination: str,
    path: str,
    interface: str,
    member: str,
    signature: str = "",
    body: list[Any] | None = None,
) -> tuple[bool, Any]:
    """(True, the reply's plain body) or (False, "error.Name: message")."""
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
        text = reply.body[0] if reply.body else ""
        return False, f"{reply.error_name}: {text}"
    return True, plain(list(reply.body))


async def login1(bus: MessageBus, member: str, signature: str = "", *body: Any) -> tuple[bool, Any]:
    return await bus_call(bus, LOGIN1, LOGIN1_PATH, LOGIN1_MANAGER, member, signature, list(body))


async def systemd1(
    bus: MessageBus, member: str, signature: str = "", *body: Any
) -> tuple[bool, Any]:
    return await bus_call(
        bus,
        SYSTEMD1,
        "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager",
        member,
        signature,
        list(body),
    )


async def get_all(
    bus: MessageBus, destination: str, path: str, interface: str, names: tuple[str, ...]
) -> dict[str, Any]:
    """These properties of one object, or {"error": ...} when the object does not answer."""
    ok, body = await bus_call(
        bus, destination, path, "org.freedesktop.DBus.Properties", "GetAll", "s", [interface]
    )
    if not ok:
        return {"error": body.split(":")[0], "message": body}
    return {k: v for k, v in body[0].items() if k in names}


SESSION_PROPS = ("Id", "Name", "User", "Scope", "State", "Class", "Type", "Leader", "Active")
USER_PROPS = ("UID", "Name", "State", "RuntimePath", "Slice", "Service", "Sessions")


async def login1_session(bus: MessageBus, session_id: str) -> dict[str, Any]:
    path = f"{LOGIN1_PATH}/session/{session_path_label(session_id)}"
    return await get_all(bus, LOGIN1, path, "org.freedesktop.login1.Session", SESSION_PROPS)


async def login1_user(bus: MessageBus, uid: int) -> dict[str, Any]:
    path = f"{LOGIN1_PATH}/user/_{uid}"
    return await get_all(bus, LOGIN1, path, "org.freedesktop.login1.User", USER_PROPS)


def session_path_label(session_id: str) -> str:
    from compat.buspath import label_escape

    return label_escape(session_id)


async def unit_state(bus: MessageBus, unit: str) -> dict[str, Any]:
    """LoadState, ActiveState, SubState (and ControlGroup, Slice of scopes and slices)."""
    props = await get_all(
        bus,
        SYSTEMD1,
        unit_path(unit),
        "org.freedesktop.systemd1.Unit",
        ("LoadState", "ActiveState", "SubState"),
    )
    if unit.endswith((".scope", ".slice")) and "error" not in props:
        iface = "org.freedesktop.systemd1." + ("Scope" if unit.endswith(".scope") else "Slice")
        props.update(
            await get_all(bus, SYSTEMD1, unit_path(unit), iface, ("ControlGroup", "Slice"))
        )
    return props


def runtime_dir(uid: int) -> dict[str, Any]:
    path = Path(f"/run/user/{uid}")
    if not path.is_dir():
        return {"exists": False}
    st = path.stat()
    fstype = next(
        (m["fstype"] for m in mounts() if m["target"] == str(path)),
        None,
    )
    return {
        "exists": True,
        "owner": st.st_uid,
        "mode": oct(st.st_mode & 0o7777),
        "mount": fstype,
    }


def cgroup_dir(relative: str) -> dict[str, Any]:
    path = CGROOT / relative.lstrip("/")
    if not path.is_dir():
        return {"exists": False}
    procs = (path / "cgroup.procs").read_text().split()
    return {"exists": True, "procs": sorted(int(p) for p in procs)}


def cgroup_of(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return next((line.strip()[3:] for line in f if line.startswith("0::")), None)
    except OSError:
        return None


def owner_of(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def alive(pid: int) -> bool:
    """PID exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


async def wait_dead(pids: list[int], timeout: float = 10) -> list[int]:
    """The PIDs still alive after TIMEOUT (none: all gone)."""
    deadline = time.monotonic() + timeout
    while (left := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return left


def mounts() -> list[dict[str, str]]:
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            out.append({"target": fields[4], "fstype": fields[sep + 1], "source": fields[sep + 2]})
    return out


def cgroup_tree() -> list[str]:
    """Every cgroup below the sandbox's root, relative."""
    return sorted(
        str(Path(d).relative_to(CGROOT)) for d, _dirs, _files in os.walk(CGROOT) if d != str(CGROOT)
    )


def process_list() -> dict[int, str]:
    """Every process of the sandbox: PID -> "cmdline [state]"."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        out[pid] = f"{cmd.decode(errors='replace')} [{stat[stat.rfind(')') + 2]}]"
    return out


# ---- logs ---------------------------------------------------------------------------------

_CALL = re.compile(
    r"Sent message type=method_call .*destination=(\S+) path=(\S+) interface=(\S+) "
    r"member=(\S+) cookie=(\d+)"
)
_ERROR = re.compile(
    r"Got message type=error .*reply_cookie=(\d+) .*error-name=(\S+) error-message=(.*)"
)
_SENT_ERROR = re.compile(r"Sent message type=error .*error-name=(\S+) error-message=(.*)")
_COMPLAINT = re.compile(r"(?i)\b(fail|error|refus|cannot|could not|unable|masked|not loaded)")
_DAEMON_BAD = re.compile(r" (WARNING|ERROR|CRITICAL) |Traceback|Error:")


class Logs:
    """logind's and the daemon's logs (RUN/logind.log, RUN/scopeshim.log), read from a mark:
    what each step made them say."""

    def __init__(self, run: Path) -> None:
        self.run = run

    def mark(self) -> dict[str, int]:
        return {name: self._size(name) for name in ("logind.log", "scopeshim.log")}

    def _size(self, name: str) -> int:
        try:
            return (self.run / name).stat().st_size
        except OSError:
            return 0

    def _text(self, name: str, start: int) -> list[str]:
        try:
            with open(self.run / name, "rb") as f:
                f.seek(start)
                return f.read().decode(errors="replace").splitlines()
        except OSError:
            return []

    def calls_since(self, mark: dict[str, int]) -> list[str]:
        """logind's calls to systemd1 since MARK: "member path"."""
        out = []
        for line in self._text("logind.log", mark["logind.log"]):
            if (m := _CALL.search(line)) and m.group(1) == SYSTEMD1:
                out.append(f"{m.group(4)} {m.group(2)}")
        return out

    def excerpt(self, mark: dict[str, int], limit: int = 30) -> dict[str, list[str]]:
        """What went wrong since MARK: logind's calls to systemd1 answered with an error,
        the errors logind replied, its other complaints, the daemon's warnings."""
        refused: list[str] = []
        replied: list[str] = []
        complaints: list[str] = []
        calls: dict[str, str] = {}  # cookies of all calls: answers may come after the mark
        try:
            data = (self.run / "logind.log").read_bytes()
        except OSError:
            data = b""
        offset = 0
        for raw in data.split(b"\n"):
            start, offset = offset, offset + len(raw) + 1
            line = raw.decode(errors="replace")
            if m := _CALL.search(line):
                dest, path, _iface, member, cookie = m.groups()
                calls[cookie] = f"{dest} {path} {member}"
                continue
            if start < mark["logind.log"]:
                continue
            if m := _ERROR.search(line):
                cookie, name, text = m.groups()
                what = calls.get(cookie, "?")
                if name.endswith(".UnknownObject") and "/job/" in what:
                    continue  # Job.State of a finished job: the normal answer
                refused.append(f"{what} -> {name}: {text}")
            elif m := _SENT_ERROR.search(line):
                replied.append(f"{m.group(1)}: {m.group(2)}")
            elif "message type=" not in line and _COMPLAINT.search(line):
                complaints.append(line)
        daemon = [
            line for line in self._text("scopeshim.log", mark["scopeshim.log"])
            if _DAEMON_BAD.search(line)
        ]  # fmt: skip
        return {
            "refused_calls": refused[-limit:],
            "logind_replied_errors": replied[-limit:],
            "logind_complaints": complaints[-limit:],
            "daemon_warnings": daemon[-limit:],
        }

    def tail(self, name: str, n: int = 20) -> list[str]:
        return self._text(name, 0)[-n:]


# ---- checks -------------------------------------------------------------------------------


@dataclass
class Checks:
    """The verdicts of one step: (label, ok, detail) in order."""

    items: list[list[Any]] = field(default_factory=list)

    def check(self, label: str, ok: bool, detail: Any = None) -> bool:
        self.items.append([label, bool(ok), detail])
        return bool(ok)

    def equal(self, label: str, got: Any, want: Any) -> bool:
        return self.check(label, got == want, {"got": got, "want": want})

    def crashed(self, e: BaseException) -> None:
        text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        self.check(f"step raised {type(e).__name__}", False, text[-3000:])

    @property
    def ok(self) -> bool:
        return all(ok for _label, ok, _detail in self.items)


async def wait_until(predicate: Any, timeout: float = 10, interval: float = 0.05) -> Any:
    """The first truthy result of the (async or plain) PREDICATE within TIMEOUT, else the
    last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(interval)


class Daemon:
    """scopeshim under test: started, killed with SIGKILL, restarted on the same state
    directory (/run/scopeshim); its log appends to RUN/scopeshim.log."""

    def __init__(self) -> None:
        self.proc = start_scopeshim()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def restart(self) -> None:
        self.proc = start_scopeshim()

    def crash(self) -> int:
        self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(10)

    def stop(self) -> int:
        return stop(self.proc)


async def name_owner(bus: MessageBus, name: str) -> str | None:
    ok, body = await bus_call(
        bus,
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "GetNameOwner",
        "s",
        [name],
    )
    return body[0] if ok else None


async def wait_new_owner(
    bus: MessageBus, name: str, old: str | None = None, timeout: float = 20
) -> str | None:
    """The unique name that owns NAME once it is owned by someone other than OLD."""

    async def owner() -> str | None:
        now = await name_owner(bus, name)
        return now if now is not None and now != old else None

    result: str | None = await wait_until(owner, timeout)
    return result
