"""The fake backend: a directory tree, real processes through pidfds, every call recorded."""

from __future__ import annotations

import asyncio
import signal

import pytest

from backends.base import BackendError, CgroupBackend, Operation
from backends.fake import FakeBackend


def test_is_a_cgroup_backend(tmp_path):
    assert isinstance(FakeBackend(tmp_path), CgroupBackend)


async def test_create_attach_records_and_writes_procs(tmp_path, processes):
    b = FakeBackend(tmp_path)
    p = processes()
    b.create("/a.slice/x.scope")
    b.attach("/a.slice/x.scope", [p.pid])
    assert (tmp_path / "a.slice/x.scope/cgroup.procs").read_text() == f"{p.pid}\n"
    assert b.pids("/a.slice") == [p.pid]
    assert b.pids("/a.slice", recursive=False) == []
    assert b.cgroup_of(p.pid) == "/a.slice/x.scope"
    assert list(b.operations)[:2] == [
        Operation("create", "/a.slice/x.scope"),
        Operation("attach", "/a.slice/x.scope", (p.pid,)),
    ]
    b.close()


async def test_moving_a_process_updates_both_cgroups(tmp_path, processes):
    b = FakeBackend(tmp_path)
    p = processes()
    b.create("/one")
    b.create("/two")
    b.attach("/one", [p.pid])
    b.attach("/two", [p.pid])
    assert (tmp_path / "one/cgroup.procs").read_text() == ""
    assert b.pids("/two") == [p.pid]
    b.close()


async def test_exit_is_noticed_without_polling(tmp_path, processes):
    b = FakeBackend(tmp_path)
    p = processes()
    b.create("/s")
    b.attach("/s", [p.pid])
    emptied: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    b.watch_empty("/s", emptied.set_result)
    assert b.kill("/s", signal.SIGTERM) == 1
    assert await asyncio.wait_for(emptied, 5) == "/s"
    assert b.pids("/s") == []
    b.remove("/s")
    assert not (tmp_path / "s").exists()
    b.close()


async def test_errors(tmp_path, processes):
    b = FakeBackend(tmp_path)
    p = processes()
    with pytest.raises(BackendError):
        b.attach("/missing", [p.pid])
    b.create("/s")
    dead = processes()
    dead.kill()
    dead.wait()
    with pytest.raises(BackendError) as e:
        b.attach("/s", [dead.pid])
    assert e.value.errno is not None
    b.attach("/s", [p.pid])
    with pytest.raises(BackendError):
        b.remove("/s")  # populated
    for bad in ("relative", "/a/../b", "/a/./b"):
        with pytest.raises(BackendError):
            b.create(bad)
    with pytest.raises(BackendError):
        b.remove("/")
    b.close()


async def test_attributes_and_freezer(tmp_path):
    b = FakeBackend(tmp_path)
    b.create("/s")
    b.set_attribute("/s", "memory.max", "4096")
    assert b.get_attribute("/s", "memory.max") == "4096"
    assert b.get_attribute("/s", "memory.high") is None
    b.freeze("/s")
    assert b.get_attribute("/s", "cgroup.freeze") == "1"
    b.thaw("/s")
    assert b.get_attribute("/s", "cgroup.freeze") == "0"
    with pytest.raises(BackendError):
        b.set_attribute("/s", "../escape", "1")
    b.close()


def test_removed_cgroups_leave_no_bookkeeping(tmp_path):
    """A removed cgroup's label and delegation go with it (a long-running fake daemon kept
    one entry per cgroup it ever made: the `make stress` RSS growth, issue 15)."""
    b = FakeBackend(tmp_path)
    for i in range(3):
        b.create(f"/s/u{i}.scope/sub")
        b.label(f"/s/u{i}.scope", "ab" * 16)
        b.delegate(f"/s/u{i}.scope", 1000, 1000)
        b.remove(f"/s/u{i}.scope")
    assert b.labels == {} and b.delegated == {}
