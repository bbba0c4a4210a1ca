"""What the kernel wants that a cgroupfs-shaped directory does not: fixed in
backends/cgroup2.py (Cgroup2Backend._kernel_order), pinned here on the kernel."""

from __future__ import annotations

from tests.vm import harness
from tests.vm.conftest import result

MIB = 1 << 20


def test_a_weight_after_cpu_weight_idle_clears_cpu_idle_first(vm: harness.Boot) -> None:
    r = result(vm, "cpu_weight_after_idle")
    assert r["job"] == "done"
    assert r["idle"]["cpu.idle"] == "1"  # systemd.resource-control(5) CPUWeight=idle
    # the kernel refuses cpu.weight (EINVAL) while cpu.idle is 1
    assert r["weight"] == {"cpu.idle": "0", "cpu.weight": "200"}


def test_an_empty_io_bandwidth_assignment_lifts_the_kernels_limit(vm: harness.Boot) -> None:
    r = result(vm, "io_bandwidth_reset")
    dev = r["limited"].split()[0]
    assert r["limited"] == f"{dev} rbps={MIB} wbps={MIB} riops=max wiops=max"
    assert r["write_reset"] == f"{dev} rbps={MIB} wbps=max riops=max wiops=max"
    assert r["reset"] == ""  # io.max lists no device whose limits are all max


def test_the_cpu_quota_period_is_kept_where_the_kernel_takes_it(vm: harness.Boot) -> None:
    r = result(vm, "cpu_quota_period_bounds")
    assert r["kernel_2s"] == "EINVAL"  # cpu.max refuses a period over 1 s
    # systemd.resource-control(5) CPUQuotaPeriodSec=: clamped to [1ms, 1000ms] ...
    assert r["period2s.scope"] == {"job": "done", "cpu.max": "200000 1000000"}
    # ... and adjusted up so that the quota is at least 1ms: 0.5% stays 0.5%, not 1%
    assert r["halfpct.scope"] == {"job": "done", "cpu.max": "1000 200000"}
