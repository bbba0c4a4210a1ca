"""Settable unit properties: name -> D-Bus signature, unit types, phase and value check.

This is the table StartTransientUnit and SetUnitProperties go through. It is pure: it turns
(name, signature, plain value) triples into validated assignments, and raises the error
systemd would answer. Readable properties and their signatures live in compat/readable.py.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from compat import errors, timerunit, unitname
from compat.enums import (
    CollectMode,
    DevicePolicy,
    ExitType,
    KillMode,
    OOMPolicy,
    ServiceRestart,
    ServiceType,
)
from compat.unitname import UnitType

UINT64_MAX = 2**64 - 1
UINT32_MAX = 2**32 - 1
USEC_INFINITY = UINT64_MAX
CGROUP_LIMIT_MAX = UINT64_MAX
# systemd.resource-control(5): CPUWeight=, IOWeight= "range 1…10000"; CPUWeight "idle" is 0
CGROUP_WEIGHT_MIN, CGROUP_WEIGHT_MAX = 1, 10000
# systemd.resource-control(5): CPUShares= "range 2…262144"; BlockIOWeight= "range 10…1000"
CPU_SHARES_MIN, CPU_SHARES_MAX = 2, 262144
BLKIO_WEIGHT_MIN, BLKIO_WEIGHT_MAX = 10, 1000
SIGNAL_MAX = 64  # _NSIG - 1 on Linux


class Merge(enum.Enum):
    """How repeated assignments of one property combine."""

    LAST = "last"  # scalars: the last assignment wins
    APPEND = "append"  # lists: entries append; an empty list resets (IO lists)
    # DeviceAllow: systemd 252 (dbus-cgroup.c) updates the rights of a path it has in place and
    # LIST_PREPENDs a new one, so the list reads back newest first; an empty list resets
    PREPEND = "prepend"


class Phase(enum.Flag):
    """When a property may be set: only while creating a transient unit, or also at runtime."""

    TRANSIENT = enum.auto()
    RUNTIME = enum.auto()
    BOTH = TRANSIENT | RUNTIME


Check = Callable[[str, object], object]

_SCOPE = frozenset({UnitType.SCOPE})
_SERVICE = frozenset({UnitType.SERVICE})
# units with processes: systemd.kill(5) and the process settings
_PROCESSES = frozenset({UnitType.SCOPE, UnitType.SERVICE})
_CGROUP = frozenset({UnitType.SCOPE, UnitType.SLICE, UnitType.SERVICE})
_ANY = frozenset(UnitType)
_TIMER = frozenset({UnitType.TIMER})


@dataclass(frozen=True, slots=True)
class PropertySpec:
    """One settable property."""

    name: str
    signature: str
    types: frozenset[UnitType]
    phase: Phase
    merge: Merge = Merge.LAST
    check: Check | None = None


@dataclass(frozen=True, slots=True)
class Assignment:
    """A validated property assignment, ready to apply."""

    name: str
    value: object
    merge: Merge


def _invalid(message: str) -> errors.InvalidArgs:
    return errors.InvalidArgs(message)


# -- value checks (each returns the value to store) ----------------------------------------


def _weight(lo: int, hi: int, idle: bool = False) -> Check:
    def check(name: str, v: object) -> object:
        assert isinstance(v, int)
        if v == UINT64_MAX or lo <= v <= hi or (idle and v == 0):
            return v
        raise _invalid(f"Value specified in {name} is out of range")

    return check


def _positive_limit(name: str, v: object) -> object:
    # systemd 252 refuses 0 for TasksMax, MemoryHigh, MemoryMax and MemoryLimit (but not for
    # the protections MemoryMin/MemoryLow or MemorySwapMax): observed, test_bad_input.py
    assert isinstance(v, int)
    if v == 0:
        raise _invalid(f"Value specified in {name} is out of range")
    return v


def _scale(name: str, v: object) -> object:
    # a fraction of the total scaled to UINT32_MAX (the bus form of a percentage)
    assert isinstance(v, int)
    if v == 0:
        raise _invalid(f"Value specified in {name} is out of range")
    return v


def _nonzero_usec(name: str, v: object) -> object:
    assert isinstance(v, int)
    if v == 0:
        raise _invalid(f"{name}= value out of range")
    return v


def _enum(cls: type[enum.StrEnum]) -> Check:
    def check(name: str, v: object) -> object:
        assert isinstance(v, str)
        try:
            return cls(v).value  # stored as the plain string
        except ValueError:
            raise _invalid(f"Invalid {name} setting: {v}") from None

    return check


def _signal(name: str, v: object) -> object:
    assert isinstance(v, int)
    if not 1 <= v <= SIGNAL_MAX:
        raise _invalid(f"Invalid {name} setting: {v}")
    return v


def _exit_status(name: str, v: object) -> object:
    # systemd.service(5) SuccessExitStatus= and friends, (aiai): exit codes 0-255; systemd
    # 252 takes any signal number here (signals 0 and 100 accepted in the lab)
    assert isinstance(v, (list, tuple)) and len(v) == 2
    codes, signals = v
    for code in codes:
        if not 0 <= code <= 255:
            raise _invalid(f"Invalid status code in {name}: {code}")
    return [sorted(set(codes)), sorted(set(signals))]


def _slice(name: str, v: object) -> object:
    assert isinstance(v, str)
    # texts as systemd 252 answers them (tests/bus/test_bad_input.py)
    if not unitname.is_valid(v, instance=False, template=False):
        raise _invalid(f"Invalid unit name '{v}'")
    if unitname.unit_type(v) is not UnitType.SLICE:
        raise _invalid(f"Unit name '{v}' is not a slice")
    if not unitname.is_valid_slice_name(v):
        raise _invalid(
            f"Unit {v} failed to load properly, please adjust/correct and reload service "
            "manager: Invalid argument"
        )
    return v


def _unit_names(name: str, v: object) -> object:
    assert isinstance(v, list)
    for other in v:
        if not unitname.is_valid(other, template=False):
            raise _invalid(f"Invalid unit name {other}")
    return list(v)


def _absolute_paths(name: str, v: object) -> object:
    assert isinstance(v, list)
    for p in v:
        if not isinstance(p, str) or not p.startswith("/") or "\0" in p:
            raise _invalid(f"Path specified in {name} is not absolute: {p}")
    return list(v)


def _text(name: str, v: object) -> object:
    assert isinstance(v, str)
    if "\0" in v:
        raise _invalid(f"Invalid {name} setting")
    return v


def _exec_command(name: str, v: object) -> object:
    # systemd.service(5) ExecStart=: an absolute path, then argv; the bool: ignore failure
    assert isinstance(v, list)
    out = []
    for path, argv, ignore in v:
        if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
            raise _invalid(f"Path {path} is not absolute.")
        if not argv:
            raise _invalid(f"{name} argument list is empty.")
        out.append((path, list(argv), bool(ignore)))
    return out


def _environment(name: str, v: object) -> object:
    # systemd.exec(5) Environment=: NAME=VALUE assignments
    assert isinstance(v, list)
    for entry in v:
        key, eq, _ = entry.partition("=")
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise _invalid("Invalid environment block.")
    return list(v)


def _working_directory(name: str, v: object) -> object:
    assert isinstance(v, str)
    # systemd.exec(5): an absolute path or "~" (the user's home); a "-" prefix: may be missing
    path = v[1:] if v.startswith("-") else v
    if path != "~" and (not path.startswith("/") or "\0" in path):
        raise _invalid("WorkingDirectory= expects an absolute path or '~'")
    return v


def _nice(name: str, v: object) -> object:
    assert isinstance(v, int)
    if not -20 <= v <= 19:  # setpriority(2)'s range
        raise _invalid(f"Nice value out of range: {v}")
    return v


def _umask(name: str, v: object) -> object:
    assert isinstance(v, int)
    if not 0 <= v <= 0o777:
        raise _invalid(f"Invalid UMask: {v}")
    return v


def _file_path(name: str, v: object) -> object:
    # systemd.exec(5) StandardOutput=file:PATH (systemd-run sends StandardOutputFile=PATH):
    # texts as systemd 252 answers them in the lab
    assert isinstance(v, str)
    if not v.startswith("/"):
        raise _invalid(f"Path {v} is not absolute")
    if any(part in (".", "..") for part in v.split("/")) or "//" in v:
        raise _invalid(f"Path {v} is not normalized")
    return v


# systemd.exec(5) file:/append:/truncate: for each stream, as systemd-run names them on the bus
STANDARD_FILES = {
    "StandardInputFile": ("StandardInput", "file"),
    "StandardOutputFile": ("StandardOutput", "file"),
    "StandardOutputFileToAppend": ("StandardOutput", "append"),
    "StandardOutputFileToTruncate": ("StandardOutput", "truncate"),
    "StandardErrorFile": ("StandardError", "file"),
    "StandardErrorFileToAppend": ("StandardError", "append"),
    "StandardErrorFileToTruncate": ("StandardError", "truncate"),
}


# systemd.exec(5) StandardInput=/StandardOutput=/StandardError=fd: descriptors the caller
# passed (systemd-run --pipe and --pty send its own, or a pty's); the value in the settings is
# the daemon's copy of it, -1 once the service is done with it (closed)
PASSED_FDS = {
    "StandardInputFileDescriptor": "StandardInput",
    "StandardOutputFileDescriptor": "StandardOutput",
    "StandardErrorFileDescriptor": "StandardError",
}


def passed_fd(settings: dict[str, object], stream: str) -> int | None:
    """The descriptor passed for STREAM ("StandardInput", ...), if one was (-1: closed)."""
    value = settings.get(stream + "FileDescriptor")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _descriptor(name: str, v: object) -> object:
    assert isinstance(v, int)
    if v < 0:
        raise _invalid(f"Invalid file descriptor for {name}")
    return v


def standard_file(settings: dict[str, object], stream: str) -> tuple[str, str] | None:
    """(mode, path) of STREAM ("StandardOutput", ...) when a file was set for it."""
    for name, (which, mode) in STANDARD_FILES.items():
        if which == stream and isinstance(settings.get(name), str):
            return mode, str(settings[name])
    return None


def _standard(*supported: str) -> Check:
    # StandardInput/Output/Error: what exists here (no journal: a service's lines go to
    # scopeshim's log; no tty, socket or file targets)
    def check(name: str, v: object) -> object:
        assert isinstance(v, str)
        if v not in supported:
            raise errors.property_read_only(name)
        return v

    return check


def _pids(name: str, v: object) -> object:
    assert isinstance(v, list)
    return list(v)


_BUS_NAME = re.compile(
    r"^(:[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+|[A-Za-z_-][A-Za-z0-9_-]*"
    r"(\.[A-Za-z_-][A-Za-z0-9_-]*)+)$"
)


def _controller(name: str, v: object) -> object:
    assert isinstance(v, str)
    if v and (len(v) > 255 or not _BUS_NAME.match(v)):
        raise _invalid(f"Controller '{v}' is not a valid bus name.")
    return v


_DEVICE_PATH = re.compile(r"^(/dev/\S+|/run/systemd/inaccessible/\S+|(char|block)-\S+)$")


def _device_allow(name: str, v: object) -> object:
    assert isinstance(v, list)
    for path, rights in v:
        if not _DEVICE_PATH.match(path):
            raise _invalid(f"{name}= requires device node or pattern")
        if not rights or any(c not in "rwm" for c in rights) or len(set(rights)) != len(rights):
            raise _invalid(f"{name}= requires combination of rwm flags")
    return [(p, r) for p, r in v]


def _device_values(name: str, v: object) -> object:
    assert isinstance(v, list)
    for path, _value in v:
        if not path.startswith("/dev/"):
            raise _invalid(f"{name}= expects a device node path")
    return [(p, n) for p, n in v]


def _device_weights(lo: int, hi: int) -> Check:
    def check(name: str, v: object) -> object:
        checked = _device_values(name, v)
        assert isinstance(checked, list)
        for _path, weight in checked:
            if not lo <= weight <= hi:
                raise _invalid(f"{name}= value out of range")
        return checked

    return check


def _cpuset(name: str, v: object) -> object:
    assert isinstance(v, bytes | bytearray)
    return bytes(v)


def _bpf_program(name: str, v: object) -> object:
    # We install no BPF programs: refusing here lets crun fall back to DevicePolicy/DeviceAllow.
    raise errors.property_read_only(name)


# -- the table --------------------------------------------------------------------------------


def _spec(
    name: str,
    signature: str,
    types: frozenset[UnitType] = _CGROUP,
    phase: Phase = Phase.BOTH,
    merge: Merge = Merge.LAST,
    check: Check | None = None,
) -> PropertySpec:
    return PropertySpec(name, signature, types, phase, merge, check)


_T = Phase.TRANSIENT
_DEPENDENCIES = (
    # systemd.unit(5) dependency settings that may be created transiently; they append
    "Requires", "Requisite", "Wants", "BindsTo", "PartOf", "Upholds", "Conflicts", "Before",
    "After", "OnSuccess", "OnFailure", "PropagatesReloadTo", "ReloadPropagatedFrom",
    "PropagatesStopTo", "StopPropagatedFrom", "JoinsNamespaceOf",
)  # fmt: skip
# systemd.unit(5) dependencies that are only ever derived, never set
NON_TRANSIENT_DEPENDENCIES = frozenset({
    "RequiredBy", "RequisiteOf", "WantedBy", "BoundBy", "UpheldBy", "ConsistsOf",
    "ConflictedBy", "OnSuccessOf", "OnFailureOf", "Triggers", "TriggeredBy", "SliceOf",
})  # fmt: skip

_SPECS: list[PropertySpec] = [
    # generic unit settings (systemd.unit(5)); transient only unless noted
    _spec("Description", "s", _ANY, Phase.BOTH, check=_text),
    _spec("Slice", "s", _CGROUP, _T, check=_slice),
    _spec("DefaultDependencies", "b", _ANY, _T),
    _spec("Documentation", "as", _ANY, _T, Merge.APPEND),
    _spec("SourcePath", "s", _ANY, _T, check=_text),
    _spec("StopWhenUnneeded", "b", _ANY, _T),
    _spec("RefuseManualStart", "b", _ANY, _T),
    _spec("RefuseManualStop", "b", _ANY, _T),
    _spec("AllowIsolate", "b", _ANY, _T),
    _spec("IgnoreOnIsolate", "b", _ANY, _T),
    _spec("JobTimeoutUSec", "t", _ANY, _T),
    _spec("JobRunningTimeoutUSec", "t", _ANY, _T),
    _spec("JobTimeoutAction", "s", _ANY, _T, check=_text),
    _spec("JobTimeoutRebootArgument", "s", _ANY, _T, check=_text),
    _spec("StartLimitIntervalUSec", "t", _ANY, _T),
    _spec("StartLimitBurst", "u", _ANY, _T),
    _spec("StartLimitAction", "s", _ANY, _T, check=_text),
    _spec("FailureAction", "s", _ANY, _T, check=_text),
    _spec("SuccessAction", "s", _ANY, _T, check=_text),
    _spec("FailureActionExitStatus", "i", _ANY, _T),
    _spec("SuccessActionExitStatus", "i", _ANY, _T),
    _spec("RebootArgument", "s", _ANY, _T, check=_text),
    _spec("CollectMode", "s", _ANY, _T, check=_enum(CollectMode)),
    _spec("OnSuccessJobMode", "s", _ANY, _T, check=_text),
    _spec("OnFailureJobMode", "s", _ANY, _T, check=_text),
    _spec("RequiresMountsFor", "as", _ANY, _T, Merge.APPEND, _absolute_paths),
    _spec("AddRef", "b", _ANY, _T),
    _spec("Markers", "as", _ANY, Phase.BOTH, Merge.LAST),
    *(_spec(d, "as", _ANY, _T, Merge.APPEND, _unit_names) for d in _DEPENDENCIES),
    # systemd.scope(5)
    _spec("PIDs", "au", _SCOPE, _T, Merge.APPEND, _pids),
    _spec("Controller", "s", _SCOPE, _T, check=_controller),
    _spec("TimeoutStopUSec", "t", _PROCESSES, _T),
    _spec("RuntimeMaxUSec", "t", _PROCESSES, Phase.BOTH),
    _spec("RuntimeRandomizedExtraUSec", "t", _PROCESSES, Phase.BOTH),
    _spec("OOMPolicy", "s", _PROCESSES, _T, check=_enum(OOMPolicy)),
    _spec("User", "s", _PROCESSES, _T, check=_text),
    _spec("Group", "s", _PROCESSES, _T, check=_text),
    # systemd.service(5) and systemd.exec(5): what transient services are made of
    _spec("ExecStart", "a(sasb)", _SERVICE, _T, Merge.APPEND, _exec_command),
    _spec("Type", "s", _SERVICE, _T, check=_enum(ServiceType)),
    _spec("ExitType", "s", _SERVICE, _T, check=_enum(ExitType)),
    _spec("RemainAfterExit", "b", _SERVICE, _T),
    _spec("Restart", "s", _SERVICE, _T, check=_enum(ServiceRestart)),
    _spec("RestartUSec", "t", _SERVICE, _T),
    _spec("SuccessExitStatus", "(aiai)", _SERVICE, _T, check=_exit_status),
    _spec("RestartPreventExitStatus", "(aiai)", _SERVICE, _T, check=_exit_status),
    _spec("RestartForceExitStatus", "(aiai)", _SERVICE, _T, check=_exit_status),
    _spec("TimeoutStartUSec", "t", _SERVICE, _T),
    _spec("Environment", "as", _SERVICE, _T, Merge.APPEND, _environment),
    _spec("WorkingDirectory", "s", _SERVICE, _T, check=_working_directory),
    _spec("Nice", "i", _SERVICE, _T, check=_nice),
    _spec("UMask", "u", _SERVICE, _T, check=_umask),
    _spec("SyslogIdentifier", "s", _SERVICE, _T, check=_text),
    _spec("StandardInput", "s", _SERVICE, _T, check=_standard("null")),
    _spec("StandardOutput", "s", _SERVICE, _T, check=_standard("inherit", "journal", "null")),
    _spec("StandardError", "s", _SERVICE, _T, check=_standard("inherit", "journal", "null")),
    *(_spec(name, "s", _SERVICE, _T, check=_file_path) for name in STANDARD_FILES),
    *(_spec(name, "h", _SERVICE, _T, check=_descriptor) for name in PASSED_FDS),
    _spec("TTYPath", "s", _SERVICE, _T, check=_file_path),
    _spec("IgnoreSIGPIPE", "b", _SERVICE, _T),
    # systemd.timer(5), as systemd-run 252 sends it (observed); Unit= is refused by 252
    _spec("TimersMonotonic", "a(st)", _TIMER, _T, Merge.APPEND, timerunit.check_monotonic),
    _spec("TimersCalendar", "a(ss)", _TIMER, _T, Merge.APPEND, timerunit.check_calendar),
    *(
        _spec(b, "t", _TIMER, _T, Merge.APPEND, timerunit.as_list)
        for b in timerunit.MONOTONIC_BASES
    ),
    _spec("OnCalendar", "s", _TIMER, _T, Merge.APPEND, timerunit.as_list),
    _spec("AccuracyUSec", "t", _TIMER, _T),
    _spec("AccuracySec", "t", _TIMER, _T),
    _spec("RandomizedDelayUSec", "t", _TIMER, _T),
    *(
        _spec(b, "b", _TIMER, _T)
        for b in (
            "RemainAfterElapse",
            "Persistent",
            "WakeSystem",
            "OnClockChange",
            "OnTimezoneChange",
            "FixedRandomDelay",
        )
    ),
    # systemd.kill(5)
    _spec("KillMode", "s", _PROCESSES, _T, check=_enum(KillMode)),
    _spec("SendSIGHUP", "b", _PROCESSES, _T),
    _spec("SendSIGKILL", "b", _PROCESSES, _T),
    _spec("KillSignal", "i", _PROCESSES, _T, check=_signal),
    _spec("RestartKillSignal", "i", _PROCESSES, _T, check=_signal),
    _spec("FinalKillSignal", "i", _PROCESSES, _T, check=_signal),
    _spec("WatchdogSignal", "i", _PROCESSES, _T, check=_signal),
    # systemd.resource-control(5): transient and at runtime unless noted
    _spec("Delegate", "b", _CGROUP, _T),
    _spec("DelegateControllers", "as", _CGROUP, _T, Merge.APPEND),
    _spec("DisableControllers", "as", _CGROUP, Phase.BOTH, Merge.APPEND),
    *(_spec(f"{a}Accounting", "b") for a in ("CPU", "Memory", "IO", "Tasks", "BlockIO", "IP")),
    _spec("CPUWeight", "t", check=_weight(CGROUP_WEIGHT_MIN, CGROUP_WEIGHT_MAX, idle=True)),
    _spec("StartupCPUWeight", "t", check=_weight(CGROUP_WEIGHT_MIN, CGROUP_WEIGHT_MAX, idle=True)),
    _spec("CPUShares", "t", check=_weight(CPU_SHARES_MIN, CPU_SHARES_MAX)),
    _spec("StartupCPUShares", "t", check=_weight(CPU_SHARES_MIN, CPU_SHARES_MAX)),
    _spec("CPUQuotaPerSecUSec", "t", check=_nonzero_usec),
    _spec("CPUQuotaPeriodUSec", "t"),
    _spec("AllowedCPUs", "ay", check=_cpuset),
    _spec("StartupAllowedCPUs", "ay", check=_cpuset),
    _spec("AllowedMemoryNodes", "ay", check=_cpuset),
    _spec("StartupAllowedMemoryNodes", "ay", check=_cpuset),
    _spec("IOWeight", "t", check=_weight(CGROUP_WEIGHT_MIN, CGROUP_WEIGHT_MAX)),
    _spec("StartupIOWeight", "t", check=_weight(CGROUP_WEIGHT_MIN, CGROUP_WEIGHT_MAX)),
    _spec(
        "IODeviceWeight",
        "a(st)",
        merge=Merge.APPEND,
        check=_device_weights(CGROUP_WEIGHT_MIN, CGROUP_WEIGHT_MAX),
    ),
    *(
        _spec(n, "a(st)", merge=Merge.APPEND, check=_device_values)
        for n in (
            "IOReadBandwidthMax",
            "IOWriteBandwidthMax",
            "IOReadIOPSMax",
            "IOWriteIOPSMax",
            "IODeviceLatencyTargetUSec",
            "BlockIOReadBandwidth",
            "BlockIOWriteBandwidth",
        )
    ),
    _spec("BlockIOWeight", "t", check=_weight(BLKIO_WEIGHT_MIN, BLKIO_WEIGHT_MAX)),
    _spec("StartupBlockIOWeight", "t", check=_weight(BLKIO_WEIGHT_MIN, BLKIO_WEIGHT_MAX)),
    _spec(
        "BlockIODeviceWeight",
        "a(st)",
        merge=Merge.APPEND,
        check=_device_weights(BLKIO_WEIGHT_MIN, BLKIO_WEIGHT_MAX),
    ),
    *(
        _spec(n, "t")
        for n in (
            "MemoryMin",
            "MemoryLow",
            "MemorySwapMax",
            "MemoryZSwapMax",
            "DefaultMemoryMin",
            "DefaultMemoryLow",
        )
    ),
    *(_spec(n, "t", check=_positive_limit) for n in ("MemoryHigh", "MemoryMax", "MemoryLimit")),
    *(
        _spec(f"{n}Scale", "u", check=_scale)
        for n in (
            "MemoryMin",
            "MemoryLow",
            "MemoryHigh",
            "MemoryMax",
            "MemorySwapMax",
            "MemoryZSwapMax",
            "MemoryLimit",
            "DefaultMemoryMin",
            "DefaultMemoryLow",
        )
    ),
    _spec("TasksMax", "t", check=_positive_limit),
    _spec("TasksMaxScale", "u", check=_scale),
    _spec("DevicePolicy", "s", check=_enum(DevicePolicy)),
    _spec("DeviceAllow", "a(ss)", merge=Merge.PREPEND, check=_device_allow),
    _spec("IPAddressAllow", "a(iayu)", merge=Merge.APPEND),
    _spec("IPAddressDeny", "a(iayu)", merge=Merge.APPEND),
    _spec("BPFProgram", "a(ss)", _CGROUP, _T, check=_bpf_program),
    _spec("ManagedOOMSwap", "s", check=_text),
    _spec("ManagedOOMMemoryPressure", "s", check=_text),
    _spec("ManagedOOMMemoryPressureLimit", "u"),
    _spec("ManagedOOMPreference", "s", check=_text),
]

PROPERTIES: dict[str, PropertySpec] = {s.name: s for s in _SPECS}

# scale properties and the byte/count property each one sets
SCALE_TARGETS: dict[str, str] = {
    name: name.removesuffix("Scale") for name in PROPERTIES if name.endswith("Scale")
}


def scaled(fraction: int, total: int) -> int:
    """The value a *Scale property stands for, given the total (RAM bytes, pid max)."""
    return math.floor(total * fraction / UINT32_MAX)


def parse_assignments(
    unit_type: UnitType,
    items: Iterable[tuple[str, str, object]],
    *,
    transient: bool,
) -> list[Assignment]:
    """Validate (name, signature, value) triples completely, before anything is applied.

    Raises PropertyReadOnly ("Cannot set property X, or unknown property.") for unknown
    properties and those not settable in this phase or for this unit type, InvalidArgs
    for a wrong signature or an invalid value. Returns assignments in wire order.
    """
    phase = Phase.TRANSIENT if transient else Phase.RUNTIME
    out: list[Assignment] = []
    for name, signature, value in items:
        spec = PROPERTIES.get(name)
        if spec is None or unit_type not in spec.types or not (spec.phase & phase):
            if name == "Slice" and transient and spec is not None:
                # systemd 252's answer for a unit type without a cgroup (observed: a timer)
                raise _invalid(
                    "The slice property is only available for units with control groups."
                )
            if transient and name in NON_TRANSIENT_DEPENDENCIES:
                raise _invalid(f"Dependency type {name} may not be created transiently.")
            raise errors.property_read_only(name)
        if signature != spec.signature:
            # what sd-bus answers when the variant holds another type (systemd 252, observed)
            raise errors.ENXIO("Failed to set unit properties: Unexpected message contents")
        checked = spec.check(name, value) if spec.check else value
        out.append(Assignment(name, checked, spec.merge))
    return out


def _same_path(a: str, b: str) -> bool:
    # systemd's path_equal(): repeated "/", "." components and a trailing "/" do not count
    def parts(p: str) -> tuple[bool, list[str]]:
        return p.startswith("/"), [c for c in p.split("/") if c not in ("", ".")]

    return parts(a) == parts(b)


def _prepend_devices(current: object, entries: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """DeviceAllow as systemd 252 merges it: a known path takes the new rights where it is,
    a new path goes first; rights are stored as flags, so they read back as "rwm" ordered."""
    out = [(str(p), str(r)) for p, r in current] if isinstance(current, list) else []
    for path, rights in entries:
        flags = "".join(c for c in "rwm" if c in rights)
        for i, (known, _) in enumerate(out):
            if _same_path(known, path):
                out[i] = (known, flags)
                break
        else:
            out.insert(0, (path, flags))
    return out


def merge_into(settings: dict[str, object], assignments: Sequence[Assignment]) -> None:
    """Apply assignments: scalars last-wins, lists append (an empty list resets), DeviceAllow
    prepends (Merge.PREPEND)."""
    for a in assignments:
        if a.merge is Merge.PREPEND:
            assert isinstance(a.value, list)
            settings[a.name] = _prepend_devices(settings.get(a.name), a.value) if a.value else []
        elif a.merge is Merge.APPEND:
            assert isinstance(a.value, list)
            if not a.value:
                settings[a.name] = []
            else:
                current = settings.get(a.name)
                settings[a.name] = [*(current if isinstance(current, list) else []), *a.value]
        else:
            settings[a.name] = a.value
        target = SCALE_TARGETS.get(a.name)
        if target is not None:
            settings.pop(target, None)
        elif f"{a.name}Scale" in PROPERTIES:
            settings.pop(f"{a.name}Scale", None)
