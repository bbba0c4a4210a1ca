"""The commit barrier (Manager.after_commit): answers wait for the one write of their loop
turn, a unit whose creation cannot be written is gone again before its job runs, and one
failed write does not drop the rest of the batch (issue 15, findings 1 and 2)."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from backends.fake import FakeBackend
from compat import errors
from shim.core.events import NullListener
from shim.core.manager import Manager
from shim.core.policy import Policy
from shim.core.state import StateStore, unit_file_name
from shim.core.units import Unit


class FailingStore(StateStore):
    """A state directory where the units named in `refuse` cannot be written (ENOSPC)."""

    refuse: set[str]

    def save_units(
        self, units: Iterable[Unit], jobs: list[dict[str, Any]] | None = None
    ) -> dict[str, OSError]:
        units = list(units)
        failed = super().save_units([u for u in units if u.name not in self.refuse], jobs)
        full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return failed | {u.name: full for u in units if u.name in self.refuse}


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [subprocess.Popen(["sleep", "300"]) for _ in range(3)]
    yield procs
    for p in procs:
        p.kill()
        p.wait()


def make(tmp_path: Path, store: StateStore | None) -> tuple[Manager, FakeBackend]:
    backend = FakeBackend(tmp_path / "cgroupfs")
    loop = asyncio.get_running_loop()
    return Manager(backend, NullListener(), loop, Policy.harmless(tmp_path), store), backend


def scope(m: Manager, name: str, pid: int) -> int:
    return m.start_transient_unit(name, "fail", [("PIDs", "au", [pid])], [], None).id


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_no_store_answers_at_once(tmp_path: Path, sleepers) -> None:
    m, _ = make(tmp_path, None)
    seen: list[object] = []
    mark = m.commit_mark()
    scope(m, "a.scope", sleepers[0].pid)
    m.after_commit(seen.append, since=mark)
    assert seen == [None]


async def test_one_write_per_turn_then_answers(tmp_path: Path, sleepers) -> None:
    store = StateStore(tmp_path / "state")
    m, backend = make(tmp_path, store)
    seen: list[tuple[str, object]] = []
    for i, p in enumerate(sleepers):
        mark = m.commit_mark()
        scope(m, f"s{i}.scope", p.pid)
        m.after_commit(lambda f, i=i: seen.append((f"s{i}", f)), since=mark)
    assert seen == [] and m.commit_pending()
    assert not any(op.path.endswith("s0.scope") for op in backend.operations)  # no job ran
    await settle()
    assert seen == [("s0", None), ("s1", None), ("s2", None)]
    for i in range(3):
        assert (store.units_dir / unit_file_name(f"s{i}.scope")).exists()
    assert backend.cgroup_of(sleepers[0].pid) == "/system.slice/s0.scope"


async def test_failed_write_rolls_back_only_that_unit(tmp_path: Path, sleepers) -> None:
    store = FailingStore(tmp_path / "state")
    store.refuse = {"bad.scope"}
    m, backend = make(tmp_path, store)
    seen: dict[str, object] = {}
    for name, p in (("good.scope", sleepers[0]), ("bad.scope", sleepers[1])):
        mark = m.commit_mark()
        job = scope(m, name, p.pid)
        m.after_commit(lambda f, name=name: seen.__setitem__(name, f), since=mark)
        assert job in m.jobs
    await settle()
    assert seen["good.scope"] is None
    failure = seen["bad.scope"]
    assert isinstance(failure, errors.SystemdError)
    assert failure.error_name == "System.Error.ENOSPC"
    assert failure.message == "No space left on device"
    # the refused unit is gone, its job never ran: no cgroup, no process moved
    assert "bad.scope" not in m.units
    assert not backend.exists("/system.slice/bad.scope")
    assert backend.cgroup_of(sleepers[1].pid) is None
    assert not any(j.unit.name == "bad.scope" for j in m.jobs.values())
    # the other unit of the same batch is written and started
    assert (store.units_dir / unit_file_name("good.scope")).exists()
    assert backend.cgroup_of(sleepers[0].pid) == "/system.slice/good.scope"


async def test_not_found_units_never_touch_the_disk(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    m, _ = make(tmp_path, store)
    await settle()
    before = os.stat(store.units_dir).st_mtime_ns, sorted(os.listdir(store.units_dir))
    units = len(m.units)
    listed = m.list_units(names=[f"nothing-{i}.service" for i in range(2000)])
    assert all(u.load_state == "not-found" for u in listed)
    for i in range(200):
        m.load_unit(f"other-{i}.service")
    await settle()
    assert not m.commit_pending()
    assert (os.stat(store.units_dir).st_mtime_ns, sorted(os.listdir(store.units_dir))) == before
    assert len(m.units) == units  # the loaded not-found units were collected


async def test_job_ids_wrap(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    (tmp_path / "state" / "manager.json").write_text('{"reserved_job_id": 4294967294}')
    m, _ = make(tmp_path, store)
    m.restore(store.load())
    ids = []
    for i in range(4):
        ids.append(m.start_transient_unit(f"w{i}.slice", "fail", [], [], None).id)
        await settle()
    assert ids == [4294967294, 4294967295, 1, 2]
    reloaded = StateStore(tmp_path / "state").load()
    assert 2 < reloaded.next_job_id < 2**32
