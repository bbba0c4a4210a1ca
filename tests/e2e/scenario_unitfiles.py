"""Inside the sandbox: an administrator limits every user's memory the systemd way, with
Debian's systemctl 252 against scopeshim (cgroup2 backend, unit root "/", the sandbox's
private /etc/systemd and /run) and the installed logind 252 making the user slices:

  setup          /etc/systemd/system/user-.slice.d/50-memory.conf MemoryMax=2G, daemon-reload
  logins         two users log in (uid 0 and 65534) through logind (login_client.py)
  inspect        systemctl show -p DropInPaths,FragmentPath, cat, status of a user slice
  set-property   systemctl set-property user-65534.slice MemoryHigh=1G MemoryMax=1G
                 (persistent; MemoryMax stays 2G: 50-memory.conf sorts after
                 50-MemoryMax.conf, as on systemd 252)
  relogin        logout, daemon restart, login again: MemoryHigh=1G is back from its drop-in
  revert         systemctl revert user-65534.slice: the drop-in goes, 2G is back
  slice-file     /etc/systemd/system/e2e.slice: started, shown, its cgroup limit

One JSON object per step, as scenario_clients.py does.
Usage: scenario_unitfiles.py [--oracle]
  --oracle  under real-systemd.sh --nsenter (the real systemd 252 and its logind answer; the
            daemon restart is `systemctl daemon-reexec`)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.e2e.clients_inside import Session, cgroup_state, name_has_owner, run, run_steps, wait_for
from tests.e2e.scenario_clients_loginctl import LOGIND, LOGIND_CONF

USERS = (0, 65534)
DROPIN = Path("/etc/systemd/system/user-.slice.d/50-memory.conf")
CONTROL = Path("/etc/systemd/system.control/user-65534.slice.d")
SHOW = (
    "MemoryMax",
    "MemoryHigh",
    "TasksMax",
    "Description",
    "DropInPaths",
    "FragmentPath",
    "ActiveState",
)
FILES = ("memory.max", "pids.max")


def systemctl(*args: str) -> dict[str, Any]:
    return run(["systemctl", "--no-pager", *args])


def show(unit: str) -> dict[str, str]:
    out = systemctl("show", *(f"-p{p}" for p in SHOW), unit)["out"]
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


class UnitFiles:
    def __init__(self, session: Session) -> None:
        self.s = session
        self.logind: subprocess.Popen[bytes] | None = None
        self.clients: dict[int, subprocess.Popen[str]] = {}

    def slice_facts(self, uid: int) -> dict[str, Any]:
        return {
            "show": show(f"user-{uid}.slice"),
            "cgroup": cgroup_state(self.s.cgroot, f"/user.slice/user-{uid}.slice", FILES),
        }

    def login(self, uid: int) -> dict[str, Any]:
        client = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("login_client.py")), str(uid),
             "--gid", str(uid)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.clients[uid] = client
        assert client.stdout is not None
        line = client.stdout.readline()
        return json.loads(line) if line.strip() else {"ok": False, "error": "no answer"}

    def logout(self, uid: int) -> dict[str, Any]:
        client = self.clients.pop(uid)
        assert client.stdin is not None and client.stdout is not None
        client.stdin.write("release\nexit\n")
        client.stdin.flush()
        client.stdin.close()
        exit_code = client.wait(10)
        gone = wait_for(
            lambda: not cgroup_state(self.s.cgroot, f"/user.slice/user-{uid}.slice")["exists"], 15
        )
        return {"exit": exit_code, "slice_gone": gone}

    # -- steps ------------------------------------------------------------------------------

    def setup(self, f: dict[str, Any]) -> None:
        f["etc_private"] = run(["findmnt", "-n", "-o", "FSTYPE", "/etc/systemd"])["out"].strip()
        if f["etc_private"] != "tmpfs":
            raise RuntimeError("/etc/systemd is not private to the sandbox: refusing to write")
        DROPIN.parent.mkdir(parents=True, exist_ok=True)
        DROPIN.write_text("[Slice]\nMemoryMax=2G\n")
        f["reload"] = systemctl("daemon-reload")
        if self.s.oracle:
            f["logind"] = name_has_owner("org.freedesktop.login1")  # the lab started it
            return
        Path("/run/systemd/logind.conf.d").mkdir(parents=True, exist_ok=True)
        Path("/run/systemd/logind.conf.d/e2e.conf").write_text(LOGIND_CONF)
        with open(self.s.run_dir / "logind.log", "wb") as log:
            self.logind = subprocess.Popen(
                [LOGIND], stdout=log, stderr=log,
                env={**os.environ, "SYSTEMD_LOG_LEVEL": "debug", "SYSTEMD_LOG_TARGET": "console"},
            )  # fmt: skip
        f["logind"] = wait_for(lambda: name_has_owner("org.freedesktop.login1"), 15)

    def logins(self, f: dict[str, Any]) -> None:
        for uid in USERS:
            f[f"created-{uid}"] = self.login(uid)
            f[f"user-{uid}"] = self.slice_facts(uid)

    def inspect(self, f: dict[str, Any]) -> None:
        f["show"] = systemctl("show", "-p", "DropInPaths,FragmentPath", "user-0.slice")
        f["cat"] = systemctl("cat", "user-0.slice")
        f["status"] = systemctl("status", "--lines=0", "user-0.slice")

    def set_property(self, f: dict[str, Any]) -> None:
        f["set"] = systemctl("set-property", "user-65534.slice", "MemoryHigh=1G", "MemoryMax=1G")
        f["files"] = {p.name: p.read_text() for p in sorted(CONTROL.glob("*.conf"))}
        f["user-65534"] = self.slice_facts(65534)

    def relogin(self, f: dict[str, Any]) -> None:
        f["logout"] = self.logout(65534)
        f["file_kept"] = CONTROL.exists()
        if self.s.daemon is None:
            f["daemon_reexec"] = systemctl("daemon-reexec")
        else:
            f["daemon_stop"] = self.s.daemon.stop()
            f["daemon_start"] = self.s.daemon.start()
        f["created"] = self.login(65534)
        f["user-65534"] = self.slice_facts(65534)
        f["user-0"] = self.slice_facts(0)

    def revert(self, f: dict[str, Any]) -> None:
        f["revert"] = systemctl("revert", "user-65534.slice")
        f["file_gone"] = not CONTROL.exists()
        f["user-65534"] = self.slice_facts(65534)

    def slice_file(self, f: dict[str, Any]) -> None:
        frag = Path("/etc/systemd/system/e2e.slice")
        frag.write_text("[Unit]\nDescription=E2E slice\n[Slice]\nMemoryMax=300M\nTasksMax=50\n")
        f["reload"] = systemctl("daemon-reload")
        f["start"] = systemctl("start", "e2e.slice")
        f["show"] = show("e2e.slice")
        f["status"] = systemctl("status", "--lines=0", "e2e.slice")
        f["cgroup"] = cgroup_state(self.s.cgroot, "/e2e.slice", FILES)
        f["stop"] = systemctl("stop", "e2e.slice")

    def cleanup(self) -> dict[str, Any]:
        facts: dict[str, Any] = {}
        for uid in list(self.clients):
            try:
                facts[f"logout-{uid}"] = self.logout(uid)
            except Exception as e:  # cleanup goes on
                facts[f"logout-{uid}"] = repr(e)
        if self.logind is not None:
            self.logind.terminate()
            try:
                facts["logind_exit"] = self.logind.wait(10)
            except subprocess.TimeoutExpired:
                self.logind.kill()
                facts["logind_exit"] = self.logind.wait()
        return facts


STEPS = ("setup", "logins", "inspect", "set_property", "relogin", "revert", "slice_file")


def main() -> None:
    session = Session("unitfiles", "--oracle" in sys.argv, None)
    run_steps(session, UnitFiles, STEPS)


if __name__ == "__main__":
    main()
