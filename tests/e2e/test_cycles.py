"""200 consecutive logind sessions opened and closed through scopeshim (logind 252, the
unprivileged test user, the user started and stopped with every session) leave nothing
behind: no session or user on login1, no unit on systemd1, no cgroup, mount or process."""

from __future__ import annotations

import json
import os

import pytest

from tests.e2e.test_logind import run_scenario

CYCLES = int(os.environ.get("SCOPESHIM_STRESS_SESSIONS", "200"))  # make stress: 1,000


@pytest.mark.timeout(600 + CYCLES)
def test_200_session_cycles_leave_nothing(request: pytest.FixtureRequest) -> None:
    request.node.user_properties.append(("case", f"logind 252  {CYCLES} open/close cycles"))
    outcome = run_scenario(
        "scenario_cycles.py", "252", "--cycles", str(CYCLES), timeout=500 + CYCLES
    )
    if outcome.skipped:
        pytest.skip(outcome.skipped)
    result = outcome.steps.get("cycles")
    assert result is not None, f"exit {outcome.returncode}\n{outcome.stderr}"
    request.node.user_properties.append(("seconds", result["seconds"]))
    request.node.user_properties.append(
        ("note", f"median {result['cycle_ms']['median']} ms/cycle, daemon RSS "
                 f"{result['daemon_rss_kb'][0]}->{result['daemon_rss_kb'][1]} kB")
    )  # fmt: skip
    why = json.dumps(result, indent=1)
    assert result["failed"] == 0, why
    assert result["sessions_opened"] == CYCLES + 1, why  # the warm-up session too
    assert result["left"] == {}, why
    assert result["job_ids_increase"], why
    assert result["daemon_fds"][1] == result["daemon_fds"][0], why
    rss_before, rss_after = result["daemon_rss_kb"]
    assert rss_after <= rss_before * 1.10, why  # memory back within 10%
    assert result["ok"], why
