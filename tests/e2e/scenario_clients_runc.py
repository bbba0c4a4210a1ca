"""Inside the sandbox: runc (Debian 12's 1.1.5) with --systemd-cgroup on a minimal OCI bundle
(oci_bundle.py: Debian's static busybox) against scopeshim: run, pause/resume, update,
kill/delete, and the slice:prefix:name form of cgroupsPath. One JSON object per step, as
scenario_clients.py does.

runc picks its cgroup driver from /sys/fs/cgroup: on the sandbox's hybrid view (a tmpfs with
only `unified/`) it takes the v1 driver, which needs the v1 hierarchies the sandbox hides. So
each runc command runs in a mount namespace of its own where /sys/fs/cgroup is the sandbox's
cgroup2 tree (the unified view, the same tree the daemon manages). Under --oracle (the real
systemd 252 in the lab, unified already) runc runs as it is.

Usage: scenario_clients_runc.py [--oracle] [--capture DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.e2e import oci_bundle
from tests.e2e.clients_inside import (
    Session,
    cgroup_state,
    cgroup_walk,
    run,
    run_steps,
    show,
)
from tests.e2e.clients_inside import wait_for as wait

STATE = "/run/scopeshim-runc"
UNIT_PROPS = (
    "Id", "Description", "LoadState", "ActiveState", "SubState", "Slice", "ControlGroup",
    "Delegate", "DefaultDependencies", "MemoryAccounting", "CPUAccounting", "IOAccounting",
    "TasksAccounting", "DevicePolicy", "FreezerState", "Transient",
)  # fmt: skip


class Runc:
    def __init__(self, session: Session) -> None:
        self.s = session
        self.root = session.cgroot
        self.bundles = session.run_dir / "oci"
        unified = str(self.root) != "/sys/fs/cgroup"
        self.prefix = (
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             f'mount --bind {self.root} /sys/fs/cgroup && exec "$@"', "runc"]
            if unified
            else []
        )  # fmt: skip

    def runc(self, *args: str, timeout: float = 60) -> dict[str, Any]:
        argv = [*self.prefix, "runc", "--systemd-cgroup", "--root", STATE, *args]
        shown = ["runc", "--systemd-cgroup", "--root", STATE, *args]
        if "--detach" not in args:
            return {**run(argv, timeout=timeout, stdin=subprocess.DEVNULL), "argv": shown}
        # a detached container keeps runc's stdout and stderr: files, not pipes
        out, err = self.s.run_dir / "runc.out", self.s.run_dir / "runc.err"
        with open(out, "wb") as o, open(err, "wb") as e:
            try:
                rc: int | None = subprocess.run(
                    argv, stdin=subprocess.DEVNULL, stdout=o, stderr=e, timeout=timeout
                ).returncode
            except subprocess.TimeoutExpired:
                rc = None
        return {"argv": shown, "rc": rc, "out": out.read_text(), "err": err.read_text()}

    def state(self, cid: str) -> dict[str, Any]:
        out = self.runc("state", cid)
        if out["rc"] != 0:
            return {"error": out["err"].strip()}
        data = json.loads(out["out"])
        return {"pid": data.get("pid"), "status": data.get("status")}

    def pid_cgroup(self, pid: int | None) -> str | None:
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                return next((line.strip()[3:] for line in f if line.startswith("0::")), None)
        except (OSError, TypeError):
            return None

    def cg(self, relative: str, *files: str) -> dict[str, Any]:
        return cgroup_state(self.root, relative, files)

    # -- steps -----------------------------------------------------------------------------

    def bundle(self, f: dict[str, Any]) -> None:
        f["busybox_static"] = oci_bundle.have_busybox()
        oci_bundle.build(self.bundles / "c1", ["sleep", "600"])
        oci_bundle.build(
            self.bundles / "c2", ["sleep", "600"], cgroups_path="clients.slice:ctr:two"
        )
        f["runc"] = run(["runc", "--version"])["out"].splitlines()[:1]

    def runc_run(self, f: dict[str, Any]) -> None:
        f["run"] = self.runc("run", "--detach", "--bundle", str(self.bundles / "c1"), "c1")
        f["state"] = self.state("c1")
        f["show"] = show("runc-c1.scope", *UNIT_PROPS)
        f["device_allow"] = run(["systemctl", "show", "-p", "DeviceAllow", "runc-c1.scope"])
        f["cgroup"] = self.cg("/system.slice/runc-c1.scope")
        f["pid_cgroup"] = self.pid_cgroup(f["state"].get("pid"))
        f["status"] = run(["systemctl", "status", "--no-pager", "--lines=0", "runc-c1.scope"])

    def runc_pause_resume(self, f: dict[str, Any]) -> None:
        path = "/system.slice/runc-c1.scope"
        f["pause"] = self.runc("pause", "c1")
        wait(lambda: self.cg(path).get("frozen") == "1", 3)
        f["paused"] = {"state": self.state("c1"), "cgroup": self.cg(path)}
        f["resume"] = self.runc("resume", "c1")
        wait(lambda: self.cg(path).get("frozen") == "0", 3)
        f["resumed"] = {"state": self.state("c1"), "cgroup": self.cg(path)}

    def runc_update(self, f: dict[str, Any]) -> None:
        """runc sends the limits to the unit (SetUnitProperties), then writes the cgroup
        files itself; on this machine's cgroup2 tree (no pids/memory/cpu controller) that
        second part fails the same way against the real systemd 252."""
        path = "/system.slice/runc-c1.scope"
        with self.s.property_reads() as reads:
            f["pids"] = self.runc("update", "--pids-limit", "100", "c1")
            f["memory"] = self.runc("update", "--memory", "100M", "c1")
            f["cpu"] = self.runc("update", "--cpu-period", "100000", "--cpu-quota", "50000", "c1")
        f["property_reads"] = reads
        f["show"] = show(
            "runc-c1.scope", "TasksMax", "MemoryMax", "CPUQuotaPerSecUSec", "CPUQuotaPeriodUSec"
        )
        f["cgroup"] = self.cg(path, "pids.max", "memory.max", "cpu.max")
        f["state"] = self.state("c1")

    def runc_delete(self, f: dict[str, Any]) -> None:
        pid = self.state("c1").get("pid")
        f["kill"] = self.runc("kill", "c1", "KILL")
        f["stopped"] = wait(lambda: self.state("c1").get("status") == "stopped", 10)
        f["delete"] = self.runc("delete", "c1")
        wait(lambda: not self.cg("/system.slice/runc-c1.scope")["exists"], 5)
        f["show"] = show("runc-c1.scope", "LoadState", "ActiveState")
        f["cgroup"] = self.cg("/system.slice/runc-c1.scope")
        f["pid_gone"] = not Path(f"/proc/{pid}").exists()
        f["list"] = self.runc("list", "--quiet")

    def runc_cgroups_path(self, f: dict[str, Any]) -> None:
        """cgroupsPath "slice:prefix:name": the scope prefix-name.scope in that slice."""
        f["run"] = self.runc("run", "--detach", "--bundle", str(self.bundles / "c2"), "c2")
        f["state"] = self.state("c2")
        f["show"] = show("ctr-two.scope", *UNIT_PROPS)
        f["cgroup"] = self.cg("/clients.slice/ctr-two.scope")
        f["pid_cgroup"] = self.pid_cgroup(f["state"].get("pid"))
        f["delete"] = self.runc("delete", "--force", "c2")
        wait(lambda: not self.cg("/clients.slice/ctr-two.scope")["exists"], 5)
        f["show_after"] = show("ctr-two.scope", "LoadState", "ActiveState")
        f["cgroup_after"] = self.cg("/clients.slice/ctr-two.scope")
        f["list"] = self.runc("list", "--quiet")

    def cleanup(self) -> dict[str, Any]:
        for cid in ("c1", "c2"):
            if "error" not in self.state(cid):
                self.runc("delete", "--force", cid)
        time.sleep(0.2)
        return {
            "leftover": [p for p in cgroup_walk(self.root) if "runc-" in p or "ctr-" in p],
            "containers": self.runc("list", "--quiet")["out"].split(),
        }


STEPS = ("bundle", "runc_run", "runc_pause_resume", "runc_update", "runc_delete",
         "runc_cgroups_path")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--oracle", action="store_true")
    parser.add_argument("--capture")
    args = parser.parse_args()
    session = Session("runc", args.oracle, args.capture)
    run_steps(session, Runc, STEPS)


if __name__ == "__main__":
    main()
