"""Inside the sandbox: a real PAM login. pamtester runs open_session and close_session of a
PAM service whose session stack is pam_systemd.so (the host's module, unmodified) followed
by a pam_exec hook (pam/session-hook.sh) that holds pamtester after each step, so the harness
can look at the session: the pamtester process in session-N.scope under
user.slice/user-UID.slice, the session and user on login1 (loginctl and D-Bus), the scope on
systemd1, the runtime directory; then, after close_session, the session closing; and after
pamtester's exit, scope, session and user gone.

The login is for root or for an unprivileged user that exists only in this sandbox:
/etc/passwd, /etc/group and /etc/pam.d are bind-mounted copies in the sandbox's private mount
namespace; the host's files are never written. loginctl is the one of logind's build.

Usage: scenario_pam.py [--logind PATH] [--user root|unprivileged]; prints one JSON object
per step.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.e2e.inside import connect, report, start_scopeshim, stop, wait_name
from tests.e2e.logind_kit import (
    INSTALLED_LOGIND,
    LOGIN1,
    ROOT_USER,
    SYSTEMD1,
    Logs,
    Signals,
    TestUser,
    cgroup_dir,
    login1_session,
    login1_user,
    logind_version,
    major,
    own_pam_systemd,
    private_user,
    run_booted,
    runtime_dir,
    start_logind,
    through_loader,
    unit_state,
    version_tool,
)

SERVICE = "scopeshim-e2e"
SHOW_SESSION = [
    f"--property={p}"
    for p in ("Id", "Name", "Scope", "State", "Class", "Type", "Leader", "Service")
]
SHOW_USER = [f"--property={p}" for p in ("UID", "Name", "State", "RuntimePath", "Slice")]
HOOK = Path(__file__).resolve().with_name("pam") / "session-hook.sh"


def private_pam_service(pam: Path, module: str = "pam_systemd.so") -> None:
    """An /etc/pam.d holding only the test service, bind-mounted over the original (this
    mount namespace only)."""
    pamd = pam / "pam.d"
    pamd.mkdir()
    (pamd / SERVICE).write_text(
        "# scopeshim e2e: a session through pam_systemd, then a hook that reports it\n"
        "auth     required pam_permit.so\n"
        "account  required pam_permit.so\n"
        f"session  required {module}\n"
        f"session  required pam_exec.so /bin/sh {HOOK} {pam}\n"
    )
    subprocess.run(["mount", "--bind", str(pamd), "/etc/pam.d"], check=True)


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


def loginctl(command: list[str], *args: str) -> dict[str, str]:
    """`loginctl show-...` (COMMAND: the loginctl of logind's build) as a dict, or
    {"error": its message}."""
    proc = run_booted([*command, "--no-pager", *args])
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
    parser.add_argument("--user", choices=("root", "unprivileged"), default="unprivileged")
    args = parser.parse_args()
    run = Path(os.environ["SCOPESHIM_E2E_RUN"])
    pam = run / "pam"
    pam.mkdir()
    user: TestUser = ROOT_USER if args.user == "root" else private_user(pam)
    # logind 258+ opens no session for pam_systemd 252 ("Leader PIDFD not available"): its
    # own build's module (io.systemd.Login over varlink), in a pamtester on its libraries
    own = major(logind_version(args.logind)) >= 258
    private_pam_service(pam, own_pam_systemd(args.logind) if own else "pam_systemd.so")
    pamtester_cmd = through_loader(args.logind, "/usr/bin/pamtester") if own else ["pamtester"]
    uid, name = user.uid, user.name
    ctl = version_tool(args.logind, "loginctl")
    report(step="setup", uid=uid, user=name, home=user.home, logind=logind_version(args.logind))
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
            [*pamtester_cmd, "-v", SERVICE, name, "open_session", "close_session"],
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
            loginctl_session=loginctl(ctl, "show-session", sid, *SHOW_SESSION),
            loginctl_user=loginctl(ctl, "show-user", str(uid), *SHOW_USER),
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
            scope_removed=await signals.wait(0, "UnitRemoved", unit) is not None,
            session_removed=await signals.wait(0, "SessionRemoved", sid) is not None,
            user_removed=await signals.wait(0, "UserRemoved", uid) is not None,
            slice_removed=await signals.wait(0, "UnitRemoved", f"user-{uid}.slice", timeout=10)
            is not None,
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
        report(step="logs", **Logs(run).excerpt({"logind.log": 0, "scopeshim.log": 0}))


if __name__ == "__main__":
    asyncio.run(main())
