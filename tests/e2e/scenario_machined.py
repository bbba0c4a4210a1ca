"""Inside the sandbox: Debian 12's systemd-machined and `systemd-nspawn --register=yes` (252,
package systemd-container) against scopeshim: register a container, `machinectl list` and
`status`, `machinectl terminate` (machined stops the machine's scope; nspawn set itself as
the scope's Controller=, so it gets Scope.RequestStop and ends the container), the same name
again at once, then `machinectl poweroff` (SIGRTMIN+4 to the container's PID 1). One JSON
object per step, as scenario_clients.py does; times are measured, never asserted.

nspawn picks its cgroup layout from /sys/fs/cgroup: on the sandbox's hybrid view (a tmpfs with
only `unified/`) it wants the v1 name=systemd hierarchy too, which the sandbox hides ("Failed
to chown() cgroup /sys/fs/cgroup/systemd/machine.slice/...: No such file or directory"). So
nspawn runs in a mount namespace of its own where /sys/fs/cgroup is the sandbox's cgroup2 tree
(the unified view, the tree the daemon manages), as scenario_clients_runc.py does for runc.
The hybrid-* steps run it in the hybrid view itself with SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1
(nspawn then gives the container cgroup2 and needs no v1 mirror). Under --oracle (the real
systemd 252 in the lab, unified already) it runs as it is.

The container is Debian's static busybox (an os-release, nothing else); its PID 1 is a shell
that ends on SIGRTMIN+4 (38 with glibc), the signal `machinectl poweroff` sends.

Usage: scenario_machined.py [--oracle] [--capture DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.e2e.clients_inside import (
    Session,
    cgroup_state,
    name_has_owner,
    run,
    run_steps,
    show,
    wait_for,
)

MACHINE = "ctl1"
SCOPE = f"machine-{MACHINE}.scope"
SCOPE_CGROUP = f"/machine.slice/{SCOPE}"
# the container's PID 1: SIGRTMIN+4 (glibc's 34 + 4) ends it, as it ends systemd's poweroff;
# SIGTERM and SIGHUP are ignored by it and its child (as a container's systemd survives them),
# so a stop that sends SIGTERM instead of RequestStop waits for TimeoutStopSec= (90 s)
PAYLOAD = (
    'trap "" TERM HUP; trap "echo poweroff-signal; exit 0" 38; echo container-ready; '
    "sleep 100000 & wait"
)
SCOPE_PROPS = (
    "Id", "LoadState", "ActiveState", "SubState", "Result", "Controller", "Slice",
    "ControlGroup", "Delegate", "Transient",
)  # fmt: skip
BOUND = 30.0  # every wait is bounded; a scope that only ends at its 90 s timeout fails it


def make_root(root: Path) -> None:
    """A minimal OS tree: busybox-static and an os-release (nspawn wants /usr and one)."""
    for d in ("usr/bin", "usr/lib", "etc", "proc", "sys", "dev", "run", "tmp", "var"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/busybox", root / "usr/bin/busybox")
    for tool in ("sh", "sleep", "echo", "cat"):
        with contextlib.suppress(FileExistsError):
            (root / "usr/bin" / tool).symlink_to("busybox")
    for link in ("bin", "sbin"):
        with contextlib.suppress(FileExistsError):
            (root / link).symlink_to("usr/bin")
    (root / "usr/lib/os-release").write_text('ID=scopeshim-test\nNAME="scopeshim test"\n')
    with contextlib.suppress(FileExistsError):
        (root / "etc/os-release").symlink_to("../usr/lib/os-release")
    (root / "etc/machine-id").write_text("")


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


class Machined:
    def __init__(self, session: Session) -> None:
        self.s = session
        self.root = session.cgroot
        self.tree = session.run_dir / "machine-root"
        self.machined: subprocess.Popen[bytes] | None = None
        self.nspawn: subprocess.Popen[bytes] | None = None
        self.nspawn_log = session.run_dir / "nspawn.log"
        unified = str(self.root) != "/sys/fs/cgroup"
        self.prefix = (
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             f'mount --bind {self.root} /sys/fs/cgroup && exec "$@"', "nspawn"]
            if unified
            else []
        )  # fmt: skip

    def cg(self) -> dict[str, Any]:
        return cgroup_state(self.root, SCOPE_CGROUP)

    def scope_procs(self) -> list[int]:
        """Every PID in the scope's cgroup tree (the payload sub-cgroup included)."""
        base = self.root / SCOPE_CGROUP.lstrip("/")
        pids: list[int] = []
        for procs in base.rglob("cgroup.procs") if base.is_dir() else []:
            with contextlib.suppress(OSError):
                pids += [int(p) for p in procs.read_text().split()]
        return sorted(pids)

    def nspawn_lines(self, *words: str) -> list[str]:
        try:
            text = self.nspawn_log.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if any(w in line for w in words)]

    def scope_gone(self) -> bool:
        state = show(SCOPE, "LoadState", "ActiveState")
        return state.get("ActiveState") in ("inactive", "failed") or (
            state.get("LoadState") == "not-found"
        )

    # -- steps ---------------------------------------------------------------------------

    def setup(self, f: dict[str, Any]) -> None:
        f["tools"] = {t: shutil.which(t) for t in ("systemd-nspawn", "machinectl")}
        f["machined_binary"] = os.path.exists("/lib/systemd/systemd-machined")
        make_root(self.tree)
        Path("/run/systemd/machines").mkdir(parents=True, exist_ok=True)
        log = open(self.s.run_dir / "machined.log", "wb")  # noqa: SIM115 (machined writes it)
        self.machined = subprocess.Popen(
            ["/lib/systemd/systemd-machined"], stdout=log, stderr=log,
            env={**os.environ, "SYSTEMD_LOG_LEVEL": "debug"},
        )  # fmt: skip
        f["machined_on_bus"] = wait_for(lambda: name_has_owner("org.freedesktop.machine1"), 15)
        f["version"] = run(["systemd-nspawn", "--version"])["out"].splitlines()[:1]

    def start_container(self, f: dict[str, Any], hybrid: bool = False) -> None:
        """nspawn in the unified view; HYBRID: in the sandbox's own hybrid view instead, told
        to give the container the unified hierarchy (SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1,
        systemd-nspawn(1)), so that it needs no name=systemd v1 mirror."""
        self.nspawn_log.write_text("")
        log = open(self.nspawn_log, "ab")  # noqa: SIM115 (nspawn writes it)
        prefix = [] if hybrid else self.prefix
        env = {**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"} if hybrid else None
        f["view"] = "hybrid" if hybrid and self.prefix else "unified"
        self.nspawn = subprocess.Popen(
            [*prefix, "systemd-nspawn", "--quiet", "--register=yes",
             "--directory", str(self.tree), "--machine", MACHINE,
             "/bin/sh", "-c", PAYLOAD],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, env=env,
        )  # fmt: skip
        t0 = time.monotonic()
        f["registered"] = wait_for(
            lambda: (
                bool(self.nspawn_lines("container-ready"))
                and show(SCOPE, "ActiveState").get("ActiveState") == "active"
            ),
            BOUND,
        )
        f["register_seconds"] = round(time.monotonic() - t0, 3)
        f["nspawn_pid"] = self.nspawn.pid
        f["nspawn_running"] = self.nspawn.poll() is None

    def register(self, f: dict[str, Any]) -> None:
        self.start_container(f)
        f["list"] = run(["machinectl", "list", "--no-legend", "--no-pager"])
        f["status"] = run(["machinectl", "status", MACHINE, "--no-pager", "--lines=0"])
        f["show"] = run(["machinectl", "show", MACHINE])
        f["scope"] = show(SCOPE, *SCOPE_PROPS)
        controller = f["scope"].get("Controller", "")
        f["controller_pid"] = None
        if controller:
            out = run(
                ["busctl", "--system", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
                 "org.freedesktop.DBus", "GetConnectionUnixProcessID", "s", controller],
            )  # fmt: skip
            with contextlib.suppress(ValueError, IndexError):
                f["controller_pid"] = int(out["out"].split()[1])
        f["cgroup"] = self.cg()
        f["procs"] = self.scope_procs()

    def stop_by(self, f: dict[str, Any], argv: list[str]) -> None:
        """Run ARGV and measure until nspawn, the scope, its cgroup and its processes are
        gone (each wait bounded by BOUND seconds)."""
        procs = self.scope_procs()
        f["procs_before"] = procs
        with open(self.s.run_dir / "requeststop.log", "wb") as out:
            mon = subprocess.Popen(
                ["dbus-monitor", "--system", "type='signal',member='RequestStop'"],
                stdout=out, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        wait_for(lambda: (self.s.run_dir / "requeststop.log").stat().st_size > 0, 5)
        t0 = time.monotonic()
        f["command"] = run(argv)
        f["command_seconds"] = round(time.monotonic() - t0, 3)
        assert self.nspawn is not None
        times: dict[str, float | None] = {}
        checks = {
            "nspawn_exit": lambda: self.nspawn is not None and self.nspawn.poll() is not None,
            "scope_gone": self.scope_gone,
            "cgroup_gone": lambda: not self.cg()["exists"],
            "procs_gone": lambda: not any(pid_alive(p) for p in procs),
            "machine_gone": lambda: (
                MACHINE not in run(["machinectl", "list", "--no-legend"])["out"]
            ),
        }
        for name, check in checks.items():
            done = wait_for(check, BOUND - (time.monotonic() - t0), interval=0.02)
            times[name] = round(time.monotonic() - t0, 3) if done else None
        f["seconds"] = times
        f["nspawn_rc"] = self.nspawn.poll()
        f["scope_after"] = show(SCOPE, "LoadState", "ActiveState", "SubState", "Result")
        f["cgroup_after"] = self.cg()
        f["left"] = [p for p in procs if pid_alive(p)]
        f["list_after"] = run(["machinectl", "list", "--no-legend", "--no-pager"])
        f["nspawn_log"] = self.nspawn_lines(
            "termination", "terminated", "exited", "poweroff-signal", "Failed", "rror"
        )
        time.sleep(0.2)
        mon.terminate()
        mon.wait(5)
        f["request_stop"] = [
            line
            for line in (self.s.run_dir / "requeststop.log").read_text().splitlines()
            if "member=RequestStop" in line
        ]

    def terminate(self, f: dict[str, Any]) -> None:
        self.stop_by(f, ["machinectl", "terminate", MACHINE])

    def again(self, f: dict[str, Any]) -> None:
        """The same name and directory at once (issue 14: "Directory tree ... is currently
        busy" while the old scope waited for its SIGKILL)."""
        self.start_container(f)
        f["list"] = run(["machinectl", "list", "--no-legend", "--no-pager"])

    def poweroff(self, f: dict[str, Any]) -> None:
        self.stop_by(f, ["machinectl", "poweroff", MACHINE])

    def hybrid_register(self, f: dict[str, Any]) -> None:
        self.start_container(f, hybrid=True)
        f["list"] = run(["machinectl", "list", "--no-legend", "--no-pager"])
        f["scope"] = show(SCOPE, *SCOPE_PROPS)

    def hybrid_terminate(self, f: dict[str, Any]) -> None:
        self.stop_by(f, ["machinectl", "terminate", MACHINE])

    def cleanup(self) -> dict[str, Any]:
        facts: dict[str, Any] = {}
        if self.nspawn is not None and self.nspawn.poll() is None:
            self.nspawn.kill()
            facts["nspawn_killed"] = True
        if self.nspawn is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.nspawn.wait(10)
        if self.machined is not None:
            self.machined.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                facts["machined_exit"] = self.machined.wait(10)
        return facts


STEPS = (
    "setup",
    "register",
    "terminate",
    "again",
    "poweroff",
    "hybrid_register",
    "hybrid_terminate",
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--oracle", action="store_true")
    parser.add_argument("--capture")
    args = parser.parse_args()
    session = Session("machined", args.oracle, args.capture)
    run_steps(session, Machined, STEPS)


if __name__ == "__main__":
    main()
