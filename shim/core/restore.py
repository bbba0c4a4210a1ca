"""Taking over after a crash: units and jobs a previous run left in the state directory
(state.py), re-checked against the cgroup tree."""

from __future__ import annotations

import logging
from typing import Any

from compat import unitname
from compat.enums import (
    ActiveState,
    JobResult,
    JobType,
    LoadState,
    ScopeState,
    ServiceState,
    parse_enum,
)
from compat.properties import PASSED_FDS
from compat.unitname import ROOT_SLICE, UnitType
from shim.core import services, state
from shim.core.handled import Handled
from shim.core.instance import INIT_SCOPE
from shim.core.policy import LONG_RUNNING
from shim.core.state import Saved
from shim.core.units import Job, Unit

log = logging.getLogger(__name__)


class Restore(Handled):
    """restore() before the bus name is ours, fail_lost_jobs() after."""

    def restore(self, saved: Saved) -> None:
        """Take over the units a previous run left, re-checked against the cgroup tree."""
        self._next_job_id = max(self._next_job_id, saved.next_job_id)
        if saved.environment is not None:
            self.instance.environment = list(saved.environment)
        depth = {"slice": 0}
        records = sorted(
            (r for r in saved.units if r["name"] not in (ROOT_SLICE, INIT_SCOPE)),
            key=lambda r: (depth.get(r["type"], 1), r["name"].count("-"), r["name"]),
        )
        restored = 0
        for record in records:
            try:
                self._restore_unit(record)
                restored += 1
            except (KeyError, ValueError, TypeError, AttributeError, AssertionError) as e:
                name = str(record.get("name"))
                if self.units.get(name) is not None and name != ROOT_SLICE:
                    self._unregister(self.units[name])
                if self._persisting is not None:
                    self._persisting.store.set_aside_unit(name, f"not usable: {e!r}")
        self._lost_jobs = []
        self._unannounced = []  # until fail_lost_jobs(): signals sent now reach nobody
        for record in saved.jobs:
            # held by their units until fail_lost_jobs() (nothing collects them meanwhile)
            unit = self.units.get(str(record["unit"]))
            job_type = parse_enum(JobType, str(record["type"]))
            if unit is None or job_type is None or unit.job is not None:
                # its unit went (collected once its stop was done) or has another job: the
                # waiter still gets its JobRemoved
                done = unit is None and job_type is JobType.STOP
                self._orphan_jobs.append({**record, "result": "done" if done else "failed"})
                continue
            job = Job(int(record["id"]), unit, job_type)
            self.jobs[job.id] = job
            unit.job = job
            self._lost_jobs.append(job)
        log.info("restored %d units from the state directory", restored)

    def fail_lost_jobs(self, saved: Saved) -> None:
        """Jobs in flight at the crash (called once the bus name is ours again, so that
        their waiters see JobRemoved): a start job whose scope or slice never started runs
        now (it was answered: the unit was on disk before its job could run), a start job
        whose unit is active is done, every other one is answered as failed."""
        for job in self._lost_jobs:
            unit = job.unit
            if self.jobs.get(job.id) is not job:
                continue
            if job.type is JobType.START and unit.active_state is ActiveState.ACTIVE:
                self._finish_job(job, JobResult.DONE)
            elif (
                job.type is JobType.START
                and unit.type in (UnitType.SCOPE, UnitType.SLICE)
                and unit.active_state is ActiveState.INACTIVE
            ):
                log.info("job %d (start %s) was in flight at the crash: run now", job.id,
                         unit.name)  # fmt: skip
                self._schedule(job)
            else:
                log.warning("job %d (%s %s) was in flight at the crash: failed", job.id,
                            job.type, unit.name)  # fmt: skip
                self._finish_job(job, JobResult.FAILED)
        self._lost_jobs = []
        # jobs that ended between restore() and now (e.g. a stop whose cgroup emptied): their
        # JobRemoved went out before the name was ours, so nobody heard it
        early, self._unannounced = self._unannounced or [], None
        for job, result in early:
            self.listener.job_removed(job, result)
        # a JobRemoved still in the dead daemon's output buffer never reached its waiter:
        # the last jobs that ended are announced again (a waiter that saw it ignores the
        # repeat; job ids are never reused, so it cannot be mistaken for another job)
        again = [r for r in [*saved.ended, *self._orphan_jobs] if int(r["id"]) not in self.jobs]
        self._orphan_jobs = []
        for record in again:
            name = str(record["unit"])
            unit_type = unitname.unit_type(name)
            if unit_type is None:
                continue
            owner = self.units.get(name) or Unit(name, unit_type, LoadState.NOT_FOUND)
            job_type = parse_enum(JobType, str(record["type"])) or JobType.START
            job = Job(int(record["id"]), owner, job_type)
            self.listener.job_removed(job, str(record["result"]))
        if again:
            log.info("announced again the %d jobs that ended last before the crash", len(again))

    def _restore_unit(self, record: dict[str, Any]) -> None:
        name = record["name"]
        unit_type = unitname.unit_type(name)
        if unit_type is None or name in self.units:
            return
        settings = {k: state.decode(v) for k, v in record["settings"].items()}
        for key in PASSED_FDS:  # descriptors of the process that died: none of them is ours
            if key in settings:
                settings[key] = -1
        if not record["transient"]:
            handler = self.policy.handler_for(name)
        elif unit_type is UnitType.SERVICE and settings.get("ExecStart"):
            handler = services.handler(name, settings)
        else:
            handler = None
        unit = Unit(
            name,
            unit_type,
            LoadState(record["load_state"]),
            sub_state=record["sub_state"],
            transient=bool(record["transient"]),
            slice=record["slice"],
            settings=settings,
            invocation_id=bytes.fromhex(record["invocation_id"]),
            result=record["result"],
            freezer_state=record["freezer_state"],
            refs=state.refs_of(record),
            timestamps=state.timestamps_of(record),
            handler=handler,
            stop_when_unneeded=bool(record["stop_when_unneeded"]),
            pinned=bool(record["pinned"]),
        )
        # a main process that was running is no child of this daemon: its end is seen as the
        # cgroup emptying, its exit status is not known
        unit.main = {k: int(v) for k, v in record.get("main", {}).items() if k != "reaping"}
        self._register(unit)
        if unit.invocation_id:
            self._by_invocation[unit.invocation_id] = unit
        path = record["control_group"]
        long_running = handler is not None and handler.kind in LONG_RUNNING
        if unit.sub_state == ServiceState.AUTO_RESTART and long_running:
            # systemd.service(5) Restart=: the restart that was pending at the crash, now
            self._arm_timer(unit, 1, self._auto_restart)
            return
        if path is None or not self.backend.exists(path):
            if unit.active_state not in (ActiveState.INACTIVE, ActiveState.FAILED) and (
                unit.type is UnitType.SCOPE or long_running
            ):
                self._set_state(unit, ScopeState.DEAD)  # its cgroup went with the processes
            elif unit.type is UnitType.SLICE and unit.active_state is ActiveState.ACTIVE:
                self._realise(unit)
            return
        unit.control_group = path
        self._by_cgroup[path] = unit
        if unit.type is UnitType.SCOPE or long_running:
            self.backend.watch_empty(path, self._cgroup_empty)
            main = unit.main.get("pid", 0)
            if main and "code" not in unit.main and main in self.backend.pids(path):
                self._spawn_task(self._watch_adopted(unit, main))
            if unit.sub_state in (ScopeState.STOP_SIGTERM, ScopeState.STOP_SIGKILL):
                self._resume_stop(unit)  # finish the stop
        elif unit.active_state in (ActiveState.ACTIVATING, ActiveState.DEACTIVATING):
            # a handled unit's command was running at the crash: its outcome is unknown
            unit.result = "resources"
            self._release_cgroup(unit)
            self._set_state(unit, ServiceState.FAILED)
