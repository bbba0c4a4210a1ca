"""Delegate=yes on the real kernel: an unprivileged delegatee manages its own subtree only."""

from __future__ import annotations

from tests.e2e.conftest import HERE, run_in_sandbox


def test_delegation_to_an_unprivileged_user(python: str) -> None:
    events = {e["step"]: e for e in run_in_sandbox(python, str(HERE / "scenario_delegate.py"))}
    started = events["started"]
    uid = started["uid"]
    assert started["job"] == "done"
    # the directory and the files in /sys/kernel/cgroup/delegate belong to the user; the
    # cgroup's own limits stay root's
    assert started["owners"] == {
        ".": uid,
        "cgroup.procs": uid,
        "cgroup.subtree_control": uid,
        "cgroup.max.descendants": 0,
    }
    d = events["delegatee"]
    assert d["mkdir"] == d["move_self"] == d["nested"] == d["stricter_child"] == "ok"
    assert d["too_many"] == "EAGAIN"  # its own stricter limit holds
    assert d["raise_own"] == "EACCES"  # it cannot raise the limit it was given
    assert d["escape"] == "EACCES"  # nor move itself out of its subtree
    assert d["sibling"] == "EACCES"  # nor create cgroups beside it
    assert d["cgroup"] == "0::/system.slice/deleg.scope/payload"
    assert events["attached"]["cgroup"] == "/system.slice/deleg.scope/payload"
    assert events["stopped"] == {"step": "stopped", "job": "done", "exists": False}
    assert events["daemon"]["exit"] == 0
