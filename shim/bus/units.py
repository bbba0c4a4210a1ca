"""Unit objects (.Unit plus .Scope/.Slice with cgroup and kill context) and the signals."""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable
from typing import Any

from compat import buspath, errors, readable, timerunit
from compat.enums import LoadState
from compat.properties import UINT64_MAX, passed_fd, standard_file
from compat.unitname import UnitType
from shim.bus.call import Call
from shim.bus.convert import unwrap_properties
from shim.bus.router import Interface, Method, Prop, Signal, split_signature
from shim.core.manager import Manager
from shim.core.units import TIMESTAMPS, Unit

UNIT = "org.freedesktop.systemd1.Unit"
SCOPE = "org.freedesktop.systemd1.Scope"
SLICE = "org.freedesktop.systemd1.Slice"
_PROPERTIES_IFACE = "org.freedesktop.DBus.Properties"


# -- methods ----------------------------------------------------------------------------------


def Start(c: Call, mode: str) -> str:
    return buspath.job_path(c.manager.start(c.unit, mode).id)


def Stop(c: Call, mode: str) -> str:
    return buspath.job_path(c.manager.stop(c.unit, mode).id)


def Kill(c: Call, whom: str, signal: int) -> None:
    c.manager.kill(c.unit, whom, signal)


def ResetFailed(c: Call) -> None:
    c.manager.reset_failed(c.unit)


# systemctl(1) --kill-value=: sigqueue(3) with a value, realtime signals only, and only ever
# to the unit's main or control process, "--kill-whom=all will only affect main and control
# processes but no other processes"; scopeshim's units have neither, so nothing is signalled
SIGRTMIN, SIGRTMAX = 34, 64  # glibc's SIGRTMIN (two reserved) and _NSIG - 1
_WHOM = frozenset(
    {"main", "control", "all", "main-fail", "control-fail", "all-fail", "cgroup", "cgroup-fail"}
)
_KILLABLE = (UnitType.SCOPE, UnitType.SLICE, UnitType.SERVICE)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def queue_signal(unit: Unit, whom: str, signo: int, value: int) -> None:
    """QueueSignalUnit()/Unit.QueueSignal() as systemd 254+ answers them (checked against
    262.1: fixtures/oracle/systemd262-queue-signal.json); VALUE goes to nobody here."""
    # org.freedesktop.systemd1(5): an empty whom is "all" (as for KillUnit())
    whom = whom or "all"
    if whom not in _WHOM:
        raise errors.InvalidArgs(f"Invalid whom argument: {whom}")
    if not 1 <= signo <= SIGRTMAX:
        raise errors.InvalidArgs("Signal number out of range.")
    if not SIGRTMIN <= signo <= SIGRTMAX:
        raise errors.InvalidArgs(
            "Value parameter only accepted for realtime signals (SIGRTMIN…SIGRTMAX), "
            f"refusing for signal {_signal_name(signo)}."
        )
    if unit.type not in _KILLABLE:
        raise errors.NotSupported("Unit type does not support process killing.")
    kind = whom.removesuffix("-fail")
    if kind in ("main", "control"):
        if unit.type is UnitType.SERVICE:
            raise errors.NoSuchProcess(f"No {kind} process to kill")
        raise errors.NoSuchProcess(f"{unit.type} units have no {kind} processes")
    if whom.endswith("-fail"):
        raise errors.NoSuchProcess("No matching processes to kill")


def QueueSignal(c: Call, whom: str, signo: int, value: int) -> None:
    queue_signal(c.unit, whom, signo, value)


def SetProperties(c: Call, runtime: bool, props: list[Any]) -> None:
    c.manager.set_properties(c.unit, runtime, unwrap_properties(props))


def Ref(c: Call) -> None:
    c.manager.ref(c.unit, c.sender)


def Unref(c: Call) -> None:
    c.manager.unref(c.unit, c.sender)


def Freeze(c: Call) -> None:
    c.manager.freeze(c.unit)


def Thaw(c: Call) -> None:
    c.manager.thaw(c.unit)


def Abandon(c: Call) -> None:
    c.manager.abandon(c.unit)


def GetProcesses(c: Call) -> list[tuple[str, int, str]]:
    return c.manager.processes(c.unit)


def AttachProcesses(c: Call, subcgroup: str, pids: list[int]) -> None:
    c.manager.attach(c.unit, subcgroup, pids, c.pid, c.uid)


def _table(name: str, table: readable.ReadableTable) -> Interface:
    return Interface(name, properties={n: Prop(n, s, e) for n, s, e in table})


UNIT_IFACE = _table(UNIT, readable.UNIT)
for _m in (
    Method("Start", "s", "o", Start, ("mode",), ("job",)),
    Method("Stop", "s", "o", Stop, ("mode",), ("job",)),
    Method("Kill", "si", "", Kill, ("whom", "signal")),
    Method("QueueSignal", "sii", "", QueueSignal, ("whom", "signal", "value")),
    Method("ResetFailed", "", "", ResetFailed),
    Method("SetProperties", "ba(sv)", "", SetProperties, ("runtime", "properties")),
    Method("Ref", "", "", Ref),
    Method("Unref", "", "", Unref),
    Method("Freeze", "", "", Freeze),
    Method("Thaw", "", "", Thaw),
):
    UNIT_IFACE.add(_m)

_CGROUP_METHODS = (
    Method("GetProcesses", "", "a(sus)", GetProcesses, (), ("processes",)),
    Method("AttachProcesses", "sau", "", AttachProcesses, ("subcgroup", "pids")),
)
SCOPE_IFACE = _table(SCOPE, readable.SCOPE)
SCOPE_IFACE.add(Method("Abandon", "", "", Abandon))
SCOPE_IFACE.signals = [Signal("RequestStop", "")]
SLICE_IFACE = _table(SLICE, readable.SLICE)
for _m in _CGROUP_METHODS:
    SCOPE_IFACE.add(_m)
    SLICE_IFACE.add(_m)

SERVICE = "org.freedesktop.systemd1.Service"
TARGET = "org.freedesktop.systemd1.Target"
SERVICE_IFACE = _table(SERVICE, readable.SERVICE)
for _m in _CGROUP_METHODS:
    SERVICE_IFACE.add(_m)
TARGET_IFACE = _table(TARGET, readable.TARGET)
TIMER = "org.freedesktop.systemd1.Timer"
TIMER_IFACE = _table(TIMER, timerunit.TIMER)

_TYPE_IFACE = {
    UnitType.SCOPE: SCOPE_IFACE,
    UnitType.SLICE: SLICE_IFACE,
    UnitType.SERVICE: SERVICE_IFACE,
    UnitType.TARGET: TARGET_IFACE,
    UnitType.TIMER: TIMER_IFACE,
}


def interfaces_for(unit: Unit) -> list[Interface]:
    type_iface = _TYPE_IFACE.get(unit.type)
    return [UNIT_IFACE, type_iface] if type_iface else [UNIT_IFACE]


# -- property values --------------------------------------------------------------------------


# systemd.unit(5): each dependency has a reverse that the other unit reports
_REVERSE = {"SliceOf": "", "RequiredBy": "Requires", "WantedBy": "Wants", "BoundBy": "BindsTo"}


def _deps(m: Manager, unit: Unit, name: str) -> list[str]:
    if name in _REVERSE:
        if name == "SliceOf":
            return m.slice_members(unit)
        return m.depending_on(unit, _REVERSE[name])
    own = unit.setting(name, [])
    assert isinstance(own, list)
    implicit: list[str] = []
    # systemd.special(7)/systemd.unit(5): units are ordered after and require their slice,
    # and with DefaultDependencies= conflict with and come before shutdown.target
    if name in ("Requires", "After") and unit.slice and unit.load_state is LoadState.LOADED:
        implicit = [unit.slice]
    if (
        name in ("Conflicts", "Before")
        and (unit.transient or (unit.type is UnitType.SLICE and not unit.perpetual))
        and unit.setting("DefaultDependencies", True)
    ):
        implicit = ["shutdown.target"]
    if unit.type is UnitType.TIMER and unit.load_state is LoadState.LOADED:
        # systemd.timer(5): default dependencies on sysinit.target, Before=timers.target,
        # and Before= the unit it triggers (as 252 showed them in the lab)
        default = bool(unit.setting("DefaultDependencies", True))
        if name in ("Requires", "After") and default:
            implicit = ["sysinit.target"]
        if name == "Before":
            implicit = implicit + m.triggers_of(unit) + (["timers.target"] if default else [])
    if name == "Before" and unit.type is UnitType.SLICE:
        # what sits in a slice is ordered after it, so the slice reports it as Before=
        implicit = implicit + m.depending_on(unit, "After")
    return implicit + [d for d in own if d not in implicit]


@functools.cache
def default_tasks_max() -> int:
    # systemd-system.conf(5): DefaultTasksMax=15% of the kernel's pid limit
    try:
        with open("/proc/sys/kernel/pid_max") as f:
            pid_max = int(f.read())
        with open("/proc/sys/kernel/threads-max") as f:
            pid_max = min(pid_max, int(f.read()))
    except (OSError, ValueError):
        return UINT64_MAX
    return pid_max * 15 // 100


Getter = Callable[["Manager", Unit], object]


def _counter(field: str) -> Getter:
    def get(m: Manager, u: Unit) -> int:
        value = getattr(m.usage(u), field)
        return UINT64_MAX if value is None else int(value)

    return get


def _load_error(u: Unit) -> tuple[str, str]:
    if u.load_state is LoadState.NOT_FOUND:
        return ("org.freedesktop.systemd1.NoSuchUnit", f"Unit {u.name} not found.")
    if u.load_state is LoadState.MASKED and u.fragment_path:
        return ("org.freedesktop.systemd1.UnitMasked", f"Unit {u.name} is masked.")
    return ("", "")


# properties that come from the unit's state; the rest are its settings or systemd's defaults
_GETTERS: dict[str, Getter] = {
    "Id": lambda m, u: u.name,
    "Names": lambda m, u: [u.name],
    "Description": lambda m, u: u.description,
    "LoadState": lambda m, u: str(u.load_state),
    "ActiveState": lambda m, u: str(u.active_state),
    "SubState": lambda m, u: u.sub_state,
    "FreezerState": lambda m, u: u.freezer_state,
    "Job": lambda m, u: (u.job.id, buspath.job_path(u.job.id)) if u.job else (0, "/"),
    "InvocationID": lambda m, u: u.invocation_id,
    "Transient": lambda m, u: u.transient,
    "Perpetual": lambda m, u: u.perpetual,
    "Refs": lambda m, u: list(u.refs),
    "CanStart": lambda m, u: (
        u.type in (UnitType.SLICE, UnitType.TIMER) and u.load_state is LoadState.LOADED
    ),
    "CanStop": lambda m, u: u.load_state is LoadState.LOADED and not u.perpetual,
    "CanFreeze": lambda m, u: u.load_state is LoadState.LOADED and not u.perpetual,
    "LoadError": lambda m, u: _load_error(u),
    "Result": lambda m, u: u.result,
    "Slice": lambda m, u: u.slice or "",
    "ControlGroup": lambda m, u: m.shown_cgroup(u),
    "ControlGroupId": lambda m, u: m.usage(u).cgroup_id or 0,
    "TasksCurrent": _counter("tasks"),
    "MemoryCurrent": _counter("memory_bytes"),
    "CPUUsageNSec": _counter("cpu_nsec"),
    "IOReadBytes": _counter("io_read_bytes"),
    "IOReadOperations": _counter("io_read_ops"),
    "IOWriteBytes": _counter("io_write_bytes"),
    "IOWriteOperations": _counter("io_write_ops"),
    # systemd-system.conf(5) DefaultTasksMax= is for the units with processes; slices
    # read infinity unless set (observed on systemd 252)
    "TasksMax": lambda m, u: (
        m.scaled_setting(u, "TasksMax")
        or u.settings.get(
            "TasksMax", UINT64_MAX if u.type is UnitType.SLICE else default_tasks_max()
        )
    ),
    # systemd.service(5): the Type= a handled service imitates (shim/core/policy.py)
    "Type": lambda m, u: u.settings.get("Type") or ("oneshot" if _remains(u) else "simple"),
    "RemainAfterExit": lambda m, u: bool(u.settings.get("RemainAfterExit", _remains(u))),
    # org.freedesktop.systemd1(5) Service: the main process (transient services)
    "MainPID": lambda m, u: u.main.get("pid", 0) if "code" not in u.main else 0,
    "ExecMainPID": lambda m, u: u.main.get("pid", 0),
    # systemd.exec(5): a stream set to a file reads as its kind (file, append, truncate:
    # systemd 252 in the lab)
    "StandardInput": lambda m, u: _stream(u, "StandardInput"),
    "StandardOutput": lambda m, u: _stream(u, "StandardOutput"),
    "StandardError": lambda m, u: _stream(u, "StandardError"),
    # systemd.service(5): Restart= defaults to no, RestartSec= to 100ms
    "Restart": lambda m, u: u.settings.get("Restart", "no"),
    "RestartUSec": lambda m, u: u.settings.get("RestartUSec", 100_000),
    # systemd.service(5) Restart=: the automatic restarts since the last start asked for
    "NRestarts": lambda m, u: u.main.get("n_restarts", 0),
    "ExecMainCode": lambda m, u: u.main.get("code", 0),
    "ExecMainStatus": lambda m, u: u.main.get("status", 0),
    "ExecMainStartTimestamp": lambda m, u: u.main.get("start_rt", 0),
    "ExecMainStartTimestampMonotonic": lambda m, u: u.main.get("start_mono", 0),
    "ExecMainExitTimestamp": lambda m, u: u.main.get("exit_rt", 0),
    "ExecMainExitTimestampMonotonic": lambda m, u: u.main.get("exit_mono", 0),
    "ExecStart": lambda m, u: _exec_start(u),
    "Environment": lambda m, u: u.settings.get("Environment") or [],
    # systemd.exec(5): no User=/Group= reads as (uid_t) -1; results start out "success"
    "UID": lambda m, u: 2**32 - 1,
    "GID": lambda m, u: 2**32 - 1,
    "ReloadResult": lambda m, u: "success",
    "CleanResult": lambda m, u: "success",
    # transient units are "bad" with preset "enabled" (observed); units without any file "",
    # a slice from a file without [Install] "static" (systemd 252 in the lab)
    "UnitFileState": lambda m, u: (
        "bad"
        if u.transient
        else "masked"
        if u.load_state is LoadState.MASKED and u.fragment_path
        else "static"
        if u.fragment_path
        else ""
    ),
    "FragmentPath": lambda m, u: u.fragment_path,
    "DropInPaths": lambda m, u: list(u.dropin_paths),
    "NeedDaemonReload": lambda m, u: m.need_daemon_reload(u),
    "UnitFilePreset": lambda m, u: "enabled" if u.transient else "",
    "Triggers": lambda m, u: m.triggers_of(u),
    "TriggeredBy": lambda m, u: m.triggered_by(u),
}


def _timer(field: str) -> Getter:
    def get(m: Manager, u: Unit) -> object:
        if u.type is not UnitType.TIMER:
            return _zero("t")
        e = m.elapses(u)
        if field == "TimersMonotonic":
            return [list(t) for t in e.monotonic]
        if field == "TimersCalendar":
            return [list(t) for t in e.calendar]
        if field == "NextElapseUSecMonotonic":
            # 252 reads "infinity" for a timer with nothing armed (elapsed, dead: observed)
            return e.next_monotonic if u.sub_state == "waiting" else UINT64_MAX
        if field == "NextElapseUSecRealtime":
            return e.next_realtime if u.sub_state == "waiting" else 0
        if field == "LastTriggerUSec":
            return u.main.get("last_rt", 0)
        if field == "LastTriggerUSecMonotonic":
            return u.main.get("last_mono", 0)
        if field == "Unit":
            return m.triggers_of(u)[0]
        # org.freedesktop.systemd1(5) Timer: the settings, or systemd.timer(5)'s defaults
        if field == "AccuracyUSec":
            return u.settings.get("AccuracyUSec", u.settings.get("AccuracySec",
                                  timerunit.DEFAULT_ACCURACY_USEC))  # fmt: skip
        return u.settings.get(field, timerunit.TIMER_DEFAULTS.get(field, False))

    return get


for _name in ("TimersMonotonic", "TimersCalendar", "NextElapseUSecMonotonic",
              "NextElapseUSecRealtime", "LastTriggerUSec", "LastTriggerUSecMonotonic", "Unit",
              "AccuracyUSec", "RandomizedDelayUSec", "RemainAfterElapse", "Persistent",
              "WakeSystem", "OnClockChange", "OnTimezoneChange", "FixedRandomDelay"):  # fmt: skip
    _GETTERS[_name] = _timer(_name)


def _stream(u: Unit, stream: str) -> object:
    target = standard_file(u.settings, stream)
    if target is not None:
        return target[0]
    if passed_fd(u.settings, stream) is not None:
        return "fd"  # org.freedesktop.systemd1(5): a descriptor the caller passed
    return u.settings.get(stream, readable.DEFAULTS.get(stream, ""))


def _exec_start(u: Unit) -> list[tuple[str, list[str], bool, int, int, int, int, int, int, int]]:
    """ExecStart a(sasbttttuii): path, argv, ignore failure, then the last run's start and
    exit times, PID, code and status."""
    commands = u.settings.get("ExecStart", [])
    assert isinstance(commands, list)
    m = u.main
    return [
        (str(path), [str(a) for a in argv], bool(ignore), m.get("start_rt", 0),
         m.get("start_mono", 0), m.get("exit_rt", 0), m.get("exit_mono", 0), m.get("pid", 0),
         m.get("code", 0), m.get("status", 0))
        for path, argv, ignore in commands
    ]  # fmt: skip


def _remains(u: Unit) -> bool:
    return u.handler is not None and u.handler.kind in ("oneshot", "noop")


def _realtime(stamp: str) -> Getter:
    return lambda m, u: u.timestamp(stamp).realtime


def _monotonic(stamp: str) -> Getter:
    return lambda m, u: u.timestamp(stamp).monotonic


for _stamp in TIMESTAMPS:
    _GETTERS[f"{_stamp}Timestamp"] = _realtime(_stamp)
    _GETTERS[f"{_stamp}TimestampMonotonic"] = _monotonic(_stamp)


def get_property(manager: Manager, unit: Unit, prop: Prop) -> object:
    getter = _GETTERS.get(prop.name)
    if getter is not None:
        return getter(manager, unit)
    if prop.sig == "as":
        return _deps(manager, unit, prop.name)
    if prop.sig == "t" and f"{prop.name}Scale" in unit.settings:
        scaled = manager.scaled_setting(unit, prop.name)
        if scaled is not None:
            return scaled
    value = unit.settings.get(prop.name, readable.DEFAULTS.get(prop.name))
    return _zero(prop.sig) if value is None else value


def _zero(sig: str) -> object:
    """The empty value of a signature (what an unset property reads as)."""
    if sig.startswith("a{"):
        return {}
    if sig.startswith("a"):
        return b"" if sig == "ay" else []
    if sig.startswith("("):
        return [_zero(field) for field in split_signature(sig[1:-1])]
    return {"s": "", "o": "/", "g": "", "b": False, "d": 0.0}.get(sig, 0)
