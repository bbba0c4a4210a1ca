"""The cgroup2 backend on a temporary directory shaped like cgroupfs (no kernel needed);
the real kernel tree is exercised in tests/e2e (scope lifecycle, logind session)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from backends.base import BackendError, CgroupBackend
from backends.cgroup2 import Cgroup2Backend


def make(tmp_path):
    b = Cgroup2Backend(tmp_path)
    assert isinstance(b, CgroupBackend)
    return b


def test_create_attributes_and_limits(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpu io memory pids\n")
    b = make(tmp_path)
    b.create("/user.slice/u.scope")
    assert b.exists("/user.slice/u.scope")
    notes = b.apply_resources(
        "/user.slice/u.scope", {"MemoryMax": 4096, "CPUWeight": 20, "TasksMax": 2**64 - 1}
    )
    d = tmp_path / "user.slice/u.scope"
    assert (d / "memory.max").read_text() == "4096\n"
    assert (d / "cpu.weight").read_text() == "20\n"
    assert (d / "pids.max").read_text() == "max\n"
    assert notes == []
    # cgroup-v2.rst top-down constraint: enabled in every ancestor, not in the unit itself
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+cpu +memory +pids\n"
    assert (tmp_path / "user.slice/cgroup.subtree_control").read_text() == "+cpu +memory +pids\n"
    assert not (d / "cgroup.subtree_control").exists()
    assert b.get_attribute("/user.slice/u.scope", "memory.max") == "4096"
    assert b.get_attribute("/user.slice/u.scope", "memory.high") is None
    with pytest.raises(BackendError):
        b.set_attribute("/user.slice/u.scope", "../x", "1")


def test_pids_from_procs_files_and_populated_refusal(tmp_path):
    b = make(tmp_path)
    b.create("/a/b")
    (tmp_path / "a/cgroup.procs").write_text("10\n")
    (tmp_path / "a/b/cgroup.procs").write_text("11\n12\n")
    assert b.pids("/a") == [10, 11, 12]
    assert b.pids("/a", recursive=False) == [10]
    with pytest.raises(BackendError):
        b.remove("/a")
    (tmp_path / "a/cgroup.procs").unlink()
    (tmp_path / "a/b/cgroup.procs").unlink()
    b.remove("/a")
    assert not (tmp_path / "a").exists()


def test_paths_are_checked(tmp_path):
    b = make(tmp_path)
    for bad in ("relative", "/a/../b", "/./a"):
        with pytest.raises(BackendError):
            b.create(bad)
    with pytest.raises(BackendError):
        b.remove("/")
    assert b.cgroup_of(1) is None  # not a cgroup2 mount: no process is inside


def test_controllers_the_hierarchy_lacks_are_reported(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("pids\n")
    b = make(tmp_path)
    b.create("/s.slice/a.scope")
    notes = b.apply_resources("/s.slice/a.scope", {"MemoryMax": 4096, "TasksMax": 10})
    assert notes[0] == "controller memory is not available on this cgroup2 hierarchy"
    assert (tmp_path / "s.slice/cgroup.subtree_control").read_text() == "+pids\n"


def test_delegate_yes_enables_every_available_controller(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    b = make(tmp_path)
    b.create("/s.slice/d.scope")
    assert b.apply_resources("/s.slice/d.scope", {"Delegate": True}) == []
    assert (tmp_path / "s.slice/cgroup.subtree_control").read_text() == "+cpu +memory\n"
    b.create("/s.slice/e.scope")
    b.apply_resources("/s.slice/e.scope", {"Delegate": True, "DelegateControllers": ["cpu"]})
    # already enabled for d.scope: nothing written twice
    assert (tmp_path / "s.slice/cgroup.subtree_control").read_text() == "+cpu +memory\n"


def test_usage_is_read_from_the_files(tmp_path):
    b = make(tmp_path)
    b.create("/a.scope")
    d = tmp_path / "a.scope"
    (d / "memory.current").write_text("8192\n")
    (d / "pids.current").write_text("3\n")
    (d / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n")
    (d / "io.stat").write_text(
        "8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n"
        "8:16 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\n"
    )
    u = b.usage("/a.scope")
    assert (u.memory_bytes, u.tasks, u.cpu_nsec) == (8192, 3, 1_500_000)
    assert (u.io_read_bytes, u.io_write_bytes, u.io_read_ops, u.io_write_ops) == (101, 202, 4, 6)
    assert u.cgroup_id is None  # a plain directory is not a cgroup2 mount
    assert b.usage("/missing.scope").tasks is None


DELEGATEE = """
import errno, sys
d = sys.argv[1]
def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
def write(path, value):
    with open(path, "w") as f:
        f.write(value)
import os
print(attempt(lambda: os.mkdir(d + "/child")),
      attempt(lambda: write(d + "/child/memory.max", "1048576")),
      attempt(lambda: write(d + "/cgroup.procs", "0")),
      attempt(lambda: write(d + "/memory.max", "max")),
      attempt(lambda: os.mkdir(d + "/../beside")))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_delegated_files_are_the_users_and_limits_stay_roots(tmp_path):
    """cgroup-v2.rst "Delegation Containment" on a tree shaped like cgroupfs: the delegatee
    writes below itself (a stricter memory.max on a child), never its own limits."""
    tree = Path(tempfile.mkdtemp(prefix="scopeshim-test-tree-"))
    try:
        tree.chmod(0o755)
        b = Cgroup2Backend(tree)
        b.create("/s.slice/d.scope")
        d = tree / "s.slice/d.scope"
        for name in ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control"):
            (d / name).write_text("")
        b.apply_resources("/s.slice/d.scope", {"MemoryMax": 1 << 30})
        b.delegate("/s.slice/d.scope", 65534, 65534)
        assert d.stat().st_uid == 65534 and (d / "cgroup.procs").stat().st_uid == 65534
        assert (d / "memory.max").stat().st_uid == 0
        out = subprocess.run(
            ["/usr/bin/python3", "-c", DELEGATEE, str(d)],
            user=65534,
            group=65534,
            extra_groups=[],
            capture_output=True,
            text=True,
            check=True,
            cwd="/",
        ).stdout.split()
        assert out == ["ok", "ok", "ok", "EACCES", "EACCES"]
        assert (d / "memory.max").read_text() == "1073741824\n"
    finally:
        shutil.rmtree(tree)


def test_a_weight_after_idle_clears_cpu_idle_first(tmp_path):
    # the kernel refuses cpu.weight while cpu.idle is 1 (pinned on the kernel in tests/vm)
    b = make(tmp_path)
    b.create("/s.scope")
    d = tmp_path / "s.scope"
    written = []
    b.set_attribute = lambda path, attribute, value: written.append((attribute, value))
    (d / "cpu.idle").write_text("1\n")
    b.apply_resources("/s.scope", {"CPUWeight": 200})
    assert written == [("cpu.idle", "0"), ("cpu.weight", "200")]
    written.clear()
    (d / "cpu.idle").write_text("0\n")
    b.apply_resources("/s.scope", {"CPUWeight": 300})
    assert written == [("cpu.weight", "300")]


def test_io_limits_gone_from_the_settings_are_written_back_to_max(tmp_path):
    # an empty IO*BandwidthMax= resets the list; io.max keeps limits until written to "max"
    b = make(tmp_path)
    b.create("/s.scope")
    (tmp_path / "s.scope/io.max").write_text(
        "254:0 rbps=1048576 wbps=1048576 riops=max wiops=max\n"
    )
    written = []
    b.set_attribute = lambda path, attribute, value: written.append((attribute, value))
    b.apply_resources("/s.scope", {"IOReadBandwidthMax": [], "IOWriteBandwidthMax": []})
    assert written == [("io.max", "254:0 rbps=max"), ("io.max", "254:0 wbps=max")]


def test_memory_and_pids_count_for_every_unit_from_its_start(tmp_path):
    # DefaultMemoryAccounting=yes, DefaultTasksAccounting=yes: a unit with no limits still has
    # memory and pids on, so that a limit set later holds what it already uses (tests/vm)
    (tmp_path / "cgroup.controllers").write_text("cpu io memory pids\n")
    b = make(tmp_path)
    b.create("/system.slice/a.scope")
    assert b.apply_resources("/system.slice/a.scope", {}) == []
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+memory +pids\n"
    assert (tmp_path / "system.slice/cgroup.subtree_control").read_text() == "+memory +pids\n"


def test_no_accounting_controller_where_the_hierarchy_has_none(tmp_path):
    # this machine kind's cgroup2 carries no controller: nothing to enable, nothing to report
    (tmp_path / "cgroup.controllers").write_text("\n")
    b = make(tmp_path)
    b.create("/system.slice/a.scope")
    assert b.apply_resources("/system.slice/a.scope", {}) == []
    assert not (tmp_path / "cgroup.subtree_control").exists()
