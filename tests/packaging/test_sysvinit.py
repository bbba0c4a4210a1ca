"""The installed LSB init script in tests/e2e/sandbox.sh (private /run and system bus, the
staged tree at its real paths): start returns once the daemon owns the name, status answers
as LSB says (0 running, 3 not running), start and stop are idempotent, reload sends SIGHUP,
restart gives a new daemon, and a configuration the daemon refuses makes start fail without
leaving a pid file (scenario_sysvinit.py)."""

from __future__ import annotations

import sys

import pytest

from tests.packaging.conftest import HERE, Installed, by_step, run_in_sandbox

pytestmark = pytest.mark.timeout(600)

ARGV = ["-I", "-m", "shim", "serve", "--system", "--config", "/etc/scopeshim/scopeshim.toml"]


@pytest.fixture(scope="module")
def steps(installed: Installed) -> dict[str, dict]:
    events, proc = run_in_sandbox(
        sys.executable, str(HERE / "scenario_sysvinit.py"), str(installed.destdir), timeout=240
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    return by_step(events)


def running(step: dict) -> bool:
    return (
        step["rc"] == 0
        and step["pidfile"] is not None
        and step["alive"]
        and step["owner"] == step["pidfile"]  # the pid file's process owns the name
        and step["cmdline"][0] == "/usr/local/sbin/../lib/scopeshim/bin/python3"
        and step["cmdline"][1:] == ARGV
    )


def stopped(step: dict) -> bool:
    return step["pidfile"] is None and not step["alive"] and step["owner"] is None


def test_start_status_stop(steps) -> None:
    assert steps["status_before"]["rc"] == 3 and stopped(steps["status_before"])
    assert running(steps["start"]), steps["start"]  # owned when start returned
    assert running(steps["status"]) and "is running" in steps["status"]["stdout"]
    assert steps["stop"]["rc"] == 0 and stopped(steps["stop"]), steps["stop"]
    assert steps["status_after"]["rc"] == 3 and stopped(steps["status_after"])


def test_start_and_stop_twice_are_harmless(steps) -> None:
    assert running(steps["start_again"])
    assert steps["start_again"]["pidfile"] == steps["start"]["pidfile"]
    assert steps["stop_again"]["rc"] == 0 and stopped(steps["stop_again"])


def test_reload_and_restart(steps) -> None:
    assert running(steps["reload"]) and steps["reload"]["pidfile"] == steps["start"]["pidfile"]
    assert steps["reloaded"]["same_owner"] is True
    assert "SIGHUP: reloaded /etc/scopeshim/scopeshim.toml" in steps["log"]["text"]
    assert running(steps["restart"])
    assert steps["restart"]["pidfile"] != steps["start"]["pidfile"]


def test_a_refused_configuration_fails_start_cleanly(steps) -> None:
    assert steps["start_bad_config"]["rc"] == 1 and stopped(steps["start_bad_config"])
    assert steps["status_bad_config"]["rc"] == 3
    assert "serve.backend: Input should be" in steps["log"]["text"]
    assert running(steps["start_fixed"]) and stopped(steps["stop_fixed"])
