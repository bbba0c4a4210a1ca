"""The engine under the manager: unit registry and load on demand, state changes, garbage
collection, StopWhenUnneeded=, cgroup realisation and the job queue.

Everything here is synchronous and D-Bus free. A method either raises a compat.errors error
before changing anything, or applies its change and returns. Job work runs later from the
event loop (systemd's model: the caller gets the job path first, the job finishes
afterwards), and every change is announced to the Listener. The layers above add the unit
types' state machines (scopes.py, handled.py), crash recovery (restore.py) and the public
operations (manager.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import os
from collections.abc import Awaitable, Callable, Sequence

from backends.base import BackendError, CgroupBackend
from compat import errors, unitname
from compat.enums import (
    ActiveState,
    CollectMode,
    JobMode,
    JobResult,
    JobState,
    JobType,
    LoadState,
    ScopeState,
    SliceState,
    parse_enum,
)
from compat.properties import PASSED_FDS
from compat.unitname import ROOT_SLICE, UnitType
from shim.core.events import Listener
from shim.core.forkserver import ForkServer
from shim.core.instance import INIT_SCOPE, Instance
from shim.core.policy import Kind, Policy
from shim.core.state import CommitCallback, Persisting, StateStore, next_job_id
from shim.core.units import Job, Timestamp, Unit

log = logging.getLogger(__name__)

# systemd-system.conf(5): DefaultTimeoutStopSec= defaults to 90s
DEFAULT_TIMEOUT_STOP_USEC = 90_000_000
SIGNAL_MAX = 64
UINT32_MAX = 2**32 - 1

Property = tuple[str, str, object]  # (name, D-Bus signature, plain value)


def _pins(unit: Unit) -> list[str]:
    """The units this one keeps needed (systemd.unit(5) Wants=, Requires=, BindsTo=)."""
    out: list[str] = []
    for key in ("Wants", "Requires", "BindsTo"):
        names = unit.settings.get(key, [])
        if isinstance(names, list):
            out.extend(n for n in names if isinstance(n, str) and n not in out)
    return out


def _lists(value: object, name: str) -> bool:
    return isinstance(value, list) and name in value


def _active_or_activating(state: ActiveState) -> bool:
    return state in (ActiveState.ACTIVE, ActiveState.ACTIVATING, ActiveState.RELOADING)


def _release_passed_fds(unit: Unit) -> None:
    """The descriptors a caller passed for a service's streams, closed once it is done (dead
    or failed; systemd releases them then, so that a reader of the caller's pipe sees EOF)."""
    for key in PASSED_FDS:
        fd = unit.settings.get(key)
        if isinstance(fd, int) and not isinstance(fd, bool) and fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
            unit.settings[key] = -1


def _cgroup_error(what: str, e: BackendError) -> errors.SystemdError:
    """A cgroupfs failure as systemd reports it: the errno's D-Bus name, "<what>: <reason>"."""
    reason = os.strerror(e.errno) if e.errno else str(e)
    return errors.from_errno(e.errno, f"{what}: {reason}")


class Engine:
    """Units, jobs and their bookkeeping."""

    def __init__(
        self,
        backend: CgroupBackend,
        listener: Listener,
        loop: asyncio.AbstractEventLoop,
        policy: Policy | None = None,
        store: StateStore | None = None,
        instance: Instance | None = None,
    ) -> None:
        self.backend = backend
        self.policy = policy or Policy()
        self.instance = instance or Instance()
        # with a state directory, every change is written before it is answered (state.py)
        self._persisting = None if store is None else Persisting(listener, store, loop,
                                                                 self._rollback)  # fmt: skip
        self.listener: Listener = listener if self._persisting is None else self._persisting
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
        self._restarting: set[Job] = set()  # restart jobs in their stop half (manager.py)
        self._unneeded_queue: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # a user manager's way to move processes from outside its tree (bus layer sets it)
        self.escalate_attach: Callable[[str, list[int]], Awaitable[None]] | None = None
        self.forkserver: ForkServer | None = None  # the zygote of user managers, once used
        # told of SetEnvironment's assignments (a user manager's session bus hears them)
        self.environment_hook: Callable[[list[str]], None] | None = None
        self._lost_jobs: list[Job] = []  # jobs a crash interrupted (restore.py)
        self._orphan_jobs: list[dict[str, object]] = []  # ... whose unit is gone
        # jobs that ended while restoring, before anyone could hear their JobRemoved
        self._unannounced: list[tuple[Job, JobResult]] | None = None
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
        if self.instance.user:
            self._init_scope()

    def _init_scope(self) -> None:
        """systemd.special(7) init.scope: the user manager's own processes, perpetual."""
        unit = Unit(
            INIT_SCOPE,
            UnitType.SCOPE,
            LoadState.LOADED,
            perpetual=True,
            slice=ROOT_SLICE,
            settings={"Description": "System and Service Manager"},
        )
        self._register(unit)
        try:
            self._realise(unit)
        except BackendError as e:
            log.warning("%s: cannot create its control group: %s", INIT_SCOPE, e)
        self._set_state(unit, ScopeState.RUNNING)

    def _register(self, unit: Unit) -> None:
        self.units[unit.name] = unit
        if unit.slice is not None:
            self._children_of.setdefault(unit.slice, set()).add(unit)
        for name in _pins(unit):
            self._needed_by.setdefault(name, set()).add(unit)
        self.listener.unit_new(unit)
        self._queue_gc(unit)

    def _unregister(self, unit: Unit) -> None:
        _release_passed_fds(unit)
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

    # -- the commit barrier: answers wait until what they say is on disk -------------------

    def commit_mark(self) -> int:
        """Where a call begins (see after_commit)."""
        return 0 if self._persisting is None else self._persisting.mark()

    def commit_pending(self) -> bool:
        """Whether changes are waiting to be written (an answer would have to wait)."""
        return self._persisting is not None and self._persisting.pending()

    def after_commit(self, callback: CommitCallback, since: int | None = None) -> None:
        """Run CALLBACK once every change so far is on disk: at once without a state
        directory or when nothing waits, else after the one write of this loop turn's
        changes. It gets None, or systemd's errno error when a unit changed since the mark
        SINCE could not be written (a unit created since then is gone again, its job never
        ran: no cgroup, no process moved)."""
        if self._persisting is None:
            callback(None)
        else:
            self._persisting.after_commit(callback, since)

    def _rollback(self, names: set[str]) -> None:
        """Units whose creation could not be written: dropped before their jobs run."""
        for name in sorted(names):
            unit = self.units.get(name)
            if unit is None or unit.perpetual:
                continue
            log.error("%s: its state could not be written; dropped", name)
            if unit.job is not None:
                self._finish_job(unit.job, JobResult.CANCELED)
            self._release_cgroup(unit)
            self._unregister(unit)

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
        unit = self._make_unit(name)
        self._register(unit)
        return unit

    def peek_unit(self, name: str) -> Unit:
        """The loaded unit, or what loading NAME would give, without loading it: nothing is
        kept once the caller lets go (lists of names from anyone cost nothing afterwards)."""
        unit = self.units.get(name)
        return unit if unit is not None else self._make_unit(name)

    def _make_unit(self, name: str) -> Unit:
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
                settings={"Description": self.instance.slice_description(name)},
                stop_when_unneeded=name not in self.instance.standard_slices,
            )
        elif handler is not None:
            state = LoadState.MASKED if handler.kind is Kind.MASKED else LoadState.LOADED
            settings: dict[str, object] = {"Description": handler.description}
            if handler.requires:
                settings["Requires"] = list(handler.requires)
                settings["After"] = list(handler.requires)
            if handler.delegate:
                # user@.service: Delegate=yes (the backend enables the controllers for it)
                settings["Delegate"] = True
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
        Engine._require_found(unit)
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
            return [self.peek_unit(n) for n in names]
        out = []
        for unit in self.units.values():
            if states and not {unit.load_state, unit.active_state, unit.sub_state} & set(states):
                continue
            if patterns and not any(fnmatch.fnmatchcase(unit.name, p) for p in patterns):
                continue
            out.append(unit)
        return out

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

    def depending_on(self, unit: Unit, key: str) -> list[str]:
        """Names of the loaded units whose KEY list (Wants, Requires, BindsTo, After) names
        UNIT; units in a slice count as requiring and being after it (systemd.slice(5))."""
        if key in ("Wants", "Requires", "BindsTo"):
            users = self._needed_by.get(unit.name, set())
        else:
            users = set(self.units.values())
        out = {u.name for u in users if _lists(u.settings.get(key), unit.name)}
        if key in ("Requires", "After"):
            out |= {u.name for u in self._children_of.get(unit.name, ())}
        return sorted(out)

    def slice_members(self, unit: Unit) -> list[str]:
        """SliceOf=: the units directly in a slice."""
        return sorted(u.name for u in self._children_of.get(unit.name, ()))

    def _children(self, slice_unit: Unit) -> list[Unit]:
        return sorted(self._children_of.get(slice_unit.name, ()), key=lambda u: u.name)

    def _run_gc(self) -> None:
        self._gc_scheduled = False
        while self._gc_queue:
            unit = self._gc_queue.pop()
            if self.units.get(unit.name) is unit and self._collectable(unit):
                self._release_cgroup(unit)
                self._unregister(unit)

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
            _release_passed_fds(unit)
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
        if unit.invocation_id:
            self.backend.label(path, unit.invocation_id.hex())
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
        while self._next_job_id in self.jobs:  # after a wrap, a long-lived job keeps its id
            self._next_job_id = next_job_id(self._next_job_id)
        job = Job(self._next_job_id, unit, job_type)
        # org.freedesktop.systemd1(5): job ids are uint32; they wrap, and 0 is never one
        self._next_job_id = next_job_id(self._next_job_id)
        self.jobs[job.id] = job
        unit.job = job
        self.n_installed_jobs += 1
        self.listener.job_new(job)
        self.listener.unit_changed(unit)
        self._schedule(job)
        return job

    def _schedule(self, job: Job) -> None:
        if not self._run_queue:
            self.loop.call_soon(self._dispatch_committed)
        self._run_queue.append(job)

    def _dispatch_committed(self) -> None:
        # a job creates cgroups and moves processes only once its unit is on disk: a crash
        # never leaves processes in a cgroup no saved unit owns
        self.after_commit(lambda _failure: self._dispatch())

    def _blocked(self, job: Job) -> bool:
        """systemd.unit(5) After=: a start job waits for the start jobs of what it is after;
        stopping goes the other way: a stop job waits for the handled units after it."""
        if job.type is JobType.STOP:
            return any(
                u.handler is not None
                and u.job is not None
                and u.job.type is JobType.STOP
                and _lists(u.settings.get("After"), job.unit.name)
                for u in self._needed_by.get(job.unit.name, ())
            )
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
        if self._unannounced is not None:
            self._unannounced.append((job, result))  # before the bus name is ours (restore.py)
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

    # implemented by the layers above (scopes.py, handled.py, manager.py)
    def _start(self, job: Job) -> None:
        raise NotImplementedError

    def _stop(self, job: Job) -> None:
        raise NotImplementedError
