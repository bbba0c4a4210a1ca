"""Unmodified systemd-logind 252 (installed), 254 and 257 (Debian's packages, fetched by
tests/e2e/get-logind.sh into a cache) each run a whole session lifecycle on scopeshim."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.e2e.conftest import HERE, run_in_sandbox

VERSIONS = ("252", "254", "257")
CANNOT_FETCH = 77


def fetch_logind(version: str) -> str:
    """The path of a program that runs logind VERSION; skip only when it cannot be had here
    (no network, no apt), with get-logind.sh's reason."""
    proc = subprocess.run(
        [str(HERE / "get-logind.sh"), version], capture_output=True, text=True, timeout=900
    )
    if proc.returncode == CANNOT_FETCH:
        lines = [line.strip() for line in proc.stderr.splitlines()]
        apt = [line for line in lines if line.startswith(("E:", "W:", "Err:"))]
        pytest.skip(" | ".join([lines[-1], *apt]))
    assert proc.returncode == 0, f"get-logind.sh {version}: exit {proc.returncode}\n{proc.stderr}"
    return proc.stdout.strip()


def steps(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["step"]: e for e in events}


def explain(events: dict[str, dict[str, Any]]) -> str:
    """All steps (the logs last), for an assertion message."""
    return "\n".join(json.dumps(e, indent=1) for e in events.values())


@pytest.mark.timeout(400)
@pytest.mark.parametrize("version", VERSIONS)
def test_logind_session_lifecycle(python: str, version: str) -> None:
    logind = fetch_logind(version)
    events = steps(
        run_in_sandbox(
            python, str(HERE / "scenario_logind.py"), "--logind", logind, "--uid", "0", timeout=180
        )
    )
    why = explain(events)
    assert events["logind"]["version"].startswith(f"systemd {version} "), why

    # CreateSession: the leader sits in the session scope under the user's slice
    created = events["created"]
    assert created["ok"] is True, why
    sid = created["session"]
    scope = f"session-{sid}.scope"
    assert created["cgroup"] == f"0::/user.slice/user-0.slice/{scope}", why
    assert created["runtime_path"] == "/run/user/0", why

    # while it is open: logind's session and user, systemd1's scope, the runtime directory
    opened = events["open"]
    assert opened["session"]["Scope"] == scope, why
    assert opened["session"]["State"] in ("active", "online"), why
    assert opened["session"]["Leader"] == created["pid"], why
    assert opened["user"]["State"] in ("active", "online"), why
    assert opened["user"]["RuntimePath"] == "/run/user/0", why
    assert opened["scope"]["ActiveState"] == "active", why
    assert opened["scope_cgroup"] == {"exists": True, "procs": [created["pid"]]}, why
    assert opened["runtime_dir"]["exists"] is True, why
    assert opened["runtime_dir"]["owner"] == 0, why

    # ReleaseSession and the leader's exit: scope, session, user and slice all go
    released = events["released"]
    assert released["ok"] is True and released["client_exit"] == 0, why
    assert released["scope_removed"] is True, why
    assert released["session_removed"] is True, why
    assert released["user_removed"] is True, why
    assert released["slice_removed"] is True, why
    assert released["scope_cgroup"] == {"exists": False}, why
    assert released["slice_cgroup"] == {"exists": False}, why
    assert released["runtime_dir"] == {"exists": False}, why
    assert released["session"]["error"] == "org.freedesktop.DBus.Error.UnknownObject", why

    assert events["logind-exit"]["exit"] == 0, why
    assert events["stopped"]["exit"] == 0, why
