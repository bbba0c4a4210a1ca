"""A scope on the real kernel cgroup2 tree: the process really moves, the empty scope goes."""

from __future__ import annotations

from tests.e2e.conftest import HERE, run_in_sandbox


def test_scope_lifecycle_on_real_cgroup2(python: str, record_property) -> None:
    events = {e["step"]: e for e in run_in_sandbox(python, str(HERE / "scenario_scope.py"))}
    # measured, not asserted (make bench judges speed): last exit -> UnitRemoved on the bus
    record_property("empty_to_unit_removed_ms", events["latency"]["empty_to_unit_removed_ms"])
    print("empty release:", events["latency"]["empty_to_unit_removed_ms"], "ms")
    started = events["started"]
    assert started["result"] == "done"
    assert started["cgroup"] == "/user.slice/user-1000.slice/e2e.scope"
    assert started["dir_exists"] is True
    assert started["labelled"] is True  # trusted.invocation_id, as systemd sets it
    assert events["emptied"] == {"step": "emptied", "unit": "e2e.scope", "dir_exists": False}
    # cgroup.freeze, then SIGTERM ignored: SIGKILL through cgroup.kill after TimeoutStopUSec,
    # and the scope ends failed with Result=timeout as systemd 252 does
    assert events["stop"] == {
        "step": "stop",
        "frozen": True,
        "thawed": True,
        "job": "done",
        "exit": -9,
        "result": "timeout",
        "dir_exists": False,
    }
    assert events["stopped"]["exit"] == 0
