"""Debian's podman 4.3 `--health-cmd` against scopeshim in the e2e sandbox (root): podman
creates the healthcheck timer with `systemd-run --unit ID --on-unit-inactive=1s
--timer-property=AccuracySec=1s podman healthcheck run ID`, starts ID.service with
RestartUnit, and the timer runs the check until `podman rm` stops it
(tests/e2e/podman_healthcheck.sh)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(shutil.which("podman") is None,
                       reason="podman is not installed (Debian 12: apt-get install podman)"),
    pytest.mark.skipif(shutil.which("busybox") is None,
                       reason="busybox is not installed (the container's root file system)"),
]  # fmt: skip


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> str:
    work = tmp_path_factory.mktemp("podman-hc")
    done = subprocess.run(
        [str(HERE / "sandbox.sh"), "--unified", "--timeout", "240", "--",
         str(HERE / "podman_healthcheck.sh"), str(work)],
        capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    if done.returncode == 77:
        pytest.skip(done.stderr.strip())
    log = (work / "scopeshim.log").read_text() if (work / "scopeshim.log").exists() else ""
    assert "run-status=0" in done.stdout, done.stdout + done.stderr + log[-4000:]
    return done.stdout + "\n--log--\n" + log


def container_id(out: str) -> str:
    m = re.search(r"id=([0-9a-f]{64})", out)
    assert m, out
    return m.group(1)


def test_timer_and_service_appear(out: str) -> None:
    cid = container_id(out)
    timers = out.split("== timers")[1].split("== show")[0]
    assert f"{cid}.timer" in timers and f"{cid}.service" in timers, out
    show = out.split("== show")[1]
    assert f"Triggers={cid}.service" in show
    assert "TimersMonotonic={ OnUnitInactiveUSec=1s ;" in show
    assert "AccuracyUSec=1s" in show


def test_checks_run_from_the_timer_and_turn_healthy(out: str) -> None:
    m = re.search(r"health=(\w+) (\d+)", out)
    assert m, out
    assert m.group(1) == "healthy" and int(m.group(2)) >= 3, out  # only the timer runs it
    service = out.split("== service")[1]
    assert "Result=success" in service and "ExecMainStatus=0" in service, out
    assert "Unknown method" not in out.split("--log--")[1]


def test_podman_rm_takes_them_away(out: str) -> None:
    assert "rm-status=0" in out and "left=0" in out, out
    assert "daemon-exit=0" in out
