"""Resource settings -> cgroup v2 files, with systemd.resource-control(5)'s semantics."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from backends.resources import (
    UINT64_MAX,
    Totals,
    cpu_quota,
    cpu_set,
    io_weight_to_blkio,
    scaled,
    unified_plan,
    weight_to_shares,
)

TOTALS = Totals(memory=8 << 30, tasks=4_194_304)


def writes(settings, device=lambda p: (8, 0) if p == "/dev/sda" else None):
    return unified_plan(settings, TOTALS, device).writes


def test_memory_limits_and_infinity():
    assert writes({"MemoryMax": 1 << 30, "MemoryHigh": UINT64_MAX, "MemoryLow": 0}) == [
        ("memory.low", "0"),
        ("memory.high", "max"),
        ("memory.max", "1073741824"),
    ]
    assert writes({"MemorySwapMax": 0}) == [("memory.swap.max", "0")]


def test_scale_is_a_fraction_of_ram():
    # MemoryMax=50% on the bus is MemoryMaxScale=UINT32_MAX/2
    ((attr, value),) = writes({"MemoryMaxScale": (2**32 - 1) // 2})
    assert attr == "memory.max" and abs(int(value) - (4 << 30)) < 4096


def test_memory_limit_is_the_legacy_memory_max():
    assert writes({"MemoryLimit": 4096}) == [("memory.max", "4096")]
    assert writes({"MemoryLimit": 4096, "MemoryMax": 8192}) == [("memory.max", "8192")]


def test_tasks():
    assert writes({"TasksMax": UINT64_MAX}) == [("pids.max", "max")]
    assert writes({"TasksMax": 512}) == [("pids.max", "512")]
    assert writes({"TasksMaxScale": 2**32 - 1}) == [("pids.max", "4194304")]


def test_cpu_weight_idle_and_default():
    assert writes({"CPUWeight": 250}) == [("cpu.weight", "250")]
    assert writes({"CPUWeight": UINT64_MAX}) == [("cpu.weight", "100")]
    assert writes({"CPUWeight": 0}) == [("cpu.idle", "1")]
    assert writes({"CPUShares": 2048}) == [("cpu.weight", "200")]


def test_cpu_quota():
    # CPUQuota=50% is 500ms per second: 50ms per 100ms period
    assert writes({"CPUQuotaPerSecUSec": 500_000}) == [("cpu.max", "50000 100000")]
    assert writes({"CPUQuotaPerSecUSec": 200_000, "CPUQuotaPeriodUSec": 10_000}) == [
        ("cpu.max", "2000 10000")
    ]
    assert writes({"CPUQuotaPerSecUSec": UINT64_MAX}) == [("cpu.max", "max 100000")]
    # systemd.resource-control(5) CPUQuotaPeriodSec=: the period is clamped to [1ms, 1000ms]
    # and adjusted up so that the quota per period is at least 1ms
    assert cpu_quota({"CPUQuotaPerSecUSec": 5_000}) == (1000, 200_000)  # 0.5%, not 1%
    assert cpu_quota({"CPUQuotaPerSecUSec": 3_000}) == (1000, 333_334)  # rounded up, not 999
    assert cpu_quota({"CPUQuotaPerSecUSec": 1}) == (1000, 1_000_000)  # never below 1ms
    assert cpu_quota({"CPUQuotaPerSecUSec": 200_000, "CPUQuotaPeriodUSec": 2_000_000}) == (
        200_000,
        1_000_000,
    )
    assert cpu_quota({"CPUQuotaPerSecUSec": 200_000, "CPUQuotaPeriodUSec": 500}) == (1000, 5000)
    assert cpu_quota({"CPUQuotaPeriodUSec": 5_000_000}) == (None, 1_000_000)


def test_io():
    assert writes(
        {
            "IOWeight": 300,
            "IODeviceWeight": [("/dev/sda", 50)],
            "IOReadBandwidthMax": [("/dev/sda", 1000)],
            "IOWriteIOPSMax": [("/dev/sda", UINT64_MAX)],
        }
    ) == [
        ("io.weight", "default 300"),
        ("io.weight", "8:0 50"),
        ("io.max", "8:0 rbps=1000"),
        ("io.max", "8:0 wiops=max"),
    ]
    plan = unified_plan(
        {"IODeviceWeight": [("/nope", 5)], "BlockIOWeight": 100}, TOTALS, lambda p: None
    )
    assert plan.writes == []
    assert len(plan.notes) == 2


def test_cpusets():
    assert cpu_set(b"\x0f") == "0-3"
    assert cpu_set(b"\x05\x01") == "0,2,8"
    assert cpu_set(b"") == ""
    assert writes({"AllowedCPUs": b"\x03", "AllowedMemoryNodes": b"\x01"}) == [
        ("cpuset.cpus", "0-1"),
        ("cpuset.mems", "0"),
    ]


@given(st.sets(st.integers(0, 127)))
def test_cpu_set_round_trip(cpus):
    mask = bytearray(16)
    for c in cpus:
        mask[c // 8] |= 1 << (c % 8)
    text = cpu_set(bytes(mask))
    back = set()
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        back |= set(range(int(lo), int(hi or lo) + 1))
    assert back == cpus


def test_conversions_for_v1():
    assert weight_to_shares(100) == 1024
    assert weight_to_shares(1) == 10
    assert weight_to_shares(10000) == 102400
    assert io_weight_to_blkio(100) == 500
    assert io_weight_to_blkio(1) == 10
    assert io_weight_to_blkio(10000) == 1000
    assert scaled(2**32 - 1, 1000) == 1000
