"""The cgroup2 backend on a temporary directory shaped like cgroupfs (no kernel needed);
the real kernel tree is exercised in tests/e2e (scope lifecycle, logind session)."""

from __future__ import annotations

import pytest

from backends.base import BackendError, CgroupBackend
from backends.cgroup2 import Cgroup2Backend


def make(tmp_path):
    b = Cgroup2Backend(tmp_path)
    assert isinstance(b, CgroupBackend)
    return b


def test_create_attributes_and_limits(tmp_path):
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
