"""End-to-end runs inside tests/e2e/sandbox.sh; skipped, with the reason, where it cannot run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
SKIP = 77


def run_in_sandbox(*command: str, stdin: str = "", timeout: int = 120) -> list[dict[str, Any]]:
    """Run COMMAND in a fresh sandbox; return the JSON lines it printed."""
    proc = subprocess.run(
        [str(HERE / "sandbox.sh"), "--timeout", str(timeout), "--", *command],
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
