"""Scopes: start (attach the given processes), stop (systemd.kill(5): SIGTERM, SIGKILL after
TimeoutStopSec=), the empty cgroup, kill, abandon, attach, freeze; delegation."""

from __future__ import annotations

import errno
import logging
import os
import pwd
import signal as _signal
from collections.abc import Iterable

from backends.base import BackendError, Capability
from compat import errors
from compat.enums import (
    ActiveState,
    JobResult,
    JobType,
    KillMode,
    KillWho,
    ScopeState,
)
from compat.unitname import UnitType
from shim.core import procs
from shim.core.engine import DEFAULT_TIMEOUT_STOP_USEC, SIGNAL_MAX, Engine, _cgroup_error
from shim.core.units import Job, Unit

log = logging.getLogger(__name__)

# cgroup-v2.rst "Delegation Containment": moving a process from outside the delegated tree
# fails with EACCES (no write access to the common ancestor) or ENOENT (outside the namespace)
_NOT_OURS = (errno.EACCES, errno.EPERM, errno.ENOENT)


class Scopes(Engine):
    """The scope state machine (also drives services with a main process)."""

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
            if not procs.pid_exists(pid):
                raise errors.UnixProcessIdUnknown(f"Process with ID {pid} does not exist.")
            if pid in (1, os.getpid()):
                raise errors.InvalidArgs(f"Process {pid} is a manager process, refusing.")
            if procs.is_kernel_thread(pid):
                # systemd's unit_pid_attachable(): kernel threads cannot join a cgroup
                raise errors.InvalidArgs(f"Process {pid} is a kernel thread, refusing.")
            owner = procs.owner(pid)
            if caller_uid != 0 and owner != caller_uid:
                # systemd's AttachProcessesToUnit() text for the same rule
                raise errors.AccessDenied(f"Process {pid} not owned by client's UID. Refusing.")
            self.instance.check_process_owner(pid, owner, caller_uid)
            if pid not in out:
                out.append(pid)
        return out

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
        refused: list[int] = []
        pids = unit.setting("PIDs", [])
        assert isinstance(pids, list)
        for pid in pids:
            try:
                self.backend.attach(unit.control_group, [pid])
                attached += 1
            except BackendError as e:
                if self.escalate_attach is not None and e.errno in _NOT_OURS:
                    refused.append(pid)  # outside the delegated tree: ask the system manager
                    continue
                log.warning("%s: PID %d not attached: %s", unit.name, pid, e)
        if refused:
            task = self.loop.create_task(self._attach_through_system(job, refused, attached))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        self._scope_started(job, attached)

    async def _attach_through_system(self, job: Job, pids: list[int], attached: int) -> None:
        """A user manager cannot move a process from outside its tree (the kernel wants write
        access to the common ancestor's cgroup.procs); systemd --user asks the system
        manager's AttachProcessesToUnit on user@UID.service instead, and so do we."""
        unit = job.unit
        assert self.escalate_attach is not None
        for pid in pids:
            path = unit.control_group
            if path is None:
                break
            try:
                await self.escalate_attach(path, [pid])
                attached += 1
            except BackendError as e:
                log.warning("%s: PID %d not attached through the system manager: %s",
                            unit.name, pid, e)  # fmt: skip
        if unit.job is job and unit.control_group is not None:
            self._scope_started(job, attached)

    def _scope_started(self, job: Job, attached: int) -> None:
        unit = job.unit
        assert unit.control_group is not None
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

    @staticmethod
    def _delegated(unit: Unit) -> bool:
        """systemd.resource-control(5) Delegate=: set on the unit, or by its handler."""
        return bool(unit.setting("Delegate", False)) or (
            unit.handler is not None and unit.handler.delegate
        )

    @staticmethod
    def ref_uid(unit: Unit) -> int | None:
        """The uid a unit runs as (User=, or its handler's user), None if none or unknown."""
        user = unit.handler.user if unit.handler is not None else unit.setting("User")
        if not isinstance(user, str) or not user:
            return None
        try:
            return pwd.getpwuid(int(user)).pw_uid if user.isdigit() else pwd.getpwnam(user).pw_uid
        except (KeyError, ValueError):
            return int(user) if user.isdigit() else None

    def _scope_signal(self, unit: Unit, state: ScopeState) -> None:
        """systemd.kill(5): SIGTERM (+SIGHUP) first, SIGKILL after TimeoutStopSec=."""
        path = unit.control_group
        kill_mode = unit.setting("KillMode", KillMode.CONTROL_GROUP)
        signalled = 0
        if state is ScopeState.STOP_SIGTERM and self._request_stop(unit):
            # org.freedesktop.systemd1(5) Scope.Controller: the controller is asked instead of
            # SIGTERM; SIGKILL still follows TimeoutStopSec= (observed on systemd 252)
            if path is None or not self.backend.pids(path):
                self._scope_dead(unit, unit.result)
                return
            self._set_state(unit, state)
            self._arm_stop_timer(unit)
            return
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
        self._arm_stop_timer(unit)

    def _arm_stop_timer(self, unit: Unit) -> None:
        timeout = unit.setting("TimeoutStopUSec", DEFAULT_TIMEOUT_STOP_USEC)
        assert isinstance(timeout, int)
        self._arm_timer(unit, timeout, self._stop_timeout)

    def _resume_stop(self, unit: Unit) -> None:
        """A stop under way when the daemon went down: a scope whose controller was asked
        waits on (systemd 252 sends no second RequestStop after a re-exec: observed) or, past
        that, gets its SIGKILL again; the others get their signal again."""
        controller = unit.setting("Controller", "")
        path = unit.control_group
        if unit.type is not UnitType.SCOPE or not controller:
            self._scope_signal(unit, ScopeState.STOP_SIGTERM)
        elif unit.sub_state == ScopeState.STOP_SIGKILL:
            self._scope_signal(unit, ScopeState.STOP_SIGKILL)
        elif path is None or not self.backend.pids(path):
            self._scope_dead(unit, unit.result)
        else:
            self._arm_stop_timer(unit)

    def _request_stop(self, unit: Unit) -> bool:
        """systemd.scope(5)/org.freedesktop.systemd1(5): a scope with a Controller= is
        stopped by sending that bus name RequestStop; True when one was sent."""
        controller = unit.setting("Controller", "")
        if unit.type is not UnitType.SCOPE or not isinstance(controller, str) or not controller:
            return False
        self.listener.request_stop(unit, controller)
        return True

    def controller_gone(self, bus_name: str) -> None:
        """The controller left the bus (a unique name) or lost its owner (a well-known one):
        the scope forgets it (observed on systemd 252, which then stops the scope with
        SIGTERM as if it never had one); a name that never had an owner is kept."""
        for unit in self.units.values():
            if unit.type is UnitType.SCOPE and unit.settings.get("Controller") == bus_name:
                unit.settings["Controller"] = ""
                self.listener.unit_changed(unit)

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
        if job is not None and (job.type is JobType.STOP or job in self._restarting):
            self._finish_job(job, JobResult.DONE)

    def _cgroup_empty(self, path: str) -> None:
        unit = self._by_cgroup.get(path)
        if unit is None or unit.type not in (UnitType.SCOPE, UnitType.SERVICE):
            return
        if unit.main.get("reaping"):
            return  # the main process is not reaped yet: its exit status decides (handled.py)
        if unit.active_state in (ActiveState.ACTIVE, ActiveState.DEACTIVATING):
            self._scope_dead(unit, unit.result)

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
        if not self._delegated(unit):
            raise errors.InvalidArgs("Process migration not available on non-delegated units.")
        if unit.control_group is None or unit.active_state is not ActiveState.ACTIVE:
            raise errors.UnitInactive("Unit is inactive.")
        parts = subcgroup.split("/")[1:] if subcgroup else []
        if any(p in (".", "..") for p in parts) or "" in parts[:-1]:
            raise errors.InvalidArgs(f"Control group path is not normalized: {subcgroup}")
        resolved = self._resolve_pids(list(pids), caller_pid, caller_uid)
        if not resolved:
            return
        if not self.instance.trusted(caller_uid) and self.ref_uid(unit) != caller_uid:
            # org.freedesktop.systemd1(5) AttachProcessesToUnit: no polkit action; a caller
            # other than root must own the processes and the unit (its User=), which is how
            # a user manager moves processes into its own user@UID.service
            raise errors.AccessDenied(
                f"Process {resolved[0]} not owned by target unit's UID. Refusing."
            )
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
