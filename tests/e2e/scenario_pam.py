"""Inside the sandbox: a real PAM login. pamtester runs open_session and close_session of a
PAM service whose session stack is pam_systemd.so (the host's module, unmodified) followed
by a pam_exec hook (pam/session-hook.sh) that holds pamtester after each step, so the harness
can look at the session: the pamtester process in session-N.scope under
user.slice/user-UID.slice, the session and user on login1 (loginctl and D-Bus), the scope on
systemd1, the runtime directory; then, after close_session, the session closing; and after
pamtester's exit, scope, session and user gone.

The login is for an unprivileged user that exists only in this sandbox: /etc/passwd,
/etc/group and /etc/pam.d are bind-mounted copies in the sandbox's private mount namespace;
the host's files are never written.

Usage: scenario_pam.py [--logind PATH]; prints one JSON object per step.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.e2e.inside import connect, report, start_scopeshim, stop, wait_name
from tests.e2e.scenario_logind import (
    INSTALLED_LOGIND,
    LOGIN1,
    SYSTEMD1,
    Signals,
    cgroup_dir,
    log_excerpt,
    login1_session,
    login1_user,
    logind_version,
    runtime_dir,
    start_logind,
    unit_state,
)

USER = "scopeshim-e2e"
SERVICE = "scopeshim-e2e"
SHOW_SESSION = [
    f"--property={p}"
    for p in ("Id", "Name", "Scope", "State", "Class", "Type", "Leader", "Service")
]
SHOW_USER = [f"--property={p}" for p in ("UID", "Name", "State", "RuntimePath", "Slice")]
HOOK = Path(__file__).resolve().with_name("pam") / "session-hook.sh"


def free_id(table: str, start: int = 4711) -> int:
    """A number no entry of /etc/passwd or /etc/group uses (field 3)."""
    used = {
        int(fields[2])
        for line in Path(table).read_text().splitlines()
        if len(fields := line.split(":")) > 2 and fields[2].isdigit()
    }
    return next(i for i in range(start, 60000) if i not in used)


def private_login_files(pam: Path) -> tuple[int, str]:
    """Bind-mount copies of /etc/passwd and /etc/group with the test user, and an /etc/pam.d
    holding only the test service, over the originals (this mount namespace only)."""
    uid = free_id("/etc/passwd")
    gid = free_id("/etc/group", uid)
    home = f"/run/home/{USER}"
    Path(home).mkdir(parents=True)
    os.chown(home, uid, gid)
    passwd, group, pamd = pam / "passwd", pam / "group", pam / "pam.d"
    shutil.copy2("/etc/passwd", passwd)
    shutil.copy2("/etc/group", group)
    with passwd.open("a") as f:
        f.write(f"{USER}:x:{uid}:{gid}:scopeshim e2e login:{home}:/bin/sh\n")
    with group.open("a") as f:
        f.write(f"{USER}:x:{gid}:\n")
    pamd.mkdir()
    (pamd / SERVICE).write_text(
        "# scopeshim e2e: a session through pam_systemd, then a hook that reports it\n"
        "auth     required pam_permit.so\n"
        "account  required pam_permit.so\n"
        "session  required pam_systemd.so\n"
        f"session  required pam_exec.so /bin/sh {HOOK} {pam}\n"
    )
    for source, target in ((passwd, "/etc/passwd"), (group, "/etc/group"), (pamd, "/etc/pam.d")):
        subprocess.run(["mount", "--bind", str(source), target], check=True)
    return uid, home


async def hook_report(pam: Path, pam_type: str, timeout: float) -> dict[str, Any] | None:
    """The hook's line for PAM_TYPE, once it is there."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    path = pam / "hook.jsonl"
    while loop.time() < deadline:
        if path.exists():
            for line in path.read_text().splitlines():
                entry: dict[str, Any] = json.loads(line)
                if entry["type"] == pam_type:
                    return entry
        await asyncio.sleep(0.05)
    return None


# loginctl (252) refuses to talk to the bus unless /run/systemd/system marks systemd as PID 1
# ("System has not been booted with systemd as init system (PID 1). Can't operate."), a check
# of its own that has nothing to do with the service manager. It gets that marker in a
# throw-away mount namespace of its own; logind, pam_systemd and the daemon never see it.
_BOOTED = (
    "mount -t tmpfs -o size=1m,mode=755 scopeshim-booted /run/systemd"
    ' && mkdir /run/systemd/system && exec loginctl --no-pager "$@"'
)


def loginctl(*args: str) -> dict[str, str]:
    """`loginctl show-...` as a dict, or {"error": its message}."""
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", _BOOTED, "loginctl", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip()}
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


def busctl_login1(method: str, pid: int) -> str:
    """login1's own PID lookup (GetSessionByPID / GetUserByPID) through busctl."""
    proc = subprocess.run(
        ["busctl", "--system", "--json=short", "call", LOGIN1, "/org/freedesktop/login1",
         "org.freedesktop.login1.Manager", method, "u", str(pid)],
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip
    if proc.returncode != 0:
        return "error: " + proc.stderr.strip()
    return str(json.loads(proc.stdout)["data"][0])


def own_cgroup(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return next((line.strip()[3:] for line in f if line.startswith("0::")), None)
    except FileNotFoundError:
        return None


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logind", default=INSTALLED_LOGIND)
    args = parser.parse_args()
    run = Path(os.environ["SCOPESHIM_E2E_RUN"])
    pam = run / "pam"
    pam.mkdir()
    uid, home = private_login_files(pam)
    report(step="setup", uid=uid, home=home, logind=logind_version(args.logind))
    daemon = start_scopeshim()
    bus = await connect()
    logind = pamtester = None
    pamtester_log = open(pam / "pamtester.log", "w+")  # noqa: SIM115
    try:
        await wait_name(bus, SYSTEMD1)
        signals = await Signals.attach(bus)
        logind = start_logind(args.logind, run)
        await wait_name(bus, LOGIN1)
        pamtester = subprocess.Popen(
            ["pamtester", "-v", SERVICE, USER, "open_session", "close_session"],
            stdin=subprocess.DEVNULL,
            stdout=pamtester_log,
            stderr=subprocess.STDOUT,
        )

        # open_session returned: pam_systemd has its session; pamtester waits in the hook
        opened = await hook_report(pam, "open_session", 90)
        if opened is None:
            exited = pamtester.poll()
            pamtester_log.seek(0)
            report(
                step="open_session", ok=False, pamtester_exit=exited, output=pamtester_log.read()
            )
            return
        sid = opened["XDG_SESSION_ID"]
        if not sid:  # pam_systemd opened no session (the stack fails): let pamtester end
            (pam / "go-open_session").touch()
            exited = await asyncio.to_thread(pamtester.wait, 30)
            pamtester_log.seek(0)
            report(
                step="open_session",
                ok=False,
                hook=opened,
                pamtester_exit=exited,
                output=pamtester_log.read(),
            )
            return
        unit = f"session-{sid}.scope"
        user_slice = f"user.slice/user-{uid}.slice"
        report(
            step="open_session",
            ok=True,
            hook=opened,
            pamtester_pid=pamtester.pid,
            pamtester_cgroup=own_cgroup(pamtester.pid),
            scope_cgroup=cgroup_dir(f"{user_slice}/{unit}"),
            session_by_pid=busctl_login1("GetSessionByPID", pamtester.pid),
            user_by_pid=busctl_login1("GetUserByPID", pamtester.pid),
            loginctl_session=loginctl("show-session", sid, *SHOW_SESSION),
            loginctl_user=loginctl("show-user", str(uid), *SHOW_USER),
            session=await login1_session(bus, sid),
            user=await login1_user(bus, uid),
            scope=await unit_state(bus, unit),
            runtime_dir=runtime_dir(uid),
        )
        (pam / "go-open_session").touch()

        # close_session returned: pam_systemd has released the session; pamtester, still
        # in the scope, waits in the hook again
        closed = await hook_report(pam, "close_session", 60)
        report(
            step="close_session",
            ok=closed is not None,
            hook=closed,
            pamtester_cgroup=own_cgroup(pamtester.pid),
            session=await login1_session(bus, sid),
            scope=await unit_state(bus, unit),
        )
        (pam / "go-close_session").touch()

        # pamtester exits: the scope empties and goes, logind drops the session and the user
        exit_code = await asyncio.to_thread(pamtester.wait, 30)
        pamtester_log.seek(0)
        report(
            step="exited",
            pamtester_exit=exit_code,
            output=pamtester_log.read(),
            scope_removed=await signals.wait("UnitRemoved", unit),
            session_removed=await signals.wait("SessionRemoved", sid),
            user_removed=await signals.wait("UserRemoved", uid),
            slice_removed=await signals.wait("UnitRemoved", f"user-{uid}.slice", 10),
            scope_cgroup=cgroup_dir(f"{user_slice}/{unit}"),
            slice_cgroup=cgroup_dir(user_slice),
            runtime_dir=runtime_dir(uid),
            session=await login1_session(bus, sid),
            user=await login1_user(bus, uid),
        )
    finally:
        # release the hook in any case, so that pamtester can finish
        for step in ("open_session", "close_session"):
            (pam / f"go-{step}").touch()
        if pamtester is not None and pamtester.poll() is None:
            try:
                pamtester.wait(10)
            except subprocess.TimeoutExpired:
                pamtester.kill()
                pamtester.wait()
        pamtester_log.close()
        bus.disconnect()
        if logind is not None:
            report(step="logind-exit", exit=stop(logind))
        report(step="stopped", exit=stop(daemon))
        report(step="logs", **log_excerpt(run))


if __name__ == "__main__":
    asyncio.run(main())
