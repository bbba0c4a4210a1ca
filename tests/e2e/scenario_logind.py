"""Inside the sandbox: an unmodified systemd-logind (the installed 252, or 254/257 that
tests/e2e/get-logind.sh fetched) runs every step of a session's life on scopeshim with the
real cgroup2 backend, for one user (uid 0 or the unprivileged test user):

  open                 CreateSession as pam_systemd calls it; leader and children in the scope
  release              ReleaseSession: scope abandoned, then inactive once empty; logind's GC
                       (258+, no FIFO: the scope runs on until the release timer fires)
  user-stop-delay      the user stops UserStopDelaySec after the last session
  terminate-session    TerminateSession
  terminate-user       TerminateUser (two sessions)
  kill-session-leader  KillSession who=leader
  kill-session-all     KillSession who=all
  kill-user            KillUser (two sessions)
  kill-user-processes  KillUserProcesses=yes: the scope is stopped at release
  loginctl             list-sessions, session-status and user-status with the process tree
  poweroff             logind PowerOff: poweroff.target recorded, PrepareForShutdown(false)
  suspend              logind Suspend: suspend.target recorded, PrepareForSleep(false)
  logind-restart       logind restarted with a session open: it takes it up again, GC works
  scopeshim-crash      kill -9 of scopeshim with sessions open, restart on the same state
                       directory: release, GC, terminate, kill still work, job ids go on
  teardown             logind and scopeshim stopped: nothing of the run is left

Every step ends by checking that nothing it made is left (sessions, users, units, cgroups,
mounts, processes); what is left is reported and cleaned up by force, so that the next step
starts clean.

Usage: scenario_logind.py [--logind PATH] [--user root|unprivileged] [--steps a,b,...]
Prints one JSON object per step: {"step", "ok", "seconds", "checks": [[label, ok, detail]],
"logs": {...}}, after a first {"step": "setup"}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import contextlib

from dbus_fast.aio import MessageBus

from compat.buspath import label_escape
from tests.e2e.inside import CGROOT, connect, report, wait_name
from tests.e2e.inside import stop as stop_process
from tests.e2e.logind_kit import (
    INSTALLED_LOGIND,
    LOGIN1,
    LOGIN1_PATH,
    ROOT_USER,
    SYSTEMD1,
    Checks,
    Daemon,
    FdStore,
    Logs,
    Signals,
    TestUser,
    alive,
    cgroup_dir,
    cgroup_of,
    cgroup_tree,
    login1,
    login1_session,
    login1_user,
    logind_version,
    major,
    mounts,
    name_owner,
    owner_of,
    private_sys_power,
    private_user,
    process_list,
    run_booted,
    runtime_dir,
    start_logind,
    systemd1,
    unit_state,
    version_tool,
    wait_dead,
    wait_new_owner,
    wait_until,
)

STEP_TIMEOUT = 90
USER_STOP_DELAY = 2  # UserStopDelaySec= of the user-stop-delay step
RECORD_FILE = Path("/run/scopeshim/actions.log")  # scopeshim-e2e.toml [power] record_file
CLIENT = Path(__file__).with_name("login_client.py")


class Login:
    """One login_client.py: a session whose leader it is, with the user's processes."""

    def __init__(self, proc: subprocess.Popen[str], info: dict[str, Any]) -> None:
        self.proc = proc
        self.info = info

    @property
    def ok(self) -> bool:
        return bool(self.info.get("ok"))

    @property
    def sid(self) -> str:
        return str(self.info["session"])

    @property
    def scope(self) -> str:
        return f"session-{self.sid}.scope"

    @property
    def leader(self) -> int:
        return int(self.info["pid"])

    @property
    def children(self) -> list[int]:
        return list(self.info.get("children", []))

    @property
    def pids(self) -> list[int]:
        return [self.leader, *self.children]

    async def command(self, line: str, timeout: float = 30) -> dict[str, Any]:
        """Send LINE; its JSON answer (or {"ok": False, "error": ...})."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            return {"ok": False, "error": f"client gone: {e}"}
        answer = await read_json(self.proc, timeout)
        return answer or {"ok": False, "error": f"no answer to {line!r} in {timeout} s"}

    async def exit(self, timeout: float = 10) -> int | None:
        """Tell the leader to exit (if it still runs); its exit status."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("exit\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass
        try:
            return await asyncio.to_thread(self.proc.wait, timeout)
        except subprocess.TimeoutExpired:
            return None

    async def logout(self) -> None:
        """What a login ends with when nobody forces it: close_session, then its processes
        end (the user's processes are killed here, as a shell's jobs end with it)."""
        await self.command("release")
        await self.command("kill-children")
        await self.exit()

    def kill(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


async def read_json(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any] | None:
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout)
    except TimeoutError:
        return None
    return json.loads(line) if line.strip().startswith("{") else None


class Run:
    """The state of one scenario run: bus, signals, logs, daemon, logind, the user."""

    def __init__(self, args: argparse.Namespace, user: TestUser, run: Path) -> None:
        self.args = args
        self.user = user
        self.uid = user.uid
        self.dir = run
        self.version = logind_version(args.logind)
        self.major = major(self.version)
        # logind 258+ hands out no session FIFO: a released session ends when its leader
        # exits or when the timer ReleaseSession starts fires (RELEASE_USEC, 20 s)
        self.fifo_less = self.major >= 258
        self.loginctl = version_tool(args.logind, "loginctl")
        self.logs = Logs(run)
        self.bus: MessageBus
        self.signals: Signals
        self.daemon: Daemon
        self.logind: subprocess.Popen[bytes] | None = None
        self.logind_conf: dict[str, str] = {}
        self.logins: list[Login] = []
        self.max_job_id = 0
        self.fdstore = FdStore()

    # -- services --------------------------------------------------------------------------

    async def start_logind(self, **conf: str) -> None:
        self.logind_conf = conf
        self.logind = start_logind(self.args.logind, self.dir, self.fdstore, **conf)
        await wait_new_owner(self.bus, LOGIN1)

    async def stop_logind(self) -> int | None:
        if self.logind is None:
            return None
        code = stop_process(self.logind)
        self.logind = None
        # the name goes with the connection
        await wait_until(lambda: self._no_owner(LOGIN1), 10)
        return code

    async def _no_owner(self, name: str) -> bool:
        return await name_owner(self.bus, name) is None

    async def reconfigure_logind(self, **conf: str) -> None:
        if conf != self.logind_conf or self.logind is None:
            await self.stop_logind()
            await self.start_logind(**conf)

    def infra_pids(self) -> set[int]:
        pids = {1, os.getpid(), self.daemon.pid}
        if self.logind is not None:
            pids.add(self.logind.pid)
        for pid, cmd in process_list().items():
            if cmd.startswith("dbus-daemon "):
                pids.add(pid)
        return pids

    # -- logins ----------------------------------------------------------------------------

    async def login(self, ck: Checks, children: bool = True) -> Login:
        argv = [sys.executable, str(CLIENT), str(self.uid), "--gid", str(self.user.gid)]
        proc = subprocess.Popen(
            [*argv, *(["--children"] if children else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        info = await read_json(proc, 60) or {"ok": False, "error": "no answer in 60 s"}
        login = Login(proc, info)
        self.logins.append(login)
        if not ck.check("CreateSession answered with a session", login.ok, info):
            raise StepAbortedError
        for job in self.signals.job_ids():
            self.max_job_id = max(self.max_job_id, job)
        return login

    async def logout(self, login: Login) -> None:
        """What a login ends with when nobody forces it. Up to 257: pam_systemd's
        close_session (ReleaseSession, then its FIFO closes and logind stops the session),
        then the user's processes end, then the login process. 258+ (no FIFO): ReleaseSession,
        the login process exits (logind stops the session on its leader's exit), then the
        processes it left behind end."""
        if not self.fifo_less:
            await login.logout()
            return
        await login.command("release")
        await login.exit()
        await wait_until(lambda: _stopped_or_abandoned(self, login.scope), 10)
        _kill(login.children)

    def scope_cgroup(self, login: Login) -> str:
        return f"/user.slice/user-{self.uid}.slice/{login.scope}"

    def check_in_scope(self, ck: Checks, login: Login, what: str = "") -> None:
        want = self.scope_cgroup(login)
        got = {pid: cgroup_of(pid) for pid in login.pids}
        ck.check(
            f"leader and children in {want}{what}",
            all(cg == want for cg in got.values()),
            got,
        )

    async def wait_session_gone(self, ck: Checks, mark: int, login: Login) -> None:
        """The scope goes, logind garbage-collects the session."""
        scope = login.scope
        ck.check(f"UnitRemoved {scope}", await self.signals.wait(mark, "UnitRemoved", scope))
        ck.check(
            f"SessionRemoved {login.sid} (logind's GC)",
            await self.signals.wait(mark, "SessionRemoved", login.sid),
        )
        # the kernel may refuse the rmdir while the last exiting task is still accounted
        # (EBUSY); the daemon tries again: bounded wait, then the verdict
        await wait_until(lambda: not cgroup_dir(self.scope_cgroup(login))["exists"], 10)
        ck.equal(
            f"cgroup of {scope} removed",
            cgroup_dir(self.scope_cgroup(login)),
            {"exists": False},
        )
        session = await login1_session(self.bus, login.sid)
        ck.equal(
            "login1 session object gone",
            session.get("error"),
            "org.freedesktop.DBus.Error.UnknownObject",
        )

    async def wait_user_gone(self, ck: Checks, mark: int, timeout: float = 20) -> None:
        """No session left: the user stops (UserStopDelaySec=0), the runtime directory is
        unmounted, the user's slice goes."""
        uid = self.uid
        ck.check(
            f"UserRemoved {uid}", await self.signals.wait(mark, "UserRemoved", uid, timeout=timeout)
        )
        ck.check(
            f"UnitRemoved user-{uid}.slice",
            await self.signals.wait(mark, "UnitRemoved", f"user-{uid}.slice", timeout=10),
        )
        gone = await wait_until(lambda: not runtime_dir(uid)["exists"], 10)
        ck.check(f"/run/user/{uid} unmounted and removed", gone, runtime_dir(uid))
        ck.equal(
            f"cgroup of user-{uid}.slice removed",
            cgroup_dir(f"user.slice/user-{uid}.slice"),
            {"exists": False},
        )

    # -- what is left ----------------------------------------------------------------------

    async def leftovers(self) -> dict[str, Any]:
        """Everything a session or user of this run can leave behind."""
        left: dict[str, Any] = {}
        if self.logind is not None:
            ok, body = await login1(self.bus, "ListSessions")
            if not ok or body[0]:
                left["login1 sessions"] = body
            ok, body = await login1(self.bus, "ListUsers")
            if not ok or body[0]:
                left["login1 users"] = body
        ok, body = await systemd1(self.bus, "ListUnits")
        if not ok:
            left["ListUnits"] = body
        else:
            units = [
                f"{u[0]} {u[2]}/{u[3]}/{u[4]}"
                for u in body[0]
                if u[0].startswith(("session-", "user-", "user@", "user-runtime-dir@"))
            ]
            if units:
                left["systemd1 units"] = units
        cgroups = [c for c in cgroup_tree() if c != "user.slice"]
        if cgroups:
            left["cgroups"] = cgroups
        run_user = [m["target"] for m in mounts() if m["target"].startswith("/run/user/")]
        if run_user:
            left["mounts"] = run_user
        if Path("/run/user").is_dir() and os.listdir("/run/user"):
            left["/run/user"] = os.listdir("/run/user")
        for state in ("sessions", "users"):
            d = Path("/run/systemd") / state
            files = [f for f in os.listdir(d) if not f.startswith(".")] if d.is_dir() else []
            if files and self.logind is not None:
                left[f"/run/systemd/{state}"] = files
        infra = self.infra_pids()
        procs = {pid: cmd for pid, cmd in process_list().items() if pid not in infra}
        if procs:
            left["processes"] = procs
        return left

    async def settle(self, timeout: float = 10) -> dict[str, Any]:
        """What is still left after waiting up to TIMEOUT for it to go ({}: nothing)."""
        deadline = time.monotonic() + timeout
        while (left := await self.leftovers()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return left

    async def force_clean(self) -> None:
        """After a failed step: end what is left, so that the next step starts clean (logind
        terminates its users, systemd1 stops its units, what still runs is killed)."""
        for login in self.logins:
            login.kill()
        self.logins.clear()
        if self.logind is not None:
            ok, body = await login1(self.bus, "ListUsers")
            for uid, *_rest in body[0] if ok else []:
                await login1(self.bus, "TerminateUser", "u", uid)
        for d in sorted(CGROOT.glob("user.slice/*"), reverse=True):
            if (d / "cgroup.kill").exists():
                (d / "cgroup.kill").write_text("1")
        for pid in set(process_list()) - self.infra_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        ok, body = await systemd1(self.bus, "ListUnits")
        for unit in body[0] if ok else []:
            if unit[0].startswith(("session-", "user-runtime-dir@", "user@")):
                await systemd1(self.bus, "StopUnit", "ss", unit[0], "replace")
        await self.settle(10)
        for m in mounts():  # the last resort: the runtime-dir helper did not unmount
            if m["target"].startswith("/run/user/"):
                subprocess.run(["umount", "-l", m["target"]], check=False)
        await self.settle(5)


class StepAbortedError(Exception):
    """A check the rest of the step depends on failed (already recorded)."""


Step = Callable[[Run, Checks], Awaitable[None]]


# ---- the steps ------------------------------------------------------------------------------


async def step_open(r: Run, ck: Checks) -> None:
    uid = r.uid
    login = await r.login(ck)
    info, scope = login.info, login.scope
    ck.equal("runtime path in the reply", info["runtime_path"], f"/run/user/{uid}")
    # the reply's fd: the session FIFO up to 257; 258+ keeps the signature but hands out an
    # eventfd it never watches (seen with 262.1)
    fifo = "anon_inode:[eventfd]" if r.fifo_less else f"/run/systemd/sessions/{login.sid}.ref"
    ck.equal("the fd in the reply: FIFO up to 257, a placeholder from 258", info["fifo"], fifo)
    ck.equal("leader's cgroup (its own view)", info["cgroup"], r.scope_cgroup(login))
    r.check_in_scope(ck, login)
    ck.equal(
        "the user's processes run as the user",
        {pid: owner_of(pid) for pid in login.children},
        dict.fromkeys(login.children, uid),
    )
    ck.equal(
        "cgroup.procs of the scope",
        cgroup_dir(r.scope_cgroup(login)),
        {"exists": True, "procs": sorted(login.pids)},
    )
    state = await unit_state(r.bus, scope)
    ck.equal(
        "systemd1: the scope",
        state,
        {
            "LoadState": "loaded",
            "ActiveState": "active",
            "SubState": "running",
            "ControlGroup": r.scope_cgroup(login),
            "Slice": f"user-{uid}.slice",
        },
    )
    slice_state = await unit_state(r.bus, f"user-{uid}.slice")
    ck.equal("systemd1: the user's slice is active", slice_state.get("ActiveState"), "active")
    runtime_unit = await unit_state(r.bus, f"user-runtime-dir@{uid}.service")
    ck.equal("systemd1: user-runtime-dir@ is active", runtime_unit.get("ActiveState"), "active")
    manager_unit = await unit_state(r.bus, f"user@{uid}.service")
    ck.equal("systemd1: user@ is masked", manager_unit.get("LoadState"), "masked")
    child = login.children[-1]
    ok, body = await systemd1(r.bus, "GetUnitByPID", "u", child)
    ck.equal(
        "systemd1 GetUnitByPID(grandchild)",
        body[0] if ok else body,
        f"/org/freedesktop/systemd1/unit/{label_escape(scope)}",
    )
    ok, body = await systemd1(r.bus, "GetUnitProcesses", "s", scope)
    ck.equal(
        "systemd1 GetUnitProcesses(scope): leader and children",
        sorted(p[1] for p in body[0]) if ok else body,
        sorted(login.pids),
    )
    session_path = f"{LOGIN1_PATH}/session/{label_escape(login.sid)}"
    for pid in login.children:
        ok, body = await login1(r.bus, "GetSessionByPID", "u", pid)
        ck.equal(f"login1 GetSessionByPID(child {pid})", body[0] if ok else body, session_path)
    ok, body = await login1(r.bus, "GetUserByPID", "u", child)
    ck.equal(
        "login1 GetUserByPID(grandchild)", body[0] if ok else body, f"{LOGIN1_PATH}/user/_{uid}"
    )
    session = await login1_session(r.bus, login.sid)
    ck.check("login1 session: scope, leader, user", session.get("Scope") == scope
             and session.get("Leader") == login.leader and session.get("User", [None])[0] == uid,
             session)  # fmt: skip
    ck.check(
        "login1 session State online or active",
        session.get("State") in ("online", "active"),
        session,
    )
    user = await login1_user(r.bus, uid)
    ck.check(
        "login1 user: runtime path, slice, state",
        user.get("RuntimePath") == f"/run/user/{uid}"
        and user.get("Slice") == f"user-{uid}.slice"
        and user.get("State") in ("online", "active"),
        user,
    )
    ck.equal(
        f"/run/user/{uid}: a tmpfs of the user's, mode 0700",
        runtime_dir(uid),
        {"exists": True, "owner": uid, "mode": "0o700", "mount": "tmpfs"},
    )
    mark = r.signals.mark()
    await r.logout(login)
    await r.wait_session_gone(ck, mark, login)
    await r.wait_user_gone(ck, mark)


async def step_release(r: Run, ck: Checks) -> None:
    if r.fifo_less:
        await step_release_fifo_less(r, ck)
        return
    login = await r.login(ck)
    scope = login.scope
    mark = r.signals.mark()
    released = await login.command("release")
    ck.check("ReleaseSession answered", released.get("ok"), released)
    closing = await wait_until(lambda: _session_state_is(r, login.sid, "closing"), 10)
    ck.check("login1 session State closing", closing, await login1_session(r.bus, login.sid))
    abandoned = await wait_until(lambda: _unit_is(r, scope, "active", "abandoned"), 10)
    ck.check("scope active/abandoned (Abandon)", abandoned, await unit_state(r.bus, scope))
    r.check_in_scope(ck, login, " after the release")
    ck.check("the session's processes still run", all(alive(p) for p in login.pids))
    await login.command("kill-children")
    code = await login.exit()
    ck.equal("the leader exits", code, 0)
    ck.check(
        "no stop job for the scope (nobody stops it)",
        r.signals.find(mark, "JobNew", scope) is None,
        [e.brief() for e in r.signals.since(mark, "JobNew")],
    )
    await r.wait_session_gone(ck, mark, login)
    states = r.signals.states(mark, scope)
    ck.check(
        "scope went active/abandoned, then inactive once empty",
        "active/abandoned" in states
        and any(s.startswith("inactive/") for s in states[states.index("active/abandoned") :]),
        states,
    )
    state = await unit_state(r.bus, scope)
    ck.equal("systemd1: the scope reads inactive now", state.get("ActiveState"), "inactive")
    await r.wait_user_gone(ck, mark)


async def _stopped_or_abandoned(r: Run, unit: str) -> bool:
    state = await unit_state(r.bus, unit)
    return state.get("SubState") == "abandoned" or state.get("ActiveState") != "active"


async def step_release_fifo_less(r: Run, ck: Checks) -> None:
    """logind 258+: ReleaseSession leaves the scope alone while the leader lives; the timer it
    starts stops the session (the scope abandoned, the processes run on), and then the scope
    goes inactive once empty."""
    login = await r.login(ck)
    scope = login.scope
    mark = r.signals.mark()
    logs = r.logs.mark()
    released = await login.command("release")
    ck.check("ReleaseSession answered", released.get("ok"), released)
    closing = await wait_until(lambda: _session_state_is(r, login.sid, "closing"), 10)
    ck.check("login1 session State closing", closing, await login1_session(r.bus, login.sid))
    ck.equal(
        "right after the release: the scope still runs (no FIFO to close)",
        (await unit_state(r.bus, scope)).get("SubState"),
        "running",
    )
    ck.equal(
        "no Abandon before the release timer",
        [c for c in r.logs.calls_since(logs) if c.startswith("Abandon ")],
        [],
    )
    abandoned = await wait_until(lambda: _unit_is(r, scope, "active", "abandoned"), 40, 0.2)
    ck.check(
        "the release timer fired: scope active/abandoned (Abandon)",
        abandoned,
        await unit_state(r.bus, scope),
    )
    r.check_in_scope(ck, login, " after the timer")
    ck.check("the session's processes still run", all(alive(p) for p in login.pids))
    await login.command("kill-children")
    code = await login.exit()
    ck.equal("the leader exits", code, 0)
    ck.check(
        "no stop job for the scope (nobody stops it)",
        r.signals.find(mark, "JobNew", scope) is None,
        [e.brief() for e in r.signals.since(mark, "JobNew")],
    )
    await r.wait_session_gone(ck, mark, login)
    state = await unit_state(r.bus, scope)
    ck.equal("systemd1: the scope reads inactive now", state.get("ActiveState"), "inactive")
    await r.wait_user_gone(ck, mark)


async def _session_state_is(r: Run, sid: str, state: str) -> bool:
    return (await login1_session(r.bus, sid)).get("State") == state


async def _unit_is(r: Run, unit: str, active: str, sub: str | None = None) -> bool:
    state = await unit_state(r.bus, unit)
    return state.get("ActiveState") == active and (sub is None or state.get("SubState") == sub)


async def step_user_stop_delay(r: Run, ck: Checks) -> None:
    uid = r.uid
    await r.reconfigure_logind(UserStopDelaySec=str(USER_STOP_DELAY))
    try:
        login = await r.login(ck)
        mark = r.signals.mark()
        await r.logout(login)
        removed = await r.signals.wait(mark, "SessionRemoved", login.sid)
        ck.check("SessionRemoved", removed)
        if removed is None:
            raise StepAbortedError
        await asyncio.sleep(max(0.0, removed.t + USER_STOP_DELAY / 2 - time.monotonic()))
        user = await login1_user(r.bus, uid)
        ck.check(
            f"{USER_STOP_DELAY / 2:g} s after the last session: the user is still there",
            "error" not in user and r.signals.find(mark, "UserRemoved", uid) is None,
            user,
        )
        if r.major >= 256:
            # logind 256+ starts user-runtime-dir@ itself and stops it after the delay
            # (its unit lost StopWhenUnneeded=); before, the unit went when nothing needed
            # it any more: with user@ masked, as soon as the last scope was gone
            ck.equal(
                f"{USER_STOP_DELAY / 2:g} s after: /run/user/{uid} still mounted",
                runtime_dir(uid).get("mount"),
                "tmpfs",
            )
        stop_unit = f"user-runtime-dir@{uid}.service" if r.major >= 256 else f"user@{uid}.service"
        ck.check(
            f"no stop job for {stop_unit} yet",
            r.signals.find(mark, "JobNew", stop_unit) is None,
        )
        gone = await r.signals.wait(mark, "UserRemoved", uid, timeout=USER_STOP_DELAY + 15)
        ck.check("UserRemoved", gone)
        if gone is not None:
            waited = gone.t - removed.t
            ck.check(
                f"the user stopped after UserStopDelaySec={USER_STOP_DELAY}",
                USER_STOP_DELAY - 0.2 <= waited <= USER_STOP_DELAY + 5,
                f"{waited:.2f} s after the session",
            )
        job = await r.signals.wait(mark, "JobRemoved", stop_unit, timeout=5)
        ck.check(
            f"logind's StopUnit({stop_unit}) job ran: JobRemoved done",
            job is not None and job.args[3] == "done",
            job.brief() if job else [e.brief() for e in r.signals.since(mark, "JobRemoved")],
        )
        await r.wait_user_gone(ck, mark)
    finally:
        await r.reconfigure_logind()


async def step_terminate_session(r: Run, ck: Checks) -> None:
    login = await r.login(ck)
    mark = r.signals.mark()
    ok, body = await login1(r.bus, "TerminateSession", "s", login.sid)
    ck.check("TerminateSession answered", ok, body)
    job = await r.signals.wait(mark, "JobRemoved", login.scope)
    ck.check(
        "the scope's stop job: JobRemoved done",
        job is not None and job.args[3] == "done",
        job.brief() if job else None,
    )
    left = await wait_dead(login.pids)
    ck.equal("leader and children are gone", left, [])
    code = await login.exit()
    ck.check(
        "the leader ended by SIGTERM or SIGHUP", code in (-signal.SIGTERM, -signal.SIGHUP), code
    )
    await r.wait_session_gone(ck, mark, login)
    await r.wait_user_gone(ck, mark)


async def step_terminate_user(r: Run, ck: Checks) -> None:
    first = await r.login(ck)
    second = await r.login(ck)
    mark = r.signals.mark()
    ok, body = await login1(r.bus, "TerminateUser", "u", r.uid)
    ck.check("TerminateUser answered", ok, body)
    for login in (first, second):
        job = await r.signals.wait(mark, "JobRemoved", login.scope)
        ck.check(
            f"{login.scope} stop job: JobRemoved done",
            job is not None and job.args[3] == "done",
            job.brief() if job else None,
        )
    left = await wait_dead(first.pids + second.pids)
    ck.equal("both sessions' processes are gone", left, [])
    for login in (first, second):
        await login.exit()
        await r.wait_session_gone(ck, mark, login)
    await r.wait_user_gone(ck, mark)


async def step_kill_session_leader(r: Run, ck: Checks) -> None:
    login = await r.login(ck)
    mark = r.signals.mark()
    logs = r.logs.mark()
    ok, body = await login1(r.bus, "KillSession", "ssi", login.sid, "leader", signal.SIGTERM)
    asked = [c for c in r.logs.calls_since(logs) if c.startswith("KillUnit ")]
    if asked:
        # logind as released up to 256 asks KillUnit(scope, "main", ...), and systemd answers
        # NoSuchProcess "scope units have no main processes" (fixtures/oracle): the call fails
        ck.check("KillSession(leader) refused, as on systemd", not ok, body)
        refused = r.logs.excerpt(logs)["refused_calls"]
        ck.check(
            "systemd1 answered logind's KillUnit with NoSuchProcess",
            any(" KillUnit -> org.freedesktop.systemd1.NoSuchProcess" in x for x in refused),
            refused,
        )
        ck.check("leader and children still run", all(alive(p) for p in login.pids))
        await login.command("release")
        await login.exit()
    else:
        # systemd PR 35105 (257, and backported to Debian's 252.38): logind signals the
        # leader itself; the leader's exit closes the session, the rest stays in the scope
        ck.check("KillSession(leader) answered", ok, body)
        left = await wait_dead([login.leader])
        ck.equal("the leader got SIGTERM and is gone", left, [])
        ck.equal("the leader ended by SIGTERM", await login.exit(), -signal.SIGTERM)
        ck.check("the children still run", all(alive(p) for p in login.children))
        r.check_in_scope(ck, _without_leader(login), " (children)")
        abandoned = await wait_until(lambda: _unit_is(r, login.scope, "active", "abandoned"), 10)
        ck.check("the scope is abandoned", abandoned, await unit_state(r.bus, login.scope))
    _kill(login.children)
    await r.wait_session_gone(ck, mark, login)
    await r.wait_user_gone(ck, mark)


def _without_leader(login: Login) -> Login:
    info = dict(login.info, pid=login.children[0], children=login.children[1:])
    return Login(login.proc, info)


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def step_kill_session_all(r: Run, ck: Checks) -> None:
    login = await r.login(ck)
    mark = r.signals.mark()
    ok, body = await login1(r.bus, "KillSession", "ssi", login.sid, "all", signal.SIGTERM)
    ck.check("KillSession(all) answered", ok, body)
    left = await wait_dead(login.pids)
    ck.equal("leader and children got SIGTERM and are gone", left, [])
    ck.equal("the leader ended by SIGTERM", await login.exit(), -signal.SIGTERM)
    await r.wait_session_gone(ck, mark, login)
    states = r.signals.states(mark, login.scope)
    ck.check(
        "the scope went inactive once empty", any(s.startswith("inactive/") for s in states), states
    )
    await r.wait_user_gone(ck, mark)


async def step_kill_user(r: Run, ck: Checks) -> None:
    first = await r.login(ck)
    second = await r.login(ck)
    mark = r.signals.mark()
    ok, body = await login1(r.bus, "KillUser", "ui", r.uid, signal.SIGTERM)
    ck.check("KillUser answered", ok, body)
    left = await wait_dead(first.pids + second.pids)
    ck.equal("all processes of the user's slice got SIGTERM and are gone", left, [])
    for login in (first, second):
        await login.exit()
        await r.wait_session_gone(ck, mark, login)
    await r.wait_user_gone(ck, mark)


async def step_kill_user_processes(r: Run, ck: Checks) -> None:
    # KillExcludeUsers= defaults to root, and an empty list excludes root too
    # (manager_shall_kill()): name another user, so that root's processes are killed as well
    await r.reconfigure_logind(KillUserProcesses="yes", KillExcludeUsers="nobody")
    try:
        login = await r.login(ck)
        mark = r.signals.mark()
        released = await login.command("release", 10)
        if r.fifo_less and released.get("ok"):
            # 258+: the session stops when its leader exits, and KillUserProcesses=yes
            # stops the scope with what the leader left behind
            ck.equal("the leader exits (its processes left behind)", await login.exit(), 0)
        elif not released.get("ok"):
            # the scope's stop may end the leader before it could print the answer
            code = await login.exit(5)
            released = {**released, "leader_exit": code}
        ck.check(
            "ReleaseSession answered (or the leader was ended by the scope's stop first)",
            released.get("ok") or released.get("leader_exit") in (-signal.SIGTERM, -signal.SIGHUP),
            released,
        )
        job = await r.signals.wait(mark, "JobRemoved", login.scope)
        ck.check(
            "logind stops the scope at release: JobRemoved done",
            job is not None and job.args[3] == "done",
            job.brief() if job else None,
        )
        left = await wait_dead(login.pids)
        ck.equal("leader and children are gone", left, [])
        await login.exit()
        await r.wait_session_gone(ck, mark, login)
        await r.wait_user_gone(ck, mark)
    finally:
        await r.reconfigure_logind()


async def step_loginctl(r: Run, ck: Checks) -> None:
    uid, name = r.uid, r.user.name
    login = await r.login(ck)
    sid = login.sid

    def loginctl(*args: str) -> str:
        proc = run_booted([*r.loginctl, "--no-pager", *args])
        ck.check(f"loginctl {' '.join(args)}: exit 0", proc.returncode == 0, proc.stderr.strip())
        return proc.stdout

    version = loginctl("--version").splitlines()[0]
    ck.equal("loginctl is logind's build", version.split()[:2], r.version.split()[:2])
    listed = loginctl("list-sessions", "--no-legend")
    ck.check(
        "list-sessions: the session, its uid and user",
        any(line.split()[:3] == [sid, str(uid), name] for line in listed.splitlines()),
        listed,
    )
    users = loginctl("list-users", "--no-legend")
    ck.check(
        "list-users: the user",
        any(line.split()[:2] == [str(uid), name] for line in users.splitlines()),
        users,
    )
    status = loginctl("session-status", sid, "-n0")
    ck.check(f"session-status: Unit: {login.scope}", f"Unit: {login.scope}" in status, status)
    tree = [line for line in status.splitlines() if "─" in line]
    shown = {pid: any(f"─{pid} " in line for line in tree) for pid in login.pids}
    ck.check("session-status: the process tree has leader and children", all(shown.values()),
             {"tree": tree, "shown": shown})  # fmt: skip
    user_status = loginctl("user-status", str(uid), "-n0")
    ck.check(
        f"user-status: Unit: user-{uid}.slice with the session's scope",
        f"user-{uid}.slice" in user_status and login.scope in user_status,
        user_status,
    )
    shown = {pid: f"─{pid} " in user_status for pid in login.pids}
    ck.check("user-status: the process tree has leader and children", all(shown.values()),
             {"status": user_status, "shown": shown})  # fmt: skip
    props = dict(
        line.split("=", 1)
        for line in loginctl(
            "show-session", sid, "-p", "Scope", "-p", "Leader", "-p", "Name"
        ).splitlines()
        if "=" in line
    )
    ck.equal(
        "show-session: Scope, Leader, Name",
        props,
        {"Scope": login.scope, "Leader": str(login.leader), "Name": name},
    )
    mark = r.signals.mark()
    await r.logout(login)
    await r.wait_session_gone(ck, mark, login)
    await r.wait_user_gone(ck, mark)


async def _power(r: Run, ck: Checks, method: str, target: str, prepare: str) -> None:
    login = await r.login(ck)
    before = RECORD_FILE.read_text().splitlines() if RECORD_FILE.exists() else []
    mark = r.signals.mark()
    # what `systemctl poweroff`/`systemctl suspend` ask logind (loginctl has no such verb
    # before 256): the D-Bus call, as root, not interactive
    proc = await asyncio.to_thread(
        subprocess.run,
        ["busctl", "--system", "call", LOGIN1, LOGIN1_PATH, "org.freedesktop.login1.Manager",
         method, "b", "false"],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    ck.check(f"login1 {method}(false) answered", proc.returncode == 0, proc.stderr.strip())
    job = await r.signals.wait(mark, "JobRemoved", target)
    ck.check(
        f"logind started {target}: JobRemoved done",
        job is not None and job.args[3] == "done",
        job.brief() if job else [e.brief() for e in r.signals.since(mark, "JobRemoved")],
    )
    ck.check(f"JobNew {target}", r.signals.find(mark, "JobNew", target) is not None)
    after = RECORD_FILE.read_text().splitlines() if RECORD_FILE.exists() else []
    recorded = [json.loads(line) for line in after[len(before) :]]
    ck.check(
        f"scopeshim recorded the {target} action",
        [x.get("unit") for x in recorded] == [target],
        recorded,
    )
    await r.signals.wait(mark, prepare, False, timeout=10)  # logind sends it on JobRemoved
    signals = list(r.signals.since(mark, prepare))
    ck.equal(f"{prepare}(true), then (false)", [e.args[0] for e in signals], [True, False])
    if job is not None and len(signals) == 2:
        ck.check(f"{prepare}(false) after the job", signals[1].t >= job.t,
                 {"job": job.t, prepare: signals[1].t})  # fmt: skip
    session = await login1_session(r.bus, login.sid)
    ck.check(
        "the session lives on",
        all(alive(p) for p in login.pids) and "error" not in session,
        session,
    )
    mark = r.signals.mark()
    await r.logout(login)
    await r.wait_session_gone(ck, mark, login)
    await r.wait_user_gone(ck, mark)


async def step_poweroff(r: Run, ck: Checks) -> None:
    await _power(r, ck, "PowerOff", "poweroff.target", "PrepareForShutdown")


async def step_suspend(r: Run, ck: Checks) -> None:
    await _power(r, ck, "Suspend", "suspend.target", "PrepareForSleep")


async def step_logind_restart(r: Run, ck: Checks) -> None:
    login = await r.login(ck)
    code = await r.stop_logind()
    ck.equal("logind stopped (exit 0)", code, 0)
    if r.major >= 256:
        # logind 256+ keeps the leader's pidfd in its service manager's fd store (FdStore)
        ck.check(
            "the leader's pidfd is in the fd store",
            f"session-{login.sid}-leader-fd" in r.fdstore.stored(),
            r.fdstore.stored(),
        )
    ck.check("the session's processes live on", all(alive(p) for p in login.pids))
    ck.equal(
        "the scope stays active",
        (await unit_state(r.bus, login.scope)).get("ActiveState"),
        "active",
    )
    logs = r.logs.mark()
    await r.start_logind(**r.logind_conf)
    session = await wait_until(lambda: _session_back(r, login.sid), 10)
    ck.check("logind took the session up again", session, await login1_session(r.bus, login.sid))
    session = await login1_session(r.bus, login.sid)
    ck.check(
        "session: same scope and leader",
        session.get("Scope") == login.scope and session.get("Leader") == login.leader,
        session,
    )
    ok, body = await login1(r.bus, "GetSessionByPID", "u", login.children[0])
    ck.equal("GetSessionByPID(child)", body[0] if ok else body,
             f"{LOGIN1_PATH}/session/{label_escape(login.sid)}")  # fmt: skip
    mark = r.signals.mark()
    await r.logout(login)
    await r.wait_session_gone(ck, mark, login)
    await r.wait_user_gone(ck, mark)
    calls = r.logs.calls_since(logs)
    scope_path = f"/org/freedesktop/systemd1/unit/{label_escape(login.scope)}"
    ck.check(
        "logind's GC asked systemd1 about the scope after the restart",
        any(c.startswith("Get " + scope_path) for c in calls),
        calls,
    )
    refused = r.logs.excerpt(logs)["refused_calls"]
    unexpected = [x for x in refused if "UnitMasked" not in x]
    ck.equal("none of logind's systemd1 calls failed (user@ masked aside)", unexpected, [])


async def _session_back(r: Run, sid: str) -> bool:
    session = await login1_session(r.bus, sid)
    return "error" not in session


async def step_scopeshim_crash(r: Run, ck: Checks) -> None:
    # three sessions open at the crash: one to kill, one to release, one to terminate
    doomed, released, terminated = [await r.login(ck) for _ in range(3)]
    before = max([r.max_job_id, *r.signals.job_ids()])
    old_owner = await name_owner(r.bus, SYSTEMD1)
    code = r.daemon.crash()
    ck.equal("scopeshim killed with SIGKILL", code, -signal.SIGKILL)
    everyone = doomed.pids + released.pids + terminated.pids
    ck.check("the sessions' processes live on", all(alive(p) for p in everyone))
    r.daemon.restart()
    owner = await wait_new_owner(r.bus, SYSTEMD1, old_owner)
    ck.check("scopeshim restarted on the same state directory", owner)
    if owner is None:
        raise StepAbortedError
    ok, body = await systemd1(r.bus, "ListUnits")
    units = {u[0]: f"{u[2]}/{u[3]}/{u[4]}" for u in body[0]} if ok else {"error": body}
    want = {login.scope: "loaded/active/running" for login in (doomed, released, terminated)}
    want[f"user-{r.uid}.slice"] = "loaded/active/active"
    want[f"user-runtime-dir@{r.uid}.service"] = "loaded/active/exited"
    ck.equal("units restored (ListUnits)", {k: units.get(k) for k in want}, want)
    for login in (doomed, released, terminated):
        state = await unit_state(r.bus, login.scope)
        ck.equal(f"{login.scope}: same cgroup", state.get("ControlGroup"), r.scope_cgroup(login))
        ok, body = await systemd1(r.bus, "GetUnitProcesses", "s", login.scope)
        got = sorted(p[1] for p in body[0]) if ok else body
        ck.equal(f"{login.scope}: its processes", got, sorted(login.pids))
    ck.equal(f"/run/user/{r.uid} still mounted", runtime_dir(r.uid).get("mount"), "tmpfs")

    # job ids go on: a session opened after the restart
    mark = r.signals.mark()
    fresh = await r.login(ck)
    new_jobs = r.signals.job_ids(mark)
    ck.check(
        f"job ids after the restart are above {before}, the last before the crash",
        bool(new_jobs) and min(new_jobs) > before,
        {"before the crash": before, "after": new_jobs},
    )
    await r.logout(fresh)
    await r.wait_session_gone(ck, mark, fresh)

    # kill: KillSession(all); the scope empties, logind garbage-collects the session
    mark = r.signals.mark()
    ok, body = await login1(r.bus, "KillSession", "ssi", doomed.sid, "all", signal.SIGKILL)
    ck.check("KillSession(all) of a session from before the crash", ok, body)
    ck.equal("its processes are gone", await wait_dead(doomed.pids), [])
    await doomed.exit()
    await r.wait_session_gone(ck, mark, doomed)

    # release: Abandon of a restored scope, inactive once empty, then GC
    mark = r.signals.mark()
    answer = await released.command("release")
    ck.check("ReleaseSession of a session from before the crash", answer.get("ok"), answer)
    if r.fifo_less:
        await released.exit()  # 258+: the leader's exit stops the session
    abandoned = await wait_until(lambda: _unit_is(r, released.scope, "active", "abandoned"), 10)
    ck.check("its scope is abandoned", abandoned, await unit_state(r.bus, released.scope))
    if r.fifo_less:
        _kill(released.children)
    else:
        await released.command("kill-children")
    await released.exit()
    await r.wait_session_gone(ck, mark, released)

    # terminate: TerminateSession; the stop job's id goes on too
    mark = r.signals.mark()
    ok, body = await login1(r.bus, "TerminateSession", "s", terminated.sid)
    ck.check("TerminateSession of a session from before the crash", ok, body)
    job = await r.signals.wait(mark, "JobRemoved", terminated.scope)
    ck.check(
        "its stop job: JobRemoved done",
        job is not None and job.args[3] == "done",
        job.brief() if job else None,
    )
    if job is not None:
        ck.check(f"the stop job's id is above {before}", int(job.args[0]) > before, job.brief())
    ck.equal("its processes are gone", await wait_dead(terminated.pids), [])
    await terminated.exit()
    await r.wait_session_gone(ck, mark, terminated)
    await r.wait_user_gone(ck, mark)


STEPS: dict[str, Step] = {
    "open": step_open,
    "release": step_release,
    "user-stop-delay": step_user_stop_delay,
    "terminate-session": step_terminate_session,
    "terminate-user": step_terminate_user,
    "kill-session-leader": step_kill_session_leader,
    "kill-session-all": step_kill_session_all,
    "kill-user": step_kill_user,
    "kill-user-processes": step_kill_user_processes,
    "loginctl": step_loginctl,
    "poweroff": step_poweroff,
    "suspend": step_suspend,
    "logind-restart": step_logind_restart,
    "scopeshim-crash": step_scopeshim_crash,
}


async def run_step(r: Run, name: str, step: Step) -> None:
    ck = Checks()
    logs = r.logs.mark()
    start = time.monotonic()
    try:
        await asyncio.wait_for(step(r, ck), STEP_TIMEOUT)
    except StepAbortedError:
        pass
    except Exception as e:  # a step that breaks is a failed case, not a failed run
        ck.crashed(e)
    for login in r.logins:
        if login.proc.poll() is None and not any(alive(p) for p in login.children):
            await login.exit(5)
    left = await r.settle()
    ck.check("nothing left behind", not left, left)
    seconds = time.monotonic() - start
    excerpt = r.logs.excerpt(logs)
    if left:
        await r.force_clean()
    r.logins = [x for x in r.logins if x.proc.poll() is None]
    report(step=name, ok=ck.ok, seconds=round(seconds, 2), checks=ck.items, logs=excerpt)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logind", default=INSTALLED_LOGIND)
    parser.add_argument("--user", choices=("root", "unprivileged"), default="root")
    parser.add_argument("--steps", default=",".join(STEPS))
    args = parser.parse_args()
    run = Path(os.environ["SCOPESHIM_E2E_RUN"])
    user = ROOT_USER if args.user == "root" else private_user(run / "etc")
    private_sys_power()
    r = Run(args, user, run)
    report(step="setup", logind=r.version, uid=user.uid, user=user.name, loginctl=r.loginctl)
    r.daemon = Daemon()
    r.bus = await connect()
    try:
        await wait_name(r.bus, SYSTEMD1)
        r.signals = await Signals.attach(r.bus)
        await r.start_logind()
        for name in args.steps.split(","):
            await run_step(r, name, STEPS[name])
        await teardown(r)
    finally:
        for login in r.logins:
            login.kill()
        if r.logind is not None:
            stop_process(r.logind)
        r.daemon.stop()
        r.bus.disconnect()


async def teardown(r: Run) -> None:
    """logind and scopeshim stop; then nothing of the run may be left: no cgroup below the
    sandbox's root but user.slice, no mount under /run/user, no process but ours."""
    ck = Checks()
    start = time.monotonic()
    logs = r.logs.mark()
    ck.equal("logind stops (exit 0)", await r.stop_logind(), 0)
    ck.equal("scopeshim stops (exit 0)", r.daemon.stop(), 0)
    ck.equal("cgroups left", [c for c in cgroup_tree() if c != "user.slice"], [])
    ck.equal(
        "mounts under /run/user",
        [m["target"] for m in mounts() if m["target"].startswith("/run/user/")],
        [],
    )
    ours = {1, os.getpid()}
    procs = {
        pid: cmd
        for pid, cmd in process_list().items()
        if pid not in ours and not cmd.startswith("dbus-daemon ")
    }
    ck.equal("processes left", procs, {})
    report(step="teardown", ok=ck.ok, seconds=round(time.monotonic() - start, 2),
           checks=ck.items, logs=r.logs.excerpt(logs))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
