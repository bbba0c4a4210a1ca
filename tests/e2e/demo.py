"""`make demo`: a real logind session through scopeshim, shown step by step.

Runs inside tests/e2e/sandbox.sh (root; private /run, system bus and cgroup2 subtree, so
nothing here touches the machine): scopeshim serves org.freedesktop.systemd1 with the real
cgroup2 backend, the installed, unmodified systemd-logind starts on top of it, and a login
is opened the way pam_systemd opens one. Then it shows what that made: the processes and
their cgroup, the kernel's cgroup tree, the units on systemd1, `loginctl` and
`busctl tree org.freedesktop.systemd1`; and tears everything down again.

Usage: demo.py [--logind PATH] [--user root|unprivileged]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.e2e.inside import CGROOT, connect, wait_name
from tests.e2e.logind_kit import (
    INSTALLED_LOGIND,
    ROOT_USER,
    SYSTEMD1,
    Checks,
    Daemon,
    Signals,
    cgroup_of,
    cgroup_tree,
    logind_version,
    name_owner,
    owner_of,
    private_user,
    run_booted,
    runtime_dir,
    unit_state,
    version_tool,
)
from tests.e2e.scenario_logind import Run

BOLD, DIM, OFF = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def title(text: str) -> None:
    print(f"\n{BOLD}== {text}{OFF}", flush=True)


def say(text: str) -> None:
    print(textwrap.fill(text, 96), flush=True)


def show(command: list[str], booted: bool = False) -> str:
    """Print COMMAND as typed, run it, print its output indented; its output."""
    shown = [Path(command[0]).name if command[0].startswith("/") else command[0], *command[1:]]
    print(f"{DIM}${OFF} {shlex.join(shown)}", flush=True)
    proc = run_booted(command) if booted else subprocess.run(
        command, capture_output=True, text=True, timeout=30
    )  # fmt: skip
    out = (proc.stdout + proc.stderr).rstrip()
    print(textwrap.indent(out, "    ") if out else "    (no output)", flush=True)
    return proc.stdout


def process_table(pids: list[int]) -> None:
    print(f"    {'PID':>6}  {'USER':<14}  {'CGROUP':<45}  COMMAND")
    for pid in pids:
        uid = owner_of(pid)
        try:
            import pwd

            user = pwd.getpwuid(uid).pw_name if uid is not None else "?"
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (KeyError, OSError):
            user, cmd = str(uid), "?"
        print(f"    {pid:>6}  {user:<14}  {cgroup_of(pid) or '?':<45}  {cmd.strip()[:60]}")


def cgroup_listing() -> None:
    print(f"{DIM}$ find /sys/fs/cgroup/unified -name cgroup.procs  (with their processes){OFF}")
    for rel in cgroup_tree():
        depth = rel.count("/")
        procs = (CGROOT / rel / "cgroup.procs").read_text().split()
        tail = f"  <- processes {' '.join(procs)}" if procs else ""
        print(f"    {'  ' * depth}{rel.rsplit('/', 1)[-1]}{tail}")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logind", default=INSTALLED_LOGIND)
    parser.add_argument("--user", choices=("root", "unprivileged"), default="unprivileged")
    args = parser.parse_args()
    args.steps = ""
    run = Path(os.environ["SCOPESHIM_E2E_RUN"])
    user = ROOT_USER if args.user == "root" else private_user(run / "etc")
    r = Run(args, user, run)

    title("1. scopeshim takes systemd's place on the system bus")
    say(
        "This runs in a throw-away sandbox: its own /run, its own system bus and its own "
        "cgroup2 subtree (seen here as /sys/fs/cgroup/unified). scopeshim starts with the real "
        "cgroup2 backend and owns org.freedesktop.systemd1, the name systemd's service "
        "manager has on a systemd machine."
    )
    r.daemon = Daemon()
    r.bus = await connect()
    ck = Checks()
    try:
        await wait_name(r.bus, SYSTEMD1)
        r.signals = await Signals.attach(r.bus)
        print(f"    scopeshim: PID {r.daemon.pid}, bus name {SYSTEMD1} = "
              f"{await name_owner(r.bus, SYSTEMD1)}")  # fmt: skip

        title("2. the unmodified systemd-logind starts on top of it")
        await r.start_logind()
        say(f"{logind_version(args.logind)}, PID {r.logind.pid if r.logind else '?'}, owns "
            "org.freedesktop.login1. It believes it talks to systemd.")  # fmt: skip

        title(f"3. {user.name} (uid {user.uid}) logs in, the way pam_systemd does it")
        say(
            "A login process calls logind's CreateSession with itself as the session leader. "
            "logind asks systemd1 (scopeshim) for a scope unit, session-N.scope in "
            f"user-{user.uid}.slice, with the leader in it, and for the user's runtime "
            f"directory (user-runtime-dir@{user.uid}.service mounts /run/user/{user.uid}). "
            "The login then starts a few processes of the user, which inherit the scope."
        )
        login = await r.login(ck)
        info = login.info
        print(f"    CreateSession -> session {info['session']}, runtime dir "
              f"{info['runtime_path']}, leader PID {info['pid']}")  # fmt: skip

        title("4. the processes, and the cgroup the kernel put them in")
        process_table(login.pids)
        print()
        cgroup_listing()
        print()
        show(["findmnt", "-n", "-o", "TARGET,FSTYPE,OPTIONS", f"/run/user/{user.uid}"])
        print(f"    (owned by uid {runtime_dir(user.uid).get('owner')})")

        title("5. what systemd1 (scopeshim) says about the units")
        for unit in (
            login.scope,
            f"user-{user.uid}.slice",
            f"user-runtime-dir@{user.uid}.service",
            f"user@{user.uid}.service",
        ):
            state = await unit_state(r.bus, unit)
            print(f"    {unit:<34} {state.get('LoadState')}/{state.get('ActiveState')}/"
                  f"{state.get('SubState')}  {state.get('ControlGroup', '')}")  # fmt: skip
        say(f"(user@{user.uid}.service is masked by scopeshim's configuration: no per-user "
            "service manager; logind accepts that.)")  # fmt: skip

        title("6. loginctl, the unmodified client, sees a normal session")
        ctl = version_tool(args.logind, "loginctl")
        show([*ctl, "--no-pager", "list-sessions"], booted=True)
        show([*ctl, "--no-pager", "session-status", "-n0", login.sid], booted=True)

        title("7. busctl tree org.freedesktop.systemd1: the objects scopeshim serves")
        show(["busctl", "--system", "--no-pager", "tree", SYSTEMD1])

        title("8. logout: everything goes away again")
        say(
            "The login calls ReleaseSession (logind abandons the scope), its processes end, "
            "the scope's cgroup empties and scopeshim removes the scope; logind drops the "
            "session and the user; the runtime directory is unmounted and the user's slice "
            "removed."
        )
        mark = r.signals.mark()
        await login.logout()
        await r.wait_session_gone(ck, mark, login)
        await r.wait_user_gone(ck, mark)
        seen: list[str] = []  # (logind's polls of a gone scope load it again, as on systemd)
        for e in r.signals.since(mark):
            if e.member in ("UnitRemoved", "SessionRemoved", "UserRemoved"):
                line = f"    signal {e.member} {e.args[0]}"
                if line not in seen:
                    seen.append(line)
                    print(line)
        print()
        cgroup_listing()
        show([*ctl, "--no-pager", "list-sessions"], booted=True)
        failed = [label for label, ok, _detail in ck.items if not ok]
        if failed:
            print(f"\n{BOLD}unexpected:{OFF} " + "; ".join(failed))
    finally:
        title("9. stopping logind and scopeshim; the sandbox goes with them")
        if r.logind is not None:
            print(f"    logind exit {await r.stop_logind()}")
        print(f"    scopeshim exit {r.daemon.stop()}")
        r.bus.disconnect()
    raise SystemExit(1 if not ck.ok else 0)


if __name__ == "__main__":
    asyncio.run(main())
