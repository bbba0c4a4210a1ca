"""Unit resource settings -> cgroup attribute files, per hierarchy (systemd.resource-control(5)).

Pure functions: given a unit's settings (property name -> value as compat/properties.py stores
them) they return the attribute writes a backend performs, plus a note for each setting that
cannot be applied on that hierarchy. Totals (RAM, pid limit) and device numbers are
arguments, so everything here is testable without a kernel.
"""

from __future__ import annotations

import fnmatch
import math
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

UINT64_MAX = 2**64 - 1
UINT32_MAX = 2**32 - 1
USEC_PER_SEC = 1_000_000
# systemd.resource-control(5): CPUQuotaPeriodSec= defaults to 100ms
DEFAULT_CPU_QUOTA_PERIOD_USEC = 100_000
# cgroup-v2.rst: cpu.weight and io.weight default to 100; v1 cpu.shares defaults to 1024
CGROUP_WEIGHT_DEFAULT = 100
CPU_SHARES_DEFAULT, CPU_SHARES_MIN, CPU_SHARES_MAX = 1024, 2, 262144
BLKIO_WEIGHT_DEFAULT, BLKIO_WEIGHT_MIN, BLKIO_WEIGHT_MAX = 500, 10, 1000

DeviceNumber = Callable[[str], tuple[int, int] | None]


@dataclass(frozen=True, slots=True)
class Totals:
    """What *Scale percentages are taken of."""

    memory: int  # bytes of RAM (MemTotal)
    tasks: int  # the kernel's task limit (min of pid_max and threads-max)

    @staticmethod
    def of_this_machine() -> Totals:
        memory = UINT64_MAX
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemTotal:"):
                        memory = int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError):
            pass
        tasks = UINT64_MAX
        for p in ("/proc/sys/kernel/pid_max", "/proc/sys/kernel/threads-max"):
            try:
                with open(p) as f:
                    tasks = min(tasks, int(f.read()))
            except (OSError, ValueError):
                continue
        return Totals(memory, tasks)


@dataclass(slots=True)
class Plan:
    """Attribute writes in order, and settings that this hierarchy cannot honour."""

    writes: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def write(self, attribute: str, value: str) -> None:
        self.writes.append((attribute, value))


def block_device_number(path: str) -> tuple[int, int] | None:
    """major:minor of a block device node (IODeviceWeight= and friends name device nodes)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISBLK(st.st_mode):
        return None
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def cpu_set(mask: bytes) -> str:
    """An AllowedCPUs=/AllowedMemoryNodes= bitmask (byte i bit j = CPU 8i+j) as "0-3,5"."""
    ids = [8 * i + j for i, byte in enumerate(mask) for j in range(8) if byte >> j & 1]
    ranges: list[str] = []
    start = prev = None
    for n in ids:
        if start is None:
            start = prev = n
        elif prev is not None and n == prev + 1:
            prev = n
        else:
            ranges.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = n
    if start is not None:
        ranges.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ",".join(ranges)


def scaled(fraction: int, total: int) -> int:
    """A *Scale value (a fraction of UINT32_MAX) of a total."""
    return math.floor(total * fraction / UINT32_MAX)


def _limit(settings: Mapping[str, object], name: str, total: int) -> int | None:
    """The effective byte/count limit of NAME or NAMEScale, None when unset."""
    value = settings.get(name)
    if isinstance(value, int):
        return value
    fraction = settings.get(f"{name}Scale")
    if isinstance(fraction, int):
        return scaled(fraction, total)
    return None


def _max(value: int) -> str:
    return "max" if value == UINT64_MAX else str(value)


def cpu_quota(settings: Mapping[str, object]) -> tuple[int | None, int]:
    """(quota per period in µs or None for unlimited, period in µs)."""
    period = settings.get("CPUQuotaPeriodUSec")
    if not isinstance(period, int) or period == UINT64_MAX:
        period = DEFAULT_CPU_QUOTA_PERIOD_USEC
    # systemd.resource-control(5) CPUQuotaPeriodSec=: "clamped to the range supported by the
    # kernel, which is [1ms, 1000ms]" (cpu.max refuses anything else: seen in tests/vm)
    period = min(max(period, 1000), USEC_PER_SEC)
    per_sec = settings.get("CPUQuotaPerSecUSec")
    if not isinstance(per_sec, int) or per_sec == UINT64_MAX:
        return None, period
    # ibid.: "the period is adjusted up so that the quota interval is also at least 1ms"
    if per_sec > 0:
        period = min(max(period, -(-1000 * USEC_PER_SEC // per_sec)), USEC_PER_SEC)
    # the quota is per second; the kernel takes it per period, and never less than 1ms
    return max(per_sec * period // USEC_PER_SEC, 1000), period


def weight_to_shares(weight: int) -> int:
    """CPUWeight= on a v1 hierarchy, as systemd converts it (weight 100 = 1024 shares)."""
    shares = weight * CPU_SHARES_DEFAULT // CGROUP_WEIGHT_DEFAULT
    return min(max(shares, CPU_SHARES_MIN), CPU_SHARES_MAX)


def io_weight_to_blkio(weight: int) -> int:
    """IOWeight= on a v1 hierarchy (weight 100 = blkio weight 500)."""
    blkio = weight * BLKIO_WEIGHT_DEFAULT // CGROUP_WEIGHT_DEFAULT
    return min(max(blkio, BLKIO_WEIGHT_MIN), BLKIO_WEIGHT_MAX)


def _device_entries(
    settings: Mapping[str, object], name: str, device_number: DeviceNumber, plan: Plan
) -> list[tuple[str, int]]:
    entries = settings.get(name)
    out: list[tuple[str, int]] = []
    if not isinstance(entries, list):
        return out
    for path, value in entries:
        number = device_number(path)
        if number is None:
            plan.notes.append(f"{name}: {path} is not a block device, ignored")
            continue
        out.append((f"{number[0]}:{number[1]}", value))
    return out


# Settings that each plan function reads; anything else in this set that it cannot apply is
# reported in Plan.notes rather than silently dropped.
RESOURCE_SETTINGS = frozenset({
    "MemoryMin", "MemoryLow", "MemoryHigh", "MemoryMax", "MemorySwapMax", "MemoryZSwapMax",
    "MemoryLimit", "MemoryMinScale", "MemoryLowScale", "MemoryHighScale", "MemoryMaxScale",
    "MemorySwapMaxScale", "MemoryZSwapMaxScale", "MemoryLimitScale", "TasksMax",
    "TasksMaxScale", "CPUWeight", "CPUShares", "CPUQuotaPerSecUSec", "CPUQuotaPeriodUSec",
    "IOWeight", "IODeviceWeight", "IOReadBandwidthMax", "IOWriteBandwidthMax",
    "IOReadIOPSMax", "IOWriteIOPSMax", "BlockIOWeight", "BlockIODeviceWeight",
    "BlockIOReadBandwidth", "BlockIOWriteBandwidth", "AllowedCPUs", "AllowedMemoryNodes",
    "DevicePolicy", "DeviceAllow",
})  # fmt: skip


def unified_plan(
    settings: Mapping[str, object],
    totals: Totals,
    device_number: DeviceNumber = block_device_number,
) -> Plan:
    """The cgroup v2 attribute writes for a unit's settings (cgroup-v2.rst file names)."""
    plan = Plan()
    for name, attr in (("MemoryMin", "memory.min"), ("MemoryLow", "memory.low"),
                       ("MemoryHigh", "memory.high"), ("MemoryMax", "memory.max"),
                       ("MemorySwapMax", "memory.swap.max"),
                       ("MemoryZSwapMax", "memory.zswap.max")):  # fmt: skip
        value = _limit(settings, name, totals.memory)
        if value is not None:
            plan.write(attr, _max(value))
    if "MemoryLimit" in settings or "MemoryLimitScale" in settings:
        # systemd.resource-control(5): MemoryLimit= is the legacy form of MemoryMax=
        value = _limit(settings, "MemoryLimit", totals.memory)
        if value is not None and "MemoryMax" not in settings and "MemoryMaxScale" not in settings:
            plan.write("memory.max", _max(value))
    tasks = _limit(settings, "TasksMax", totals.tasks)
    if tasks is not None:
        plan.write("pids.max", _max(tasks))
    weight = settings.get("CPUWeight")
    if not isinstance(weight, int) and isinstance(settings.get("CPUShares"), int):
        # CPUShares= on the unified hierarchy: converted back to a weight
        shares = settings["CPUShares"]
        assert isinstance(shares, int)
        weight = max(1, min(10000, shares * CGROUP_WEIGHT_DEFAULT // CPU_SHARES_DEFAULT))
    if isinstance(weight, int):
        if weight == 0:
            plan.write("cpu.idle", "1")  # systemd.resource-control(5): CPUWeight=idle
        else:
            plan.write("cpu.weight", str(CGROUP_WEIGHT_DEFAULT if weight == UINT64_MAX else weight))
    if "CPUQuotaPerSecUSec" in settings or "CPUQuotaPeriodUSec" in settings:
        quota, period = cpu_quota(settings)
        plan.write("cpu.max", f"{'max' if quota is None else quota} {period}")
    io_weight = settings.get("IOWeight")
    if isinstance(io_weight, int):
        plan.write(
            "io.weight",
            f"default {CGROUP_WEIGHT_DEFAULT if io_weight == UINT64_MAX else io_weight}",
        )
    for dev, w in _device_entries(settings, "IODeviceWeight", device_number, plan):
        plan.write("io.weight", f"{dev} {w}")
    for name, key in (
        ("IOReadBandwidthMax", "rbps"),
        ("IOWriteBandwidthMax", "wbps"),
        ("IOReadIOPSMax", "riops"),
        ("IOWriteIOPSMax", "wiops"),
    ):
        for dev, limit in _device_entries(settings, name, device_number, plan):
            plan.write("io.max", f"{dev} {key}={_max(limit)}")
    for name, attr in (("AllowedCPUs", "cpuset.cpus"), ("AllowedMemoryNodes", "cpuset.mems")):
        mask = settings.get(name)
        if isinstance(mask, bytes):
            plan.write(attr, cpu_set(mask))
    for name in ("BlockIOWeight", "BlockIODeviceWeight", "BlockIOReadBandwidth",
                 "BlockIOWriteBandwidth"):  # fmt: skip
        if name in settings:
            plan.notes.append(f"{name}= is a cgroup v1 setting, use IO*= on cgroup v2")
    return plan


# -- cgroup v1 (legacy and hybrid hierarchies) ---------------------------------------------

# cgroup-v1/*.rst: the controllers a legacy_plan() may name, in the order they are planned
LEGACY_CONTROLLERS = ("memory", "cpu", "cpuacct", "cpuset", "blkio", "pids", "devices", "freezer")
# systemd.resource-control(5) DevicePolicy=closed: "standard pseudo devices" (systemd 252's
# static list in bpf-devices.c, /run/systemd/inaccessible/* included for InaccessiblePaths=)
CLOSED_DEVICES = (
    "/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty",
    "/dev/ptmx", "/run/systemd/inaccessible/chr", "/run/systemd/inaccessible/blk",
)  # fmt: skip
_V1_UNAVAILABLE_MEMORY = ("MemoryMin", "MemoryLow", "MemoryHigh", "MemorySwapMax", "MemoryZSwapMax")
_IO_SETTINGS = (
    "IOWeight", "IODeviceWeight", "IOReadBandwidthMax", "IOWriteBandwidthMax", "IOReadIOPSMax",
    "IOWriteIOPSMax", "IODeviceLatencyTargetUSec",
)  # fmt: skip
_BLOCKIO_SETTINGS = (
    "BlockIOWeight", "BlockIODeviceWeight", "BlockIOReadBandwidth", "BlockIOWriteBandwidth",
)  # fmt: skip

DeviceMajors = Callable[[str, str], list[int]]


def char_device_number(path: str) -> tuple[int, int] | None:
    """major:minor of a character device node (DeviceAllow=/dev/null and friends)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISCHR(st.st_mode):
        return None
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def parse_proc_devices(text: str) -> dict[str, list[tuple[int, str]]]:
    """/proc/devices (proc(5)) as {"c": [(major, name), ...], "b": [...]}."""
    out: dict[str, list[tuple[int, str]]] = {"c": [], "b": []}
    section: str | None = None
    for line in text.splitlines():
        if line.startswith("Character devices:"):
            section = "c"
        elif line.startswith("Block devices:"):
            section = "b"
        elif section is not None:
            major, _, name = line.strip().partition(" ")
            if major.isdigit() and name:
                out[section].append((int(major), name.strip()))
    return out


def proc_device_majors(kind: str, pattern: str) -> list[int]:
    """The majors of /proc/devices entries of KIND ("c" or "b") whose name matches the glob
    PATTERN (DeviceAllow=char-pts, block-loop, char-tty*, as systemd's fnmatch() does)."""
    try:
        with open("/proc/devices") as f:
            table = parse_proc_devices(f.read())
    except OSError:
        return []
    return sorted({m for m, name in table.get(kind, []) if fnmatch.fnmatchcase(name, pattern)})


def _present(settings: Mapping[str, object], *names: str) -> list[str]:
    return [n for n in names if n in settings]


def _v1_bytes(value: int) -> str:
    # cgroup-v1/memory.rst: "-1" is unlimited
    return "-1" if value == UINT64_MAX else str(value)


def _legacy_memory(settings: Mapping[str, object], totals: Totals) -> Plan | None:
    names = [n for n in RESOURCE_SETTINGS if n.startswith("Memory") and n in settings]
    if not names and settings.get("MemoryAccounting") is not True:
        return None
    plan = Plan()
    # systemd.resource-control(5): MemoryMax= is applied as MemoryLimit= on cgroup v1
    limit = _limit(settings, "MemoryMax", totals.memory)
    if limit is None:
        limit = _limit(settings, "MemoryLimit", totals.memory)
    if limit is not None:
        plan.write("memory.limit_in_bytes", _v1_bytes(limit))
    for name in _V1_UNAVAILABLE_MEMORY:
        # systemd.resource-control(5): these exist on the unified hierarchy only
        for given in _present(settings, name, f"{name}Scale"):
            plan.notes.append(f"{given}= is not available on cgroup v1, ignored")
    return plan


def _legacy_cpu(settings: Mapping[str, object]) -> Plan | None:
    if not _present(settings, "CPUWeight", "CPUShares", "CPUQuotaPerSecUSec", "CPUQuotaPeriodUSec"):
        return None
    plan = Plan()
    weight, shares = settings.get("CPUWeight"), settings.get("CPUShares")
    if "CPUWeight" in settings or "CPUShares" in settings:
        # systemd 252 cgroup.c: CPUWeight= (converted) wins over CPUShares=; UINT64_MAX is unset
        if isinstance(weight, int) and weight != UINT64_MAX:
            value = weight_to_shares(weight)
            if weight == 0:
                plan.notes.append(f"CPUWeight=idle has no cgroup v1 form, cpu.shares={value}")
        elif isinstance(shares, int) and shares != UINT64_MAX:
            value = min(max(shares, CPU_SHARES_MIN), CPU_SHARES_MAX)
        else:
            value = CPU_SHARES_DEFAULT
        plan.write("cpu.shares", str(value))
    if _present(settings, "CPUQuotaPerSecUSec", "CPUQuotaPeriodUSec"):
        adjusted = dict(settings)
        period = settings.get("CPUQuotaPeriodUSec")
        if isinstance(period, int) and period != UINT64_MAX:
            # systemd.resource-control(5) CPUQuotaPeriodSec=: kept within 1ms..1000ms
            clamped = min(max(period, 1000), USEC_PER_SEC)
            if clamped != period:
                plan.notes.append(f"CPUQuotaPeriodUSec={period} clamped to {clamped}")
            adjusted["CPUQuotaPeriodUSec"] = clamped
        quota, period = cpu_quota(adjusted)
        # cgroup-v1 sched-bwc.rst: period first; a quota of -1 is unlimited
        plan.write("cpu.cfs_period_us", str(period))
        plan.write("cpu.cfs_quota_us", "-1" if quota is None else str(quota))
    return plan


def _legacy_blkio(settings: Mapping[str, object], device_number: DeviceNumber) -> Plan | None:
    io, blockio = _present(settings, *_IO_SETTINGS), _present(settings, *_BLOCKIO_SETTINGS)
    accounting = settings.get("IOAccounting") is True or settings.get("BlockIOAccounting") is True
    if not io and not blockio and not accounting:
        return None
    plan = Plan()

    def throttle(name: str, attribute: str) -> None:
        # cgroup-v1/blkio-controller.rst: "MAJ:MIN VALUE"; 0 removes the limit
        for dev, limit in _device_entries(settings, name, device_number, plan):
            plan.write(attribute, f"{dev} {0 if limit == UINT64_MAX else limit}")

    if io:
        # systemd 252 cgroup.c: IO*= settings win over BlockIO*= ones, converted for blkio
        weight = settings.get("IOWeight")
        if isinstance(weight, int):
            blkio = BLKIO_WEIGHT_DEFAULT if weight == UINT64_MAX else io_weight_to_blkio(weight)
            plan.write("blkio.weight", str(blkio))
        for dev, w in _device_entries(settings, "IODeviceWeight", device_number, plan):
            plan.write("blkio.weight_device", f"{dev} {io_weight_to_blkio(w)}")
        throttle("IOReadBandwidthMax", "blkio.throttle.read_bps_device")
        throttle("IOWriteBandwidthMax", "blkio.throttle.write_bps_device")
        throttle("IOReadIOPSMax", "blkio.throttle.read_iops_device")
        throttle("IOWriteIOPSMax", "blkio.throttle.write_iops_device")
        if "IODeviceLatencyTargetUSec" in settings:
            plan.notes.append("IODeviceLatencyTargetUSec= is not available on cgroup v1, ignored")
        for name in blockio:
            plan.notes.append(f"{name}= ignored: IO*= settings take precedence")
        return plan
    weight = settings.get("BlockIOWeight")
    if isinstance(weight, int):
        blkio = BLKIO_WEIGHT_DEFAULT if weight == UINT64_MAX else weight
        plan.write("blkio.weight", str(min(max(blkio, BLKIO_WEIGHT_MIN), BLKIO_WEIGHT_MAX)))
    for dev, w in _device_entries(settings, "BlockIODeviceWeight", device_number, plan):
        plan.write("blkio.weight_device", f"{dev} {w}")
    throttle("BlockIOReadBandwidth", "blkio.throttle.read_bps_device")
    throttle("BlockIOWriteBandwidth", "blkio.throttle.write_bps_device")
    return plan


def _legacy_cpuset(settings: Mapping[str, object]) -> Plan | None:
    if not _present(settings, "AllowedCPUs", "AllowedMemoryNodes"):
        return None
    plan = Plan()
    # cgroup-v1/cpusets.rst; an empty mask is left to the backend, which copies the parent's
    # (a v1 cpuset with no cpus or mems cannot hold a process)
    for name, attribute in (("AllowedCPUs", "cpuset.cpus"), ("AllowedMemoryNodes", "cpuset.mems")):
        mask = settings.get(name)
        if isinstance(mask, bytes) and cpu_set(mask):
            plan.write(attribute, cpu_set(mask))
    return plan


def _device_rule(
    path: str,
    access: str,
    device_number: DeviceNumber,
    char_device_number: DeviceNumber,
    device_majors: DeviceMajors,
) -> list[str] | None:
    """devices.allow lines for one DeviceAllow= entry, None when it names no device."""
    # cgroup-v1/devices.rst: "TYPE MAJOR:MINOR ACCESS", * for any minor
    for prefix, kind in (("char-", "c"), ("block-", "b")):
        if path.startswith(prefix):
            majors = device_majors(kind, path[len(prefix) :])
            return [f"{kind} {major}:* {access}" for major in majors] or None
    number = char_device_number(path)
    if number is not None:
        return [f"c {number[0]}:{number[1]} {access}"]
    number = device_number(path)
    if number is not None:
        return [f"b {number[0]}:{number[1]} {access}"]
    return None


def _legacy_devices(
    settings: Mapping[str, object],
    device_number: DeviceNumber,
    char_device_number: DeviceNumber,
    device_majors: DeviceMajors,
) -> Plan | None:
    if not _present(settings, "DevicePolicy", "DeviceAllow"):
        return None
    plan = Plan()
    policy = str(settings.get("DevicePolicy") or "auto")
    allow = settings.get("DeviceAllow")
    entries = [(str(p), str(a)) for p, a in allow] if isinstance(allow, list) else []
    if policy == "auto" and not entries:
        # systemd.resource-control(5): auto without DeviceAllow= allows every device
        plan.write("devices.allow", "a")
        return plan
    plan.write("devices.deny", "a")

    def rule(path: str, access: str) -> list[str] | None:
        return _device_rule(path, access, device_number, char_device_number, device_majors)

    if policy in ("closed", "auto"):
        # systemd.resource-control(5): closed (and auto with DeviceAllow=) adds the standard
        # pseudo devices, and read/write on /dev/pts/* (systemd 252 bpf-devices.c)
        for path in CLOSED_DEVICES:
            for line in rule(path, "rwm") or []:
                plan.write("devices.allow", line)
        for line in rule("char-pts", "rw") or []:
            plan.write("devices.allow", line)
    for path, access in entries:
        # systemd.resource-control(5) DeviceAllow=: access is a combination of r, w, m
        normalised = "".join(c for c in "rwm" if c in access) or "rwm"
        lines = rule(path, normalised)
        if lines is None:
            plan.notes.append(f"DeviceAllow: {path} names no device here, ignored")
        for line in lines or []:
            plan.write("devices.allow", line)
    return plan


def legacy_plan(
    settings: Mapping[str, object],
    totals: Totals,
    device_number: DeviceNumber = block_device_number,
    char_device_number: DeviceNumber = char_device_number,
    device_majors: DeviceMajors = proc_device_majors,
) -> dict[str, Plan]:
    """The cgroup v1 attribute writes for a unit's settings, per controller (cgroup-v1/*.rst).

    A controller is a key when the unit needs it (a setting for it is present, or its
    *Accounting= is on), as systemd's cgroup_context_get_mask() decides; the backend
    realises the unit's cgroup in exactly those hierarchies. Values set to their
    "infinity"/"unset" form write the kernel's unlimited value, so runtime changes undo
    earlier limits. Settings cgroup v1 cannot express are notes of their controller's plan.
    """
    plans: dict[str, Plan | None] = {
        "memory": _legacy_memory(settings, totals),
        "cpu": _legacy_cpu(settings),
        # systemd.resource-control(5) CPUAccounting=: the cpuacct controller on cgroup v1
        "cpuacct": Plan() if settings.get("CPUAccounting") is True else None,
        "cpuset": _legacy_cpuset(settings),
        "blkio": _legacy_blkio(settings, device_number),
        "pids": None,
        "devices": _legacy_devices(settings, device_number, char_device_number, device_majors),
    }
    tasks = _limit(settings, "TasksMax", totals.tasks)
    if tasks is not None or settings.get("TasksAccounting") is True:
        pids = plans["pids"] = Plan()
        if tasks is not None:
            pids.write("pids.max", _max(tasks))  # cgroup-v1/pids.rst: "max" is unlimited
    return {name: plan for name, plan in plans.items() if plan is not None}
