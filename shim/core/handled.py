"""Handled units (policy.py): services and targets without unit files, whose jobs run
commands asynchronously (spawn.py) so that the bus is never blocked."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Coroutine, Sequence
from functools import partial
from typing import Any

from backends.base import BackendError
from compat import restart, unitname
from compat.enums import (
    ActiveState,
    JobResult,
    JobType,
    LoadState,
    ScopeState,
    ServiceState,
    SliceState,
)
from compat.unitname import UnitType
from shim.core import spawn
from shim.core.forkserver import ForkServer
from shim.core.policy import READY, RECORD, START_TIMEOUT, Handler, Kind
from shim.core.scopes import Scopes
from shim.core.units import Job, Unit

log = logging.getLogger(__name__)

RESTART_BURST = 5  # systemd.unit(5): StartLimitBurst= defaults to 5
RESTART_INTERVAL = 10.0  # ... within StartLimitIntervalSec=10s


async def _exited(loop: asyncio.AbstractEventLoop, pid: int) -> None:
    """Return once process PID has exited (pidfd_open(2): readable when it terminates)."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return  # gone already
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def _said_ready(unit: Unit, proc: asyncio.subprocess.Process) -> bool:
    """Read the main process's output up to READY=1 (logged), within START_TIMEOUT."""
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(START_TIMEOUT):
            while raw := await proc.stdout.readline():
                line = raw.decode(errors="replace").rstrip("\n")
                if line == READY:
                    return True
                log.info("%s: %s", unit.name, line)
    except TimeoutError:
        pass
    return False


EXIT_EXEC = 203  # systemd.exec(5) "Process exit codes": the command could not be executed
# waitid(2) si_code values, as ExecMainCode reports them
CLD_EXITED, CLD_KILLED = 1, 2


def _main_started(unit: Unit, pid: int) -> None:
    now = time.time_ns() // 1000, time.monotonic_ns() // 1000
    # NRestarts counts the automatic restarts since the last start asked for (systemd.service(5))
    kept = {"n_restarts": unit.main.get("n_restarts", 0)} if unit.main.get("auto") else {}
    unit.main = {"pid": pid, "start_rt": now[0], "start_mono": now[1], "reaping": int(pid > 0),
                 **kept}  # fmt: skip


def _main_exited(unit: Unit, returncode: int) -> None:
    """Record how the main process ended: asyncio's returncode is the exit status, or minus
    the signal that killed it."""
    now = time.time_ns() // 1000, time.monotonic_ns() // 1000
    killed = returncode < 0
    unit.main.pop("reaping", None)
    unit.main.update(
        code=CLD_KILLED if killed else CLD_EXITED,
        status=-returncode if killed else returncode,
        exit_rt=now[0],
        exit_mono=now[1],
    )


def _result(returncode: int, oom_killed: bool = False) -> str:
    # systemd.service(5) Result=: "exit-code" for a non-zero status, "signal" for a kill,
    # "oom-kill" when the kernel's OOM killer acted on the unit (OOMPolicy=stop, the default)
    if oom_killed and returncode == -signal.SIGKILL:
        return "oom-kill"
    return "signal" if returncode < 0 else "exit-code"


def _oom_kills(events: str | None) -> int:
    """oom_kill in a cgroup's memory.events (cgroup-v2.rst): processes the OOM killer killed."""
    for line in (events or "").splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return 0


async def _log_output(identifier: str, proc: asyncio.subprocess.Process) -> None:
    """StandardOutput=journal where there is no journal: each line into scopeshim's log."""
    assert proc.stdout is not None
    try:
        async for line in proc.stdout:
            log.info("%s[%d]: %s", identifier, proc.pid, line.decode(errors="replace").rstrip())
    finally:
        transport = getattr(proc, "_transport", None)  # asyncio has no public close
        if transport is not None:
            transport.close()


class Handled(Scopes):
    """Oneshot, simple, noop and action units."""

    def _spawn_task(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _start_handled(self, job: Job, handler: Handler) -> None:
        unit = job.unit
        if handler.context is not None and not self._start_allowed(job):
            return
        self._new_invocation(unit)
        if handler.kind is Kind.NOOP:
            self._set_state(unit, ServiceState.EXITED)
            self._finish_job(job, JobResult.DONE)
        elif handler.kind is Kind.ACTION:
            self._spawn_task(self._run_action(job, handler.start))
        elif handler.kind is Kind.ONESHOT:
            self._set_state(unit, ServiceState.START)
            success = ServiceState(handler.success)
            self._spawn_task(self._run_oneshot(job, handler.start, success))
        elif handler.kind is Kind.NOTIFY and handler.zygote:
            self._set_state(unit, ServiceState.START)
            self._spawn_task(self._run_forked(job, handler))
        elif handler.kind is Kind.NOTIFY:
            self._set_state(unit, ServiceState.START)
            self._spawn_task(self._run_notify(job, handler))
        else:
            self._set_state(unit, ServiceState.START)
            self._spawn_task(self._run_simple(job, handler))

    def _start_allowed(self, job: Job) -> bool:
        """systemd.unit(5) StartLimitIntervalSec=10s, StartLimitBurst=5 for a transient
        service: a sixth start within the interval fails it; an automatic restart keeps the
        last exit's Result= (systemd 252 in the lab: Restart=on-failure of `exit 3` ends
        failed, Result=exit-code, NRestarts=5), a start asked for reads start-limit-hit."""
        unit = job.unit
        now = self.loop.time()
        unit.start_times = [t for t in unit.start_times if now - t < RESTART_INTERVAL]
        if len(unit.start_times) >= RESTART_BURST:
            log.warning("%s: start request repeated too quickly", unit.name)
            if not unit.main.pop("auto", None):
                unit.result = "start-limit-hit"
            self._set_state(unit, ServiceState.FAILED)
            self._finish_job(job, JobResult.FAILED)
            return False
        unit.start_times.append(now)
        unit.result = "success"  # each start begins with a clean Result= (systemd.service(5))
        return True

    def _scope_dead(self, unit: Unit, result: str) -> None:
        """A service whose main process's exit asked for Restart= waits RestartSec= in
        auto-restart instead (systemd.service(5)); anything else ends as a scope does."""
        if (
            unit.main.pop("restart", 0)
            and unit.type is UnitType.SERVICE
            and unit.job is None
            and self.units.get(unit.name) is unit
        ):
            self._cancel_timer(unit)
            unit.result = result
            self._release_cgroup(unit)
            self._set_state(unit, ServiceState.AUTO_RESTART)
            usec = unit.setting("RestartUSec", 100_000)
            # RestartUSec=0: at once (the engine's timer takes 0 for "none")
            self._arm_timer(unit, max(int(str(usec)), 1), self._auto_restart)
            return
        super()._scope_dead(unit, result)

    def _auto_restart(self, unit: Unit) -> None:
        """RestartSec= has passed: count the restart and queue a start job, as systemd does
        ("Scheduled restart job, restart counter is at N")."""
        self._timers.pop(unit, None)
        if (
            self.units.get(unit.name) is not unit
            or unit.sub_state != ServiceState.AUTO_RESTART
            or unit.job is not None
        ):
            return
        unit.main["n_restarts"] = unit.main.get("n_restarts", 0) + 1
        unit.main["auto"] = 1
        log.info("%s: scheduled restart job, restart counter is at %d",
                 unit.name, unit.main["n_restarts"])  # fmt: skip
        self._enqueue(unit, JobType.START)

    async def _watch_adopted(self, unit: Unit, pid: int) -> None:
        """A main process taken back after a crash is no child of this daemon: its end is
        seen (pidfd), its exit status cannot be (ExecMainCode=0, docs/differences.md)."""
        await _exited(self.loop, pid)
        if unit.main.get("pid") != pid or "code" in unit.main:
            return
        now = time.time_ns() // 1000, time.monotonic_ns() // 1000
        unit.main.update(code=0, status=0, exit_rt=now[0], exit_mono=now[1])
        self.listener.unit_changed(unit)

    def stop_restart(self, unit: Unit) -> None:
        """systemd.service(5): a stop while a restart is pending leaves the service dead."""
        self._cancel_timer(unit)
        unit.main.pop("auto", None)
        self._set_state(unit, ServiceState.DEAD)

    async def _run_oneshot(self, job: Job, argv: Sequence[str], success: ServiceState) -> None:
        """Type=oneshot, RemainAfterExit=yes: the job ends with the command; the unit's
        cgroup exists while it runs."""
        unit = job.unit
        assert unit.handler is not None
        status, output = -1, ""
        context = unit.handler.context
        try:
            self._realise(unit)
            assert unit.control_group is not None
            started = None if context is None else (lambda pid: _main_started(unit, pid))
            status, output = await spawn.run(
                argv, self.backend, unit.control_group, user=unit.handler.user,
                context=context, started=started,
            )  # fmt: skip
        except (spawn.SpawnError, BackendError) as e:
            output = str(e)
            # systemd.exec(5): 203, the command could not be run (209: its output)
            status = e.status if isinstance(e, spawn.SpawnError) else EXIT_EXEC
        if context is not None:
            _main_exited(unit, status)
        if context is None or context.output == "journal":
            name = context.identifier if context is not None else unit.name
            for line in output.splitlines():
                log.info("%s: %s", name, line)
        if unit.job is not job:
            return  # replaced or cancelled meanwhile
        oom_killed = self._oom_killed(unit)
        self._release_cgroup(unit)
        # systemd.service(5) SuccessExitStatus=: listed statuses succeed (Type=oneshot: no
        # signal is clean unless listed); the stop command of a handled unit needs 0
        success_set = restart.status_set(unit.setting("SuccessExitStatus"))
        if status == 0 or (context is not None and status != -9 and restart.clean_exit(
            status < 0, abs(status), True, success_set
        )):  # fmt: skip
            unit.result = "success"
            self._set_state(unit, success)
            self._finish_job(job, JobResult.DONE)
        else:
            log.warning("%s: %s exited with status %d", unit.name, argv[0] if argv else "", status)
            timed_out = status == -9 and not oom_killed
            unit.result = "timeout" if timed_out else _result(status, oom_killed)
            self._set_state(unit, ServiceState.FAILED)
            self._finish_job(job, JobResult.FAILED)

    async def _run_simple(self, job: Job, handler: Handler) -> None:
        """Type=simple: active once the main process is forked into the unit's cgroup."""
        unit = job.unit
        context = handler.context
        journal = context is not None and context.output == "journal"
        try:
            self._realise(unit)
            assert unit.control_group is not None
            proc = await spawn.start(
                handler.start, self.backend, unit.control_group, user=handler.user,
                capture=journal, context=context,
            )  # fmt: skip
        except (spawn.SpawnError, BackendError) as e:
            log.warning("%s: %s", unit.name, e)
            if unit.job is job:
                self._release_cgroup(unit)
                if context is not None and isinstance(e, spawn.SpawnError):
                    # systemd.exec(5): status 203/EXEC, the service failed with exit-code
                    _main_started(unit, 0)
                    _main_exited(unit, e.status)
                    unit.result = "exit-code"
                else:
                    unit.result = "resources"
                self._set_state(unit, ServiceState.FAILED)
                self._finish_job(job, JobResult.FAILED)
            return
        if context is not None:
            _main_started(unit, proc.pid)
            if journal:
                self._spawn_task(_log_output(context.identifier, proc))
        self._spawn_task(self._reap(unit, proc))
        if unit.job is job:
            self._set_state(unit, ServiceState.RUNNING)
            self._finish_job(job, JobResult.DONE)
        assert unit.control_group is not None
        self.backend.watch_empty(unit.control_group, self._cgroup_empty)

    def adopt_service(self, name: str, slice_name: str, description: str, path: str) -> Unit:
        """Take a running service's cgroup in as a unit (a user manager's session bus, which
        it starts before it can serve): running until its cgroup empties."""
        for ancestor in unitname.slice_ancestors(slice_name):
            parent = self.load_unit(ancestor)
            if parent.active_state is not ActiveState.ACTIVE:
                self._new_invocation(parent)
                self._realise(parent)
                self._set_state(parent, SliceState.ACTIVE)
        handler = Handler(Kind.SIMPLE, description, slice=slice_name)
        unit = Unit(
            name,
            UnitType.SERVICE,
            LoadState.LOADED,
            slice=slice_name,
            settings={"Description": description},
            handler=handler,
        )
        self._register(unit)
        self._new_invocation(unit)
        unit.control_group = path
        self._by_cgroup[path] = unit
        self.backend.label(path, unit.invocation_id.hex())
        self._set_state(unit, ServiceState.RUNNING)
        self.backend.watch_empty(path, self._cgroup_empty)
        return unit

    def _prepare_delegated(self, unit: Unit, handler: Handler) -> str:
        """The unit's cgroup (delegated to its user when Delegate=yes) and the sub-cgroup its
        main process starts in; raises SpawnError or BackendError."""
        self._realise(unit)
        assert unit.control_group is not None
        path = unit.control_group
        if handler.delegate and handler.user is not None:
            uid, gid = spawn.ids_of(handler.user)
            # systemd.resource-control(5) Delegate=yes: the directory and the kernel's
            # delegatable files (/sys/kernel/cgroup/delegate) belong to the user
            self.backend.delegate(path, uid, gid)
            if handler.subcgroup:
                path = path.rstrip("/") + "/" + handler.subcgroup
                self.backend.create(path)
                self.backend.delegate(path, uid, gid)
        return path

    def _not_started(self, job: Job, error: Exception) -> None:
        """The main process could not be started: the unit fails with Result=resources."""
        unit = job.unit
        log.warning("%s: %s", unit.name, error)
        if unit.job is job:
            self._release_cgroup(unit)
            unit.result = "resources"
            self._set_state(unit, ServiceState.FAILED)
            self._finish_job(job, JobResult.FAILED)

    async def _run_notify(self, job: Job, handler: Handler) -> None:
        """Type=notify: active once the main process says READY=1 (a line on its standard
        output here); failed with its last words when it exits or times out first."""
        unit = job.unit
        try:
            where = self._prepare_delegated(unit, handler)
            proc = await spawn.start(handler.start, self.backend, where, user=handler.user)
        except (spawn.SpawnError, BackendError) as e:
            self._not_started(job, e)
            return
        assert proc.stdout is not None
        last: list[str] = []
        ready = False
        try:
            async with asyncio.timeout(START_TIMEOUT):
                while not ready:
                    raw = await proc.stdout.readline()
                    if not raw:
                        break
                    line = raw.decode(errors="replace").rstrip("\n")
                    ready = line == READY
                    if not ready:
                        log.info("%s: %s", unit.name, line)
                        last = [*last[-4:], line]
        except TimeoutError:
            last.append(f"not ready after {START_TIMEOUT:.0f} s")
        if ready and unit.job is job:
            log.info("%s: ready", unit.name)
            self._spawn_task(self._follow(unit, proc))
            self._spawn_task(self._supervise(unit, handler, proc.pid))
            self._set_state(unit, ServiceState.RUNNING)
            self._finish_job(job, JobResult.DONE)
            assert unit.control_group is not None
            self.backend.watch_empty(unit.control_group, self._cgroup_empty)
            return
        # systemd.service(5): a notify service that exits or times out before READY=1 fails
        # its start job; what it started goes with it
        reason = "; ".join(last) or "exited before it was ready"
        log.warning("%s: failed to start: %s", unit.name, reason)
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        if unit.control_group is not None:
            self.backend.kill(unit.control_group, signal.SIGKILL)
        unit.result = "timeout" if last and last[-1].startswith("not ready") else "exit-code"
        if unit.job is job:
            self._release_cgroup(unit)
            self._set_state(unit, ServiceState.FAILED)
            self._finish_job(job, JobResult.FAILED)

    async def _run_forked(self, job: Job, handler: Handler) -> None:
        """Type=notify from the zygote: the fork is moved into the unit's cgroup before it
        becomes the user and runs; active once it said READY=1."""
        unit = job.unit
        try:
            where = self._prepare_delegated(unit, handler)
            assert handler.user is not None
            request = spawn.fork_request(handler.zygote, handler.user)
            if self.forkserver is None:
                self.forkserver = ForkServer()
            forked = await self.forkserver.fork(
                request, lambda pid: self.backend.attach(where, [pid])
            )
        except (spawn.SpawnError, BackendError) as e:
            self._not_started(job, e)
            return
        lines = forked.output.splitlines()
        for line in lines:
            log.info("%s: %s", unit.name, line)
        if forked.ready and unit.job is job:
            log.info("%s: ready (PID %d, forked)", unit.name, forked.pid)
            self._spawn_task(self._supervise(unit, handler, forked.pid))
            self._set_state(unit, ServiceState.RUNNING)
            self._finish_job(job, JobResult.DONE)
            assert unit.control_group is not None
            self.backend.watch_empty(unit.control_group, self._cgroup_empty)
            return
        log.warning("%s: failed to start: %s", unit.name,
                    "; ".join(lines[-5:]) or "exited before it was ready")  # fmt: skip
        if unit.control_group is not None:
            self.backend.kill(unit.control_group, signal.SIGKILL)
        unit.result = "exit-code"
        if unit.job is job:
            self._release_cgroup(unit)
            self._set_state(unit, ServiceState.FAILED)
            self._finish_job(job, JobResult.FAILED)

    async def _supervise(self, unit: Unit, handler: Handler, pid: int) -> None:
        """A user manager that dies (SIGKILL, a crash) while its unit runs is started again
        in the same init.scope; it takes its units back from its state directory, and the
        user's processes never leave their scopes (at most RESTART_BURST times per
        RESTART_INTERVAL seconds, systemd.unit(5) StartLimitBurst=/StartLimitIntervalSec=)."""
        restarts: list[float] = []
        while True:
            await _exited(self.loop, pid)
            if (
                self.units.get(unit.name) is not unit
                or unit.sub_state != ServiceState.RUNNING
                or unit.job is not None
                or unit.control_group is None
            ):
                return
            now = self.loop.time()
            restarts = [t for t in restarts if now - t < RESTART_INTERVAL] + [now]
            if len(restarts) > RESTART_BURST:
                log.warning("%s: the main process keeps dying; not started again", unit.name)
                return
            log.warning("%s: main process %d is gone while the unit runs: starting it again",
                        unit.name, pid)  # fmt: skip
            where = unit.control_group.rstrip("/") + "/" + handler.subcgroup
            try:
                if handler.zygote:
                    assert handler.user is not None and self.forkserver is not None
                    request = spawn.fork_request(handler.zygote, handler.user)
                    forked = await self.forkserver.fork(request, partial(self._place, where))
                    pid, ready = forked.pid, forked.ready
                else:
                    proc = await spawn.start(handler.start, self.backend, where, user=handler.user)
                    pid, ready = proc.pid, await _said_ready(unit, proc)
                    self._spawn_task(self._follow(unit, proc))
            except (spawn.SpawnError, BackendError) as e:
                log.warning("%s: not started again: %s", unit.name, e)
                return
            if not ready:
                log.warning("%s: started again, but it did not get ready", unit.name)
                continue
            log.info("%s: ready again (PID %d)", unit.name, pid)
            unit.result = "success"  # recovered: the killed process does not fail the unit

    def _oom_killed(self, unit: Unit) -> bool:
        path = unit.control_group
        return (
            path is not None and _oom_kills(self.backend.get_attribute(path, "memory.events")) > 0
        )

    def _place(self, cgroup: str, pid: int) -> None:
        self.backend.attach(cgroup, [pid])

    async def _follow(self, unit: Unit, proc: asyncio.subprocess.Process) -> None:
        """Log what the main process writes after READY=1, then its exit status."""
        assert proc.stdout is not None
        async for raw in proc.stdout:
            log.info("%s: %s", unit.name, raw.decode(errors="replace").rstrip("\n"))
        await self._reap(unit, proc)

    async def _reap(self, unit: Unit, proc: asyncio.subprocess.Process) -> None:
        status = await spawn.wait(proc)
        transient = unit.handler is not None and unit.handler.context is not None
        running = unit.sub_state == ServiceState.RUNNING
        killed, code = status < 0, abs(status)
        # systemd.service(5) SuccessExitStatus=: which exits are clean (Result=success)
        success = restart.status_set(unit.setting("SuccessExitStatus"))
        clean = restart.clean_exit(killed, code, False, success) if transient else status == 0
        if not clean and running:
            log.warning("%s: main process exited with status %d", unit.name, status)
            unit.result = _result(status, self._oom_killed(unit))
        if not transient or unit.handler is None:
            return
        _main_exited(unit, status)
        if running and restart.should_restart(
            str(unit.setting("Restart", "no")), clean=clean, killed=killed, status=code,
            prevent=restart.status_set(unit.setting("RestartPreventExitStatus")),
            force=restart.status_set(unit.setting("RestartForceExitStatus")),
        ):  # fmt: skip
            unit.main["restart"] = 1  # taken up when the unit would be dead (_scope_dead)
        self.listener.unit_changed(unit)
        if self.units.get(unit.name) is not unit:
            return
        path = unit.control_group
        rest = self.backend.pids(path) if path is not None else []
        if unit.sub_state != ServiceState.RUNNING:
            if unit.active_state is ActiveState.DEACTIVATING and not rest:
                self._scope_dead(unit, unit.result)  # a stop in progress: it is over
            return
        if unit.handler.success == ServiceState.EXITED and clean and not rest:
            # systemd.service(5) RemainAfterExit=yes: active after the main process exits
            unit.main.pop("restart", None)
            self._set_state(unit, ServiceState.EXITED)
            return
        if not rest:
            self._scope_dead(unit, unit.result)
        elif unit.setting("ExitType", "main") == "main":
            # systemd.service(5) ExitType=main: the service stops when its main process
            # exits; what is left in its cgroup is stopped by KillMode=
            self._scope_signal(unit, ScopeState.STOP_SIGTERM)

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
