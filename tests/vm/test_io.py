"""IO bandwidth limits the kernel enforces on a virtio disk: IOReadBandwidthMax=,
IOWriteBandwidthMax= (io.max rbps/wbps, cgroup-v2.rst "IO Interface Files").

The time asserted is a lower bound the limit itself sets (4 MiB at 1 MiB/s cannot take less
than about 3 s, whatever the machine's speed), not a performance threshold."""

from __future__ import annotations

from typing import Any

from tests.vm import harness
from tests.vm.conftest import result

MIB = 1 << 20


def io_line(r: dict[str, Any]) -> str:
    major, minor = r["device"] >> 8, r["device"] & 0xFF
    return f"{major}:{minor}"


def test_io_write_bandwidth_max_holds_direct_writes(vm: harness.Boot) -> None:
    r = result(vm, "io_write_bandwidth")
    limited = r["limited"]
    assert limited["before"]["io.max"] == f"{io_line(r)} rbps=max wbps={MIB} riops=max wiops=max"
    assert limited["worker"]["bytes"] == 4 * MIB
    assert limited["worker"]["seconds"] >= 2.0, (limited, r["free"]["worker"])
    # the writes were charged to the scope, on that device
    assert f"{io_line(r)} rbytes=0 wbytes={4 * MIB} " in limited["after"]["io.stat"]


def test_io_read_bandwidth_max_holds_direct_reads(vm: harness.Boot) -> None:
    r = result(vm, "io_read_bandwidth")
    limited = r["limited"]
    assert limited["before"]["io.max"] == f"{io_line(r)} rbps={MIB} wbps=max riops=max wiops=max"
    assert limited["worker"]["bytes"] == 4 * MIB
    assert limited["worker"]["seconds"] >= 2.0, (limited, r["free"]["worker"])
    assert f"{io_line(r)} rbytes={4 * MIB} wbytes=0 " in limited["after"]["io.stat"]


def test_io_write_bandwidth_max_from_set_unit_properties(vm: harness.Boot) -> None:
    r = result(vm, "io_write_bandwidth_set")
    assert f"wbps={MIB}" in r["set"]["io.max"]
    assert r["worker"]["bytes"] == 4 * MIB
    assert r["worker"]["seconds"] >= 2.0, r


def test_io_write_iops_max_holds_direct_writes(vm: harness.Boot) -> None:
    r = result(vm, "io_write_iops")
    limited = r["limited"]
    assert limited["before"]["io.max"] == f"{io_line(r)} rbps=max wbps=max riops=max wiops=10"
    assert limited["worker"]["bytes"] == 30 * 4096
    # 30 writes at 10 IOPS: at least about 2 s whatever the machine (a bound the limit sets)
    assert limited["worker"]["seconds"] >= 2.0, limited
    assert (
        f"{io_line(r)} rbytes=0 wbytes={30 * 4096} rios=0 wios=30 " in limited["after"]["io.stat"]
    )
