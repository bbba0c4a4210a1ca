"""The Unit and Job records and the timestamps systemd keeps for each unit."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from compat.enums import (
    SCOPE_ACTIVE_STATE,
    SERVICE_ACTIVE_STATE,
    SLICE_ACTIVE_STATE,
    TARGET_ACTIVE_STATE,
    TIMER_ACTIVE_STATE,
    ActiveState,
    JobState,
    JobType,
    LoadState,
    ScopeState,
    ServiceState,
    SliceState,
    TargetState,
    TimerState,
)
from compat.unitname import UnitType, slice_description
from shim.core.policy import Handler

# systemd.unit(5) / org.freedesktop.systemd1(5): the dual timestamps every unit carries
TIMESTAMPS = ("StateChange", "InactiveExit", "ActiveEnter", "ActiveExit", "InactiveEnter",
              "Condition", "Assert")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Timestamp:
    """A CLOCK_REALTIME / CLOCK_MONOTONIC pair in microseconds (0, 0 = never)."""

    realtime: int = 0
    monotonic: int = 0

    @staticmethod
    def now() -> Timestamp:
        return Timestamp(time.time_ns() // 1000, time.monotonic_ns() // 1000)


@dataclass(eq=False, slots=True)
class Job:
    """A queued or running job; its object exists until it is removed."""

    id: int
    unit: Unit
    type: JobType
    state: JobState = JobState.WAITING


@dataclass(eq=False, slots=True)
class Unit:
    """One loaded unit. `sub_state` holds the type's state (ScopeState, SliceState or "dead")."""

    name: str
    type: UnitType
    load_state: LoadState
    sub_state: str = "dead"
    transient: bool = False
    perpetual: bool = False
    slice: str | None = None
    control_group: str | None = None  # set once the unit's cgroup is realised
    settings: dict[str, object] = field(default_factory=dict)
    invocation_id: bytes = b""
    job: Job | None = None
    result: str = "success"
    freezer_state: str = "running"
    # RefUnit calls per client (systemd counts them on one bus track per unit)
    refs: dict[str, int] = field(default_factory=dict)
    timestamps: dict[str, Timestamp] = field(default_factory=dict)
    handler: Handler | None = None  # what stands behind a non-transient unit (policy.py)
    stop_when_unneeded: bool = False  # systemd.unit(5) StopWhenUnneeded=
    pinned: bool = False  # started by a client's StartUnit: needed until stopped
    # a service's main process (org.freedesktop.systemd1(5) ExecMain*): pid, code, status,
    # start/exit realtime/monotonic; empty until one started (a timer: its last trigger)
    main: dict[str, int] = field(default_factory=dict)
    # when a transient service was started lately (systemd.unit(5) StartLimitIntervalSec=)
    start_times: list[float] = field(default_factory=list)
    # unit files (configured.py): the settings of the unit itself, before its files apply
    base_settings: dict[str, object] | None = None
    fragment_path: str = ""  # FragmentPath=
    dropin_paths: list[str] = field(default_factory=list)  # DropInPaths=
    config_stamp: tuple[tuple[str, int], ...] = ()  # (path, mtime) of the files read

    @property
    def active_state(self) -> ActiveState:
        if self.type is UnitType.SCOPE and self.sub_state in ScopeState.__members__.values():
            return SCOPE_ACTIVE_STATE[ScopeState(self.sub_state)]
        if self.type is UnitType.SLICE and self.sub_state in SliceState.__members__.values():
            return SLICE_ACTIVE_STATE[SliceState(self.sub_state)]
        if self.type is UnitType.SERVICE and self.sub_state in ServiceState.__members__.values():
            return SERVICE_ACTIVE_STATE[ServiceState(self.sub_state)]
        if self.type is UnitType.TARGET and self.sub_state in TargetState.__members__.values():
            return TARGET_ACTIVE_STATE[TargetState(self.sub_state)]
        if self.type is UnitType.TIMER and self.sub_state in TimerState.__members__.values():
            return TIMER_ACTIVE_STATE[TimerState(self.sub_state)]
        return ActiveState.INACTIVE

    @property
    def description(self) -> str:
        value = self.settings.get("Description")
        if isinstance(value, str) and value:
            return value
        # a slice without one, transient too: "Slice /a/b" (observed, fixtures/oracle ListUnits-o)
        return slice_description(self.name) if self.type is UnitType.SLICE else self.name

    def setting(self, name: str, default: object = None) -> object:
        return self.settings.get(name, default)

    def timestamp(self, name: str) -> Timestamp:
        return self.timestamps.get(name, Timestamp())
