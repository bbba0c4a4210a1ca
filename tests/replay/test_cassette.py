"""`scopeshim serve --cassette TRACE`: recorded answers for real clients, no engine.

busctl and gdbus on a private bus; and the installed, unmodified systemd-logind 252 opening
and closing a session against a trace of the real systemd 252, inside tests/e2e/sandbox.sh
(root, private bus, cgroup2 view; skipped with the reason where it cannot run)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / "fixtures" / "dbus-logs"
STOP_TRACE = LOGS / "real-systemd-252" / "real-systemctl-stop.log"
SESSION_TRACE = LOGS / "real-systemd-252-lab" / "logind-session.log"
SANDBOX = ROOT / "tests" / "e2e" / "sandbox.sh"
SKIP = 77


@pytest.fixture
def bus() -> Iterator[str]:
    for tool in ("dbus-daemon", "busctl", "gdbus"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    from shim.bus.replay import private_bus

    with (
        tempfile.TemporaryDirectory(prefix="scopeshim-cassette-") as d,
        private_bus(d) as (
            address,
            _,
        ),
    ):
        yield address


def start(address: str, trace: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "shim", "serve", "--address", address, "--cassette", str(trace)],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status = subprocess.run(["busctl", f"--address={address}", "status",
                                 "org.freedesktop.systemd1"], capture_output=True)  # fmt: skip
        if status.returncode == 0:
            return proc
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the cassette did not own org.freedesktop.systemd1")


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    return proc.returncode, err


def busctl(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["busctl", f"--address={address}", "call", "org.freedesktop.systemd1", *args],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip


MANAGER = ("/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager")


def test_recorded_answers_and_a_complete_conversation(bus: str) -> None:
    """systemctl stop's conversation made by busctl: the recorded answers (job ids, errors as
    recorded), exit status 0."""
    proc = start(bus, STOP_TRACE)
    try:
        stop = busctl(bus, *MANAGER, "StopUnit", "ss", "lab2.scope", "replace")
        assert stop.stdout.strip() == 'o "/org/freedesktop/systemd1/job/92"', stop.stderr
        get = busctl(bus, *MANAGER, "GetUnit", "s", "lab2.scope")
        assert get.returncode != 0 and "Unit lab2.scope not loaded." in get.stderr
        unit = "/org/freedesktop/systemd1/unit/lab2_2escope"
        for prop, want in (("LoadState", 's "not-found"'), ("TriggeredBy", "as 0")):
            out = subprocess.run(
                ["busctl", f"--address={bus}", "get-property", "org.freedesktop.systemd1",
                 unit, "org.freedesktop.systemd1.Unit", prop],
                capture_output=True, text=True, timeout=20,
            )  # fmt: skip
            assert out.stdout.strip() == want, out.stderr
    finally:
        code, err = finish(proc)
    assert code == 0, err
    assert "4 of 4 recorded calls made, 0 unexpected, 0 missing" in err


def test_a_cassette_recorded_mid_flight(bus: str, tmp_path: Path) -> None:
    """The stop trace with no `requires` (it begins with lab2.scope running): the inferred
    world is the replay's setup, never asked of the client; its 4 calls complete it."""
    trace = tmp_path / STOP_TRACE.name
    trace.write_bytes(STOP_TRACE.read_bytes())
    meta = STOP_TRACE.with_name("real-systemctl-stop.meta.toml").read_text()
    meta = meta.replace('requires = ["setup-lab2-scope.log"]', "")
    meta = meta.replace('"../rules/', f'"{LOGS}/rules/')
    (tmp_path / "real-systemctl-stop.meta.toml").write_text(meta)
    proc = start(bus, trace)
    try:
        stop = busctl(bus, *MANAGER, "StopUnit", "ss", "lab2.scope", "replace")
        assert stop.stdout.strip() == 'o "/org/freedesktop/systemd1/job/92"', stop.stderr
        get = busctl(bus, *MANAGER, "GetUnit", "s", "lab2.scope")
        assert "Unit lab2.scope not loaded." in get.stderr
        unit = "/org/freedesktop/systemd1/unit/lab2_2escope"
        for prop in ("LoadState", "TriggeredBy"):
            subprocess.run(
                ["busctl", f"--address={bus}", "get-property", "org.freedesktop.systemd1",
                 unit, "org.freedesktop.systemd1.Unit", prop],
                capture_output=True, text=True, timeout=20, check=True,
            )  # fmt: skip
    finally:
        code, err = finish(proc)
    assert code == 0, err
    assert "4 of 4 recorded calls made, 0 unexpected, 0 missing" in err


def test_unexpected_and_missing_calls_are_reported_at_exit(bus: str) -> None:
    """gdbus introspects before it calls: the cassette answers what it recorded (LoadState),
    fails what it did not (Introspect, another unit) and lists both, and the calls never made."""
    proc = start(bus, STOP_TRACE)
    try:
        other = busctl(bus, *MANAGER, "GetUnit", "s", "other.scope")
        assert "not in the recording" in other.stderr
        out = subprocess.run(
            ["gdbus", "call", "-a", bus, "-d", "org.freedesktop.systemd1",
             "-o", "/org/freedesktop/systemd1/unit/lab2_2escope",
             "-m", "org.freedesktop.DBus.Properties.Get", "org.freedesktop.systemd1.Unit",
             "LoadState"],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        assert out.stdout.strip() == "(<'not-found'>,)", out.stderr
    finally:
        code, err = finish(proc)
    assert code == 3
    assert "1 of 4 recorded calls made, 2 unexpected, 3 missing" in err
    assert 'unexpected: org.freedesktop.systemd1.Manager.GetUnit("other.scope")' in err
    assert "unexpected: org.freedesktop.DBus.Introspectable.Introspect()" in err
    assert "missing: call 1 of " in err and 'Manager.StopUnit("lab2.scope", "replace")' in err


def test_a_malformed_cassette_is_refused_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.log"
    bad.write_text("method call time=1.0 sender=:1.5 -> destination=x serial=2 path=/; "
                   "interface=i; member=M\n   uint32 x\n")  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "shim", "serve", "--address", "unix:path=/nonexistent",
         "--cassette", str(bad)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert f"{bad}:2: uint32 'x' is not a number" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.timeout(300)
def test_real_logind_opens_and_closes_a_session_on_a_cassette() -> None:
    """logind 252 completes CreateSession (StartUnit user@0.service, StartTransientUnit,
    JobRemoved of both) and the close sequence (Abandon, ActiveState polls, StopUnit user@0
    after UserStopDelaySec) on the recorded answers alone: every recorded call made, none
    unexpected. ReleaseSession itself fails (NoSessionForPID: no engine moved the leader into
    a cgroup); the FIFO's close ends the session, as in the recording."""
    proc = subprocess.run(
        [str(SANDBOX), "--timeout", "200", "--", sys.executable,
         str(Path(__file__).with_name("scenario_cassette_logind.py")), str(SESSION_TRACE)],
        cwd=ROOT, capture_output=True, text=True, timeout=260,
    )  # fmt: skip
    if proc.returncode == SKIP:
        pytest.skip(proc.stderr.strip() or "the sandbox cannot run here")
    steps = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            steps[event["step"]] = event
    why = proc.stdout + proc.stderr
    assert steps["created"]["ok"] is True and steps["created"]["session"] == "c1", why
    assert steps["released"]["ok"] is True, why
    assert steps["session-gone"]["ok"] is True, why
    assert steps["user-gone"]["ok"] is True, why
    assert steps["logind-exit"]["exit"] == 0, why
    assert steps["cassette-exit"]["exit"] == 0, why
    assert "30 of 30 recorded calls made, 0 unexpected, 0 missing" in steps["cassette-exit"]["log"]
    assert proc.returncode == 0, why
