"""The installed, unmodified systemd-logind opens and closes a session on scopeshim."""

from __future__ import annotations

import os

import pytest

from tests.e2e.conftest import HERE, run_in_sandbox

LOGIND = "/lib/systemd/systemd-logind"


def test_logind_session_open_close(python: str) -> None:
    if not os.path.exists(LOGIND):
        pytest.skip(f"{LOGIND} is not installed (apt-get install systemd)")
    events = {e["step"]: e for e in run_in_sandbox(python, str(HERE / "scenario_logind.py"))}
    created = events["created"]
    assert created["ok"] is True, created
    assert created["session"] == "c1"
    assert created["cgroup"] == "0::/user.slice/user-0.slice/session-c1.scope"
    assert created["scope_dir"] is True
    released = events["released"]
    assert released == {
        "step": "released",
        "ok": True,
        "removed": "session-c1.scope",
        "scope_dir": False,
    }
    assert events["stopped"]["exit"] == 0
