"""The seeds' acceptance test on the kernel: "A container must be able to create nested
containers under itself, with stricter memory and cpu limits than its own."

A Delegate=yes User=nobody scope with MemoryMax=128M and CPUQuota=50%; uid 65534, its only
process, moves itself to a leaf, enables memory/cpu/pids below the scope, and nests a child
with 64M and 20% CPU that the kernel enforces. It cannot raise the scope's own limits, nor
leave the scope (cgroup-v2.rst "Delegation Containment"); a child that sets itself no limit
is still held by the scope's.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.vm import harness
from tests.vm.conftest import result

MIB = 1 << 20


@pytest.fixture
def delegation(vm: harness.Boot) -> dict[str, Any]:
    return result(vm, "delegation")


def test_the_scope_is_delegated_with_its_limits(delegation: dict[str, Any]) -> None:
    assert delegation["job"] == "done"
    assert delegation["owner"] == 65534
    assert delegation["files"]["memory.max"] == str(128 * MIB)
    assert delegation["files"]["cpu.max"] == "50000 100000"
    # Delegate=yes: every controller is available to the delegatee
    assert {"memory", "cpu", "pids"} <= set(delegation["files"]["cgroup.controllers"].split())


def test_the_delegatee_nests_a_stricter_child(delegation: dict[str, Any]) -> None:
    d = delegation["delegatee"]
    assert d["uid"] == 65534
    steps = ("mkdir_leaf", "move_self", "enable", "mkdir_child", "child_memory", "child_cpu")
    assert {s: d[s] for s in steps} == dict.fromkeys(steps, "ok")
    assert d["child_files"] == {"memory.max": str(64 * MIB), "cpu.max": "20000 100000"}
    assert d["cgroup"] == "0::/system.slice/deleg.scope/leaf"


def test_the_childs_memory_limit_is_enforced(delegation: dict[str, Any]) -> None:
    d = delegation["delegatee"]
    assert d["child_alloc"] == {"exit": -9, "out": None}  # 200 MiB in 64M: OOM-killed
    assert d["child_memory_events"]["oom_kill"] == 1
    assert d["child_small"] == {"exit": 0, "out": {"allocated_mib": 16}}  # under it: fine


def test_the_childs_cpu_limit_is_enforced(delegation: dict[str, Any]) -> None:
    d = delegation["delegatee"]
    burn = d["child_burn"]
    assert burn["exit"] == 0
    # it got at most the child's 20% of the time it burned (not the scope's 50%)
    assert burn["out"]["cpu_seconds"] <= 0.3 * (burn["out"]["ended"] - burn["out"]["started"])
    assert d["child_cpu_stat"]["nr_throttled"] > 0
    assert d["child_cpu_stat"]["throttled_usec"] > 0


def test_a_child_without_a_limit_is_held_by_the_scopes(delegation: dict[str, Any]) -> None:
    d = delegation["delegatee"]
    assert d["mkdir_greedy"] == d["greedy_memory"] == "ok"
    assert d["greedy_alloc"] == {"exit": -9, "out": None}  # 200 MiB in the scope's 128M
    assert d["scope_memory_events"]["oom_kill"] >= 1


def test_no_raise_no_escape(delegation: dict[str, Any]) -> None:
    d = delegation["delegatee"]
    for step in ("raise_memory", "raise_cpu", "raise_pids"):
        assert d[step] == "EACCES", step
    assert d["escape"] == d["escape_root"] == d["sibling"] == "EACCES"
    assert d["scope_files"] == {"memory.max": str(128 * MIB), "cpu.max": "50000 100000"}
