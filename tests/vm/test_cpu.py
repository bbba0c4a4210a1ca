"""CPU limits the kernel enforces: CPUQuota= (cpu.max, throttling counted in cpu.stat),
CPUWeight= (cpu.weight, the share of a contended CPU), AllowedCPUs= (cpuset.cpus, the
processes' affinity), from StartTransientUnit and from SetUnitProperties (cgroup-v2.rst)."""

from __future__ import annotations

from typing import Any

from tests.vm import harness
from tests.vm.conftest import events, result


def share(worker: dict[str, Any]) -> float:
    """The CPU a burning worker got, as a fraction of the time it burned: CPUQuota=20% is an
    upper bound the kernel sets, whatever the machine's speed (no wall-clock threshold)."""
    assert worker["ok"], worker
    return float(worker["cpu_seconds"]) / (worker["ended"] - worker["started"])


def test_cpu_quota_from_start_throttles(vm: harness.Boot) -> None:
    r = result(vm, "cpu_quota_start")
    # CPUQuota=20%: 20 ms in every 100 ms period (systemd.resource-control(5) CPUQuota=)
    assert r["before"]["cpu.max"] == "20000 100000"
    assert share(r["worker"]) <= 0.3  # at most 20% of the time it burned (a period's slack)
    stat = events(r["after"]["cpu.stat"])
    assert stat["nr_throttled"] > 0
    assert stat["throttled_usec"] > 0


def test_cpu_quota_from_set_unit_properties_on_a_running_scope(vm: harness.Boot) -> None:
    r = result(vm, "cpu_quota_set")
    assert r["before"]["cpu.max"] == "max 100000"
    assert r["set"]["cpu.max"] == "20000 100000"
    assert share(r["worker"]) <= 0.3
    set_, after = events(r["set"]["cpu.stat"]), events(r["after"]["cpu.stat"])
    assert after["nr_throttled"] > set_["nr_throttled"]


def test_cpu_weight_shares_a_contended_cpu(vm: harness.Boot) -> None:
    r = result(vm, "cpu_weight")
    assert r["jobs"] == ["done", "done"]
    assert r["weights"] == ["100", "900"]
    light, heavy = r["workers"]
    # both busy on CPU 1 over the same span (CLOCK_MONOTONIC is the guest's, shared)
    assert light["started"] < heavy["ended"] and heavy["started"] < light["ended"], r
    # the kernel splits it 900:100 (about 9x seen); anything near 1:1 fails
    assert heavy["cpu_seconds"] > 3 * light["cpu_seconds"], r


def test_allowed_cpus_from_start_pins_the_processes(vm: harness.Boot) -> None:
    r = result(vm, "allowed_cpus_start")
    assert r["before"] == {"cpuset.cpus": "1", "cpuset.cpus.effective": "1"}
    assert r["worker"] == {"ok": True, "cpus": [1]}


def test_allowed_cpus_from_set_unit_properties_moves_running_processes(
    vm: harness.Boot,
) -> None:
    r = result(vm, "allowed_cpus_set")
    assert r["before_affinity"] == [0, 1]
    assert r["set"] == {"cpuset.cpus": "0", "cpuset.cpus.effective": "0"}
    assert r["worker"] == {"ok": True, "cpus": [0]}
