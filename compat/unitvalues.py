"""Unit file values <-> bus properties: `MemoryMax=2G` -> ("MemoryMax", "t", 2147483648) as
systemd.resource-control(5), systemd.unit(5), systemd.scope(5) and systemd.kill(5) write them,
and back, as `systemctl set-property` drop-ins are written (the files systemd 252 wrote in the
lab: fixtures/oracle/dropins/)."""

from __future__ import annotations

import re
import signal as _signal
from collections.abc import Callable

from compat import errors
from compat.properties import PROPERTIES, UINT32_MAX, UINT64_MAX
from compat.timespan import format_timespan, parse_timespan
from compat.unitname import UnitType

Property = tuple[str, str, object]  # (bus name, D-Bus signature, plain value)
Parse = Callable[[str, str], list[Property]]  # (key, value) -> bus assignments


class BadValueError(ValueError):
    """A value systemd would log and ignore; the message is systemd's, without file:line."""


# systemd.unit(5): the sections each unit type reads
SECTIONS = {
    UnitType.SLICE: ("Unit", "Slice"),
    UnitType.SCOPE: ("Unit", "Scope"),
    UnitType.SERVICE: ("Unit", "Service"),
}
# systemd.resource-control(5): the settings every unit with a cgroup takes (services too)
_CGROUP_TYPES = frozenset({UnitType.SLICE, UnitType.SCOPE})
# systemd.syntax(7) booleans
_TRUE = frozenset({"1", "yes", "y", "true", "t", "on"})
_FALSE = frozenset({"0", "no", "n", "false", "f", "off"})
# systemd.resource-control(5): sizes take K, M, G, T, P, E "to the base of 1024"; IO
# bandwidth and IOPS "to the base of 1000"
_SUFFIX = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6}


def boolean(value: str) -> bool:
    v = value.lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise BadValueError(f"Failed to parse boolean value, ignoring: {value}")


def size(value: str, base: int = 1024) -> int:
    """A byte size or count with an optional K/M/G/T/P/E suffix (fractions allowed)."""
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*([KMGTPE]?)B?", value.strip())
    if m is None:
        raise ValueError(value)
    n = float(m.group(1)) if "." in m.group(1) else int(m.group(1))
    out = int(n * base ** _SUFFIX[m.group(2)])
    if out >= UINT64_MAX:
        raise ValueError(value)
    return out


def _percent(value: str) -> int | None:
    """A percentage as the UINT32_MAX-scaled fraction the bus carries, None if not one."""
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)%", value.strip())
    if m is None:
        return None
    permyriad = round(float(m.group(1)) * 100)
    if permyriad > 10000:
        raise ValueError(value)
    return (permyriad * UINT32_MAX + 5000) // 10000


def _checked(name: str, value: object) -> object:
    """The bus table's own range check (compat/properties.py) for a file value."""
    spec = PROPERTIES[name]
    if spec.check is None:
        return value
    try:
        return spec.check(name, value)
    except errors.SystemdError as e:
        raise BadValueError(f"{e.message}, ignoring.") from None


# -- parsers per kind of setting --------------------------------------------------------------


def _bool(key: str, value: str) -> list[Property]:
    return [(key, "b", boolean(value))]


def _text(key: str, value: str) -> list[Property]:
    return [(key, "s", _checked(key, value))]


def _words(key: str, value: str) -> list[Property]:
    return [(key, "as", _checked(key, value.split()))]


def _memory(key: str, value: str) -> list[Property]:
    # systemd.resource-control(5) MemoryMax=: bytes with K/M/G/T suffix, a percentage of
    # the physical memory, or "infinity"; the empty assignment is the default
    if value == "" and key in ("MemoryMin", "MemoryLow", "DefaultMemoryMin", "DefaultMemoryLow"):
        return [(key, "t", 0)]
    if value in ("", "infinity"):
        return [(key, "t", UINT64_MAX)]
    try:
        scale = _percent(value)
        if scale is not None:
            return [(f"{key}Scale", "u", _checked(f"{key}Scale", scale))]
        return [(key, "t", _checked(key, size(value)))]
    except ValueError:
        raise BadValueError(f"Invalid memory limit '{value}', ignoring: Invalid argument") from None


def _tasks(key: str, value: str) -> list[Property]:
    # systemd.resource-control(5) TasksMax=: a number, a percentage or "infinity"
    if value in ("", "infinity"):
        return [(key, "t", UINT64_MAX)]
    try:
        scale = _percent(value)
        if scale is not None:
            return [("TasksMaxScale", "u", _checked("TasksMaxScale", scale))]
        if not value.isdigit():
            raise ValueError(value)
        return [(key, "t", _checked(key, int(value)))]
    except ValueError:
        raise BadValueError(
            f"Invalid maximum tasks value '{value}', ignoring: Invalid argument"
        ) from None


def _weight(key: str, value: str) -> list[Property]:
    # CPUWeight= "idle" is 0 (systemd.resource-control(5)); the empty assignment the default
    if value == "":
        return [(key, "t", UINT64_MAX)]
    if value == "idle" and key in ("CPUWeight", "StartupCPUWeight"):
        return [(key, "t", 0)]
    if not value.isdigit() or int(value) == 0:
        raise BadValueError(f"Invalid {key}= value '{value}', ignoring: Invalid argument")
    return [(key, "t", _checked(key, int(value)))]


def _cpu_quota(key: str, value: str) -> list[Property]:
    # systemd.resource-control(5) CPUQuota=: a percentage of one CPU's time per second
    if value == "":
        return [("CPUQuotaPerSecUSec", "t", UINT64_MAX)]
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)%", value)
    if m is None or float(m.group(1)) <= 0:
        raise BadValueError(f"Invalid CPU quota '{value}', ignoring.")
    return [("CPUQuotaPerSecUSec", "t", round(float(m.group(1)) * 10000))]


def _usec(bus: str) -> Parse:
    def parse(key: str, value: str) -> list[Property]:
        if value == "":
            return [(bus, "t", UINT64_MAX)]
        try:
            return [(bus, "t", _checked(bus, parse_timespan(value)))]
        except ValueError:
            raise BadValueError(f"Invalid time span value '{value}', ignoring.") from None

    return parse


def _devices(bus: str, number: Callable[[str], int]) -> Parse:
    # "/dev/sda 1M" entries; the empty assignment resets the list (systemd.resource-control(5))
    def parse(key: str, value: str) -> list[Property]:
        if value == "":
            return [(bus, "a(st)", [])]
        path, _, rest = value.partition(" ")
        try:
            n = number(rest.strip())
        except ValueError:
            raise BadValueError(f"Invalid {key}= value '{rest.strip()}', ignoring.") from None
        return [(bus, "a(st)", _checked(bus, [(path, n)]))]

    return parse


def _bandwidth(text: str) -> int:
    return UINT64_MAX if text == "infinity" else size(text, 1000)


def _integer(text: str) -> int:
    if not text.isdigit():
        raise ValueError(text)
    return int(text)


def _iops(text: str) -> int:
    return UINT64_MAX if text == "infinity" else size(text, 1000)


def _device_allow(key: str, value: str) -> list[Property]:
    if value == "":
        return [(key, "a(ss)", [])]
    path, _, rights = value.partition(" ")
    return [(key, "a(ss)", _checked(key, [(path, rights.strip() or "rwm")]))]


def _cpuset(key: str, value: str) -> list[Property]:
    # systemd.resource-control(5) AllowedCPUs=: "0-3 5" or "0-3,5"; empty resets
    mask = bytearray()
    for item in re.split(r"[\s,]+", value.strip()):
        if not item:
            continue
        lo, _, hi = item.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise BadValueError(f"Failed to parse CPU set '{value}', ignoring.")
        for n in range(int(lo), int(hi or lo) + 1):
            while len(mask) <= n // 8:
                mask.append(0)
            mask[n // 8] |= 1 << (n % 8)
    return [(key, "ay", bytes(mask))]


def _delegate(key: str, value: str) -> list[Property]:
    # systemd.resource-control(5) Delegate=: a boolean or a list of controllers
    try:
        return [("Delegate", "b", boolean(value))]
    except BadValueError:
        return [("Delegate", "b", True), ("DelegateControllers", "as", value.split())]


def _signal_number(key: str, value: str) -> list[Property]:
    name = value if value.startswith("SIG") else f"SIG{value}"
    number = int(value) if value.isdigit() else getattr(_signal.Signals, name, None)
    if number is None:
        raise BadValueError(f"Failed to parse signal, ignoring: {value}")
    return [(key, "i", _checked(key, int(number)))]


_FIXED: dict[str, Parse] = {
    "MemoryLimit": _memory,
    "TasksMax": _tasks,
    "CPUQuota": _cpu_quota,
    "CPUQuotaPeriodSec": _usec("CPUQuotaPeriodUSec"),
    "TimeoutStopSec": _usec("TimeoutStopUSec"),
    "RuntimeMaxSec": _usec("RuntimeMaxUSec"),
    "RuntimeRandomizedExtraSec": _usec("RuntimeRandomizedExtraUSec"),
    "JobTimeoutSec": _usec("JobTimeoutUSec"),
    "JobRunningTimeoutSec": _usec("JobRunningTimeoutUSec"),
    "StartLimitIntervalSec": _usec("StartLimitIntervalUSec"),
    "IOReadBandwidthMax": _devices("IOReadBandwidthMax", _bandwidth),
    "IOWriteBandwidthMax": _devices("IOWriteBandwidthMax", _bandwidth),
    "IOReadIOPSMax": _devices("IOReadIOPSMax", _iops),
    "IOWriteIOPSMax": _devices("IOWriteIOPSMax", _iops),
    "BlockIOReadBandwidth": _devices("BlockIOReadBandwidth", _bandwidth),
    "BlockIOWriteBandwidth": _devices("BlockIOWriteBandwidth", _bandwidth),
    "IODeviceWeight": _devices("IODeviceWeight", _integer),
    "BlockIODeviceWeight": _devices("BlockIODeviceWeight", _integer),
    "IODeviceLatencyTargetSec": _devices("IODeviceLatencyTargetUSec", parse_timespan),
    "DeviceAllow": _device_allow,
    "Delegate": _delegate,
}
_MEMORY = ("MemoryMin", "MemoryLow", "MemoryHigh", "MemoryMax", "MemorySwapMax",
           "MemoryZSwapMax", "DefaultMemoryMin", "DefaultMemoryLow")  # fmt: skip
_WEIGHTS = ("CPUWeight", "StartupCPUWeight", "IOWeight", "StartupIOWeight", "CPUShares",
            "StartupCPUShares", "BlockIOWeight", "StartupBlockIOWeight")  # fmt: skip
_SIGNALS = ("KillSignal", "RestartKillSignal", "FinalKillSignal", "WatchdogSignal")
# settings of the bus table that a file does not set (runtime-only or set otherwise)
_NOT_IN_FILES = frozenset({"PIDs", "Controller", "AddRef", "Markers", "BPFProgram", "User",
                           "Group", "Slice", "SourcePath", "DelegateControllers"})  # fmt: skip


def _parser(key: str) -> Parse | None:
    if key in _FIXED:
        return _FIXED[key]
    if key in _MEMORY:
        return _memory
    if key in _WEIGHTS:
        return _weight
    if key in _SIGNALS:
        return _signal_number
    spec = PROPERTIES.get(key)
    if spec is None or key in _NOT_IN_FILES or key.endswith(("Scale", "USec")):
        return None
    if spec.signature == "b":
        return _bool
    if spec.signature == "s":
        return _text
    if spec.signature == "as":
        return _words
    if spec.signature == "ay":
        return _cpuset
    return None


def section_of(key: str) -> str:
    """The section a setting belongs in: systemd.unit(5) [Unit] or the type's own."""
    spec = PROPERTIES.get(_BUS_NAMES.get(key, key))
    return "Unit" if spec is not None and spec.types == frozenset(UnitType) else ""


def to_properties(unit_type: UnitType, section: str, key: str, value: str) -> list[Property]:
    """The bus assignments of one file line; BadValueError (systemd's log text) when ignored."""
    sections = SECTIONS.get(unit_type, ("Unit",))
    if section not in sections:
        raise BadValueError(f"Unknown section '{section}'. Ignoring.")
    parse = _parser(key)
    spec = PROPERTIES.get(_BUS_NAMES.get(key, key))
    types = spec.types if spec is not None else frozenset(UnitType)
    if types == _CGROUP_TYPES:
        types = types | {UnitType.SERVICE}
    wanted = "Unit" if section_of(key) == "Unit" else section
    if (
        unit_type is UnitType.SERVICE
        and section == "Service"
        and (parse is None or unit_type not in types)
    ):
        # systemd.service(5) settings (ExecStart=, Type=, ...): scopeshim runs no services
        # from files; what stands behind a handled service is its configuration
        raise BadValueError(
            f"Setting '{key}' in section [Service] is not used by scopeshim, ignoring."
        )
    if parse is None and spec is not None and unit_type in types:
        # a setting systemd knows whose file form scopeshim does not read (IPAddressAllow=,
        # ManagedOOMMemoryPressureLimit=, Slice= in a drop-in)
        raise BadValueError(f"Setting '{key}' in section [{section}] is not supported, ignoring.")
    if parse is None or unit_type not in types or wanted != section:
        raise BadValueError(f"Unknown key '{key}' in section [{section}], ignoring.")
    return parse(key, value)


# -- back to files: what `systemctl set-property` writes --------------------------------------

HEADER = (
    '# This is a drop-in unit file extension, created via "systemctl set-property"\n'
    "# or an equivalent operation. Do not edit.\n"
)
_FILE_KEYS = {"CPUQuotaPerSecUSec": "CPUQuota", "CPUQuotaPeriodUSec": "CPUQuotaPeriodSec",
              "TimeoutStopUSec": "TimeoutStopSec", "RuntimeMaxUSec": "RuntimeMaxSec",
              "IODeviceLatencyTargetUSec": "IODeviceLatencyTargetSec",
              "RuntimeRandomizedExtraUSec": "RuntimeRandomizedExtraSec"}  # fmt: skip
_BUS_NAMES = {v: k for k, v in _FILE_KEYS.items()}
# observed: the file of these is named after the file key, not the bus property
_FILE_NAMED_BY_KEY = frozenset({"CPUQuotaPerSecUSec", "CPUQuotaPeriodUSec"})


def _format_value(name: str, value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if name == "CPUQuotaPerSecUSec" and isinstance(value, int):
        if value == UINT64_MAX:
            return ""
        whole, rest = divmod(value, 10000)
        return f"{whole}%" if rest == 0 else f"{whole}.{rest // 100:02d}%"
    if name.endswith("USec") and isinstance(value, int):
        return format_timespan(value)
    if name in ("CPUWeight", "StartupCPUWeight") and value == 0:
        return "idle"
    if name.endswith("Scale") and isinstance(value, int):
        permyriad = round(value * 10000 / UINT32_MAX)
        if name == "TasksMaxScale":
            # systemd 252 wrote "TasksMax=2.0%" for 20% (a bug; fixtures/oracle/dropins/);
            # scopeshim writes the value given, in the same shape
            return f"{permyriad // 100}.{permyriad % 100 // 10}%"
        return f"{permyriad // 100}.{permyriad % 100:02d}%"
    if isinstance(value, int):
        return "infinity" if value == UINT64_MAX else str(value)
    if isinstance(value, bytes):
        from_mask = [8 * i + j for i, b in enumerate(value) for j in range(8) if b >> j & 1]
        return " ".join(_ranges(from_mask))
    return str(value)


def _ranges(ids: list[int]) -> list[str]:
    out: list[str] = []
    for n in ids:
        if out and out[-1].rsplit("-", 1)[-1] == str(n - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return out


def drop_in(unit_type: UnitType, name: str, value: object) -> tuple[str, str] | None:
    """(file name, contents) of the drop-in `systemctl set-property` writes for one bus
    property (50-NAME.conf), or None for a property no file can hold."""
    key = _FILE_KEYS.get(name, name.removesuffix("Scale"))
    if key not in ("CPUQuota", "CPUQuotaPeriodSec") and _parser(key) is None:
        return None
    section = "Unit" if section_of(key) == "Unit" else SECTIONS[unit_type][1]
    file_name = f"50-{_FILE_KEYS[name] if name in _FILE_NAMED_BY_KEY else name}.conf"
    if isinstance(value, list) and name != "Documentation" and section != "Unit":
        # a list is written whole: an empty assignment resets, then every entry; a blank
        # line closes it (observed)
        lines = [f"{key}="]
        for entry in value:
            if isinstance(entry, tuple | list):
                path, n = entry
                shown = format_timespan(n) if name.endswith("USec") else _format_value("", n)
                lines.append(f"{key}={path} {shown}")
            else:
                lines.append(f"{key}={entry}")
        body = "\n".join(lines) + "\n\n"
    elif isinstance(value, bytes):
        body = f"{key}=\n{key}={_format_value(name, value)}\n" if value else f"{key}=\n"
    elif isinstance(value, list):
        body = f"{key}={' '.join(str(v) for v in value)}\n"
    else:
        body = f"{key}={_format_value(name, value)}\n"
    return file_name, f"{HEADER}[{section}]\n{body}"
