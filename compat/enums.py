"""String enumerations systemd puts on the bus, spelled exactly as systemd spells them."""

from __future__ import annotations

import enum
from typing import TypeVar

E = TypeVar("E", bound=enum.StrEnum)


class LoadState(enum.StrEnum):
    """Unit.LoadState."""

    STUB = "stub"
    LOADED = "loaded"
    NOT_FOUND = "not-found"
    BAD_SETTING = "bad-setting"
    ERROR = "error"
    MERGED = "merged"
    MASKED = "masked"


class ActiveState(enum.StrEnum):
    """Unit.ActiveState."""

    ACTIVE = "active"
    RELOADING = "reloading"
    INACTIVE = "inactive"
    FAILED = "failed"
    ACTIVATING = "activating"
    DEACTIVATING = "deactivating"
    MAINTENANCE = "maintenance"


class ScopeState(enum.StrEnum):
    """Unit.SubState of a scope."""

    DEAD = "dead"
    START_CHOWN = "start-chown"
    RUNNING = "running"
    ABANDONED = "abandoned"
    STOP_SIGTERM = "stop-sigterm"
    STOP_SIGKILL = "stop-sigkill"
    FAILED = "failed"


SCOPE_ACTIVE_STATE: dict[ScopeState, ActiveState] = {
    ScopeState.DEAD: ActiveState.INACTIVE,
    ScopeState.START_CHOWN: ActiveState.ACTIVATING,
    ScopeState.RUNNING: ActiveState.ACTIVE,
    ScopeState.ABANDONED: ActiveState.ACTIVE,
    ScopeState.STOP_SIGTERM: ActiveState.DEACTIVATING,
    ScopeState.STOP_SIGKILL: ActiveState.DEACTIVATING,
    ScopeState.FAILED: ActiveState.FAILED,
}


class SliceState(enum.StrEnum):
    """Unit.SubState of a slice."""

    DEAD = "dead"
    ACTIVE = "active"


SLICE_ACTIVE_STATE: dict[SliceState, ActiveState] = {
    SliceState.DEAD: ActiveState.INACTIVE,
    SliceState.ACTIVE: ActiveState.ACTIVE,
}


class ServiceState(enum.StrEnum):
    """Unit.SubState of a service (the states scopeshim's handled services pass through)."""

    DEAD = "dead"
    START = "start"
    RUNNING = "running"
    EXITED = "exited"
    STOP = "stop"
    STOP_SIGTERM = "stop-sigterm"
    STOP_SIGKILL = "stop-sigkill"
    FAILED = "failed"
    AUTO_RESTART = "auto-restart"  # Restart=: waiting RestartSec= before starting again


SERVICE_ACTIVE_STATE: dict[ServiceState, ActiveState] = {
    ServiceState.DEAD: ActiveState.INACTIVE,
    ServiceState.START: ActiveState.ACTIVATING,
    ServiceState.RUNNING: ActiveState.ACTIVE,
    ServiceState.EXITED: ActiveState.ACTIVE,
    ServiceState.STOP: ActiveState.DEACTIVATING,
    ServiceState.STOP_SIGTERM: ActiveState.DEACTIVATING,
    ServiceState.STOP_SIGKILL: ActiveState.DEACTIVATING,
    ServiceState.FAILED: ActiveState.FAILED,
    # systemctl(1) status: a service waiting for its restart is "activating (auto-restart)"
    ServiceState.AUTO_RESTART: ActiveState.ACTIVATING,
}


class TargetState(enum.StrEnum):
    """Unit.SubState of a target."""

    DEAD = "dead"
    ACTIVE = "active"


TARGET_ACTIVE_STATE: dict[TargetState, ActiveState] = {
    TargetState.DEAD: ActiveState.INACTIVE,
    TargetState.ACTIVE: ActiveState.ACTIVE,
}


class TimerState(enum.StrEnum):
    """Unit.SubState of a timer (systemd.timer(5))."""

    DEAD = "dead"
    WAITING = "waiting"
    RUNNING = "running"
    ELAPSED = "elapsed"
    FAILED = "failed"


TIMER_ACTIVE_STATE: dict[TimerState, ActiveState] = {
    TimerState.DEAD: ActiveState.INACTIVE,
    TimerState.WAITING: ActiveState.ACTIVE,
    TimerState.RUNNING: ActiveState.ACTIVE,
    TimerState.ELAPSED: ActiveState.ACTIVE,
    TimerState.FAILED: ActiveState.FAILED,
}


class JobType(enum.StrEnum):
    """Job.JobType."""

    START = "start"
    VERIFY_ACTIVE = "verify-active"
    STOP = "stop"
    RELOAD = "reload"
    RELOAD_OR_START = "reload-or-start"
    RESTART = "restart"
    TRY_RESTART = "try-restart"
    TRY_RELOAD = "try-reload"
    NOP = "nop"


class JobState(enum.StrEnum):
    """Job.State."""

    WAITING = "waiting"
    RUNNING = "running"


class JobMode(enum.StrEnum):
    """The `mode` argument of StartUnit() and friends."""

    FAIL = "fail"
    REPLACE = "replace"
    REPLACE_IRREVERSIBLY = "replace-irreversibly"
    ISOLATE = "isolate"
    FLUSH = "flush"
    IGNORE_DEPENDENCIES = "ignore-dependencies"
    IGNORE_REQUIREMENTS = "ignore-requirements"
    TRIGGERING = "triggering"
    RESTART_DEPENDENCIES = "restart-dependencies"


class JobResult(enum.StrEnum):
    """The `result` of the JobRemoved signal."""

    DONE = "done"
    CANCELED = "canceled"
    TIMEOUT = "timeout"
    FAILED = "failed"
    DEPENDENCY = "dependency"
    SKIPPED = "skipped"
    INVALID = "invalid"
    ASSERT = "assert"
    UNSUPPORTED = "unsupported"
    COLLECTED = "collected"
    ONCE = "once"
    FROZEN = "frozen"


class KillWho(enum.StrEnum):
    """The `whom` argument of KillUnit()."""

    MAIN = "main"
    CONTROL = "control"
    ALL = "all"
    MAIN_FAIL = "main-fail"
    CONTROL_FAIL = "control-fail"
    ALL_FAIL = "all-fail"


class KillMode(enum.StrEnum):
    """KillMode=."""

    CONTROL_GROUP = "control-group"
    PROCESS = "process"
    MIXED = "mixed"
    NONE = "none"


class ServiceType(enum.StrEnum):
    """systemd.service(5) Type=."""

    SIMPLE = "simple"
    EXEC = "exec"
    FORKING = "forking"
    ONESHOT = "oneshot"
    DBUS = "dbus"
    NOTIFY = "notify"
    NOTIFY_RELOAD = "notify-reload"
    IDLE = "idle"


class ExitType(enum.StrEnum):
    """systemd.service(5) ExitType=."""

    MAIN = "main"
    CGROUP = "cgroup"


class ServiceRestart(enum.StrEnum):
    """systemd.service(5) Restart=."""

    NO = "no"
    ON_SUCCESS = "on-success"
    ON_FAILURE = "on-failure"
    ON_ABNORMAL = "on-abnormal"
    ON_WATCHDOG = "on-watchdog"
    ON_ABORT = "on-abort"
    ALWAYS = "always"


class CollectMode(enum.StrEnum):
    """CollectMode=."""

    INACTIVE = "inactive"
    INACTIVE_OR_FAILED = "inactive-or-failed"


class OOMPolicy(enum.StrEnum):
    """OOMPolicy=."""

    CONTINUE = "continue"
    STOP = "stop"
    KILL = "kill"


class DevicePolicy(enum.StrEnum):
    """DevicePolicy=."""

    AUTO = "auto"
    CLOSED = "closed"
    STRICT = "strict"


class ScopeResult(enum.StrEnum):
    """Scope.Result."""

    SUCCESS = "success"
    RESOURCES = "resources"
    TIMEOUT = "timeout"
    OOM_KILL = "oom-kill"


class FreezerState(enum.StrEnum):
    """Unit.FreezerState."""

    RUNNING = "running"
    FREEZING = "freezing"
    FROZEN = "frozen"
    THAWING = "thawing"


def parse_enum(cls: type[E], value: str) -> E | None:
    """The member of `cls` whose value is exactly `value`, or None for an unknown string."""
    try:
        return cls(value)
    except ValueError:
        return None
