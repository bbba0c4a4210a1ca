"""End-to-end runs inside tests/e2e/sandbox.sh; skipped, with the reason, where it cannot run.

Every sandbox this test session starts carries the tag p<pytest's PID> in the names of its
cgroup subtree and run directory (SCOPESHIM_E2E_TAG, inherited by all its processes), so that
test_leftovers.py, which runs last, can tell what this session made from anyone else's runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
SKIP = 77
TAG = os.environ.setdefault("SCOPESHIM_E2E_TAG", f"p{os.getpid()}")


def run_in_sandbox(
    *command: str, stdin: str = "", timeout: int = 120, unified: bool = False
) -> list[dict[str, Any]]:
    """Run COMMAND in a fresh sandbox (UNIFIED: its unified cgroup2 view); return the JSON
    lines it printed."""
    view = ["--unified"] if unified else []
    proc = subprocess.run(
        [str(HERE / "sandbox.sh"), "--timeout", str(timeout), *view, "--", *command],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout + 30,
    )
    if proc.returncode == SKIP:
        pytest.skip(proc.stderr.strip() or "the sandbox cannot run here")
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0, f"sandbox exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return events


@pytest.fixture
def python() -> str:
    return sys.executable


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e_last: run after every other end-to-end test")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """e2e_last tests (the leftover check) go to the end, in their own order."""
    items.sort(key=lambda item: item.get_closest_marker("e2e_last") is not None)
