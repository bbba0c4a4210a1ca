"""DevicePolicy=/DeviceAllow= on the real kernel's cgroup2: a BPF device filter per unit
(backends/bpfdev.py), checked from inside the scope (scenario_devices.py)."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from tests.e2e.conftest import HERE, run_in_sandbox

LOOP_CONTROL, LOOP0 = "/run/devtest/loop-control", "/run/devtest/loop0"


@pytest.fixture(scope="module")
def events() -> dict[str, dict[str, Any]]:
    found = run_in_sandbox(sys.executable, str(HERE / "scenario_devices.py"))
    return {e["step"]: e for e in found}


def allowed(step: dict[str, Any]) -> set[str]:
    return {check for check, result in step["probe"].items() if result != "EPERM"}


def denied(step: dict[str, Any]) -> set[str]:
    return {check for check, result in step["probe"].items() if result == "EPERM"}


def one_program(step: dict[str, Any]) -> int:
    (program,) = step["attached"]
    assert program["name"] == "scopeshim_dev" and program["type"] == 15  # CGROUP_DEVICE
    assert step["daemon_bpf_fds"] == 1
    return int(program["id"])


def test_the_kernel_verifier_takes_the_compiled_programs(events):
    results = events["verifier"]["results"]
    refused = results.pop("refused")
    assert results == dict.fromkeys(results, "ok")
    assert len(results) == 6
    # a refused program's error carries the verifier's log
    assert refused.startswith("EACCES: bpf(BPF_PROG_LOAD): Permission denied; verifier: ")
    assert "R0 !read_ok" in refused


def test_closed_allows_its_pseudo_devices_and_the_entries_only(events):
    """StartTransientUnit with DevicePolicy=closed and DeviceAllow=/dev/null rw is accepted
    on cgroup2 now, and the scope's process is refused everything else."""
    closed = events["closed"]
    assert closed["job"] == "done"
    assert closed["properties"]["DevicePolicy"] == "closed"
    assert closed["properties"]["DeviceAllow"] == [["/dev/null", "rw"]]
    assert allowed(closed) == {"r /dev/null", "w /dev/null", "r /dev/zero", "mknod-c-1-3"}
    assert denied(closed) == {
        f"r {LOOP_CONTROL}",
        f"w {LOOP_CONTROL}",
        f"r {LOOP0}",
        "mknod-c-10-237",
    }
    one_program(closed)


def test_a_change_replaces_the_program(events):
    step = events["allow-loop-control"]
    # systemd 252 prepends DeviceAllow= entries: newest first
    assert step["properties"]["DeviceAllow"] == [["/dev/char/10:237", "r"], ["/dev/null", "rw"]]
    assert step["probe"][f"r {LOOP_CONTROL}"] != "EPERM"  # read was allowed
    assert step["probe"][f"w {LOOP_CONTROL}"] == "EPERM"  # write was not
    assert step["probe"][f"r {LOOP0}"] == "EPERM"
    new = one_program(step)
    assert new != one_program(events["closed"])
    assert events["replaced"] == {"step": "replaced", "old_freed": True, "new": new}


def test_strict_has_no_pseudo_devices(events):
    strict = events["strict"]
    assert strict["properties"]["DevicePolicy"] == "strict"
    assert allowed(strict) == {"r /dev/null", "w /dev/null", f"r {LOOP_CONTROL}"}
    one_program(strict)
    empty = events["strict-empty"]
    assert empty["properties"]["DeviceAllow"] == []
    assert allowed(empty) == set()  # strict without entries denies everything
    one_program(empty)


def test_auto_without_entries_detaches_the_filter(events):
    auto = events["auto"]
    assert denied(auto) == set()
    assert auto["attached"] == [] and auto["daemon_bpf_fds"] == 0
    assert denied(events["closed-again"]) == denied(events["closed"])
    one_program(events["closed-again"])


def test_the_filter_outlives_the_daemon_and_a_new_one_adopts_it(events):
    assert events["daemon-stopped"]["exit"] == 0
    down = events["while-down"]
    assert down["attached"] == events["closed-again"]["attached"]
    assert denied(down) == denied(events["closed"])  # still enforced while nobody runs
    restarted = events["restarted"]
    assert restarted["probe"] == events["allow-loop-control"]["probe"]
    new = one_program(restarted)  # replaced, not a second one beside the old
    assert events["adopted"] == {"step": "adopted", "old_freed": True, "new": new}


def test_stopping_the_scope_leaves_no_program(events):
    assert events["stopped"] == {
        "step": "stopped",
        "job": "done",
        "exists": False,
        "freed": True,  # no cgroup and no fd holds the last program any more
        "daemon_bpf_fds": 0,
        "parent": [],
    }
    assert events["daemon"]["exit"] == 0
