"""Unit and job metadata on disk, so that a daemon restarted after a crash loses nothing.

One JSON file per unit under STATE/units/ (written to a temporary name, then renamed: a
crash leaves the old file or the new one, never half of one), the jobs in flight in
STATE/jobs.json, and the next job id in STATE/manager.json, reserved in blocks so that ids
never go back. `Persisting` wraps the core's Listener and writes once per loop iteration.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compat import buspath
from shim.core.events import Listener
from shim.core.units import Job, Timestamp, Unit

log = logging.getLogger(__name__)

FORMAT = 1
JOB_ID_BLOCK = 1024  # job ids reserved per write of manager.json


def encode(value: object) -> Any:
    """A setting as JSON: bytes and tuples are tagged so that they come back as they were."""
    if isinstance(value, bytes):
        return {"$bytes": value.hex()}
    if isinstance(value, tuple):
        return {"$tuple": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    return value


def decode(value: Any) -> object:
    if isinstance(value, dict):
        if "$bytes" in value:
            return bytes.fromhex(value["$bytes"])
        if "$tuple" in value:
            return tuple(decode(v) for v in value["$tuple"])
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def write_atomic(path: str | Path, text: str, sync: bool = True) -> None:
    """Write to a temporary name, then rename: readers see the old file or the new one.
    SYNC flushes to the disk first (pointless on a tmpfs such as /run)."""
    head, name = os.path.split(os.fspath(path))
    tmp = os.path.join(head, f".{name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def _in_memory(directory: Path) -> bool:
    """Whether DIRECTORY is on a tmpfs/ramfs (proc(5) mountinfo: the deepest mount)."""
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return False
    target, best, fstype = str(directory.resolve()), "", ""
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        point = fields[4]
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, fstype = point, fields[fields.index("-") + 1]
    return fstype in ("tmpfs", "ramfs")


def unit_record(unit: Unit) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "name": unit.name,
        "type": str(unit.type),
        "load_state": str(unit.load_state),
        "sub_state": unit.sub_state,
        "transient": unit.transient,
        "slice": unit.slice,
        "control_group": unit.control_group,
        "settings": {k: encode(v) for k, v in unit.settings.items()},
        "invocation_id": unit.invocation_id.hex(),
        "result": unit.result,
        "freezer_state": unit.freezer_state,
        "refs": list(unit.refs),
        "timestamps": {k: [t.realtime, t.monotonic] for k, t in unit.timestamps.items()},
        "stop_when_unneeded": unit.stop_when_unneeded,
        "pinned": unit.pinned,
    }


def timestamps_of(record: dict[str, Any]) -> dict[str, Timestamp]:
    return {k: Timestamp(int(v[0]), int(v[1])) for k, v in record.get("timestamps", {}).items()}


@dataclass(slots=True)
class Saved:
    """What a previous run left: unit records, jobs in flight, the next job id."""

    units: list[dict[str, Any]]
    jobs: list[dict[str, Any]]
    next_job_id: int


class StateStore:
    """The state directory of one daemon."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self.units_dir = self.dir / "units"
        self.units_dir.mkdir(parents=True, exist_ok=True)
        self._units_prefix = os.fspath(self.units_dir) + "/"
        self._sync = not _in_memory(self.dir)  # fsync buys nothing on /run's tmpfs
        self._written: dict[str, str] = {}
        self._reserved_job_id = 0

    def _unit_file(self, name: str) -> str:
        # a plain string: pathlib interns every part, and unit names come and go forever
        return f"{self._units_prefix}{buspath.label_escape(name)}.json"

    def load(self) -> Saved:
        units = []
        for f in sorted(self.units_dir.glob("*.json")):
            try:
                record = json.loads(f.read_text())
            except (OSError, ValueError) as e:
                log.warning("ignoring unreadable state file %s: %s", f, e)
                continue
            if record.get("format") == FORMAT:
                units.append(record)
                self._written[record["name"]] = json.dumps(record, sort_keys=True)
        jobs: list[dict[str, Any]] = []
        next_job_id = 1
        with contextlib.suppress(OSError, ValueError):
            jobs = json.loads((self.dir / "jobs.json").read_text())
        try:
            manager = json.loads((self.dir / "manager.json").read_text())
            next_job_id = int(manager["reserved_job_id"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        self._reserved_job_id = next_job_id
        return Saved(units, jobs, next_job_id)

    def save_unit(self, unit: Unit) -> None:
        text = json.dumps(unit_record(unit), sort_keys=True)
        if self._written.get(unit.name) == text:
            return
        write_atomic(self._unit_file(unit.name), text, self._sync)
        self._written[unit.name] = text

    def drop_unit(self, name: str) -> None:
        self._written.pop(name, None)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._unit_file(name))

    def save_jobs(self, jobs: list[Job]) -> None:
        records = [{"id": j.id, "unit": j.unit.name, "type": str(j.type)} for j in jobs]
        write_atomic(self.dir / "jobs.json", json.dumps(records), self._sync)

    def reserve_job_id(self, next_id: int) -> None:
        """Make sure a restart begins at or after NEXT_ID (and after every id handed out)."""
        if next_id <= self._reserved_job_id:
            return
        self._reserved_job_id = next_id + JOB_ID_BLOCK
        write_atomic(
            self.dir / "manager.json", json.dumps({"reserved_job_id": self._reserved_job_id})
        )


class Persisting:
    """A Listener that passes every event on and writes what changed, once per iteration."""

    def __init__(self, inner: Listener, store: StateStore) -> None:
        self.inner = inner
        self.store = store
        self._units: dict[str, Unit | None] = {}  # name -> unit to write, None to drop
        self._jobs: dict[int, Job] = {}
        self._jobs_dirty = False
        self._scheduled = False
        self._loop = asyncio.get_running_loop()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        units, self._units = self._units, {}
        try:
            for name, unit in units.items():
                if unit is None:
                    self.store.drop_unit(name)
                else:
                    self.store.save_unit(unit)
            if self._jobs_dirty:
                self._jobs_dirty = False
                self.store.save_jobs(list(self._jobs.values()))
        except OSError as e:
            log.error("cannot write the state directory %s: %s", self.store.dir, e)

    def unit_new(self, unit: Unit) -> None:
        self._units[unit.name] = unit
        self._schedule()
        self.inner.unit_new(unit)

    def unit_removed(self, unit: Unit) -> None:
        self._units[unit.name] = None
        self._schedule()
        self.inner.unit_removed(unit)

    def unit_changed(self, unit: Unit) -> None:
        self._units[unit.name] = unit
        self._schedule()
        self.inner.unit_changed(unit)

    def unit_refs_changed(self, unit: Unit) -> None:
        self._units[unit.name] = unit
        self._schedule()
        self.inner.unit_refs_changed(unit)

    def job_new(self, job: Job) -> None:
        self._jobs[job.id] = job
        self._jobs_dirty = True
        try:
            self.store.reserve_job_id(job.id + 1)  # before anyone can see the id
        except OSError as e:
            log.error("cannot write the state directory %s: %s", self.store.dir, e)
        self._schedule()
        self.inner.job_new(job)

    def job_changed(self, job: Job) -> None:
        self.inner.job_changed(job)

    def job_removed(self, job: Job, result: str) -> None:
        self._jobs.pop(job.id, None)
        self._jobs_dirty = True
        self._schedule()
        self.inner.job_removed(job, result)

    def reloading(self, active: bool) -> None:
        self.inner.reloading(active)

    def request_stop(self, unit: Unit, controller: str) -> None:
        self.inner.request_stop(unit, controller)
