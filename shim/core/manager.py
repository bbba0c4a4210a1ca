"""The manager: the operations the bus layer calls (start, stop, transient units, properties,
references), on top of the engine and the unit types (engine.py, scopes.py, handled.py,
restore.py)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from backends.base import Capability, Usage
from compat import errors, readable, unitname
from compat.enums import (
    ActiveState,
    JobResult,
    JobType,
    LoadState,
    ScopeState,
    ServiceState,
    SliceState,
)
from compat.properties import Assignment, merge_into, parse_assignments
from compat.unitname import UnitType
from shim.core import procs, services, timers
from shim.core.engine import Property, _lists, _pins
from shim.core.policy import LONG_RUNNING, Kind
from shim.core.timers import Timers
from shim.core.units import Job, Unit

log = logging.getLogger(__name__)


class Manager(Timers):
    """The unit and job state of one scopeshim instance."""

    def start_transient_unit(
        self,
        name: str,
        mode: str,
        properties: Sequence[Property],
        aux: Sequence[tuple[str, Sequence[Property]]],
        caller_pid: int | None,
        caller_uid: int | None = 0,
        caller: str | None = None,
    ) -> Job:
        """Create a transient scope, slice or service and queue its start job (validated
        fully first). CALLER (a bus name) holds the reference AddRef=true asks for."""
        self._job_mode(mode, transient=True)  # a new unit has no queued job to conflict with
        unit_type = self._transient_type(name, properties)
        if aux and unit_type is not UnitType.TIMER:
            # systemd 252 creates auxiliary units without starting them, then collects them
            log.info("%s: auxiliary units ignored: %s", name, ", ".join(n for n, _ in aux))
        existing = self.units.get(name)
        if existing is not None and not self._pristine(existing):
            raise errors.UnitExists(f"Unit {name} was already loaded or has a fragment file.")
        settings = self._parse(unit_type, properties, transient=True)
        made: list[Unit] = []  # a timer's auxiliary units
        if unit_type is UnitType.SLICE:
            if not unitname.is_valid_slice_name(name):
                raise errors.InvalidArgs("Invalid unit name or type.")
            if "Slice" in settings:
                raise errors.InvalidArgs("Slice may not be set for slice units.")
            slice_name = unitname.slice_parent(name)
        elif unit_type is UnitType.SERVICE:
            services.check(name, settings)
            slice_name = str(settings.pop("Slice", None) or self._default_slice(name))
        elif unit_type is UnitType.TIMER:
            timers.check(name, settings)
            slice_name = None  # systemd.timer(5): timers have no cgroup
            # systemd-run sends the timer's service as an auxiliary unit (observed, 252)
            made = self._check_aux(aux)
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
        if unit_type is UnitType.SERVICE:
            unit.handler = services.handler(name, settings)
        if unit_type is UnitType.TIMER:
            self._add_aux(made, caller)
        self._configure_transient(unit)
        self._register(unit)
        if settings.get("AddRef") and caller:
            # org.freedesktop.systemd1(5) StartTransientUnit AddRef=: a reference held by the
            # caller's bus connection, dropped when it goes (the unit stays until then)
            unit.refs[caller] = unit.refs.get(caller, 0) + 1
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
        if unit_type in (UnitType.SERVICE, UnitType.TIMER):
            return unit_type  # systemd.service(5), systemd.timer(5)
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

    def _default_slice(self, name: str) -> str:
        return self.instance.default_slice

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
        # device access control needs the v1 devices controller or a cgroup2 BPF device
        # program (bpfdev.py); where neither works, refuse it the way crun expects
        if Capability.DEVICES not in self.backend.capabilities:
            for a in assignments:
                if a.name not in ("DevicePolicy", "DeviceAllow"):
                    continue
                if self.instance.user:
                    # systemd --user takes them and, unprivileged, cannot load the BPF device
                    # program: it goes on without the ACL (systemd.resource-control(5): "This
                    # functionality is implemented using eBPF filtering"); rootless runc sets
                    # them on every container's scope
                    log.info("%s= accepted, not enforced: no device controller here", a.name)
                    continue
                raise errors.property_read_only(a.name)

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

    def restart(self, unit: Unit, mode: str) -> Job:
        """RestartUnit (podman 4.3 starts a healthcheck's service with it): a unit that is
        not active is started; an active one is stopped, then started, by the one job
        (org.freedesktop.systemd1(5), systemctl(1) restart)."""
        job_mode = self._job_mode(mode)
        self._require_startable(unit)
        self._check_job(unit, JobType.RESTART, job_mode)
        if unit.type is UnitType.SCOPE or unit.perpetual:
            # systemd.scope(5): scopes are only created programmatically
            raise errors.JobTypeNotApplicable(
                f"Job type restart is not applicable for unit {unit.name}."
            )
        job = self._enqueue(unit, JobType.RESTART)
        self._pull_in(unit)
        return job

    def _run_job(self, job: Job) -> None:
        if job.type is not JobType.RESTART or self.jobs.get(job.id) is not job:
            super()._run_job(job)
            return
        if self._blocked(job):
            self._waiting.append(job)
            return
        self._set_running(job)
        if job.unit.active_state in (ActiveState.INACTIVE, ActiveState.FAILED):
            self._start(job)
        else:
            self._restarting.add(job)  # its stop half first (_finish_job goes on with start)
            self._stop(job)

    def _finish_job(self, job: Job, result: JobResult) -> None:
        if job in self._restarting:
            self._restarting.discard(job)
            if result is JobResult.DONE and self.jobs.get(job.id) is job:
                self._start(job)  # stopped: now the start half of the restart
                return
        super()._finish_job(job, result)

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
        if unit.type is UnitType.TIMER:
            self._start_timer(job)
            return
        if unit.handler is not None:
            self._start_handled(job, unit.handler)
            return
        self._finish_job(job, JobResult.UNSUPPORTED)

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
        job = self._enqueue(unit, JobType.STOP)
        self._propagate_stop(unit)
        return job

    def _propagate_stop(self, unit: Unit) -> None:
        """systemd.unit(5) Requires=/BindsTo=: "if one of the other units is explicitly
        stopped", the units requiring it are stopped too (logind 256+ stops only
        user-runtime-dir@UID.service, and user@UID.service goes with it)."""
        for other in sorted(self._needed_by.get(unit.name, ()), key=lambda u: u.name):
            requires = any(
                _lists(other.settings.get(k), unit.name) for k in ("Requires", "BindsTo")
            )
            if (
                requires
                and other.active_state in (ActiveState.ACTIVE, ActiveState.ACTIVATING)
                and (other.job is None or other.job.type is not JobType.STOP)
                and not other.perpetual
            ):
                other.pinned = False
                self._enqueue(other, JobType.STOP)
                self._propagate_stop(other)

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
        if unit.type is UnitType.TIMER:
            self._stop_timer(job)
            return
        if unit.sub_state == ServiceState.AUTO_RESTART and unit.type is UnitType.SERVICE:
            self.stop_restart(unit)
            self._finish_job(job, JobResult.DONE)
            return
        if unit.type is UnitType.SCOPE or (
            unit.handler is not None and unit.handler.kind in LONG_RUNNING
        ):
            if unit.sub_state in (ScopeState.STOP_SIGTERM, ScopeState.STOP_SIGKILL):
                return  # already stopping: the job finishes when the cgroup empties
            self._scope_signal(unit, ScopeState.STOP_SIGTERM)
            return
        if unit.handler is not None and unit.handler.kind is Kind.ONESHOT and unit.handler.stop:
            if unit.sub_state != ServiceState.STOP:
                self._set_state(unit, ServiceState.STOP)
                self._spawn_task(self._run_oneshot(job, unit.handler.stop, ServiceState.DEAD))
            return
        self._set_state(unit, "dead")
        self._finish_job(job, JobResult.DONE)

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
        self._persist(unit, runtime, assignments)
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
        shown = self.instance.shown
        return [
            (shown(self.backend.cgroup_of(pid) or unit.control_group), pid, procs.cmdline(pid))
            for pid in self.backend.pids(unit.control_group)
        ]

    def shown_cgroup(self, unit: Unit) -> str:
        """ControlGroup: the unit's cgroup as a path in the whole hierarchy ("" if none)."""
        return "" if unit.control_group is None else self.instance.shown(unit.control_group)

    def unit_by_shown_cgroup(self, path: str) -> Unit:
        """GetUnitByControlGroup: a user manager knows its own tree only."""
        inner = path if path == "" else self.instance.inner(path)
        if inner is not None:
            if inner == "/" and self.instance.user:
                return self.units[unitname.ROOT_SLICE]  # the user manager's own cgroup
            try:
                return self.unit_by_cgroup(inner)
            except errors.NoSuchUnit:
                pass
        raise errors.NoSuchUnit(
            f"Control group '{path}' is not valid or not managed by this instance"
        )

    def ref(self, unit: Unit, bus_name: str) -> None:
        self._require_found(unit)
        # org.freedesktop.systemd1(5) Ref(): each call adds a reference, counted per client
        unit.refs[bus_name] = unit.refs.get(bus_name, 0) + 1
        self.listener.unit_refs_changed(unit)

    def unref(self, unit: Unit, bus_name: str) -> None:
        count = unit.refs.get(bus_name, 0)
        if not count:
            raise errors.NotReferenced("Unit has not been referenced yet.")
        if count > 1:
            unit.refs[bus_name] = count - 1
        else:
            del unit.refs[bus_name]
        self.listener.unit_refs_changed(unit)
        self._queue_gc(unit)

    def referencing_clients(self) -> set[str]:
        """The clients holding references (at a restart the bus layer asks which are still
        there and reports the others through bus_name_gone)."""
        return {name for unit in self.units.values() for name in unit.refs}

    def subscribe(self, bus_name: str) -> None:
        if bus_name in self.subscribers:
            raise errors.AlreadySubscribed("Client is already subscribed.")
        self.subscribers.add(bus_name)

    def unsubscribe(self, bus_name: str) -> None:
        if bus_name not in self.subscribers:
            raise errors.NotSubscribed("Client is not subscribed.")
        self.subscribers.discard(bus_name)

    def bus_name_gone(self, bus_name: str) -> None:
        """A client left the bus or a well-known name lost its owner: drop its
        subscription, unit references and the scopes' Controller= naming it."""
        self.subscribers.discard(bus_name)
        for unit in self.units.values():
            if bus_name in unit.refs:
                del unit.refs[bus_name]
                self.listener.unit_refs_changed(unit)
                self._queue_gc(unit)
        self.controller_gone(bus_name)

    def set_environment(self, unset: Sequence[str], assignments: Sequence[str]) -> None:
        """org.freedesktop.systemd1(5) SetEnvironment/UnsetEnvironment/UnsetAndSetEnvironment:
        the block passed to spawned processes; the set list overrides the unset list."""
        before = self.instance.environment
        if self.instance.update_environment(unset, assignments) and self._persisting:
            # an answer is a promise: the block is on disk before the reply (and after a
            # restart, as systemd keeps it across its re-execution)
            try:
                self._persisting.store.save_environment(self.instance.environment)
            except OSError as e:
                self.instance.environment = before
                raise errors.from_errno(e.errno, os.strerror(e.errno or 0)) from None
        if assignments and self.environment_hook is not None:
            self.environment_hook(list(assignments))

    def reload(self) -> None:
        """Reload(): the unit files are read again (configured.py), between Reloading
        true and false."""
        self.listener.reloading(True)
        self._reload_files()
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
        self._close_timers()
        for unit in list(self._timers):
            self._cancel_timer(unit)
        for task in list(self._tasks):
            task.cancel()
        if self.forkserver is not None:
            self.forkserver.close()
