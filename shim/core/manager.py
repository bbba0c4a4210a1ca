"""The manager: unit registry, load on demand, unit state machines, jobs and GC.

Everything here is synchronous and D-Bus free. A method either raises a compat.errors
error before changing anything, or applies its change and returns. Job work is run later
from the event loop (systemd's model: the caller gets the job path first, the job finishes
afterwards), and every change is announced to the Listener.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import os
import pwd
import signal as _signal
import time
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any

from backends.base import BackendError, Capability, CgroupBackend, Usage
from compat import errors, readable, unitname
from compat.enums import (
    ActiveState,
    CollectMode,
    JobMode,
    JobResult,
    JobState,
    JobType,
    KillMode,
    KillWho,
    LoadState,
    ScopeState,
    ServiceState,
    SliceState,
    parse_enum,
)
from compat.properties import Assignment, merge_into, parse_assignments
from compat.unitname import ROOT_SLICE, UnitType
from shim.core import spawn, state
from shim.core.events import Listener
from shim.core.policy import RECORD, Handler, Kind, Policy
from shim.core.state import Saved
from shim.core.units import Job, Timestamp, Unit

log = logging.getLogger(__name__)

# systemd-system.conf(5): DefaultTimeoutStopSec= defaults to 90s
DEFAULT_TIMEOUT_STOP_USEC = 90_000_000
# systemd.special(7): units without Slice= go to system.slice on the system manager
DEFAULT_SLICE = "system.slice"
SIGNAL_MAX = 64
UINT32_MAX = 2**32 - 1

Property = tuple[str, str, object]  # (name, D-Bus signature, plain value)


# systemd.special(7): slices that exist on every systemd machine, needed or not
STANDARD_SLICES = frozenset({ROOT_SLICE, "system.slice", "user.slice", "machine.slice"})


def _pins(unit: Unit) -> list[str]:
    """The units this one keeps needed (systemd.unit(5) Wants=, Requires=, BindsTo=)."""
    out: list[str] = []
    for key in ("Wants", "Requires", "BindsTo"):
        names = unit.settings.get(key, [])
        if isinstance(names, list):
            out.extend(n for n in names if isinstance(n, str) and n not in out)
    return out


def _active_or_activating(state: ActiveState) -> bool:
    return state in (ActiveState.ACTIVE, ActiveState.ACTIVATING, ActiveState.RELOADING)


def _cgroup_error(what: str, e: BackendError) -> errors.SystemdError:
    """A cgroupfs failure as systemd reports it: the errno's D-Bus name, "<what>: <reason>"."""
    reason = os.strerror(e.errno) if e.errno else str(e)
    return errors.from_errno(e.errno, f"{what}: {reason}")


PF_KTHREAD = 0x00200000  # include/linux/sched.h: the flag of kernel threads


def _is_kernel_thread(pid: int) -> bool:
    """proc(5) /proc/PID/stat field 9 (flags) has PF_KTHREAD for kernel threads."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) "
    return len(fields) > 6 and bool(int(fields[6]) & PF_KTHREAD)


def _owner(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return ""
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")


class Manager:
    """The unit and job state of one scopeshim instance."""

    def __init__(
        self,
        backend: CgroupBackend,
        listener: Listener,
        loop: asyncio.AbstractEventLoop,
        policy: Policy | None = None,
    ) -> None:
        self.backend = backend
        self.policy = policy or Policy()
        self.listener = listener
        self.loop = loop
        self.units: dict[str, Unit] = {}
        self.jobs: dict[int, Job] = {}
        self.subscribers: set[str] = set()
        self.n_installed_jobs = 0
        self.n_failed_jobs = 0
        self._next_job_id = 1
        self._by_cgroup: dict[str, Unit] = {}
        self._by_invocation: dict[bytes, Unit] = {}
        self._gc_queue: set[Unit] = set()
        self._gc_scheduled = False
        self._timers: dict[Unit, asyncio.TimerHandle] = {}
        self._run_queue: list[Job] = []
        self._children_of: dict[str, set[Unit]] = {}  # slice name -> units directly in it
        self._needed_by: dict[str, set[Unit]] = {}  # name -> units that Want/Require it
        self._waiting: list[Job] = []  # start jobs ordered After= a unit with a start job
        self._unneeded_queue: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        root = Unit(
            ROOT_SLICE,
            UnitType.SLICE,
            LoadState.LOADED,
            perpetual=True,
            settings={"Description": "Root Slice"},
        )
        self._register(root)
        self._realise(root)
        self._set_state(root, SliceState.ACTIVE)

    # -- restart after a crash (state.py) --------------------------------------------------

    def restore(self, saved: Saved) -> None:
        """Take over the units a previous run left, re-checked against the cgroup tree."""
        self._next_job_id = max(self._next_job_id, saved.next_job_id)
        depth = {"slice": 0}
        records = sorted(
            (r for r in saved.units if r["name"] != ROOT_SLICE),
            key=lambda r: (depth.get(r["type"], 1), r["name"].count("-"), r["name"]),
        )
        for record in records:
            try:
                self._restore_unit(record)
            except (KeyError, ValueError, TypeError) as e:
                log.warning("state of %s not usable, dropped: %r", record.get("name"), e)
        log.info("restored %d units from the state directory", len(records))

    def fail_lost_jobs(self, saved: Saved) -> None:
        """Jobs in flight at the crash are answered as failed, so that nobody waits forever
        (called once the bus name is ours again, so their waiters see JobRemoved)."""
        for record in saved.jobs:
            unit = self.units.get(str(record.get("unit")))
            job_type = parse_enum(JobType, str(record.get("type")))
            if unit is None or job_type is None or unit.job is not None:
                continue
            job = Job(int(record["id"]), unit, job_type)
            self.jobs[job.id] = job
            unit.job = job
            log.warning("job %d (%s %s) was in flight at the crash: failed", job.id,
                        job_type, unit.name)  # fmt: skip
            self._finish_job(job, JobResult.FAILED)

    def _restore_unit(self, record: dict[str, Any]) -> None:
        name = record["name"]
        unit_type = unitname.unit_type(name)
        if unit_type is None or name in self.units:
            return
        handler = None if record["transient"] else self.policy.handler_for(name)
        unit = Unit(
            name,
            unit_type,
            LoadState(record["load_state"]),
            sub_state=record["sub_state"],
            transient=bool(record["transient"]),
            slice=record["slice"],
            settings={k: state.decode(v) for k, v in record["settings"].items()},
            invocation_id=bytes.fromhex(record["invocation_id"]),
            result=record["result"],
            freezer_state=record["freezer_state"],
            refs=list(record["refs"]),
            timestamps=state.timestamps_of(record),
            handler=handler,
            stop_when_unneeded=bool(record["stop_when_unneeded"]),
            pinned=bool(record["pinned"]),
        )
        self._register(unit)
        if unit.invocation_id:
            self._by_invocation[unit.invocation_id] = unit
        path = record["control_group"]
        if path is None or not self.backend.exists(path):
            if unit.active_state not in (ActiveState.INACTIVE, ActiveState.FAILED) and (
                unit.type is UnitType.SCOPE or (handler is not None and handler.kind is Kind.SIMPLE)
            ):
                self._set_state(unit, ScopeState.DEAD)  # its cgroup went with the processes
            elif unit.type is UnitType.SLICE and unit.active_state is ActiveState.ACTIVE:
                self._realise(unit)
            return
        unit.control_group = path
        self._by_cgroup[path] = unit
        if unit.type is UnitType.SCOPE or (handler is not None and handler.kind is Kind.SIMPLE):
            self.backend.watch_empty(path, self._cgroup_empty)
            if unit.sub_state in (ScopeState.STOP_SIGTERM, ScopeState.STOP_SIGKILL):
                self._scope_signal(unit, ScopeState.STOP_SIGTERM)  # finish the stop
        elif unit.active_state in (ActiveState.ACTIVATING, ActiveState.DEACTIVATING):
            # a handled unit's command was running at the crash: its outcome is unknown
            unit.result = "resources"
            self._release_cgroup(unit)
            self._set_state(unit, ServiceState.FAILED)

    # -- registry --------------------------------------------------------------------------

    def _register(self, unit: Unit) -> None:
        self.units[unit.name] = unit
        if unit.slice is not None:
            self._children_of.setdefault(unit.slice, set()).add(unit)
        for name in _pins(unit):
            self._needed_by.setdefault(name, set()).add(unit)
        self.listener.unit_new(unit)
        self._queue_gc(unit)

    def _unregister(self, unit: Unit) -> None:
        self.listener.unit_removed(unit)  # while still registered: pending changes flush first
        del self.units[unit.name]
        if unit.slice is not None:
            siblings = self._children_of.get(unit.slice)
            if siblings is not None:
                siblings.discard(unit)
                if not siblings:
                    del self._children_of[unit.slice]
        for name in _pins(unit):
            users = self._needed_by.get(name)
            if users is not None:
                users.discard(unit)
                if not users:
                    del self._needed_by[name]
        if unit.control_group is not None:
            self._by_cgroup.pop(unit.control_group, None)
        self._by_invocation.pop(unit.invocation_id, None)
        parent = self.units.get(unit.slice or "")
        if parent is not None:
            self._queue_gc(parent)

    def get_unit(self, name: str) -> Unit:
        """A loaded unit, or NoSuchUnit (GetUnit and the Manager's by-name calls never load)."""
        unit = self.units.get(name)
        if unit is None:
            raise errors.NoSuchUnit(f"Unit {name} not loaded.")
        return unit

    def load_unit(self, name: str) -> Unit:
        """The unit, loaded on demand: any valid name answers (not-found if nothing backs it)."""
        unit = self.units.get(name)
        if unit is not None:
            return unit
        self.check_name(name)
        unit_type = unitname.unit_type(name)
        assert unit_type is not None
        handler = self.policy.handler_for(name)
        if unit_type is UnitType.SLICE and unitname.is_valid_slice_name(name):
            # systemd.slice(5): slices need no unit file; they load from their name alone.
            # With no unit file to keep it, a slice exists for what it contains: it goes
            # when that is gone (user-UID.slice has StopWhenUnneeded=yes on systemd too)
            unit = Unit(
                name,
                unit_type,
                LoadState.LOADED,
                slice=unitname.slice_parent(name),
                stop_when_unneeded=name not in STANDARD_SLICES,
            )
        elif handler is not None:
            state = LoadState.MASKED if handler.kind is Kind.MASKED else LoadState.LOADED
            settings: dict[str, object] = {"Description": handler.description}
            if handler.requires:
                settings["Requires"] = list(handler.requires)
                settings["After"] = list(handler.requires)
            unit = Unit(
                name,
                unit_type,
                state,
                slice=handler.slice,
                settings=settings,
                handler=handler,
                stop_when_unneeded=handler.stop_when_unneeded,
            )
        else:
            unit = Unit(name, unit_type, LoadState.NOT_FOUND)
        self._register(unit)
        return unit

    def unit_to_stop(self, name: str) -> Unit:
        """StopUnit's unit: validated by name; a name with nothing behind it is not loaded
        (observed on systemd 252), a handled one (e.g. a masked user@) is."""
        self.check_name(name)
        if name not in self.units and self.policy.handler_for(name) is not None:
            return self.load_unit(name)
        return self.get_unit(name)

    @staticmethod
    def check_name(name: str) -> None:
        if not unitname.is_valid(name, template=False):
            raise errors.InvalidArgs(f"Unit name {name} is not valid.")

    def load_found(self, name: str) -> Unit:
        """Load on demand, then refuse a unit nothing backs (SetUnitProperties, StartUnit)."""
        unit = self.load_unit(name)
        self._require_found(unit)
        return unit

    @staticmethod
    def _require_found(unit: Unit) -> None:
        if unit.load_state is LoadState.NOT_FOUND:
            raise errors.NoSuchUnit(f"Unit {unit.name} not found.")

    @staticmethod
    def _require_startable(unit: Unit) -> None:
        # org.freedesktop.systemd1(5) / bus_unit_validate_load_state(): the names of errors
        Manager._require_found(unit)
        if unit.load_state is LoadState.MASKED:
            raise errors.UnitMasked(f"Unit {unit.name} is masked.")

    def unit_by_cgroup(self, path: str) -> Unit:
        """The unit owning a cgroup path, walking up to the closest ancestor that is a unit."""
        # walks up to the closest unit, but not to the root: systemd 252 answers NoSuchUnit
        # for "/nonexistent" (fixtures/oracle/errors-1.jsonl)
        probe = path.rstrip("/") or "/"
        while probe != "/":
            unit = self._by_cgroup.get(probe)
            if unit is not None:
                return unit
            probe = probe.rsplit("/", 1)[0] or "/"
        if path == "":
            return self._by_cgroup["/"]  # the empty path is the root slice; "/" is refused
        raise errors.NoSuchUnit(
            f"Control group '{path}' is not valid or not managed by this instance"
        )

    def unit_by_pid(self, pid: int) -> Unit:
        cgroup = self.backend.cgroup_of(pid) if pid > 0 else None
        if cgroup is None:
            raise errors.NoUnitForPID(f"PID {pid} does not belong to any loaded unit.")
        try:
            return self.unit_by_cgroup(cgroup)
        except errors.NoSuchUnit:
            raise errors.NoUnitForPID(f"PID {pid} does not belong to any loaded unit.") from None

    def unit_by_invocation_id(self, invocation_id: bytes, caller_pid: int | None = None) -> Unit:
        if invocation_id in (b"", bytes(16)) and caller_pid:
            return self.unit_by_pid(caller_pid)  # systemd: the null ID means the caller's unit
        if len(invocation_id) != 16:
            raise errors.InvalidArgs("Invalid invocation ID")
        unit = self._by_invocation.get(invocation_id)
        if unit is None:
            raise errors.NoUnitForInvocationID(
                f"No unit with the specified invocation ID {invocation_id.hex()} known."
            )
        return unit

    def list_units(
        self,
        states: Sequence[str] = (),
        patterns: Sequence[str] = (),
        names: Sequence[str] | None = None,
    ) -> list[Unit]:
        """Loaded units filtered as systemctl list-units does (any state field, glob names)."""
        if names is not None:
            return [self.load_unit(n) for n in names]
        out = []
        for unit in self.units.values():
            if states and not {unit.load_state, unit.active_state, unit.sub_state} & set(states):
                continue
            if patterns and not any(fnmatch.fnmatchcase(unit.name, p) for p in patterns):
                continue
            out.append(unit)
        return out

    # -- garbage collection ----------------------------------------------------------------

    def _queue_gc(self, unit: Unit) -> None:
        self._gc_queue.add(unit)
        if not self._gc_scheduled:
            self._gc_scheduled = True
            self.loop.call_soon(self._run_gc)

    def _collectable(self, unit: Unit) -> bool:
        if unit.perpetual or unit.job is not None or unit.refs:
            return False
        state = unit.active_state
        if state is ActiveState.FAILED:
            # systemd.unit(5) CollectMode=: failed units stay unless inactive-or-failed
            if unit.setting("CollectMode") != CollectMode.INACTIVE_OR_FAILED:
                return False
        elif state is not ActiveState.INACTIVE:
            return False
        return not (unit.type is UnitType.SLICE and self._children(unit))

    def _children(self, slice_unit: Unit) -> list[Unit]:
        return sorted(self._children_of.get(slice_unit.name, ()), key=lambda u: u.name)

    def _run_gc(self) -> None:
        self._gc_scheduled = False
        while self._gc_queue:
            unit = self._gc_queue.pop()
            if self.units.get(unit.name) is unit and self._collectable(unit):
                self._release_cgroup(unit)
                self._unregister(unit)

    # -- StopWhenUnneeded= --------------------------------------------------------------

    def _queue_unneeded(self, *names: str) -> None:
        if not names:
            return
        if not self._unneeded_queue:
            self.loop.call_soon(self._run_unneeded)
        self._unneeded_queue.update(names)

    def _needed(self, unit: Unit) -> bool:
        """systemd.unit(5) StopWhenUnneeded=: needed while a unit that wants, requires or
        sits in it is active, activating or about to start (or a client started it)."""
        if unit.pinned or unit.job is not None:
            return True
        users = self._needed_by.get(unit.name, set()) | self._children_of.get(unit.name, set())
        return any(
            _active_or_activating(u.active_state)
            or (u.job is not None and u.job.type is JobType.START)
            for u in users
        )

    def _run_unneeded(self) -> None:
        names, self._unneeded_queue = self._unneeded_queue, set()
        for name in sorted(names):
            unit = self.units.get(name)
            if (
                unit is not None
                and unit.stop_when_unneeded
                and unit.active_state is ActiveState.ACTIVE
                and not self._needed(unit)
            ):
                log.info("%s: no longer needed, stopping", unit.name)
                self._enqueue(unit, JobType.STOP)

    # -- state changes ---------------------------------------------------------------------

    def _set_state(self, unit: Unit, sub_state: str) -> None:
        """Enter a sub-state, keeping the timestamps systemd keeps, and announce it."""
        old = unit.active_state
        unit.sub_state = sub_state
        new = unit.active_state
        now = Timestamp.now()
        unit.timestamps["StateChange"] = now
        inactive = (ActiveState.INACTIVE, ActiveState.FAILED)
        if old in inactive and new not in inactive:
            unit.timestamps["InactiveExit"] = now
        if new is ActiveState.ACTIVE and old is not ActiveState.ACTIVE:
            unit.timestamps["ActiveEnter"] = now
        if old is ActiveState.ACTIVE and new is not ActiveState.ACTIVE:
            unit.timestamps["ActiveExit"] = now
        if new in inactive and old not in inactive:
            unit.timestamps["InactiveEnter"] = now
        self.listener.unit_changed(unit)
        if new in inactive:
            self._queue_gc(unit)
        if not _active_or_activating(new):
            self._queue_unneeded(*_pins(unit), *([unit.slice] if unit.slice else []))
        elif unit.stop_when_unneeded:
            self._queue_unneeded(unit.name)

    def _new_invocation(self, unit: Unit) -> None:
        self._by_invocation.pop(unit.invocation_id, None)
        unit.invocation_id = os.urandom(16)
        self._by_invocation[unit.invocation_id] = unit
        now = Timestamp.now()
        unit.timestamps["Condition"] = now
        unit.timestamps["Assert"] = now

    def _realise(self, unit: Unit) -> None:
        path = unitname.cgroup_path(unit.name, unit.slice)
        self.backend.create(path)
        unit.control_group = path
        self._by_cgroup[path] = unit
        self._apply_resources(unit)

    def _try_realise(self, unit: Unit) -> bool:
        """Create the unit's cgroup; a cgroupfs refusal (ENOSPC at cgroup.max.descendants,
        EACCES, ...) is logged and leaves nothing behind."""
        try:
            self._realise(unit)
        except BackendError as e:
            log.warning("%s: cannot create its control group: %s", unit.name, e)
            self._release_cgroup(unit)
            return False
        return True

    def _apply_resources(self, unit: Unit) -> None:
        """Write the unit's limits; what a hierarchy cannot honour is logged, as systemd does."""
        if unit.control_group is None:
            return
        try:
            notes = self.backend.apply_resources(unit.control_group, unit.settings)
        except BackendError as e:
            log.warning("%s: resource settings not applied: %s", unit.name, e)
            return
        for note in notes:
            log.info("%s: %s", unit.name, note)

    def _release_cgroup(self, unit: Unit) -> None:
        path = unit.control_group
        if path is None or path == "/":
            return
        self.backend.unwatch(path)
        self._by_cgroup.pop(path, None)
        unit.control_group = None
        try:
            self.backend.remove(path)
        except BackendError as e:
            # still populated (KillMode=none, stray forks): remove it once it empties
            log.warning("cgroup %s of %s not removed yet: %s", path, unit.name, e)
            self.backend.watch_empty(path, self._remove_orphan)

    def _remove_orphan(self, path: str) -> None:
        if path in self._by_cgroup:
            return
        try:
            self.backend.remove(path)
        except BackendError as e:
            log.warning("orphaned cgroup %s not removed: %s", path, e)

    # -- jobs ------------------------------------------------------------------------------

    @staticmethod
    def _job_mode(
        mode: str, job_type: JobType = JobType.START, *, transient: bool = False
    ) -> JobMode:
        """A job mode as systemd 252 checks it (texts differ between its code paths)."""
        job_mode = parse_enum(JobMode, mode)
        if job_mode is None or job_mode is JobMode.RESTART_DEPENDENCIES:  # added in 254
            text = f"Job mode {mode} is invalid." if transient else f"Job mode {mode} invalid"
            raise errors.InvalidArgs(text)
        if job_mode is JobMode.TRIGGERING and job_type is not JobType.STOP:
            raise errors.InvalidArgs("--job-mode=triggering is only valid for stop.")
        if job_mode is JobMode.ISOLATE and job_type is JobType.START:
            # systemd.unit(5) AllowIsolate= defaults to no, and no unit here allows it
            raise errors.NoIsolation("Operation refused, unit may not be isolated.")
        return job_mode

    def _check_job(self, unit: Unit, job_type: JobType, mode: JobMode) -> None:
        """Refuse a job that would conflict with a queued one in mode fail."""
        other = unit.job
        if other is not None and other.type is not job_type and mode is JobMode.FAIL:
            raise errors.TransactionIsDestructive(
                f"Transaction for {unit.name}/{job_type} is destructive ({unit.name} has "
                f"'{other.type}' job queued, but '{job_type}' is included in transaction)."
            )

    def _enqueue(self, unit: Unit, job_type: JobType) -> Job:
        other = unit.job
        if other is not None:
            if other.type is job_type:
                return other  # systemd merges a job into an identical queued one
            self._finish_job(other, JobResult.CANCELED)
        job = Job(self._next_job_id, unit, job_type)
        self._next_job_id = self._next_job_id + 1 if self._next_job_id < UINT32_MAX else 1
        self.jobs[job.id] = job
        unit.job = job
        self.n_installed_jobs += 1
        self.listener.job_new(job)
        self.listener.unit_changed(unit)
        self._schedule(job)
        return job

    def _schedule(self, job: Job) -> None:
        if not self._run_queue:
            self.loop.call_soon(self._dispatch)
        self._run_queue.append(job)

    def _blocked(self, job: Job) -> bool:
        """systemd.unit(5) After=: a start job waits for the start jobs of what it is after."""
        if job.type is not JobType.START:
            return False
        after = job.unit.setting("After", [])
        assert isinstance(after, list)
        for name in after:
            other = self.units.get(name)
            # scope and slice jobs finish within one dispatch; only handled units' jobs
            # take time, and they are never ordered after anything a client made (no cycles)
            if (
                other is not None
                and other.handler is not None
                and other.job is not None
                and other.job.type is JobType.START
            ):
                return True
        return False

    def _dispatch(self) -> None:
        """Run queued jobs after the reply went out; slices start before what they contain."""
        queue, self._run_queue = self._run_queue, []

        def order(job: Job) -> tuple[int, int]:
            if job.type is JobType.START and job.unit.type is UnitType.SLICE:
                return (0, job.unit.name.count("-"))
            return (1, 0)

        for job in sorted(queue, key=order):
            self._run_job(job)

    def _finish_job(self, job: Job, result: JobResult) -> None:
        if self.jobs.get(job.id) is not job:
            return
        del self.jobs[job.id]
        if result is not JobResult.DONE and result is not JobResult.SKIPPED:
            self.n_failed_jobs += 1
        self.listener.job_removed(job, result)
        if job.unit.job is job:
            job.unit.job = None
            self.listener.unit_changed(job.unit)
        self._queue_gc(job.unit)
        unit = job.unit
        self._queue_unneeded(unit.name, *_pins(unit), *([unit.slice] if unit.slice else []))
        if self._waiting:
            waiting, self._waiting = self._waiting, []
            for other in waiting:
                self._schedule(other)
        parent = self.units.get(job.unit.slice or "")
        if parent is not None and parent.job is not None and parent.job.type is JobType.STOP:
            self._maybe_finish_slice_stop(parent)

    def _set_running(self, job: Job) -> None:
        if job.state is not JobState.RUNNING:
            job.state = JobState.RUNNING
            self.listener.job_changed(job)

    def _run_job(self, job: Job) -> None:
        if self.jobs.get(job.id) is not job:
            return
        if self._blocked(job):
            self._waiting.append(job)
            return
        self._set_running(job)
        if job.type is JobType.START:
            self._start(job)
        elif job.type is JobType.STOP:
            self._stop(job)
        else:
            self._finish_job(job, JobResult.DONE)

    def get_job(self, job_id: int) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise errors.NoSuchJob(f"Job {job_id} does not exist.")
        return job

    def cancel_job(self, job_id: int) -> None:
        self._finish_job(self.get_job(job_id), JobResult.CANCELED)

    def clear_jobs(self) -> None:
        for job in list(self.jobs.values()):
            self._finish_job(job, JobResult.CANCELED)

    # -- start -----------------------------------------------------------------------------

    def start_transient_unit(
        self,
        name: str,
        mode: str,
        properties: Sequence[Property],
        aux: Sequence[tuple[str, Sequence[Property]]],
        caller_pid: int | None,
        caller_uid: int | None = 0,
    ) -> Job:
        """Create a transient scope or slice and queue its start job (validated fully first)."""
        self._job_mode(mode, transient=True)  # a new unit has no queued job to conflict with
        unit_type = self._transient_type(name, properties)
        if aux:
            # systemd 252 creates auxiliary units without starting them, then collects them
            log.info("%s: auxiliary units ignored: %s", name, ", ".join(n for n, _ in aux))
        existing = self.units.get(name)
        if existing is not None and not self._pristine(existing):
            raise errors.UnitExists(f"Unit {name} was already loaded or has a fragment file.")
        settings = self._parse(unit_type, properties, transient=True)
        if unit_type is UnitType.SLICE:
            if not unitname.is_valid_slice_name(name):
                raise errors.InvalidArgs("Invalid unit name or type.")
            if "Slice" in settings:
                raise errors.InvalidArgs("Slice may not be set for slice units.")
            slice_name = unitname.slice_parent(name)
        else:
            slice_name = str(settings.pop("Slice", None) or self._default_slice(name))
            if "PIDs" not in settings:
                # systemd.scope(5): a scope must be given processes; 252 fails loading it
                raise errors.FileNotFound(
                    f"Unit {name} failed to load properly, please adjust/correct and reload "
                    "service manager: No such file or directory"
                )
            if not settings["PIDs"]:
                raise errors.InvalidArgs("Failed to set unit properties: Invalid argument")
            settings["PIDs"] = self._resolve_pids(settings["PIDs"], caller_pid, caller_uid)
        self._check_requirements(settings)
        # every check passed: from here on nothing fails
        if existing is not None:
            self._unregister(existing)
        unit = Unit(
            name, unit_type, LoadState.LOADED, transient=True, slice=slice_name, settings=settings
        )
        self._register(unit)
        job = self._enqueue(unit, JobType.START)
        self._pull_in(unit)
        return job

    @staticmethod
    def _transient_type(name: str, properties: Sequence[Property]) -> UnitType:
        """The type of a transient unit name, refused as systemd 252 refuses it."""
        if unitname.is_template(name):
            raise errors.InvalidArgs(f"Unit name {name} is missing the instance name.")
        if not unitname.is_valid(name, template=False):
            raise errors.InvalidArgs("Invalid unit name or type.")
        unit_type = unitname.unit_type(name)
        assert unit_type is not None
        if unit_type in (UnitType.SCOPE, UnitType.SLICE):
            if unitname.is_instance(name):
                raise errors.InvalidArgs("Invalid argument")  # what 252 answers, observed
            return unit_type
        if unit_type in (UnitType.TARGET, UnitType.DEVICE, UnitType.SWAP):
            raise errors.InvalidArgs(f"Unit type {unit_type} does not support transient units.")
        # systemd builds these from properties scopeshim does not know (ExecStart=, What=, ...):
        # those are refused as unknown, and what is left as systemd 252 does (observed)
        parse_assignments(unit_type, properties, transient=True)
        raise errors.BadUnitSetting(f"Unit {name} has a bad unit file setting.")

    def _pristine(self, unit: Unit) -> bool:
        # systemd: a transient unit may replace a loaded unit only if nothing backs or runs it
        return (
            unit.load_state is LoadState.NOT_FOUND
            and unit.job is None
            and unit.active_state is ActiveState.INACTIVE
        )

    @staticmethod
    def _default_slice(name: str) -> str:
        return DEFAULT_SLICE

    def _parse(
        self, unit_type: UnitType, properties: Sequence[Property], *, transient: bool
    ) -> dict[str, object]:
        assignments: list[Assignment] = parse_assignments(
            unit_type, properties, transient=transient
        )
        self._check_backend_support(assignments)
        settings: dict[str, object] = {}
        merge_into(settings, assignments)
        return settings

    def _check_backend_support(self, assignments: Sequence[Assignment]) -> None:
        # device access control needs the v1 devices controller (or a BPF program, which
        # scopeshim does not install): refuse it the way crun expects, so it can fall back
        if Capability.DEVICES not in self.backend.capabilities:
            for a in assignments:
                if a.name in ("DevicePolicy", "DeviceAllow"):
                    raise errors.property_read_only(a.name)

    def _resolve_pids(
        self, pids: object, caller_pid: int | None, caller_uid: int | None = 0
    ) -> list[int]:
        """PIDs as systemd checks them: 0 is the caller, dead ones and managers are refused,
        and a caller other than root may only name its own processes."""
        assert isinstance(pids, list)
        out: list[int] = []
        for pid in pids:
            if pid == 0:
                if caller_pid is None:
                    raise errors.InvalidArgs("Failed to get peer PID.")
                pid = caller_pid
            if not _pid_exists(pid):
                raise errors.UnixProcessIdUnknown(f"Process with ID {pid} does not exist.")
            if pid in (1, os.getpid()):
                raise errors.InvalidArgs(f"Process {pid} is a manager process, refusing.")
            if _is_kernel_thread(pid):
                # systemd's unit_pid_attachable(): kernel threads cannot join a cgroup
                raise errors.InvalidArgs(f"Process {pid} is a kernel thread, refusing.")
            if caller_uid != 0 and _owner(pid) != caller_uid:
                # systemd's AttachProcessesToUnit() text for the same rule
                raise errors.AccessDenied(f"Process {pid} not owned by client's UID. Refusing.")
            if pid not in out:
                out.append(pid)
        return out

    def _pull_in_slices(self, unit: Unit) -> None:
        """Load the unit's slice ancestors and queue start jobs for the inactive ones."""
        chain = unitname.slice_ancestors(unit.slice) if unit.slice else []
        for name in chain:
            parent = self.load_unit(name)
            if parent.active_state is not ActiveState.ACTIVE:
                self._enqueue(parent, JobType.START)

    def _check_requirements(self, settings: dict[str, object]) -> None:
        """A transaction fails when a unit it requires cannot start (systemd.unit(5)
        Requires=); wanted units that cannot start are left out silently (Wants=)."""
        for key in ("Requires", "BindsTo"):
            names = settings.get(key, [])
            assert isinstance(names, list)
            for name in names:
                self.check_name(name)
                unit = self.units.get(name)
                if unit is not None:
                    self._require_startable(unit)
                elif not name.endswith(".slice"):
                    handler = self.policy.handler_for(name)
                    if handler is None:
                        raise errors.NoSuchUnit(f"Unit {name} not found.")
                    if handler.kind is Kind.MASKED:
                        raise errors.UnitMasked(f"Unit {name} is masked.")

    def _pull_in(self, unit: Unit) -> None:
        """Queue start jobs for the unit's slices and for what it wants or requires."""
        self._pull_in_slices(unit)
        for name in _pins(unit):
            if unitname.unit_type(name) is None or not unitname.is_valid(name, template=False):
                continue
            other = self.load_unit(name)
            if (
                other.load_state is LoadState.LOADED
                and (other.handler is not None or other.type is UnitType.SLICE)
                and other.active_state is not ActiveState.ACTIVE
                and (other.job is None or other.job.type is not JobType.START)
            ):
                self._enqueue(other, JobType.START)
                self._pull_in(other)

    def start(self, unit: Unit, mode: str) -> Job:
        """Queue a start job (StartUnit loads by name first; Unit.Start has the object)."""
        job_mode = self._job_mode(mode)
        self._require_startable(unit)
        self._check_job(unit, JobType.START, job_mode)
        if unit.type is UnitType.SCOPE and unit.active_state is not ActiveState.ACTIVE:
            # systemd.scope(5): scopes are only created programmatically
            raise errors.JobTypeNotApplicable(
                f"Job type start is not applicable for unit {unit.name}."
            )
        job = self._enqueue(unit, JobType.START)
        unit.pinned = unit.pinned or unit.stop_when_unneeded
        self._pull_in(unit)
        return job

    def _start(self, job: Job) -> None:
        unit = job.unit
        if unit.active_state is ActiveState.ACTIVE:
            self._finish_job(job, JobResult.DONE)
            return
        for key in ("Requires", "BindsTo"):
            names = unit.setting(key, [])
            assert isinstance(names, list)
            for name in names:
                other = self.units.get(name)
                if (
                    other is not None
                    and other.active_state in (ActiveState.INACTIVE, ActiveState.FAILED)
                    and (other.job is None or other.job.type is not JobType.START)
                ):
                    # systemd.unit(5) Requires=: a requirement that failed to start fails
                    # the job with result "dependency"; the unit itself stays inactive
                    log.warning("%s: required %s is %s", unit.name, name, other.active_state)
                    self._finish_job(job, JobResult.DEPENDENCY)
                    return
        if unit.type is UnitType.SLICE:
            parent = self.units.get(unit.slice or "")
            if parent is not None and parent.active_state is not ActiveState.ACTIVE:
                self._finish_job(job, JobResult.DEPENDENCY)
                return
            self._new_invocation(unit)
            if not self._try_realise(unit):
                self._finish_job(job, JobResult.FAILED)
                return
            self._set_state(unit, SliceState.ACTIVE)
            self._finish_job(job, JobResult.DONE)
            return
        if unit.type is UnitType.SCOPE:
            self._start_scope(job)
            return
        if unit.handler is not None:
            self._start_handled(job, unit.handler)
            return
        self._finish_job(job, JobResult.UNSUPPORTED)

    def _start_scope(self, job: Job) -> None:
        unit = job.unit
        parent = self.units.get(unit.slice or "")
        if parent is not None and parent.active_state is not ActiveState.ACTIVE:
            self._set_state(unit, ScopeState.FAILED)
            unit.result = "resources"
            self._finish_job(job, JobResult.DEPENDENCY)
            return
        self._new_invocation(unit)
        if not self._try_realise(unit):
            unit.result = "resources"
            self._set_state(unit, ScopeState.FAILED)
            self._finish_job(job, JobResult.FAILED)
            return
        assert unit.control_group is not None
        if unit.setting("Delegate", False) and not self._delegate(unit):
            unit.result = "resources"
            self._release_cgroup(unit)
            self._set_state(unit, ScopeState.FAILED)
            self._finish_job(job, JobResult.FAILED)
            return
        attached = 0
        pids = unit.setting("PIDs", [])
        assert isinstance(pids, list)
        for pid in pids:
            try:
                self.backend.attach(unit.control_group, [pid])
                attached += 1
            except BackendError as e:
                log.warning("%s: PID %d not attached: %s", unit.name, pid, e)
        if not attached:
            # systemd.scope(5): a scope without processes cannot start
            log.warning("%s: no PIDs left to attach to the scope's control group", unit.name)
            unit.result = "resources"
            self._release_cgroup(unit)
            self._set_state(unit, ScopeState.FAILED)
            self._finish_job(job, JobResult.FAILED)
            return
        self._set_state(unit, ScopeState.RUNNING)
        self.backend.watch_empty(unit.control_group, self._cgroup_empty)
        self._finish_job(job, JobResult.DONE)

    def _delegate(self, unit: Unit) -> bool:
        """systemd.resource-control(5) Delegate=: the cgroup belongs to the unit's User=."""
        user = unit.setting("User", "")
        if not isinstance(user, str) or user in ("", "root", "0"):
            return True
        try:
            entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except (KeyError, ValueError):
            log.warning("%s: user %s does not exist, cannot delegate", unit.name, user)
            return False
        assert unit.control_group is not None
        try:
            self.backend.delegate(unit.control_group, entry.pw_uid, entry.pw_gid)
        except BackendError as e:
            log.warning("%s: %s", unit.name, e)
            return False
        return True

    # -- handled units (policy.py): services and targets without unit files -------------

    def _spawn_task(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _start_handled(self, job: Job, handler: Handler) -> None:
        unit = job.unit
        self._new_invocation(unit)
        if handler.kind is Kind.NOOP:
            self._set_state(unit, ServiceState.EXITED)
            self._finish_job(job, JobResult.DONE)
        elif handler.kind is Kind.ACTION:
            self._spawn_task(self._run_action(job, handler.start))
        elif handler.kind is Kind.ONESHOT:
            self._set_state(unit, ServiceState.START)
            self._spawn_task(self._run_oneshot(job, handler.start, ServiceState.EXITED))
        else:
            self._set_state(unit, ServiceState.START)
            self._spawn_task(self._run_simple(job, handler))

    async def _run_oneshot(self, job: Job, argv: Sequence[str], success: ServiceState) -> None:
        """Type=oneshot, RemainAfterExit=yes: the job ends with the command; the unit's
        cgroup exists while it runs."""
        unit = job.unit
        assert unit.handler is not None
        status, output = -1, ""
        try:
            self._realise(unit)
            assert unit.control_group is not None
            status, output = await spawn.run(
                argv, self.backend, unit.control_group, user=unit.handler.user
            )
        except (spawn.SpawnError, BackendError) as e:
            output = str(e)
        for line in output.splitlines():
            log.info("%s: %s", unit.name, line)
        if unit.job is not job:
            return  # replaced or cancelled meanwhile
        self._release_cgroup(unit)
        if status == 0:
            unit.result = "success"
            self._set_state(unit, success)
            self._finish_job(job, JobResult.DONE)
        else:
            log.warning("%s: %s exited with status %d", unit.name, argv[0] if argv else "", status)
            unit.result = "timeout" if status == -9 else "exit-code"
            self._set_state(unit, ServiceState.FAILED)
            self._finish_job(job, JobResult.FAILED)

    async def _run_simple(self, job: Job, handler: Handler) -> None:
        """Type=simple: active once the main process is forked into the unit's cgroup."""
        unit = job.unit
        try:
            self._realise(unit)
            assert unit.control_group is not None
            proc = await spawn.start(
                handler.start, self.backend, unit.control_group, user=handler.user, capture=False
            )
        except (spawn.SpawnError, BackendError) as e:
            log.warning("%s: %s", unit.name, e)
            if unit.job is job:
                self._release_cgroup(unit)
                unit.result = "resources"
                self._set_state(unit, ServiceState.FAILED)
                self._finish_job(job, JobResult.FAILED)
            return
        self._spawn_task(self._reap(unit, proc))
        if unit.job is job:
            self._set_state(unit, ServiceState.RUNNING)
            self._finish_job(job, JobResult.DONE)
        assert unit.control_group is not None
        self.backend.watch_empty(unit.control_group, self._cgroup_empty)

    async def _reap(self, unit: Unit, proc: asyncio.subprocess.Process) -> None:
        status = await proc.wait()
        if status != 0 and unit.sub_state == ServiceState.RUNNING:
            log.warning("%s: main process exited with status %d", unit.name, status)
            unit.result = "exit-code"

    async def _run_action(self, job: Job, argv: Sequence[str]) -> None:
        """A power or sleep target: run the init's command once; the job ends with it."""
        unit = job.unit
        ok = True
        if tuple(argv) == RECORD or not argv:
            self._record_action(unit.name, argv)
        else:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                ok = await proc.wait() == 0
            except OSError as e:
                log.warning("%s: cannot run %s: %s", unit.name, argv[0], e.strerror)
                ok = False
        if unit.job is job:
            self._finish_job(job, JobResult.DONE if ok else JobResult.FAILED)

    def _record_action(self, name: str, argv: Sequence[str]) -> None:
        line = json.dumps({"unit": name, "action": list(argv), "time": time.time()})
        try:
            with open(self.policy.record_file, "a") as f:
                f.write(line + "\n")
        except OSError as e:
            log.warning("%s: cannot record to %s: %s", name, self.policy.record_file, e)
        log.info("%s: recorded %s", name, line)

    # -- stop ------------------------------------------------------------------------------

    def stop(self, unit: Unit, mode: str) -> Job:
        job_mode = self._job_mode(mode, JobType.STOP)
        if unit.load_state is LoadState.NOT_FOUND:
            raise errors.NoSuchUnit(f"Unit {unit.name} not loaded.")
        self._check_job(unit, JobType.STOP, job_mode)
        if unit.perpetual:
            raise errors.JobTypeNotApplicable(
                f"Job type stop is not applicable for unit {unit.name}."
            )
        unit.pinned = False
        return self._enqueue(unit, JobType.STOP)

    def _stop(self, job: Job) -> None:
        unit = job.unit
        if unit.active_state in (ActiveState.INACTIVE, ActiveState.FAILED):
            self._finish_job(job, JobResult.DONE)
            return
        if unit.type is UnitType.SLICE:
            for child in self._children(unit):
                if child.active_state not in (ActiveState.INACTIVE, ActiveState.FAILED):
                    self._enqueue(child, JobType.STOP)
            self._maybe_finish_slice_stop(unit)
            return
        if unit.type is UnitType.SCOPE or (
            unit.handler is not None and unit.handler.kind is Kind.SIMPLE
        ):
            if unit.sub_state in (ScopeState.STOP_SIGTERM, ScopeState.STOP_SIGKILL):
                return  # already stopping: the job finishes when the cgroup empties
            self._scope_signal(unit, ScopeState.STOP_SIGTERM)
            return
        if unit.handler is not None and unit.handler.kind is Kind.ONESHOT:
            if unit.sub_state != ServiceState.STOP:
                self._set_state(unit, ServiceState.STOP)
                self._spawn_task(self._run_oneshot(job, unit.handler.stop, ServiceState.DEAD))
            return
        self._set_state(unit, "dead")
        self._finish_job(job, JobResult.DONE)

    def _maybe_finish_slice_stop(self, unit: Unit) -> None:
        job = unit.job
        if job is None or job.type is not JobType.STOP or job.state is not JobState.RUNNING:
            return
        if any(
            c.active_state not in (ActiveState.INACTIVE, ActiveState.FAILED)
            for c in self._children(unit)
        ):
            return
        self._set_state(unit, SliceState.DEAD)
        if all(c.control_group is None for c in self._children(unit)):
            self._release_cgroup(unit)  # an inactive slice keeps no cgroup, as on systemd
        self._finish_job(job, JobResult.DONE)

    def _scope_signal(self, unit: Unit, state: ScopeState) -> None:
        """systemd.kill(5): SIGTERM (+SIGHUP) first, SIGKILL after TimeoutStopSec=."""
        path = unit.control_group
        kill_mode = unit.setting("KillMode", KillMode.CONTROL_GROUP)
        signalled = 0
        if path is not None and kill_mode in (KillMode.CONTROL_GROUP, KillMode.MIXED):
            if state is ScopeState.STOP_SIGTERM:
                sig = unit.setting("KillSignal", _signal.SIGTERM)
                assert isinstance(sig, int)
                signalled = self.backend.kill(path, sig)
                if unit.setting("SendSIGHUP", False) and signalled:
                    self.backend.kill(path, _signal.SIGHUP)
                if signalled:
                    self.backend.kill(path, _signal.SIGCONT)
            elif unit.setting("SendSIGKILL", True):
                sig = unit.setting("FinalKillSignal", _signal.SIGKILL)
                assert isinstance(sig, int)
                signalled = self.backend.kill(path, sig)
        if path is None or not self.backend.pids(path):
            self._scope_dead(unit, unit.result)
            return
        if kill_mode in (KillMode.NONE, KillMode.PROCESS):
            self._scope_dead(unit, unit.result)  # processes stay behind, as systemd leaves them
            return
        self._set_state(unit, state)
        timeout = unit.setting("TimeoutStopUSec", DEFAULT_TIMEOUT_STOP_USEC)
        assert isinstance(timeout, int)
        self._arm_timer(unit, timeout, self._stop_timeout)

    def _arm_timer(self, unit: Unit, usec: int, callback: object) -> None:
        self._cancel_timer(unit)
        if usec in (0, 2**64 - 1):
            return
        assert callable(callback)
        self._timers[unit] = self.loop.call_later(usec / 1e6, callback, unit)

    def _cancel_timer(self, unit: Unit) -> None:
        handle = self._timers.pop(unit, None)
        if handle is not None:
            handle.cancel()

    def _stop_timeout(self, unit: Unit) -> None:
        self._timers.pop(unit, None)
        if unit.sub_state == ScopeState.STOP_SIGTERM:
            # systemd 252: a stop that needs SIGKILL ends failed with Result=timeout (observed)
            unit.result = "timeout"
            self._scope_signal(unit, ScopeState.STOP_SIGKILL)
        elif unit.sub_state == ScopeState.STOP_SIGKILL:
            log.warning("%s: processes still around after final SIGKILL", unit.name)
            self._scope_dead(unit, "timeout")

    def _scope_dead(self, unit: Unit, result: str) -> None:
        self._cancel_timer(unit)
        unit.result = result
        self._release_cgroup(unit)
        self._set_state(unit, ScopeState.DEAD if result == "success" else ScopeState.FAILED)
        job = unit.job
        if job is not None and job.type is JobType.STOP:
            self._finish_job(job, JobResult.DONE)

    def _cgroup_empty(self, path: str) -> None:
        unit = self._by_cgroup.get(path)
        if unit is None or unit.type not in (UnitType.SCOPE, UnitType.SERVICE):
            return
        if unit.active_state in (ActiveState.ACTIVE, ActiveState.DEACTIVATING):
            self._scope_dead(unit, unit.result)

    # -- other unit operations (Manager.XUnit(name) resolves with get_unit first) -----------

    def kill(self, unit: Unit, whom: str, signal: int) -> int:
        """systemd.kill(5): signal the unit's processes; scopes have no main/control process."""
        try:
            who = KillWho(whom)
        except ValueError:
            raise errors.InvalidArgs(f"Invalid who argument {whom}") from None
        if not 1 <= signal <= SIGNAL_MAX:
            raise errors.InvalidArgs("Signal number out of range.")
        if who not in (KillWho.ALL, KillWho.ALL_FAIL) and unit.type in (
            UnitType.SCOPE,
            UnitType.SLICE,
        ):
            kind = "main" if who in (KillWho.MAIN, KillWho.MAIN_FAIL) else "control"
            raise errors.NoSuchProcess(f"{unit.type} units have no {kind} processes")
        if unit.control_group is None:
            return 0
        try:
            return self.backend.kill(unit.control_group, signal)
        except BackendError as e:
            raise _cgroup_error("Failed to kill unit processes", e) from None

    def abandon(self, unit: Unit) -> None:
        if unit.type is not UnitType.SCOPE:
            raise errors.InvalidArgs(f"Unit '{unit.name}' is not a scope unit, refusing.")
        if unit.sub_state not in (ScopeState.RUNNING, ScopeState.ABANDONED):
            raise errors.ScopeNotRunning(f"Scope {unit.name} is not running, cannot abandon.")
        # systemd.scope(5) / Abandon(): the scope stays until its processes are gone
        unit.settings["Controller"] = ""
        self._set_state(unit, ScopeState.ABANDONED)

    def reset_failed_all(self) -> None:
        for unit in list(self.units.values()):
            self.reset_failed(unit)

    def reset_failed(self, unit: Unit) -> None:
        unit.result = "success"
        if unit.active_state is ActiveState.FAILED:
            self._set_state(unit, "dead")
        else:
            self._queue_gc(unit)

    def set_properties(self, unit: Unit, runtime: bool, properties: Sequence[Property]) -> None:
        """Runtime changes, validated completely before any is applied."""
        assignments = parse_assignments(unit.type, properties, transient=False)
        self._check_backend_support(assignments)
        merge_into(unit.settings, assignments)
        self._apply_resources(unit)
        self.listener.unit_changed(unit)

    def usage(self, unit: Unit) -> Usage:
        """The unit's counters, each only while its *Accounting= setting is on (unset
        counters read as "not available", as org.freedesktop.systemd1(5) documents)."""
        if unit.control_group is None:
            return Usage()
        found = self.backend.usage(unit.control_group)

        def on(setting: str) -> bool:
            return bool(unit.settings.get(setting, readable.DEFAULTS.get(setting)))

        io = on("IOAccounting")
        return Usage(
            memory_bytes=found.memory_bytes if on("MemoryAccounting") else None,
            tasks=found.tasks if on("TasksAccounting") else None,
            cpu_nsec=found.cpu_nsec if on("CPUAccounting") else None,
            io_read_bytes=found.io_read_bytes if io else None,
            io_write_bytes=found.io_write_bytes if io else None,
            io_read_ops=found.io_read_ops if io else None,
            io_write_ops=found.io_write_ops if io else None,
            cgroup_id=found.cgroup_id,
        )

    def processes(self, unit: Unit) -> list[tuple[str, int, str]]:
        if unit.control_group is None:
            return []
        return [
            (self.backend.cgroup_of(pid) or unit.control_group, pid, _cmdline(pid))
            for pid in self.backend.pids(unit.control_group)
        ]

    def attach(
        self,
        unit: Unit,
        subcgroup: str,
        pids: Iterable[int],
        caller_pid: int | None,
        caller_uid: int | None = 0,
    ) -> None:
        """AttachProcessesToUnit: delegated units only, into an existing (sub-)cgroup."""
        if subcgroup and not subcgroup.startswith("/"):
            raise errors.InvalidArgs(f"Control group path is not absolute: {subcgroup}")
        if not unit.setting("Delegate", False):
            raise errors.InvalidArgs("Process migration not available on non-delegated units.")
        if unit.control_group is None or unit.active_state is not ActiveState.ACTIVE:
            raise errors.UnitInactive("Unit is inactive.")
        parts = subcgroup.split("/")[1:] if subcgroup else []
        if any(p in (".", "..") for p in parts) or "" in parts[:-1]:
            raise errors.InvalidArgs(f"Control group path is not normalized: {subcgroup}")
        resolved = self._resolve_pids(list(pids), caller_pid, caller_uid)
        if not resolved:
            return
        target = unit.control_group.rstrip("/") + "/" + "/".join(p for p in parts if p)
        target = target.rstrip("/") or "/"
        if not self.backend.exists(target):
            raise errors.FileNotFound(
                "Failed to attach processes to control group: No such file or directory"
            )
        try:
            self.backend.attach(target, resolved)
        except BackendError as e:
            raise _cgroup_error("Failed to attach processes to control group", e) from None

    def freeze(self, unit: Unit) -> None:
        self._check_freezable(unit)
        if unit.freezer_state != "frozen":
            assert unit.control_group is not None
            try:
                self.backend.freeze(unit.control_group)
            except BackendError as e:
                raise _cgroup_error("Failed to freeze unit", e) from None
            unit.freezer_state = "frozen"
            self.listener.unit_changed(unit)

    def thaw(self, unit: Unit) -> None:
        self._check_freezable(unit)
        if unit.freezer_state != "running":
            assert unit.control_group is not None
            try:
                self.backend.thaw(unit.control_group)
            except BackendError as e:
                raise _cgroup_error("Failed to thaw unit", e) from None
            unit.freezer_state = "running"
            self.listener.unit_changed(unit)

    def _check_freezable(self, unit: Unit) -> None:
        if Capability.FREEZE not in self.backend.capabilities or unit.perpetual:
            raise errors.NotSupported(f"Unit '{unit.name}' does not support freezing.")
        if unit.active_state is not ActiveState.ACTIVE or unit.control_group is None:
            raise errors.UnitInactive("Unit is inactive.")

    def ref(self, unit: Unit, bus_name: str) -> None:
        self._require_found(unit)
        unit.refs.append(bus_name)  # systemd keeps one reference per call
        self.listener.unit_refs_changed(unit)

    def unref(self, unit: Unit, bus_name: str) -> None:
        if bus_name not in unit.refs:
            raise errors.NotReferenced("Unit has not been referenced yet.")
        unit.refs.remove(bus_name)
        self.listener.unit_refs_changed(unit)
        self._queue_gc(unit)

    def subscribe(self, bus_name: str) -> None:
        if bus_name in self.subscribers:
            raise errors.AlreadySubscribed("Client is already subscribed.")
        self.subscribers.add(bus_name)

    def unsubscribe(self, bus_name: str) -> None:
        if bus_name not in self.subscribers:
            raise errors.NotSubscribed("Client is not subscribed.")
        self.subscribers.discard(bus_name)

    def bus_name_gone(self, bus_name: str) -> None:
        """A client left the bus: drop its subscription and unit references."""
        self.subscribers.discard(bus_name)
        for unit in self.units.values():
            if bus_name in unit.refs:
                unit.refs[:] = [r for r in unit.refs if r != bus_name]
                self.listener.unit_refs_changed(unit)
                self._queue_gc(unit)

    def reload(self) -> None:
        """Reload(): nothing is read from disk; clients still see Reloading true/false."""
        self.listener.reloading(True)
        self.listener.reloading(False)

    def idle(self) -> bool:
        """Nothing to look after: no job, and no unit but slices nobody started on purpose."""
        return not self.jobs and all(
            u.type is UnitType.SLICE and not u.pinned for u in self.units.values()
        )

    @property
    def n_failed_units(self) -> int:
        return sum(1 for u in self.units.values() if u.active_state is ActiveState.FAILED)

    def close(self) -> None:
        for unit in list(self._timers):
            self._cancel_timer(unit)
        for task in list(self._tasks):
            task.cancel()
