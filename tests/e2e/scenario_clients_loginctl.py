"""Inside the sandbox: `loginctl session-status` (and its neighbours) on a real logind session
with scopeshim as systemd1. The installed, unmodified systemd-logind 252 runs on the
sandbox's bus; login_client.py opens a session for uid 0 the way pam_systemd does (with a
`sleep` and a `sh` with a `sleep` of its own inside it); loginctl then shows the session's
unit, its control group and its process tree, which it reads from systemd1 (Get ControlGroup,
GetUnitProcesses). One JSON object per step, as scenario_clients.py does.

Usage: scenario_clients_loginctl.py [--capture DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.e2e.clients_inside import Session, cgroup_state, name_has_owner, run, run_steps, wait_for

LOGIND = "/lib/systemd/systemd-logind"
# logind.conf(5) for a test machine: no VTs, no keys, no idle action
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


class Loginctl:
    def __init__(self, session: Session) -> None:
        self.s = session
        self.logind: subprocess.Popen[bytes] | None = None
        self.client: subprocess.Popen[str] | None = None
        self.created: dict[str, Any] = {}

    def start_logind(self, f: dict[str, Any]) -> None:
        Path("/run/systemd/logind.conf.d").mkdir(parents=True, exist_ok=True)
        Path("/run/systemd/logind.conf.d/e2e.conf").write_text(LOGIND_CONF)
        with open(self.s.run_dir / "logind.log", "wb") as log:
            self.logind = subprocess.Popen(
                [LOGIND],
                stdout=log,
                stderr=log,
                env={**os.environ, "SYSTEMD_LOG_LEVEL": "debug", "SYSTEMD_LOG_TARGET": "console"},
            )
        f["owned"] = wait_for(lambda: name_has_owner("org.freedesktop.login1"), 15)
        f["version"] = run([LOGIND, "--version"])["out"].splitlines()[:1]

    def open_session(self, f: dict[str, Any]) -> None:
        self.client = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("login_client.py")), "0", "--children"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.client.stdout is not None
        line = self.client.stdout.readline()
        self.created = json.loads(line) if line.strip() else {"ok": False, "error": "no answer"}
        f["created"] = self.created

    def session_status(self, f: dict[str, Any]) -> None:
        sid = self.created.get("session", "")
        scope = f"session-{sid}.scope"
        f["session"] = sid
        f["pids"] = [self.created.get("pid"), *self.created.get("children", [])]
        f["status"] = run(["loginctl", "session-status", "--no-pager", "--full", "--lines=0", sid])
        f["user_status"] = run(
            ["loginctl", "user-status", "--no-pager", "--full", "--lines=0", "0"]
        )
        f["list"] = run(["loginctl", "list-sessions", "--no-pager", "--no-legend"])
        f["show"] = run(["loginctl", "show-session", sid, "-p", "Scope", "-p", "Leader",
                         "-p", "State"])  # fmt: skip
        f["systemctl_status"] = run(["systemctl", "status", "--no-pager", "--full", "--lines=0",
                                     scope])  # fmt: skip
        f["cgroup"] = cgroup_state(self.s.cgroot, f"/user.slice/user-0.slice/{scope}")

    def close_session(self, f: dict[str, Any]) -> None:
        assert self.client is not None and self.client.stdin is not None
        self.client.stdin.write("kill-children\nrelease\n")
        self.client.stdin.flush()
        assert self.client.stdout is not None
        events = [json.loads(line) for line in (self.client.stdout.readline() for _ in range(2))
                  if line.strip()]  # fmt: skip
        f["released"] = next((e for e in events if e.get("event") == "released"), events)
        self.client.stdin.close()
        f["client_exit"] = self.client.wait(10)
        sid = self.created.get("session", "")
        f["gone"] = wait_for(
            lambda: (
                not cgroup_state(self.s.cgroot, f"/user.slice/user-0.slice/session-{sid}.scope")[
                    "exists"
                ]
            ),
            15,
        )
        f["list"] = run(["loginctl", "list-sessions", "--no-pager", "--no-legend"])

    def cleanup(self) -> dict[str, Any]:
        if self.client is not None and self.client.poll() is None:
            self.client.kill()
            self.client.wait()
        facts: dict[str, Any] = {}
        if self.logind is not None:
            self.logind.terminate()
            try:
                facts["logind_exit"] = self.logind.wait(10)
            except subprocess.TimeoutExpired:
                self.logind.kill()
                facts["logind_exit"] = self.logind.wait()
        return facts


STEPS = ("start_logind", "open_session", "session_status", "close_session")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--capture")
    args = parser.parse_args()
    session = Session("loginctl", False, args.capture)
    run_steps(session, Loginctl, STEPS)


if __name__ == "__main__":
    main()
