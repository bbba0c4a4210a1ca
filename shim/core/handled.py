"""Handled units (policy.py): services and targets without unit files, whose jobs run
commands asynchronously (spawn.py) so that the bus is never blocked."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Coroutine, Sequence
from typing import Any

from backends.base import BackendError
from compat.enums import (
    JobResult,
    ServiceState,
)
from shim.core import spawn
from shim.core.policy import RECORD, Handler, Kind
from shim.core.scopes import Scopes
from shim.core.units import Job, Unit

log = logging.getLogger(__name__)


class Handled(Scopes):
    """Oneshot, simple, noop and action units."""

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
