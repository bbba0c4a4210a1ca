"""Memory limits the kernel enforces: MemoryMax=, MemoryHigh=, MemorySwapMax= (cgroup-v2.rst
"Memory Interface Files"), from StartTransientUnit and from SetUnitProperties."""

from __future__ import annotations

from tests.vm import harness
from tests.vm.conftest import events, result

MIB = 1 << 20


def test_memory_max_from_start_oom_kills_a_200_mib_allocation(vm: harness.Boot) -> None:
    r = result(vm, "memory_max_start")
    assert r["job"] == "done"
    assert r["before"]["memory.max"] == str(64 * MIB)
    # the worker died of SIGKILL, by the kernel's OOM killer inside the scope; the scope lives
    assert r["worker"] == {"ok": False, "exit": -9, "signal": "SIGKILL"}
    assert events(r["after"]["memory.events"])["oom_kill"] == 1


def test_memory_max_from_set_unit_properties_on_a_running_scope(vm: harness.Boot) -> None:
    r = result(vm, "memory_max_set")
    assert r["before"]["memory.max"] == "max"
    assert r["set"]["memory.max"] == str(64 * MIB)
    assert r["worker"]["signal"] == "SIGKILL"
    assert events(r["after"]["memory.events"])["oom_kill"] == 1


def test_memory_high_reclaims_over_the_limit_without_killing(vm: harness.Boot) -> None:
    r = result(vm, "memory_high")
    assert r["before"]["memory.high"] == str(16 * MIB)
    assert r["before"]["memory.max"] == "max"
    # 48 MiB of page cache read through a 16 MiB memory.high: reclaimed as it went
    assert r["worker"] == {"ok": True, "read_mib": 48}
    after = events(r["after"]["memory.events"])
    assert after["high"] > 0
    assert after["oom_kill"] == 0


def test_memory_swap_max_decides_whether_swap_saves_the_process(vm: harness.Boot) -> None:
    r = result(vm, "memory_swap_max")
    assert r["swapon"] == 0, r["swapon_err"]
    none, some = r["none"], r["some"]
    assert none["before"]["memory.swap.max"] == "0"
    assert some["before"]["memory.swap.max"] == str(128 * MIB)
    # 64 MiB in MemoryMax=24M: no swap allowed -> killed; 128M of swap allowed -> it lives,
    # with part of it swapped out
    assert none["worker"]["signal"] == "SIGKILL"
    assert events(none["after"]["memory.events"])["oom_kill"] == 1
    assert some["worker"] == {"ok": True, "allocated_mib": 64}
    assert int(some["after"]["memory.swap.current"]) > 0
    assert events(some["after"]["memory.events"])["oom_kill"] == 0


def test_a_slices_memory_max_holds_the_scopes_below_it(vm: harness.Boot) -> None:
    # the shape of logind's user-UID.slice: the limit is the slice's, the scope sets none
    r = result(vm, "slice_memory_max")
    assert r["slice_job"] == "done"
    assert r["slice_max"] == str(64 * MIB)
    scope = r["scope"]
    assert scope["job"] == "done"
    # the scope sets no memory limit (its memory.* files exist only where a unit below the
    # slice wants the controller): the kill is the slice's
    assert scope["worker"]["signal"] == "SIGKILL"
    assert events(r["slice_events"])["oom_kill"] == 1
    assert r["slice_stop"] == "done"


def test_memory_max_lowered_under_what_a_running_scope_holds(vm: harness.Boot) -> None:
    r = result(vm, "memory_max_lowered_under_usage")
    assert r["worker"] == {"ok": True, "holding_mib": 100}
    assert r["held"] > 100 * MIB
    assert r["set"]["memory.max"] == str(32 * MIB)
    # the write itself OOM-killed the holder (the largest task first; memory.max's write
    # loop, cgroup-v2.rst); the sleeper, exempt from the OOM killer, keeps the scope (and its
    # files) there. Before the fix (no memory controller until the limit came) nothing was
    # killed at all.
    assert r["exit"] == -9
    assert r["sleeper"] is None
    assert events(r["set"]["memory.events"])["oom_kill"] >= 1
