"""State inference: a capture that begins mid-flight (no `requires` metadata) gets the units,
slices, processes and subscriptions it shows made first, then replays clean; what the trace
does not tell is named FILE:LINE."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shim.replay.compare import compare
from shim.replay.plan import build
from shim.replay.report import text
from shim.replay.values import Var

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / "fixtures" / "dbus-logs"
REAL = LOGS / "real-systemd-252"
RULES = LOGS / "rules" / "real-systemd-252.toml"
# the project's own single-phase fixtures whose metadata chains them with `requires`
CHAINED = sorted(
    p.name.removesuffix(".meta.toml")
    for p in REAL.glob("*.meta.toml")
    if re.search(r"^requires\s*=", p.read_text(), re.M)
)
# single phases of whole lab runs, cut at their markers (what a user's dbus-monitor shows)
PHASES = {
    "kill-session": ("252", "logind-terminate-kill", "kill-session", "kill-user"),
    "kill-user": ("252", "logind-terminate-kill", "kill-user", "terminate-session"),
    "terminate-session": ("252", "logind-terminate-kill", "terminate-session", "end"),
    "terminate-user": ("252", "logind-terminate-user", "terminate-user", "end"),
    "systemctl-kill": ("252", "systemctl-scope", "kill", "stop"),
    "systemctl-stop": ("252", "systemctl-scope", "stop", "end"),
    "systemctl-status": ("252", "systemctl-scope", "status", "show"),
    "262-kill-user": ("262", "logind-terminate-kill", "kill-user", "terminate-session"),
    "262-terminate-session": ("262", "logind-terminate-kill", "terminate-session", "end"),
    "262-terminate-user": ("262", "logind-terminate-user", "terminate-user", "end"),
    "262-systemctl-stop": ("262", "systemctl-scope", "stop", "end"),
}


def _without_requires(name: str, tmp: Path) -> Path:
    """The fixture and its metadata copied, with `requires` removed."""
    log = tmp / f"{name}.log"
    shutil.copy(REAL / f"{name}.log", log)
    meta = (REAL / f"{name}.meta.toml").read_text()
    meta = re.sub(r"^requires\s*=.*$", "", meta, flags=re.M)
    meta = meta.replace('"../rules/real-systemd-252.toml"', f'"{RULES}"')
    (tmp / f"{name}.meta.toml").write_text(meta)
    return log


def _phase(name: str, tmp: Path) -> Path:
    version, source, start, until = PHASES[name]
    log = tmp / f"{name}.log"
    shutil.copy(LOGS / f"real-systemd-{version}-lab" / f"{source}.log", log)
    rules = [RULES] + ([RULES.with_name("real-systemd-262.toml")] if version == "262" else [])
    (tmp / f"{name}.meta.toml").write_text(
        "include = [" + ", ".join(f'"{r}"' for r in rules) + "]\n[provenance]\n"
        f'systemd = "{version}"\ncommand = "the {start} phase of {source}.log"\n'
        f'[conversation]\nfrom_marker = "{start}"\nuntil_marker = "{until}"\n'
    )
    return log


def test_the_chained_fixtures_are_there() -> None:
    assert len(CHAINED) >= 5, CHAINED


def test_status_capture_infers_the_scope_it_shows(tmp_path: Path) -> None:
    plan = build(str(_without_requires("real-systemctl-status", tmp_path)))
    assert plan.world is not None
    [unit] = plan.world.units
    assert unit.name == "lab2.scope" and unit.slice == "system.slice"
    assert unit.pids == [67]  # GetUnitProcesses
    [(_, call)] = plan.world.calls
    assert call.member == "StartTransientUnit" and call.body[0] == "lab2.scope"
    props = dict(call.body[2])
    assert props["MemoryMax"] == Var("t", 104857600)
    assert props["Description"] == Var("s", "/usr/bin/sleep 60")
    # made first, not compared
    assert plan.main_start == 1 and plan.steps[0].setup and not plan.steps[1].setup


def test_with_requires_nothing_is_inferred() -> None:
    for name in CHAINED:
        plan = build(str(REAL / f"{name}.log"))
        assert plan.world is not None and not plan.world.calls, (name, plan.world.lines())


def test_show_prints_what_was_inferred(tmp_path: Path) -> None:
    log = _without_requires("real-logind-close-session", tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "shim", "replay", "--show", str(log)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "inferred before the first call" in out
    assert "exists: session-c1.scope (Abandon succeeded, line 40): in user-0.slice" in out
    assert "exists: user@0.service (StopUnit succeeded" in out
    assert f"assumed: {log}:40: the processes of session-c1.scope are not shown" in out


def test_what_the_trace_does_not_tell_is_named(tmp_path: Path) -> None:
    """A job queued before the capture (its JobRemoved without a JobNew, a Get on its path)
    cannot be recreated: FILE:LINE says so; an Unsubscribe without a Subscribe means the
    client had subscribed."""
    log = tmp_path / "mid.log"
    log.write_text(
        "method call time=1.0 sender=:1.5 -> destination=org.freedesktop.systemd1 serial=2"
        " path=/org/freedesktop/systemd1/job/77; interface=org.freedesktop.DBus.Properties;"
        " member=Get\n"
        '   string "org.freedesktop.systemd1.Job"\n   string "State"\n'
        "method return time=1.1 sender=:1.0 -> destination=:1.5 serial=9 reply_serial=2\n"
        '   variant       string "running"\n'
        "signal time=1.2 sender=:1.0 -> destination=(null destination) serial=10"
        " path=/org/freedesktop/systemd1; interface=org.freedesktop.systemd1.Manager;"
        " member=JobRemoved\n"
        '   uint32 78\n   object path "/org/freedesktop/systemd1/job/78"\n'
        '   string "a.service"\n   string "done"\n'
        "method call time=1.3 sender=:1.5 -> destination=org.freedesktop.systemd1 serial=3"
        " path=/org/freedesktop/systemd1; interface=org.freedesktop.systemd1.Manager;"
        " member=Unsubscribe\n"
        "method return time=1.4 sender=:1.0 -> destination=:1.5 serial=11 reply_serial=3\n"
    )
    plan = build(str(log))
    assert plan.world is not None
    missing = [str(m) for m in plan.world.missing]
    assert any(m.startswith(f"{log}:1: job 77 was queued before") for m in missing), missing
    assert any(m.startswith(f"{log}:6: job 78 of a.service was queued") for m in missing)
    assert plan.world.subscribed == [(":1.5", 11)]
    assert plan.steps[0].call.member == "Subscribe" and plan.steps[0].client == "client-1"


def _replay(log: Path) -> None:
    if shutil.which("dbus-daemon") is None:
        pytest.skip("dbus-daemon is not installed (apt-get install dbus-daemon)")
    import asyncio

    from shim.bus import replay

    plan = build(str(log))
    assert plan.world is not None
    live = asyncio.run(replay.drive(plan, None))
    result = compare(plan, live)
    assert result.ok and not result.not_made, text(result, verbose=True)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", CHAINED)
def test_chained_fixture_without_requires_replays_clean(name: str, tmp_path: Path) -> None:
    _replay(_without_requires(name, tmp_path))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", list(PHASES))
def test_a_phase_cut_from_a_lab_run_replays_clean(name: str, tmp_path: Path) -> None:
    _replay(_phase(name, tmp_path))
