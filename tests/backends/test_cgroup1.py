"""The cgroup1 backend on temporary directories shaped like v1 hierarchies (and a cgroup2-like
tracking directory for hybrid): no kernel is needed; processes, where used, are real children
of the test that only ever appear in plain files. tests/e2e/test_cgroup1.py uses the kernel."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from backends.base import BackendError, Capability, CgroupBackend
from backends.cgroup1 import Cgroup1Backend, discover_controllers

GROUPS = ("memory", "cpu,cpuacct", "pids", "blkio", "cpuset", "devices", "freezer")


def v1_dir(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name in ("tasks", "cgroup.procs", "cgroup.clone_children"):
        (d / name).write_text("")
    return d


def controllers(tmp_path: Path, groups=GROUPS) -> dict[str, Path]:
    out = {}
    for group in groups:
        d = v1_dir(tmp_path / group)
        for c in group.split(","):
            out[c] = d
    if "cpuset" in out:
        (out["cpuset"] / "cpuset.cpus").write_text("0-3\n")
        (out["cpuset"] / "cpuset.mems").write_text("0\n")
    return out


def legacy(tmp_path: Path, groups=GROUPS, **kw) -> Cgroup1Backend:
    track = v1_dir(tmp_path / "systemd")
    b = Cgroup1Backend(track, controllers(tmp_path, groups), mountinfo="", **kw)
    assert isinstance(b, CgroupBackend)
    return b


def hybrid(tmp_path: Path, groups=GROUPS, freeze=False, **kw) -> Cgroup1Backend:
    track = tmp_path / "unified"
    track.mkdir(parents=True)
    for name in ("cgroup.procs", "cgroup.controllers", "cgroup.subtree_control"):
        (track / name).write_text("")
    if freeze:
        (track / "cgroup.freeze").write_text("0\n")
    return Cgroup1Backend(track, controllers(tmp_path, groups), mountinfo="", **kw)


def text(p: Path) -> str:
    return p.read_text()


def scrub(d: Path) -> None:
    """Plain files stand in for kernel files, which rmdir does not mind: remove them."""
    for f in d.rglob("*"):
        if f.is_file():
            f.unlink()


def test_capabilities_follow_the_hierarchies(tmp_path):
    b = legacy(tmp_path / "a")
    assert b.legacy and not b.tracking.v2
    assert b.capabilities == {
        Capability.KILL,
        Capability.DELEGATE,
        Capability.LIMITS,
        Capability.FREEZE,
        Capability.PIDFD,
        Capability.DEVICES,
    }
    h = hybrid(tmp_path / "b", groups=())
    assert not h.legacy and h.capabilities == {Capability.KILL, Capability.DELEGATE}
    assert Capability.FREEZE in hybrid(tmp_path / "c", groups=(), freeze=True).capabilities
    assert "cpu,cpuacct at" in legacy(tmp_path / "d").describe()


def test_bad_configurations_are_refused(tmp_path):
    with pytest.raises(BackendError) as e:
        Cgroup1Backend(tmp_path / "missing")
    assert e.value.errno == errno.ENOENT
    track = v1_dir(tmp_path / "t")
    with pytest.raises(BackendError) as e:
        Cgroup1Backend(track, {"net_cls": tmp_path}, mountinfo="")
    assert e.value.errno == errno.EINVAL
    with pytest.raises(BackendError):
        Cgroup1Backend(track, {"memory": track}, mountinfo="")
    with pytest.raises(BackendError):
        Cgroup1Backend(track, poll_interval=0, mountinfo="")


def test_create_realises_tracking_and_the_freezer_only(tmp_path):
    b = legacy(tmp_path)
    b.create("/u.slice/a.scope")
    assert b.exists("/u.slice/a.scope")
    assert (tmp_path / "freezer/u.slice/a.scope").is_dir()
    for group in ("memory", "cpu,cpuacct", "pids", "devices"):
        assert not (tmp_path / group / "u.slice").exists()
    for bad in ("relative", "/a/../b"):
        with pytest.raises(BackendError):
            b.create(bad)


def test_limits_realise_exactly_the_needed_controllers(tmp_path):
    b = legacy(tmp_path)
    b.create("/u.slice/a.scope")
    notes = b.apply_resources(
        "/u.slice/a.scope", {"MemoryMax": 4096, "CPUWeight": 200, "TasksMax": 10}
    )
    assert notes == []
    assert text(tmp_path / "memory/u.slice/a.scope/memory.limit_in_bytes") == "4096\n"
    assert text(tmp_path / "cpu,cpuacct/u.slice/a.scope/cpu.shares") == "2048\n"
    assert text(tmp_path / "pids/u.slice/a.scope/pids.max") == "10\n"
    for group in ("devices", "blkio", "cpuset"):
        assert not (tmp_path / group / "u.slice").exists()
    assert b.get_attribute("/u.slice/a.scope", "memory.limit_in_bytes") == "4096"
    assert b.get_attribute("/u.slice/a.scope", "cpu.shares") == "2048"
    assert b.get_attribute("/u.slice/a.scope", "blkio.weight") is None
    # settings v1 cannot express are notes, as are controllers without a hierarchy
    notes = b.apply_resources("/u.slice/a.scope", {"MemoryLow": 5, "CPUAccounting": True})
    assert notes == ["MemoryLow= is not available on cgroup v1, ignored"]
    nothing = legacy(tmp_path / "few", groups=("memory",))
    nothing.create("/x.scope")
    assert nothing.apply_resources("/x.scope", {"TasksMax": 5, "IOAccounting": True}) == [
        "no cgroup v1 blkio hierarchy here: blkio accounting not applied",
        "no cgroup v1 pids hierarchy here: pids.max not applied",
    ]


def test_attributes_go_to_their_hierarchy(tmp_path):
    b = legacy(tmp_path)
    b.create("/a.scope")
    with pytest.raises(BackendError) as e:
        b.set_attribute("/a.scope", "memory.limit_in_bytes", "1")
    assert e.value.errno == errno.ENOENT and "memory hierarchy" in str(e.value)
    b.apply_resources("/a.scope", {"MemoryAccounting": True})
    b.set_attribute("/a.scope", "memory.limit_in_bytes", "1")
    assert text(tmp_path / "memory/a.scope/memory.limit_in_bytes") == "1\n"
    b.set_attribute("/a.scope", "notify_on_release", "0")  # not a controller's: tracking
    assert text(tmp_path / "systemd/a.scope/notify_on_release") == "0\n"
    for bad in ("../x", ".hidden", ""):
        with pytest.raises(BackendError) as e:
            b.set_attribute("/a.scope", bad, "1")
        assert e.value.errno == errno.EINVAL


def test_attach_moves_into_tracking_and_the_realised_cgroups(tmp_path):
    b = legacy(tmp_path)
    b.create("/u.slice/a.scope")
    b.apply_resources("/u.slice/a.scope", {"TasksMax": 10})
    pid = os.getpid()  # only written into plain files
    b.attach("/u.slice/a.scope", [pid])
    assert text(tmp_path / "systemd/u.slice/a.scope/cgroup.procs") == f"{pid}\n"
    assert text(tmp_path / "pids/u.slice/a.scope/cgroup.procs") == f"{pid}\n"
    assert text(tmp_path / "freezer/u.slice/a.scope/cgroup.procs") == f"{pid}\n"
    # memory is not realised anywhere on the path: the process stays where it is
    assert text(tmp_path / "memory/cgroup.procs") == ""
    assert b.pids("/u.slice") == [pid]
    assert b.pids("/u.slice", recursive=False) == []
    # a sibling not realised in pids joins the nearest realised ancestor's cgroup there
    b.apply_resources("/u.slice", {"TasksAccounting": True})
    b.create("/u.slice/b.scope")
    b.attach("/u.slice/b.scope", [pid])
    assert text(tmp_path / "pids/u.slice/cgroup.procs") == f"{pid}\n"
    with pytest.raises(BackendError) as e:
        b.attach("/nope.scope", [pid])
    assert e.value.errno == errno.ENOENT


def test_realising_a_controller_migrates_the_units_processes(tmp_path):
    b = legacy(tmp_path)
    b.create("/s.slice/c.scope")
    b.create("/s.slice/d.scope")
    (tmp_path / "systemd/s.slice/c.scope/cgroup.procs").write_text("77\n")
    (tmp_path / "systemd/s.slice/d.scope/cgroup.procs").write_text("88\n")
    b.apply_resources("/s.slice/c.scope", {"MemoryMax": 1 << 20})
    # c.scope's process into its own cgroup, d.scope's into the slice's (now realised)
    assert text(tmp_path / "memory/s.slice/c.scope/cgroup.procs") == "77\n"
    assert text(tmp_path / "memory/s.slice/cgroup.procs") == "88\n"
    b.apply_resources("/s.slice/c.scope", {"MemoryMax": 2 << 20})  # already there: no move
    assert text(tmp_path / "memory/s.slice/c.scope/memory.limit_in_bytes") == "2097152\n"


def test_cpuset_cgroups_inherit_cpus_and_mems(tmp_path):
    b = legacy(tmp_path)
    b.create("/u.slice/a.scope")
    assert b.apply_resources("/u.slice/a.scope", {"AllowedCPUs": b"\x02"}) == []
    assert text(tmp_path / "cpuset/u.slice/cpuset.cpus") == "0-3\n"
    assert text(tmp_path / "cpuset/u.slice/cpuset.mems") == "0\n"
    assert text(tmp_path / "cpuset/u.slice/a.scope/cpuset.cpus") == "1\n"
    assert text(tmp_path / "cpuset/u.slice/a.scope/cpuset.mems") == "0\n"
    # AllowedCPUs= reset: the parent's set again
    b.apply_resources("/u.slice/a.scope", {"AllowedCPUs": b""})
    assert text(tmp_path / "cpuset/u.slice/a.scope/cpuset.cpus") == "0-3\n"


def test_device_rules_are_written_in_order(tmp_path, monkeypatch):
    b = legacy(tmp_path)
    b.create("/d.scope")
    written = []
    real = b._write

    def record(h, path, attribute, value):
        written.append((h.name, attribute, value))
        real(h, path, attribute, value)

    monkeypatch.setattr(b, "_write", record)
    notes = b.apply_resources(
        "/d.scope", {"DevicePolicy": "strict", "DeviceAllow": [("/dev/null", "rw")]}
    )
    assert notes == []
    assert written == [
        ("devices", "devices.deny", "a"),
        ("devices", "devices.allow", "c 1:3 rw"),
    ]


def test_blkio_weight_falls_back_to_bfq(tmp_path):
    b = legacy(tmp_path)
    b.create("/io.scope")
    (tmp_path / "blkio/io.scope").mkdir()
    (tmp_path / "blkio/io.scope/blkio.bfq.weight").write_text("100\n")
    assert b.apply_resources("/io.scope", {"IOWeight": 200}) == []
    assert text(tmp_path / "blkio/io.scope/blkio.bfq.weight") == "1000\n"
    assert not (tmp_path / "blkio/io.scope/blkio.weight").exists()


def test_remove_refuses_populated_and_root_and_clears_every_hierarchy(tmp_path):
    b = legacy(tmp_path)
    b.create("/u.slice/a.scope")
    b.apply_resources("/u.slice/a.scope", {"MemoryMax": 4096, "TasksMax": 5})
    (tmp_path / "systemd/u.slice/a.scope/cgroup.procs").write_text("10\n")
    with pytest.raises(BackendError) as e:
        b.remove("/u.slice")
    assert e.value.errno == errno.EBUSY and "populated" in str(e.value)
    with pytest.raises(BackendError) as e:
        b.remove("/")
    assert e.value.errno == errno.EBUSY
    for group in ("systemd", *GROUPS):
        if (tmp_path / group / "u.slice").exists():
            scrub(tmp_path / group / "u.slice")
    b.remove("/u.slice")
    for group in ("systemd", *GROUPS):
        assert not (tmp_path / group / "u.slice").exists(), group
    b.remove("/u.slice")  # gone already: nothing to do


def test_remove_evicts_processes_left_in_a_controller_cgroup(tmp_path):
    b = legacy(tmp_path)
    b.create("/s.slice/x.scope")
    b.apply_resources("/s.slice/x.scope", {"TasksMax": 5})
    (tmp_path / "pids/s.slice/x.scope/cgroup.procs").write_text("55\n")
    with pytest.raises(BackendError) as e:
        b.remove("/s.slice/x.scope")  # plain files make rmdir fail: the error says where
    assert "pids hierarchy" in str(e.value) and e.value.errno is not None
    assert text(tmp_path / "pids/s.slice/cgroup.procs") == "55\n"


def test_freezer_v1_and_cgroup_freeze(tmp_path):
    b = legacy(tmp_path / "l")
    b.create("/f.scope")
    b.freeze("/f.scope")
    assert text(tmp_path / "l/freezer/f.scope/freezer.state") == "FROZEN\n"
    b.thaw("/f.scope")
    assert text(tmp_path / "l/freezer/f.scope/freezer.state") == "THAWED\n"
    h = hybrid(tmp_path / "h", freeze=True)
    h.create("/f.scope")
    assert not (tmp_path / "h/freezer/f.scope").exists()  # cgroup.freeze is used instead
    h.freeze("/f.scope")
    assert text(tmp_path / "h/unified/f.scope/cgroup.freeze") == "1\n"
    h.thaw("/f.scope")
    assert text(tmp_path / "h/unified/f.scope/cgroup.freeze") == "0\n"
    none = hybrid(tmp_path / "n", groups=())
    none.create("/f.scope")
    with pytest.raises(BackendError) as e:
        none.freeze("/f.scope")
    assert e.value.errno == errno.EOPNOTSUPP


def test_kill_signals_every_listed_process(tmp_path):
    b = legacy(tmp_path)
    b.create("/k.scope/sub")
    procs = [subprocess.Popen(["sleep", "60"]) for _ in range(2)]
    try:
        (tmp_path / "systemd/k.scope/cgroup.procs").write_text(f"{procs[0].pid}\n")
        (tmp_path / "systemd/k.scope/sub/cgroup.procs").write_text(f"{procs[1].pid}\n")
        assert b.kill("/k.scope", signal.SIGTERM, recursive=False) == 1
        assert procs[0].wait(5) == -signal.SIGTERM
        assert b.kill("/k.scope", signal.SIGKILL) == 1  # the dead one is not signalled
        assert procs[1].wait(5) == -signal.SIGKILL
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_sigkill_thaws_a_v1_frozen_cgroup(tmp_path):
    b = legacy(tmp_path)
    b.create("/k.scope")
    b.freeze("/k.scope")
    assert b.kill("/k.scope", signal.SIGKILL) == 0
    assert text(tmp_path / "freezer/k.scope/freezer.state") == "THAWED\n"


def test_hybrid_sigkill_uses_cgroup_kill(tmp_path):
    b = hybrid(tmp_path)
    b.create("/k.scope")
    (tmp_path / "unified/k.scope/cgroup.kill").write_text("")
    (tmp_path / "unified/k.scope/cgroup.procs").write_text("1234\n")
    assert b.kill("/k.scope", signal.SIGKILL) == 1
    assert text(tmp_path / "unified/k.scope/cgroup.kill") == "1\n"


def test_usage_reads_the_v1_counters(tmp_path):
    b = legacy(tmp_path)
    b.create("/a.scope")
    b.apply_resources(
        "/a.scope",
        {"MemoryAccounting": True, "TasksAccounting": True, "CPUAccounting": True,
         "IOAccounting": True},
    )  # fmt: skip
    (tmp_path / "memory/a.scope/memory.usage_in_bytes").write_text("8192\n")
    (tmp_path / "pids/a.scope/pids.current").write_text("3\n")
    (tmp_path / "cpu,cpuacct/a.scope/cpuacct.usage").write_text("1500000\n")
    (tmp_path / "blkio/a.scope/blkio.throttle.io_service_bytes_recursive").write_text(
        "8:0 Read 100\n8:0 Write 200\n8:0 Sync 0\n8:0 Async 300\n8:0 Total 300\n"
        "8:16 Read 1\n8:16 Write 2\n8:16 Total 3\nTotal 303\n"
    )
    (tmp_path / "blkio/a.scope/blkio.throttle.io_serviced").write_text(
        "8:0 Read 4\n8:0 Write 6\n8:0 Total 10\nTotal 10\n"
    )
    u = b.usage("/a.scope")
    assert (u.memory_bytes, u.tasks, u.cpu_nsec) == (8192, 3, 1_500_000)
    assert (u.io_read_bytes, u.io_write_bytes, u.io_read_ops, u.io_write_ops) == (101, 202, 4, 6)
    assert u.cgroup_id is None  # not a cgroup2 mount
    assert b.usage("/missing.scope").tasks is None
    b.create("/plain.scope")
    assert b.usage("/plain.scope").memory_bytes is None  # not realised in memory


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_delegate_chowns_the_tracking_cgroup_only(tmp_path):
    b = legacy(tmp_path)
    b.create("/d.scope")
    b.apply_resources("/d.scope", {"MemoryMax": 4096})
    for name in ("cgroup.procs", "tasks", "cgroup.clone_children", "memory.limit_in_bytes"):
        (tmp_path / "systemd/d.scope" / name).write_text("")
    b.delegate("/d.scope", 65534, 65534)
    for name in ("", "cgroup.procs", "tasks", "cgroup.clone_children"):
        assert (tmp_path / "systemd/d.scope" / name).stat().st_uid == 65534
    assert (tmp_path / "systemd/d.scope/memory.limit_in_bytes").stat().st_uid == 0
    assert (tmp_path / "memory/d.scope").stat().st_uid == 0  # v1 controllers: not delegated
    h = hybrid(tmp_path / "h")
    h.create("/d.scope")
    for name in ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control"):
        (tmp_path / "h/unified/d.scope" / name).write_text("")
    h.delegate("/d.scope", 65534, 65534)
    for name in ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control"):
        assert (tmp_path / "h/unified/d.scope" / name).stat().st_uid == 65534
    with pytest.raises(BackendError) as e:
        h.delegate("/missing.scope", 65534, 65534)
    assert e.value.errno == errno.ENOENT


# -- /proc/PID/cgroup and mountinfo ---------------------------------------------------------


def own_cgroups() -> list[tuple[str, str, str]]:
    return [
        tuple(line.split(":", 2))
        for line in Path("/proc/self/cgroup").read_text().split("\n")
        if line
    ]


def mount_line(point: Path, root: str, fstype: str, options: str) -> str:
    return f"90 23 0:99 {root} {point} rw - {fstype} {fstype} {options}\n"


def test_cgroup_of_translates_the_mount_root(tmp_path):
    lines = own_cgroups()
    v1 = [(names, path) for hier, names, path in lines if hier != "0" and names]
    unified = [path for hier, names, path in lines if hier == "0"]
    if v1:
        names, path = v1[0]
        track = v1_dir(tmp_path / "legacy")
        info = mount_line(track, path, "cgroup", "rw," + names)
        assert Cgroup1Backend(track, mountinfo=info).cgroup_of(os.getpid()) == "/"
        elsewhere = mount_line(track, "/elsewhere", "cgroup", "rw," + names)
        assert Cgroup1Backend(track, mountinfo=elsewhere).cgroup_of(os.getpid()) is None
    if unified:
        track = tmp_path / "unified"
        track.mkdir()
        parent, _, leaf = unified[0].rpartition("/")
        b = Cgroup1Backend(track, mountinfo=mount_line(track, parent or "/", "cgroup2", "rw"))
        assert b.cgroup_of(os.getpid()) == "/" + leaf if leaf else "/"
        assert b.cgroup_of(2**22 + 12345) is None  # no such process
    if not v1 and not unified:
        pytest.skip("this process shows no cgroup membership")


def test_attach_takes_a_process_out_of_our_cgroups_only(tmp_path):
    """A process joining a unit not realised in memory leaves a memory cgroup of ours for our
    root, and stays in any memory cgroup we did not make."""
    memory = [path for _h, names, path in own_cgroups() if "memory" in names.split(",")]
    if not memory or memory[0] == "/":
        pytest.skip("this process's v1 memory cgroup is the root, or there is none")
    parent, _, leaf = memory[0].rpartition("/")
    track = v1_dir(tmp_path / "systemd")
    mem = v1_dir(tmp_path / "memory")
    info = mount_line(mem, parent or "/", "cgroup", "rw,memory")
    b = Cgroup1Backend(track, {"memory": mem}, mountinfo=info)
    b.create("/y.scope")
    b.attach("/y.scope", [os.getpid()])
    assert text(mem / "cgroup.procs") == ""  # /LEAF is no cgroup of ours: left alone
    b.create("/" + leaf)  # now it is (a unit's cgroup)
    b.attach("/y.scope", [os.getpid()])
    assert text(mem / "cgroup.procs") == f"{os.getpid()}\n"


def test_discover_controllers_from_mountinfo(tmp_path):
    unified = tmp_path / "cg/unified"
    (unified / "scopeshim").mkdir(parents=True)
    cpu = v1_dir(tmp_path / "cg/cpu,cpuacct")
    memory = v1_dir(tmp_path / "cg/memory")
    pids = v1_dir(tmp_path / "cg/pids")
    hidden = tmp_path / "hidden"
    v1_dir(hidden / "blkio")
    info = (
        mount_line(unified, "/", "cgroup2", "rw")
        + mount_line(cpu, "/", "cgroup", "rw,cpu,cpuacct")
        + mount_line(memory, "/", "cgroup", "rw,memory")
        + mount_line(pids, "/other", "cgroup", "rw,pids")  # holds no /scopeshim: not used
        + mount_line(hidden / "blkio", "/", "cgroup", "rw,blkio")
        + mount_line(hidden, "/", "tmpfs", "rw")  # mounted over blkio: hidden
        + mount_line(tmp_path / "x", "/", "cgroup", "rw,name=systemd")  # no controller
    )
    found = discover_controllers(unified / "scopeshim", mountinfo=info)
    assert found == {
        "cpu": str(cpu / "scopeshim"),
        "cpuacct": str(cpu / "scopeshim"),
        "memory": str(memory / "scopeshim"),
    }
    assert discover_controllers(unified, mountinfo=info)["pids"] == str(pids)
    # the directories need not exist yet: they are made when a unit needs them
    b = Cgroup1Backend(unified / "scopeshim", found, mountinfo=info)
    b.create("/a.scope")
    b.apply_resources("/a.scope", {"MemoryMax": 4096})
    assert text(memory / "scopeshim/a.scope/memory.limit_in_bytes") == "4096\n"
    with pytest.raises(BackendError) as e:
        Cgroup1Backend(unified, {"memory": cpu}, mountinfo=info)
    assert "not the memory hierarchy" in str(e.value)


def test_discover_on_this_machine_is_read_only_and_consistent():
    found = discover_controllers(
        "/sys/fs/cgroup/unified" if Path("/sys/fs/cgroup/unified").is_dir() else "/sys/fs/cgroup"
    )
    for controller, directory in found.items():
        assert controller in GROUPS or controller in ("cpu", "cpuacct")
        assert Path(directory).is_dir()


# -- empty cgroups -----------------------------------------------------------------------


async def until(cond) -> None:
    """Until COND() holds: no clock (pytest's timeout ends a wait that never ends)."""
    while not cond():
        await asyncio.sleep(0.01)


async def wait_called(calls: list[tuple[str, float]]) -> None:
    await until(lambda: calls)


def recorder(calls):
    return lambda path: calls.append((path, time.monotonic()))


def rechecks(b: Cgroup1Backend) -> list[int]:
    """Counts the backend's re-checks of its watched cgroups (each poll makes one)."""
    done: list[int] = []
    original = b._recheck

    def counting(which):
        done.append(1)
        original(which)

    b._recheck = counting
    return done


def held(*script: str) -> subprocess.Popen[bytes]:
    """A shell that runs SCRIPT once release() gives it a line (no sleep decides when)."""
    return subprocess.Popen(["sh", "-c", "read go; " + " ".join(script)], stdin=subprocess.PIPE)


def release(p: subprocess.Popen[bytes]) -> None:
    assert p.stdin is not None
    p.stdin.write(b"go\n")
    p.stdin.close()


async def test_legacy_exit_of_the_last_process_is_seen_through_its_pidfd(tmp_path):
    b = legacy(tmp_path, poll_interval=3600)  # no poll in the test: only the pidfd can tell
    b.create("/w.scope")
    procs = tmp_path / "systemd/w.scope/cgroup.procs"
    # the process empties its "cgroup.procs" as it exits, as the kernel would
    p = held(f": > {procs}")
    try:
        procs.write_text(f"{p.pid}\n")
        calls: list[tuple[str, float]] = []
        b.watch_empty("/w.scope", recorder(calls))
        await asyncio.sleep(0)
        assert calls == [] and p.pid in b._pidfds  # held: still there
        release(p)
        await wait_called(calls)
        assert calls[0][0] == "/w.scope" and b._pidfds == {}
    finally:
        p.kill()
        p.wait()
        b.close()


async def test_legacy_forked_children_are_adopted_when_the_parent_exits(tmp_path):
    b = legacy(tmp_path, poll_interval=3600)
    b.create("/f.scope")
    procs = tmp_path / "systemd/f.scope/cgroup.procs"
    child = held(f": > {procs}")
    parent = held(f"echo {child.pid} > {procs}")
    try:
        procs.write_text(f"{parent.pid}\n")
        calls: list[tuple[str, float]] = []
        b.watch_empty("/f.scope", recorder(calls))
        assert list(b._pidfds) == [parent.pid]
        release(parent)
        await until(lambda: list(b._pidfds) != [parent.pid])
        assert calls == [] and list(b._pidfds) == [child.pid]  # adopted after the parent left
        release(child)
        await wait_called(calls)
    finally:
        for p in (child, parent):
            p.kill()
            p.wait()
        b.close()


async def test_legacy_a_process_moved_away_unseen_is_caught_by_the_poll(tmp_path):
    b = legacy(tmp_path, poll_interval=0.05)
    b.create("/m.scope")
    procs = tmp_path / "systemd/m.scope/cgroup.procs"
    p = subprocess.Popen(["sleep", "60"])
    try:
        procs.write_text(f"{p.pid}\n")
        calls: list[tuple[str, float]] = []
        b.watch_empty("/m.scope", recorder(calls))
        polls = rechecks(b)
        await until(lambda: len(polls) >= 2)  # polled while it was there: nothing fired
        assert calls == []
        procs.write_text("")  # someone else moved it: it did not exit, so only a poll sees it
        await wait_called(calls)
        assert b._timer is None  # no watch left: no poll either
    finally:
        p.kill()
        p.wait()
        b.close()


async def test_legacy_attach_elsewhere_rechecks_the_cgroup_left(tmp_path):
    b = legacy(tmp_path, poll_interval=60)
    b.create("/a.scope")
    b.create("/b.scope")
    p = subprocess.Popen(["sleep", "60"])
    try:
        b.attach("/a.scope", [p.pid])
        calls: list[tuple[str, float]] = []
        b.watch_empty("/a.scope", recorder(calls))
        (tmp_path / "systemd/a.scope/cgroup.procs").write_text("")  # as the kernel would
        b.attach("/b.scope", [p.pid])
        await wait_called(calls)
        assert text(tmp_path / "systemd/b.scope/cgroup.procs") == f"{p.pid}\n"
    finally:
        p.kill()
        p.wait()
        b.close()


async def test_watching_an_empty_cgroup_fires_at_once_and_unwatch_cancels(tmp_path):
    b = legacy(tmp_path, poll_interval=0.05)
    b.create("/e.scope")
    calls: list[tuple[str, float]] = []
    b.watch_empty("/e.scope", recorder(calls))
    await wait_called(calls)
    b.create("/busy.scope")
    (tmp_path / "systemd/busy.scope/cgroup.procs").write_text("999999\n")
    b.watch_empty("/busy.scope", recorder(calls))
    b.unwatch("/busy.scope")
    (tmp_path / "systemd/busy.scope/cgroup.procs").write_text("")
    assert b._timer is None  # no watch left: no poll armed
    b._recheck(lambda w: True)  # what a poll would do: the unwatched cgroup is not reported
    await asyncio.sleep(0)
    assert len(calls) == 1
    b.close()


async def test_hybrid_uses_inotify_on_cgroup_events(tmp_path):
    b = hybrid(tmp_path, poll_interval=60)
    b.create("/i.scope")
    events = tmp_path / "unified/i.scope/cgroup.events"
    events.write_text("populated 1\nfrozen 0\n")
    calls: list[tuple[str, float]] = []
    b.watch_empty("/i.scope", recorder(calls))
    await asyncio.sleep(0)
    assert calls == [] and b._timer is None and b._pidfds == {}
    events.write_text("populated 0\nfrozen 0\n")
    await wait_called(calls)
    b.close()
