"""loginctl (systemd 252) on a real logind session with scopeshim as systemd1: session-status
and user-status show the session's unit and its process tree, which loginctl reads from
systemd1 (Get ControlGroup, GetUnitProcesses); every call lands on an implemented member
(scenario_clients_loginctl.py, one sandbox run per module)."""

from __future__ import annotations

import re
import sys

import pytest

from tests.e2e.clients_host import Steps, explain, field, lines, no_unknown_members, run_scenario

pytestmark = pytest.mark.timeout(600)

STEPS = ("start-logind", "open-session", "session-status", "close-session")


@pytest.fixture(scope="module")
def steps() -> Steps:
    return run_scenario(sys.executable, "scenario_clients_loginctl.py")


def tree_pids(out: list[str]) -> list[int]:
    return [int(m.group(1)) for line in out if (m := re.search(r"[├└]─\s*(\d+) ", line))]


@pytest.mark.parametrize("name", STEPS)
def test_every_call_lands_on_an_implemented_member(steps: Steps, name: str) -> None:
    no_unknown_members(steps[name])


def test_session_opened(steps: Steps) -> None:
    assert steps["start-logind"]["owned"] is True, explain(steps["start-logind"])
    created = steps["open-session"]["created"]
    assert created["ok"] is True, explain(created)
    assert created["cgroup"] == f"/user.slice/user-0.slice/session-{created['session']}.scope"


def test_session_status(steps: Steps) -> None:
    f = steps["session-status"]
    result = f["status"]
    why = explain(f)
    sid = f["session"]
    assert result["rc"] == 0 and result["err"] == "", why
    assert lines(result)[0] == f"{sid} - root (0)", why
    assert field(result, "Unit") == f"session-{sid}.scope", why
    assert field(result, "State") == "active", why
    assert (field(result, "Leader") or "").startswith(f"{f['pids'][0]} "), why
    assert sorted(tree_pids(lines(result))) == sorted(f["pids"]), why
    assert sorted(f["cgroup"]["procs"]) == sorted(f["pids"]), why


def test_user_status_shows_the_session_scope_in_the_user_slice(steps: Steps) -> None:
    f = steps["session-status"]
    result = f["user_status"]
    why = explain(result)
    assert result["rc"] == 0 and result["err"] == "", why
    assert field(result, "Unit") == "user-0.slice", why
    out = lines(result)
    unit = next(i for i, line in enumerate(out) if line.strip().startswith("Unit: "))
    assert out[unit + 1].strip() == f"└─session-{f['session']}.scope", why
    assert sorted(tree_pids(out)) == sorted(f["pids"]), why


def test_loginctl_and_systemctl_agree(steps: Steps) -> None:
    f = steps["session-status"]
    sid = f["session"]
    assert f["show"]["out"].splitlines() == [
        f"Scope=session-{sid}.scope",
        f"Leader={f['pids'][0]}",
        "State=active",
    ], explain(f["show"])
    status = f["systemctl_status"]
    assert status["rc"] == 0, explain(status)
    assert lines(status)[0] == f"● session-{sid}.scope - Session {sid} of User root"
    assert field(status, "CGroup") == f"/user.slice/user-0.slice/session-{sid}.scope"
    assert sorted(tree_pids(lines(status))) == sorted(f["pids"]), explain(status)
    assert lines(f["list"])[0].split()[:3] == [sid, "0", "root"], explain(f["list"])


def test_session_closes(steps: Steps) -> None:
    f = steps["close-session"]
    assert f["released"].get("ok") is True, explain(f)
    assert f["client_exit"] == 0 and f["gone"] is True, explain(f)
    assert f["list"]["out"].strip() == "", explain(f)
    assert steps["cleanup"]["logind_exit"] == 0
    assert steps["finish"]["daemon_exit"] == 0
