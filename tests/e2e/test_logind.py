"""Unmodified systemd-logind 252 (installed), 254, 257 and 262 (Debian's packages, fetched by
tests/e2e/get-logind.sh into a cache) run every step of a session's life on scopeshim, for
uid 0 and an unprivileged uid, in the sandbox's hybrid view (cgroup2 at
/sys/fs/cgroup/unified, like this project's hosts) and its unified view (cgroup2 at
/sys/fs/cgroup, the only one systemd 258+ supports): the matrix {252, 254, 257, 262} x
{hybrid, unified} x {root, unprivileged} x {step}.

One sandbox run of scenario_logind.py per (version, view, user) does all steps in order (each step
ends with nothing of it left, or says what was left); the runs go SCOPESHIM_E2E_JOBS at a
time (default 3) while the cases are reported in order. Each case passes when every check
of its step did; a failure lists the checks that failed with what was seen, and what
logind's and the daemon's logs said during the step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.e2e.conftest import HERE, SKIP

VERSIONS = ("252", "254", "257", "262")
VIEWS = ("hybrid", "unified")
USERS = ("root", "unprivileged")
STEPS = (
    "open",
    "release",
    "user-stop-delay",
    "terminate-session",
    "terminate-user",
    "kill-session-leader",
    "kill-session-all",
    "kill-user",
    "kill-user-processes",
    "loginctl",
    "poweroff",
    "suspend",
    "logind-restart",
    "scopeshim-crash",
    "teardown",
)
CANNOT_FETCH = 77
RUN_TIMEOUT = 600


def fetch_logind(version: str) -> tuple[str | None, str]:
    """(the path of a program that runs logind VERSION, "") or (None, why it cannot be had
    here: no network, no apt) ; a broken fetch raises."""
    proc = subprocess.run(
        [str(HERE / "get-logind.sh"), version], capture_output=True, text=True, timeout=900
    )
    if proc.returncode == CANNOT_FETCH:
        lines = [line.strip() for line in proc.stderr.splitlines()]
        apt = [line for line in lines if line.startswith(("E:", "W:", "Err:"))]
        return None, " | ".join([lines[-1], *apt])
    assert proc.returncode == 0, f"get-logind.sh {version}: exit {proc.returncode}\n{proc.stderr}"
    return proc.stdout.strip(), ""


def steps(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["step"]: e for e in events}


def explain(events: dict[str, dict[str, Any]]) -> str:
    """All steps (the logs last), for an assertion message."""
    return "\n".join(json.dumps(e, indent=1) for e in events.values())


@dataclass
class Outcome:
    """One sandbox run: its steps by name, or why it was skipped, or how it broke."""

    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: str = ""
    returncode: int = 0
    stderr: str = ""


def run_scenario(
    script: str, version: str, *args: str, timeout: int = RUN_TIMEOUT, view: str = "hybrid"
) -> Outcome:
    logind, why = fetch_logind(version)
    if logind is None:
        return Outcome(skipped=why)
    unified = ["--unified"] if view == "unified" else []
    proc = subprocess.run(
        [str(HERE / "sandbox.sh"), "--timeout", str(timeout), *unified, "--", sys.executable,
         str(HERE / script), "--logind", logind, *args],
        capture_output=True,
        text=True,
        timeout=timeout + 60,
    )  # fmt: skip
    if proc.returncode == SKIP:
        return Outcome(skipped=proc.stderr.strip() or "the sandbox cannot run here")
    events = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    return Outcome(steps(events), returncode=proc.returncode, stderr=proc.stderr[-4000:])


class Matrix:
    """The (version, view, user) runs the selected cases need, started together on first
    use, SCOPESHIM_E2E_JOBS at a time."""

    def __init__(self, wanted: list[tuple[str, str, str]]) -> None:
        self.wanted = wanted
        self.jobs = max(1, int(os.environ.get("SCOPESHIM_E2E_JOBS", "3")))
        self._pool: ThreadPoolExecutor | None = None
        self._runs: dict[tuple[str, str, str], Future[Outcome]] = {}
        self._lock = threading.Lock()

    def get(self, version: str, view: str, user: str) -> Outcome:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.jobs, thread_name_prefix="e2e-matrix")
                # the longest runs (262: its 20 s release timer) first
                for v, w, u in sorted(self.wanted, key=lambda x: x[0] != "262"):
                    self._runs[v, w, u] = self._pool.submit(
                        run_scenario, "scenario_logind.py", v, "--user", u, view=w
                    )
        return self._runs[version, view, user].result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


@pytest.fixture(scope="session")
def matrix(request: pytest.FixtureRequest) -> Iterator[Matrix]:
    wanted = []
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if item.name.startswith("test_logind[") and "version" in params:
            pair = (params["version"], params["view"], params["user"])
            if pair not in wanted:
                wanted.append(pair)
    m = Matrix(wanted)
    yield m
    m.close()


def failed_checks(event: dict[str, Any]) -> str:
    """The failed checks of a step, then what the logs said while it ran."""
    out = []
    for label, ok, detail in event.get("checks", []):
        if not ok:
            text = detail if isinstance(detail, str) else json.dumps(detail, indent=1)
            out.append(f"- {label}:\n    " + text.replace("\n", "\n    "))
    logs = event.get("logs") or {}
    for key, lines in logs.items():
        if lines:
            out.append(f"{key}:\n    " + "\n    ".join(lines))
    return "\n".join(out)


CASES = [(v, w, u, s) for v in VERSIONS for w in VIEWS for u in USERS for s in STEPS]


@pytest.mark.timeout(RUN_TIMEOUT * 3)
@pytest.mark.parametrize(
    ("version", "view", "user", "step"), CASES, ids=["-".join(c) for c in CASES]
)
def test_logind(
    matrix: Matrix, request: pytest.FixtureRequest, version: str, view: str, user: str, step: str
) -> None:
    request.node.user_properties.append(
        ("case", f"logind {version}  {view:<7}  {user:<12}  {step}")
    )
    outcome = matrix.get(version, view, user)
    if outcome.skipped:
        pytest.skip(outcome.skipped)
    setup = outcome.steps.get("setup", {})
    event = outcome.steps.get(step)
    if event is None:
        ran = [s for s in outcome.steps if s != "setup"]
        pytest.fail(
            f"the run ended (exit {outcome.returncode}) before step {step}; steps done: {ran}\n"
            f"{outcome.stderr}"
        )
    request.node.user_properties.append(("seconds", event.get("seconds")))
    assert str(setup.get("logind", "")).startswith(f"systemd {version} "), setup
    assert event["ok"], f"{step} (logind {version}, {view}, {user}):\n{failed_checks(event)}"
