"""`make demo` (tests/e2e/demo.py in the sandbox) runs through and shows what it promises."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.e2e.conftest import HERE, SKIP


@pytest.mark.timeout(200)
def test_demo_shows_a_session_and_tears_it_down(request: pytest.FixtureRequest) -> None:
    request.node.user_properties.append(("case", "make demo"))
    proc = subprocess.run(
        [str(HERE / "sandbox.sh"), "--timeout", "120", "--", sys.executable,
         str(HERE / "demo.py")],
        capture_output=True,
        text=True,
        timeout=180,
    )  # fmt: skip
    if proc.returncode == SKIP:
        pytest.skip(proc.stderr.strip())
    out = proc.stdout
    why = out + proc.stderr
    assert proc.returncode == 0, why
    for expected in (
        "CreateSession -> session c1, runtime dir /run/user/4711",
        "/user.slice/user-4711.slice/session-c1.scope",
        "session-c1.scope  <- processes",
        "$ loginctl --no-pager list-sessions",
        "Unit: session-c1.scope",
        "$ busctl --system --no-pager tree org.freedesktop.systemd1",
        "/org/freedesktop/systemd1/unit/session_2dc1_2escope",
        "signal SessionRemoved c1",
        "signal UserRemoved 4711",
        "No sessions.",
        "scopeshim exit 0",
    ):
        assert expected in out, f"{expected!r} missing from the demo's output:\n{why}"
    assert "unexpected:" not in out, why
