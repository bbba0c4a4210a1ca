"""Unit resource settings -> cgroup attribute files, per hierarchy (systemd.resource-control(5)).

Pure functions: given a unit's settings (property name -> value as compat/properties.py stores
them) they return the attribute writes a backend performs, plus a note for each setting that
cannot be applied on that hierarchy. Totals (RAM, pid limit) and device numbers are
arguments, so everything here is testable without a kernel.
"""

from __future__ import annotations

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
    per_sec = settings.get("CPUQuotaPerSecUSec")
    if not isinstance(per_sec, int) or per_sec == UINT64_MAX:
        return None, period
    # systemd.resource-control(5): the quota is per second; the kernel takes it per period,
    # and never less than 1ms
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
