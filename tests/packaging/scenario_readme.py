"""Inside the sandbox: the README's Install section, from "start scopeshim" on, with the staged
`make install` tree at its real paths: the sysvinit script starts scopeshim, logind is started
with the README's commands, a user logs in through PAM (a service whose session stack is the
system's common-session, where pam-auth-update puts pam_systemd, plus a hook that holds the
session open), and the session is where the README says; then logind and scopeshim stop, in
that order. One JSON line per step.

Only for the sandbox (not README steps): logind's drop-in turns off VT and key handling
(logind would otherwise see the host's input devices), the installed configuration gets
[power] "record" everywhere, and the login user exists in the private /etc only.

Usage: scenario_readme.py DESTDIR
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.packaging.inside import WORK, report, result, run, stage, wait_for

# the README's commands, verbatim (test_readme.py checks that README.md has them)
START_SCOPESHIM = "/etc/init.d/scopeshim start"
START_LOGIND = [
    "update-rc.d systemd-logind defaults",
    "/etc/init.d/systemd-logind start",
]
LIST_SESSIONS = (
    "busctl call org.freedesktop.login1 /org/freedesktop/login1 org.freedesktop.login1.Manager "
    "ListSessions"
)
STOP_LOGIND = "/etc/init.d/systemd-logind stop"
STOP_SCOPESHIM = "/etc/init.d/scopeshim stop"

USER = "scopeshim-readme"
SERVICE = "scopeshim-readme"
HOOK = Path(__file__).resolve().with_name("pam-hook.sh")
LOGIND_DROPIN = """[Login]
NAutoVTs=0
ReserveVT=0
HandlePowerKey=ignore
HandleSuspendKey=ignore
HandleHibernateKey=ignore
HandleLidSwitch=ignore
HandleLidSwitchExternalPower=ignore
HandleLidSwitchDocked=ignore
IdleAction=ignore
"""
RECORD_ALL = "\n".join(
    f'{t} = "record"'
    for t in (
        "poweroff", "reboot", "halt", "kexec", "suspend", "hibernate", "hybrid-sleep",
        "suspend-then-hibernate", "factory-reset",
    )
)  # fmt: skip


def sh(command: str, timeout: float = 60) -> dict[str, Any]:
    return result(run(*shlex.split(command), timeout=timeout))


def owned(name: str) -> bool:
    r = run("busctl", "--system", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
            "org.freedesktop.DBus", "NameHasOwner", "s", name)  # fmt: skip
    return r.stdout.strip() == "b true"


def free_id(table: str, start: int = 4800) -> int:
    used = {
        int(f[2])
        for line in Path(table).read_text().splitlines()
        if len(f := line.split(":")) > 2 and f[2].isdigit()
    }
    return next(i for i in range(start, 60000) if i not in used)


def hook_line(pam: Path, pam_type: str, timeout: float = 90) -> dict[str, Any] | None:
    found: dict[str, Any] | None = None

    def seen() -> bool:
        nonlocal found
        path = pam / "hook.jsonl"
        if path.exists():
            for line in path.read_text().splitlines():
                entry = json.loads(line)
                if entry["type"] == pam_type:
                    found = entry
                    return True
        return False

    wait_for(seen, timeout, 0.05)
    return found


def main() -> None:
    stage(Path(sys.argv[1]))
    # sandbox only: record power actions, keep the daemon's output, a login user, PAM service
    conf = Path("/etc/scopeshim/scopeshim.toml")
    conf.write_text(conf.read_text().replace("[power]\n", f"[power]\n{RECORD_ALL}\n", 1))
    Path("/etc/default/scopeshim").write_text("LOGFILE=/run/scopeshim.log\n")
    uid = free_id("/etc/passwd")
    gid = free_id("/etc/group", uid)
    home = Path(f"/run/home/{USER}")
    home.mkdir(parents=True)
    os.chown(home, uid, gid)
    with open("/etc/passwd", "a") as f:
        f.write(f"{USER}:x:{uid}:{gid}:scopeshim README login:{home}:/bin/sh\n")
    with open("/etc/group", "a") as f:
        f.write(f"{USER}:x:{gid}:\n")
    pam = WORK / "pam"
    pam.mkdir()
    Path(f"/etc/pam.d/{SERVICE}").write_text(
        "auth     required pam_permit.so\n"
        "account  required pam_permit.so\n"
        "session  include  common-session\n"
        f"session  required pam_exec.so /bin/sh {HOOK} {pam}\n"
    )
    common = Path("/etc/pam.d/common-session").read_text()
    report(
        step="setup",
        uid=uid,
        pam_systemd_in_common_session="pam_systemd.so" in common,
        pam_systemd_module=[str(p) for p in Path("/lib").glob("*/security/pam_systemd.so")],
        logind=os.path.exists("/lib/systemd/systemd-logind"),
    )

    # README: start scopeshim, then logind
    report(step="start_scopeshim", **sh(START_SCOPESHIM), owned=owned("org.freedesktop.systemd1"))
    Path("/run/systemd/logind.conf.d").mkdir(parents=True, exist_ok=True)
    Path("/run/systemd/logind.conf.d/sandbox.conf").write_text(LOGIND_DROPIN)
    started = [sh(c) for c in START_LOGIND]
    report(step="start_logind", commands=started,
           owned=wait_for(lambda: owned("org.freedesktop.login1"), 20))  # fmt: skip

    # README: log in through PAM, look at the session
    pamtester = subprocess.Popen(
        ["pamtester", "-v", SERVICE, USER, "open_session", "close_session"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    opened = hook_line(pam, "open_session")
    sid = (opened or {}).get("XDG_SESSION_ID", "")
    unit = f"session-{sid}.scope"
    path = "/org/freedesktop/systemd1/unit/" + unit.replace("-", "_2d").replace(".", "_2e")
    scope = result(run("busctl", "--system", "get-property", "org.freedesktop.systemd1", path,
                       "org.freedesktop.systemd1.Unit", "ActiveState"))  # fmt: skip
    runtime = Path(f"/run/user/{uid}")
    report(
        step="logged_in",
        hook=opened,
        pamtester_cgroup=Path(f"/proc/{pamtester.pid}/cgroup").read_text(),
        sessions=sh(LIST_SESSIONS),
        scope=scope,
        runtime_dir_owner=runtime.stat().st_uid if runtime.exists() else None,
    )
    (pam / "go-open_session").touch()
    closed = hook_line(pam, "close_session")
    (pam / "go-close_session").touch()
    try:
        out, _ = pamtester.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        pamtester.kill()
        out, _ = pamtester.communicate()
    gone = wait_for(lambda: run("busctl", "--system", "get-property", "org.freedesktop.systemd1",
                                path, "org.freedesktop.systemd1.Unit", "ActiveState")
                    .stdout.strip() != 's "active"', 30)  # fmt: skip
    report(step="logged_out", hook=closed, pamtester_exit=pamtester.returncode, output=out,
           scope_gone=gone)  # fmt: skip

    # README: stop logind first, then scopeshim
    report(step="stop_logind", **sh(STOP_LOGIND),
           gone=wait_for(lambda: not owned("org.freedesktop.login1"), 20))  # fmt: skip
    report(step="stop_scopeshim", **sh(STOP_SCOPESHIM), owned=owned("org.freedesktop.systemd1"))
    log = Path("/run/scopeshim.log")
    report(step="log", text=log.read_text() if log.exists() else "")


if __name__ == "__main__":
    main()
