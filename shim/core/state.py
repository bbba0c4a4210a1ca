"""Unit and job metadata on disk, so that a daemon restarted after a crash loses nothing.

One JSON file per unit under STATE/units/, named by a hash of the unit name (the name is
inside the record: names of any valid length fit), written to a temporary name then renamed
(a crash leaves the old file or the new one, never half of one); the jobs in flight in
STATE/jobs.json; the next job id in STATE/manager.json, reserved in blocks so that ids never
go back. A file that cannot be read or makes no sense is moved to STATE/corrupt/ with one log
line, and everything else is used. `Persisting` wraps the core's Listener and writes what
changed once per loop turn; `after_commit` callbacks run once that write is done (the commit
barrier: a reply is sent only once what its call changed is on disk).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compat import errors, unitname
from compat.enums import JobResult, JobType, LoadState, parse_enum
from shim.core.events import Listener
from shim.core.units import Job, Timestamp, Unit

log = logging.getLogger(__name__)

FORMAT = 2  # 2: refs counted per client ({name: count}); 1: one list entry per reference
FORMATS = (1, 2)
JOB_ID_BLOCK = 1024  # job ids reserved per write of manager.json
ENDED_KEPT = 256  # ended jobs announced again after a crash (their JobRemoved may be lost)
UINT32_MAX = 2**32 - 1  # org.freedesktop.systemd1(5): job ids are uint32, 0 is never used

CommitCallback = Callable[[errors.SystemdError | None], None]


def next_job_id(job_id: int) -> int:
    """The id after JOB_ID: ids wrap from 2^32-1 back to 1 (0 is never a job id)."""
    return job_id + 1 if job_id < UINT32_MAX else 1


def wrap_job_id(value: int) -> int:
    """Any integer as a job id in 1..2^32-1 (ids saved by older versions may lie above)."""
    return (value - 1) % UINT32_MAX + 1


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
    SYNC flushes to the disk first (pointless on a tmpfs such as /run). On failure the
    temporary file is removed and the old file stays."""
    head, name = os.path.split(os.fspath(path))
    tmp = os.path.join(head, f".{name}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


_SYNC_THREADS = 16  # fsyncs of one batch in flight at once (one journal commit for all)
_sync_pool: ThreadPoolExecutor | None = None


def _fsync_all(fds: list[int]) -> list[OSError | None]:
    """fsync every fd, concurrently when there are several: file systems with a journal
    commit the waiting fsyncs together, so a batch costs about one flush to the disk."""
    global _sync_pool

    def one(fd: int) -> OSError | None:
        try:
            os.fsync(fd)
        except OSError as e:
            return e
        return None

    if len(fds) < 2:
        return [one(fd) for fd in fds]
    if _sync_pool is None:
        _sync_pool = ThreadPoolExecutor(_SYNC_THREADS, thread_name_prefix="scopeshim-fsync")
    return list(_sync_pool.map(one, fds))


def write_group(files: list[tuple[str, str]], sync: bool = True) -> dict[str, OSError]:
    """write_atomic() for several files at once; the paths that could not be written. With
    SYNC, all temporary files are flushed together, then renamed, then their directories
    flushed once each (so that the renames last)."""
    if not sync:
        failed: dict[str, OSError] = {}
        for path, text in files:
            try:
                write_atomic(path, text, sync=False)
            except OSError as e:
                failed[path] = e
        return failed
    failed, opened = {}, []
    for path, text in files:
        head, name = os.path.split(path)
        tmp = os.path.join(head, f".{name}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as e:
            failed[path] = e
            continue
        try:
            data = memoryview(text.encode())
            while data:
                data = data[os.write(fd, data) :]
        except OSError as e:
            failed[path] = e
        opened.append((path, tmp, fd))
    for (path, tmp, fd), problem in zip(
        opened, _fsync_all([fd for _, _, fd in opened]), strict=True
    ):
        os.close(fd)
        if problem is not None:
            failed.setdefault(path, problem)
        if path in failed:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            continue
        try:
            os.replace(tmp, path)
        except OSError as e:
            failed[path] = e
    for head in {os.path.dirname(p) for p, _ in files if p not in failed}:
        try:
            fd = os.open(head, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            log.warning("cannot flush the directory %s: %s", head, e)
    return failed


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


def unit_file_name(name: str) -> str:
    """The state file of a unit: a hash of its name, so that any valid name fits NAME_MAX."""
    return hashlib.sha256(name.encode()).hexdigest()[:40] + ".json"


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
        "refs": dict(unit.refs),
        "timestamps": {k: [t.realtime, t.monotonic] for k, t in unit.timestamps.items()},
        "stop_when_unneeded": unit.stop_when_unneeded,
        "pinned": unit.pinned,
        "main": dict(unit.main),
    }


def timestamps_of(record: dict[str, Any]) -> dict[str, Timestamp]:
    return {k: Timestamp(int(v[0]), int(v[1])) for k, v in record.get("timestamps", {}).items()}


def refs_of(record: dict[str, Any]) -> dict[str, int]:
    """References per client; format 1 kept one list entry per reference."""
    refs = record.get("refs", {})
    if isinstance(refs, list):
        counted: dict[str, int] = {}
        for name in refs:
            counted[name] = counted.get(name, 0) + 1
        return counted
    return dict(refs)


def _want(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(what)


def check_unit_record(record: object) -> dict[str, Any]:
    """RECORD if it is a unit record this version can restore; ValueError saying why not."""
    _want(isinstance(record, dict), "not a JSON object")
    assert isinstance(record, dict)
    _want(record.get("format") in FORMATS, f"unknown format {record.get('format')!r}")
    name = record.get("name")
    _want(isinstance(name, str) and unitname.is_valid(name, template=False), "bad unit name")
    assert isinstance(name, str)
    utype = unitname.unit_type(name)
    _want(record.get("type") == str(utype), "type does not match the name")
    _want(parse_enum(LoadState, str(record.get("load_state"))) is not None, "bad load_state")
    for key in ("sub_state", "result", "freezer_state", "invocation_id"):
        _want(isinstance(record.get(key), str), f"bad {key}")
    bytes.fromhex(record["invocation_id"])
    for key in ("slice", "control_group"):
        _want(record.get(key) is None or isinstance(record.get(key), str), f"bad {key}")
    for key in ("transient", "stop_when_unneeded", "pinned"):
        _want(isinstance(record.get(key, False), bool), f"bad {key}")
    settings = record.get("settings")
    _want(isinstance(settings, dict), "bad settings")
    assert isinstance(settings, dict)
    for value in settings.values():
        decode(value)  # raises on a damaged tagged value
    refs = record.get("refs", {})
    if isinstance(refs, list):
        _want(all(isinstance(r, str) for r in refs), "bad refs")
    else:
        _want(isinstance(refs, dict), "bad refs")
        _want(
            all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in refs.values()),
            "bad refs",
        )
    stamps = record.get("timestamps", {})
    _want(isinstance(stamps, dict), "bad timestamps")
    for pair in stamps.values():
        _want(
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, int) for v in pair),
            "bad timestamps",
        )
    return record


def check_job_record(record: object) -> dict[str, Any]:
    _want(isinstance(record, dict), "not a JSON object")
    assert isinstance(record, dict)
    job_id = record.get("id")
    _want(
        isinstance(job_id, int) and not isinstance(job_id, bool) and 0 < job_id <= UINT32_MAX,
        f"bad job id {job_id!r}",
    )
    _want(isinstance(record.get("unit"), str), "bad unit")
    _want(parse_enum(JobType, str(record.get("type"))) is not None, "bad job type")
    if "result" in record:  # a job that ended (kept so that a restart announces it again)
        _want(parse_enum(JobResult, str(record["result"])) is not None, "bad job result")
    return record


@dataclass(slots=True)
class Saved:
    """What a previous run left: unit records, jobs in flight, the next job id, and the jobs
    that ended last (their JobRemoved may have died with the daemon's unsent output)."""

    units: list[dict[str, Any]]
    jobs: list[dict[str, Any]]
    next_job_id: int
    ended: list[dict[str, Any]] = field(default_factory=list)
    environment: list[str] | None = None  # the manager's block (SetEnvironment), if set


class StateStore:
    """The state directory of one daemon."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self.units_dir = self.dir / "units"
        try:
            self.units_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # e.g. read-only: serve anyway, refusing changes (save_units)
            log.error("cannot create the state directory %s: %s", self.units_dir, e)
        self.corrupt_dir = self.dir / "corrupt"
        self._units_prefix = os.fspath(self.units_dir) + "/"
        self._sync = not _in_memory(self.dir)  # fsync buys nothing on /run's tmpfs
        self._written: dict[str, str] = {}  # unit name -> the text on disk
        self._reserved_job_id = 1  # where a restart would begin

    def _unit_file(self, name: str) -> str:
        # a plain string: pathlib interns every part, and unit names come and go forever
        return self._units_prefix + unit_file_name(name)

    def set_aside(self, path: str | os.PathLike[str], reason: str) -> None:
        """Move a state file that cannot be used to STATE/corrupt/, kept for inspection."""
        source = Path(path)
        target = self.corrupt_dir / f"{source.name}.{time.strftime('%Y%m%dT%H%M%S')}"
        try:
            self.corrupt_dir.mkdir(exist_ok=True)
            n = 0
            while target.exists():
                n += 1
                target = target.with_name(f"{target.name.split('~')[0]}~{n}")
            os.replace(source, target)
        except OSError as e:
            log.error("state file %s unusable (%s) and not moved aside: %s", source, reason, e)
            with contextlib.suppress(OSError):
                source.unlink()
            return
        log.warning("state file %s unusable (%s): moved to %s", source, reason, target)

    def set_aside_unit(self, name: str, reason: str) -> None:
        self._written.pop(name, None)
        self.set_aside(self._unit_file(name), reason)

    def _read_json(self, path: Path) -> object:
        return json.loads(path.read_bytes())

    def load(self) -> Saved:
        units: dict[str, dict[str, Any]] = {}
        try:
            with os.scandir(self.units_dir) as entries:
                files = sorted(e.name for e in entries if e.name.endswith(".json"))
        except OSError as e:
            log.error("cannot read the state directory %s: %s", self.units_dir, e)
            files = []
        for file_name in files:
            if file_name.startswith("."):
                with contextlib.suppress(OSError):
                    os.unlink(self.units_dir / file_name)  # a write the crash interrupted
                continue
            path = self.units_dir / file_name
            try:
                record = check_unit_record(self._read_json(path))
            except (OSError, ValueError, TypeError, AttributeError) as e:
                self.set_aside(path, str(e) or type(e).__name__)
                continue
            name = record["name"]
            if file_name != unit_file_name(name):
                # a file named as older versions named it (from the escaped unit name)
                if name in units or os.path.exists(self._unit_file(name)):
                    self.set_aside(path, f"a second state file for {name}")
                    continue
                os.replace(path, self._unit_file(name))
            units[name] = record
            self._written[name] = json.dumps(record, sort_keys=True)
        records = self._load_jobs()
        next_id = self._load_next_job_id(records)
        self._reserved_job_id = next_id
        jobs = [r for r in records if "result" not in r]
        ended = [r for r in records if "result" in r]
        return Saved(list(units.values()), jobs, next_id, ended, self._load_environment())

    def save_environment(self, environment: list[str]) -> None:
        """The manager's environment block, on disk before SetEnvironment is answered."""
        write_atomic(self.dir / "environment.json", json.dumps(environment), self._sync)

    def _load_environment(self) -> list[str] | None:
        path = self.dir / "environment.json"
        try:
            value = self._read_json(path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            self.set_aside(path, str(e))
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) and "=" in v for v in value):
            self.set_aside(path, "not a JSON list of NAME=VALUE strings")
            return None
        return value

    def _load_jobs(self) -> list[dict[str, Any]]:
        path = self.dir / "jobs.json"
        try:
            value = self._read_json(path)
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            self.set_aside(path, str(e))
            return []
        if not isinstance(value, list):
            self.set_aside(path, "not a JSON list")
            return []
        jobs, bad = [], []
        for record in value:
            try:
                jobs.append(check_job_record(record))
            except ValueError as e:
                bad.append(str(e))
        if bad:
            # the good entries are used; the file as it was is kept for inspection
            self.set_aside(path, f"{len(bad)} bad job entries, first: {bad[0]}")
        return jobs

    def _load_next_job_id(self, jobs: list[dict[str, Any]]) -> int:
        path = self.dir / "manager.json"
        after_jobs = max((int(j["id"]) for j in jobs), default=0) + 1
        try:
            value = self._read_json(path)
        except FileNotFoundError:
            return wrap_job_id(after_jobs)
        except (OSError, ValueError) as e:
            self.set_aside(path, str(e))
            return wrap_job_id(after_jobs)
        reserved = value.get("reserved_job_id") if isinstance(value, dict) else None
        if not isinstance(reserved, int) or isinstance(reserved, bool) or reserved < 1:
            self.set_aside(path, f"bad reserved_job_id {reserved!r}")
            return wrap_job_id(after_jobs)
        return wrap_job_id(reserved)  # earlier versions saved ids above 2^32-1

    def has_unit(self, name: str) -> bool:
        return name in self._written

    def save_units(
        self, units: Iterable[Unit], jobs: list[dict[str, Any]] | None = None
    ) -> dict[str, OSError]:
        """Write UNITS (and the JOBS file's records, when given) in one group; the names that
        could not be written ("" for the jobs file)."""
        files, names, texts = [], {}, {}
        for unit in units:
            text = json.dumps(unit_record(unit), sort_keys=True)
            if self._written.get(unit.name) == text:
                continue
            path = self._unit_file(unit.name)
            files.append((path, text))
            names[path], texts[unit.name] = unit.name, text
        if jobs is not None:
            path = os.fspath(self.dir / "jobs.json")
            files.append((path, json.dumps(jobs)))
            names[path] = ""
        if files and not self.units_dir.is_dir():
            try:
                self.units_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:  # e.g. EROFS: every write of the batch fails alike
                return {names[p]: e for p, _ in files}
        failed = {names[p]: e for p, e in write_group(files, self._sync).items()}
        for name, text in texts.items():
            if name not in failed:
                self._written[name] = text
        return failed

    def drop_unit(self, name: str) -> None:
        if self._written.pop(name, None) is None:
            return  # never written (e.g. a not-found unit): no system call at all
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._unit_file(name))

    def reserve_job_id(self, job_id: int) -> None:
        """Make sure a restart begins after JOB_ID (ids wrap at 2^32-1, and a restart begins
        after every id handed out, within the block of JOB_ID_BLOCK ids reserved at once)."""
        ahead = (self._reserved_job_id - job_id) % UINT32_MAX
        if 0 < ahead <= JOB_ID_BLOCK + 1:
            return  # inside the block already reserved
        reserved = wrap_job_id(job_id + 1 + JOB_ID_BLOCK)
        write_atomic(
            self.dir / "manager.json", json.dumps({"reserved_job_id": reserved}), self._sync
        )
        self._reserved_job_id = reserved


class Persisting:
    """A Listener that passes every event on and writes what changed, once per loop turn;
    the commit barrier (`after_commit`) runs its callbacks once that write is done."""

    def __init__(
        self,
        inner: Listener,
        store: StateStore,
        loop: asyncio.AbstractEventLoop,
        rollback: Callable[[set[str]], None],
    ) -> None:
        self.inner = inner
        self.store = store
        self._loop = loop
        self._rollback = rollback  # unregisters units created in a batch that failed
        self._units: dict[str, Unit | None] = {}  # name -> unit to write, None to drop
        self._log: list[str] = []  # names changed in this batch, in order (see mark())
        self._created: set[str] = set()  # names first registered in this batch
        self._job_units: set[str] = set()  # names whose job came or went in this batch
        self._jobs: dict[int, Job] = {}
        self._ended: deque[dict[str, Any]] = deque(maxlen=ENDED_KEPT)
        self._jobs_dirty = False
        self._waiters: list[tuple[set[str], CommitCallback]] = []
        self._reserve_failed: dict[str, OSError] = {}  # manager.json not written for a job
        self._scheduled = False

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def _dirty(self, unit: Unit) -> None:
        if unit.load_state is LoadState.NOT_FOUND and not self.store.has_unit(unit.name):
            # systemd keeps nothing of a name nothing backs: no write, no system call
            self._units.pop(unit.name, None)
            return
        self._units[unit.name] = unit
        self._log.append(unit.name)
        self._schedule()

    def mark(self) -> int:
        """Where a call begins: after_commit(since=mark) answers for what changed since."""
        return len(self._log)

    def pending(self) -> bool:
        return self._scheduled

    def after_commit(self, callback: CommitCallback, since: int | None = None) -> None:
        """Run CALLBACK once everything changed so far is on disk (now if nothing is
        waiting), with the errno error of a unit changed since SINCE that was not written."""
        if not self._scheduled:
            callback(None)
            return
        touched = set(self._log[since:]) if since is not None else set()
        self._waiters.append((touched, callback))

    def flush(self) -> None:
        self._scheduled = False
        units, self._units = self._units, {}
        created, self._created = self._created, set()
        job_units, self._job_units = self._job_units, set()
        waiters, self._waiters = self._waiters, []
        self._log = []
        failed, self._reserve_failed = self._reserve_failed, {}
        saving = []
        for name, unit in units.items():
            if unit is None or unit.load_state is LoadState.NOT_FOUND:
                try:
                    self.store.drop_unit(name)
                except OSError as e:
                    failed[name] = e
            else:
                saving.append(unit)
        jobs = None
        if self._jobs_dirty:
            jobs = [{"id": j.id, "unit": j.unit.name, "type": str(j.type)}
                    for j in self._jobs.values()]  # fmt: skip
            jobs += self._ended
        self._jobs_dirty = False
        for name, problem in self.store.save_units(saving, jobs).items():
            if name:
                failed.setdefault(name, problem)
                continue
            self._jobs_dirty = True  # written again with the next change
            for job_unit in job_units:
                failed.setdefault(job_unit, problem)
        for name, problem in failed.items():
            log.error("cannot write the state of %s to %s: %s", name, self.store.dir, problem)
        lost = {n for n in failed if n in created}
        if lost:
            self._rollback(lost)
        for touched, callback in waiters:
            bad = next((n for n in touched if n in failed), None)
            if bad is None:
                callback(None)
            else:
                # what sd-bus answers for a failed system call: the errno's name and text
                code = failed[bad].errno
                callback(errors.from_errno(code, os.strerror(code) if code else str(failed[bad])))

    def unit_new(self, unit: Unit) -> None:
        if not self.store.has_unit(unit.name):
            self._created.add(unit.name)
        self._dirty(unit)
        self.inner.unit_new(unit)

    def unit_removed(self, unit: Unit) -> None:
        self._created.discard(unit.name)
        if self.store.has_unit(unit.name) or unit.name in self._units:
            self._units[unit.name] = None
            self._log.append(unit.name)
            self._schedule()
        self.inner.unit_removed(unit)

    def unit_changed(self, unit: Unit) -> None:
        self._dirty(unit)
        self.inner.unit_changed(unit)

    def unit_refs_changed(self, unit: Unit) -> None:
        self._dirty(unit)
        self.inner.unit_refs_changed(unit)

    def _job_dirty(self, job: Job) -> None:
        self._jobs_dirty = True
        self._job_units.add(job.unit.name)
        self._log.append(job.unit.name)
        self._schedule()

    def job_new(self, job: Job) -> None:
        self._jobs[job.id] = job
        try:
            self.store.reserve_job_id(job.id)  # before anyone can see the id
        except OSError as e:
            self._reserve_failed.setdefault(job.unit.name, e)
        self._job_dirty(job)
        self.inner.job_new(job)

    def job_changed(self, job: Job) -> None:
        self.inner.job_changed(job)

    def job_removed(self, job: Job, result: str) -> None:
        self._jobs.pop(job.id, None)
        self._ended.append(
            {"id": job.id, "unit": job.unit.name, "type": str(job.type), "result": str(result)}
        )
        self._job_dirty(job)
        self.inner.job_removed(job, result)

    def reloading(self, active: bool) -> None:
        self.inner.reloading(active)

    def request_stop(self, unit: Unit, controller: str) -> None:
        self.inner.request_stop(unit, controller)
