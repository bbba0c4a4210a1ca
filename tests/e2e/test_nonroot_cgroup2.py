"""scopeshim without root, inside a cgroup2 subtree delegated to it (--cgroup-root)."""

from __future__ import annotations

from tests.e2e.conftest import HERE, run_in_sandbox


def test_unprivileged_daemon_in_a_delegated_subtree(python: str) -> None:
    events = {e["step"]: e for e in run_in_sandbox(python, str(HERE / "scenario_nonroot.py"))}
    # nobody runs a copy of the code: the checkout may be anywhere, a 0700 directory too
    assert events["daemon"] == {"step": "daemon", "uid": 65534, "hidden": True, "code": True}
    assert events["inside"] == {
        "step": "inside",
        "job": "done",
        "cgroup": "/delegated/user.slice/user-1000.slice/inside.scope",
    }
    # a process outside the subtree cannot be moved in by nobody: the job fails, the
    # process stays where it was, and the scope's cgroup is gone again
    assert events["outside"] == {
        "step": "outside",
        "job": "failed",
        "result": "resources",
        "cgroup": "/",
        "left": False,
    }
    (line,) = events["log"]["lines"]
    assert "Permission denied" in line
    assert events["emptied"]["left"] is False
    assert events["stopped"]["exit"] == 0
