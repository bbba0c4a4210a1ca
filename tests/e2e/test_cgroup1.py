"""The cgroup1 backend on the real kernel.

1. In the sandbox (scenario_cgroup1.py): legacy tracking in a fresh named v1 hierarchy, through
   the backend and through scopeshim, and hybrid tracking in the sandbox's cgroup2 tree. The
   hierarchy is created here, in a private mount namespace held by a helper (the kernel only
   creates v1 hierarchies from the initial cgroup namespace); afterwards it must be gone.
2. On the host's v1 controller hierarchies: limits written into fresh, empty
   scopeshim-test-v1-* cgroups and read back; no process is ever put in them.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from backends.base import BackendError
from backends.cgroup1 import Cgroup1Backend, discover_controllers
from backends.resources import UINT64_MAX, block_device_number
from tests.e2e.conftest import HERE, run_in_sandbox

# holds the fresh hierarchy mounted (in its own mount namespace) until told, then removes any
# sub-cgroup left, says how many there were, and unmounts: the kernel then destroys it
HOLD = r"""d=$(mktemp -d /tmp/scopeshim-test-XXXXXX) || exit 1
mount -t cgroup -o "none,name=$1" cgroup "$d" || { rmdir "$d"; exit 77; }
echo ready
read _
left=$(find "$d" -mindepth 1 -type d | wc -l)
find "$d" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null
echo "left $left"
umount "$d" && rmdir "$d"
"""


def listed(name: str) -> bool:
    """Whether the kernel still has the hierarchy (cgroups(7): every hierarchy is a line)."""
    return f":name={name}:" in Path("/proc/self/cgroup").read_text()


@contextmanager
def named_hierarchy() -> Iterator[tuple[str, dict[str, Any]]]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    name = f"scopeshim-test-{os.getpid()}-{secrets.token_hex(4)}"
    helper = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", HOLD, "sh", name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert helper.stdin is not None and helper.stdout is not None and helper.stderr is not None
    with helper:  # closes the pipes
        if helper.stdout.readline().strip() != "ready":
            reason = helper.stderr.read().strip()
            helper.wait(10)
            pytest.skip(f"cannot create a named cgroup v1 hierarchy: {reason or helper.returncode}")
        state: dict[str, Any] = {}
        try:
            yield name, state
        finally:
            helper.stdin.write("\n")
            helper.stdin.flush()
            answer = helper.stdout.readline().split()
            helper.wait(10)
            state["left"] = int(answer[1]) if answer[:1] == ["left"] else answer
            deadline = time.monotonic() + 5  # an unmounted root is destroyed asynchronously
            while listed(name) and time.monotonic() < deadline:
                time.sleep(0.05)
            state["gone"] = not listed(name)


@pytest.mark.timeout(240)
def test_legacy_and_hybrid_tracking_on_the_real_kernel(python: str) -> None:
    with named_hierarchy() as (name, state):
        found = run_in_sandbox(python, str(HERE / "scenario_cgroup1.py"), name, timeout=150)
    events = {e["step"]: e for e in found}
    # nothing lingers: no sub-cgroup was left for the helper, and the hierarchy is gone
    assert state == {"left": 0, "gone": True}
    assert events["cleanup"] == {"step": "cleanup", "left": [], "umount": 0, "error": ""}

    backend = events["legacy-backend"]
    assert backend["legacy"] is True and backend["controllers"] == {}
    assert backend["capabilities"] == ["delegate", "kill", "pidfd"]
    assert events["attach"] == {
        "step": "attach",
        "pids_ok": True,
        "non_recursive": [],
        "cgroup_of": "/test.slice/a.scope",
        "proc_line": "/scopeshim/test.slice/a.scope",
        "outside": None,
    }
    # empty detection through pidfds: the backend polls every 30 s, the scenario waits 5 s at
    # most, so anything seen came through a pidfd (how fast: `make bench`, not a test)
    assert events["sigterm"] == {"step": "sigterm", "count": 1, "exit": -15, "seen": True}
    fork = events["fork-empty"]
    assert fork == {"step": "fork-empty", "children": 1, "adopted": True, "seen_after_child": True}
    kill = events["sigkill"]
    # forks keep coming; the loop's one short-lived `sleep 0.01` may end by itself meanwhile
    assert kill["before"] >= 10 and kill["count"] >= kill["before"] - 1
    assert kill["exit"] == -9 and kill["empty"] is True and kill["seen"] is True
    assert events["stubborn"] == {"step": "stubborn", "alive_after_term": True, "exit": -9}
    # a process moved away without exiting: no pidfd tells, only the poll sees it
    assert events["poll"] == {"step": "poll", "seen": True, "still_alive": True}
    assert events["remove"] == {
        "step": "remove",
        "freeze_refused": True,
        "delegated": {"": 65534, "cgroup.procs": 65534, "tasks": 65534},
        "populated_refused": True,
        "root_refused": True,
        "left": [],
    }

    # scopeshim itself, --backend cgroup1 over the named hierarchy
    scope = events["daemon-scope"]
    assert scope["result"] == "done"
    assert scope["cgroup"] == "/scopeshim-daemon/user.slice/user-1000.slice/c1.scope"
    assert scope["dir"] is True and scope["dir_after"] is False
    assert events["daemon-stop"] == {
        "step": "daemon-stop",
        "freeze": "org.freedesktop.DBus.Error.NotSupported",
        "job": "done",
        "exit": -9,
        "result": "timeout",
        "dir_after": False,
    }
    assert events["daemon-exit"]["exit"] == 0

    # hybrid: cgroup2 tracking, inotify, cgroup.freeze and cgroup.kill
    assert events["hybrid"] == {
        "step": "hybrid",
        "legacy": False,
        "cgroup_of": "/hybrid.slice/h.scope",
        "inotify": True,
        "frozen": True,
        "thawed": True,
        "count": 1,
        "exit": -9,
        "seen": True,
        "cgroup_id": True,
    }
    assert events["hybrid-removed"]["exists"] is False


def a_block_device() -> str | None:
    for entry in sorted(Path("/sys/block").glob("*")):
        node = f"/dev/{entry.name}"
        if not entry.name.startswith(("loop", "ram", "zram")) and block_device_number(node):
            return node
    return None


@pytest.mark.timeout(60)
def test_v1_limits_on_the_hosts_controllers_without_processes() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    unified = Path("/sys/fs/cgroup/unified")
    if not (unified / "cgroup.procs").exists():
        pytest.skip("not a hybrid host (no cgroup2 at /sys/fs/cgroup/unified)")
    name = f"scopeshim-test-v1-{os.getpid()}-{secrets.token_hex(3)}"
    tracking = unified / name
    controllers = discover_controllers(tracking.parent)
    if not controllers:
        pytest.skip("no cgroup v1 controller hierarchy mounted")
    tracking.mkdir()
    # our tree in each hierarchy: a fresh directory right under the hierarchy's root
    ours = {c: str(Path(d) / name) for c, d in controllers.items()}
    for d in ours.values():
        assert not Path(d).exists()
    b = Cgroup1Backend(tracking, ours)
    path = "/t.slice/l.scope"
    disk = a_block_device()
    settings: dict[str, object] = {
        "MemoryMax": 64 << 20,
        "CPUWeight": 50,
        "CPUQuotaPerSecUSec": 250_000,
        "TasksMax": 33,
        "AllowedCPUs": b"\x01",
        "AllowedMemoryNodes": b"\x01",
        "DevicePolicy": "closed",
        "DeviceAllow": [("/dev/null", "rw"), ("char-pts", "rw")],
        "CPUAccounting": True,
        "MemoryAccounting": True,
        "TasksAccounting": True,
        "IOWeight": 200,
    }
    if disk is not None:
        settings["IOReadBandwidthMax"] = [(disk, 1 << 20)]
    removed: Any = None
    try:
        b.create(path)
        notes = b.apply_resources(path, settings)
        got = {
            a: b.get_attribute(path, a)
            for a in ("memory.limit_in_bytes", "cpu.shares", "cpu.cfs_period_us",
                      "cpu.cfs_quota_us", "pids.max", "cpuset.cpus", "cpuset.mems")
        }  # fmt: skip
        devices = (b.get_attribute(path, "devices.list") or "").splitlines()
        throttle = b.get_attribute(path, "blkio.throttle.read_bps_device")
        usage = b.usage(path)
        inode = (tracking / path.lstrip("/")).stat().st_ino
        slice_cpus = b.get_attribute("/t.slice", "cpuset.cpus")
        root_cpus = (Path(controllers["cpuset"]) / "cpuset.cpus").read_text().strip()
        # a runtime change back to "infinity"
        b.apply_resources(
            path,
            {"MemoryMax": UINT64_MAX, "CPUQuotaPerSecUSec": UINT64_MAX, "TasksMax": UINT64_MAX},
        )
        reset = {a: b.get_attribute(path, a) for a in ("cpu.cfs_quota_us", "pids.max")}
        unlimited = int(b.get_attribute(path, "memory.limit_in_bytes") or 0)
        nobody = b.pids("/")
    finally:
        try:
            b.remove("/t.slice")
        except BackendError as e:
            removed = str(e)
        b.close()
        for d in [tracking, *map(Path, set(ours.values()))]:
            if d.is_dir():
                for sub in sorted(d.rglob("*"), key=lambda p: -len(p.parts)):
                    if sub.is_dir():
                        sub.rmdir()
                d.rmdir()
    assert removed is None
    left = [d for d in [tracking, *map(Path, ours.values())] if d.exists()]
    assert left == []
    assert nobody == []
    assert got == {
        "memory.limit_in_bytes": str(64 << 20),
        "cpu.shares": "512",
        "cpu.cfs_period_us": "100000",
        "cpu.cfs_quota_us": "25000",
        "pids.max": "33",
        "cpuset.cpus": "0",
        "cpuset.mems": "0",
    }
    assert slice_cpus == root_cpus  # the new parent cpuset copied its parent's
    assert "a *:* rwm" not in devices
    assert {"c 1:3 rwm", "c 1:5 rwm", "c 1:9 rwm", "c 136:* rw"} <= set(devices)
    if disk is not None:
        major, minor = block_device_number(disk) or (0, 0)
        assert throttle == f"{major}:{minor} {1 << 20}"
    assert (usage.memory_bytes, usage.tasks, usage.cpu_nsec) == (0, 0, 0)
    assert usage.cgroup_id == inode  # the cgroup2 tracking directory's
    # blkio.weight exists only with CFQ/BFQ; elsewhere IOWeight= is a note, as is nothing else
    weight_files = ("blkio.weight", "blkio.bfq.weight")
    if disk is None or not any((Path(ours["blkio"]) / f).exists() for f in weight_files):
        assert all(n.startswith("blkio.weight=1000 not applied") for n in notes), notes
    else:
        assert notes == []
    assert reset == {"cpu.cfs_quota_us": "-1", "pids.max": "max"}
    assert unlimited > 1 << 60
