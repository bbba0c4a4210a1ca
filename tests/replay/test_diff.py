"""A reply the daemon gets wrong fails the replay with a diff that says where and what: here
the recording is altered instead (the real systemd 252's `LoadState` answer to systemctl after
`systemctl stop`, "not-found", becomes "loaded"), which is the same to the comparison."""

from __future__ import annotations

import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from shim.replay.compare import compare
from shim.replay.plan import build
from shim.replay.report import junit, text

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "fixtures" / "dbus-logs" / "real-systemd-252-lab"
RULES = ROOT / "fixtures" / "dbus-logs" / "rules" / "real-systemd-252.toml"


@pytest.fixture
def wrong(tmp_path: Path) -> tuple[Path, int]:
    """systemctl-scope.log with one reply changed; the line of that reply's value."""
    lines = (LAB / "systemctl-scope.log").read_text().splitlines(keepends=True)
    call = next(
        n for n, line in enumerate(lines)
        if "member=Get" in line and lines[n + 2].strip() == 'string "LoadState"'
    )  # fmt: skip
    answer = next(n for n in range(call, len(lines)) if lines[n].startswith("method return"))
    assert lines[answer + 1].strip() == 'variant       string "not-found"', lines[answer + 1]
    lines[answer + 1] = lines[answer + 1].replace('"not-found"', '"loaded"')
    trace = tmp_path / "systemctl-scope.log"
    trace.write_text("".join(lines))
    meta = (LAB / "systemctl-scope.meta.toml").read_text()
    meta = meta.replace('include = ["../rules/real-systemd-252.toml"]', f'include = ["{RULES}"]')
    (tmp_path / "systemctl-scope.meta.toml").write_text(meta)
    return trace, call + 1


def daemon_available() -> None:
    if shutil.which("dbus-daemon") is None:
        pytest.skip("dbus-daemon is not installed (apt-get install dbus-daemon)")


@pytest.mark.timeout(120)
async def test_a_wrong_reply_fails_with_a_clear_diff(wrong: tuple[Path, int]) -> None:
    daemon_available()
    trace, line = wrong
    from shim.bus import replay

    plan = build(str(trace))
    async with replay.spawned_daemon() as address:
        live = await replay.replay(plan, address)
    result = compare(plan, live)
    assert not result.ok
    [diff] = result.failures
    assert diff.kind == "reply" and diff.call == 13
    assert diff.where == f"call 13 (line {line})"
    assert diff.field == "reply[0]"
    assert (diff.expected, diff.got) == ('"loaded"', '"not-found"')
    report = text(result)
    assert f"call 13 (line {line}): reply" in report
    get = 'unit replay1.scope: Properties.Get("org.freedesktop.systemd1.Unit", "LoadState")'
    assert get in report
    assert 'reply[0]: expected "loaded", got "not-found"' in report
    xml = ET.fromstring(junit([result]))
    failures = xml.findall(".//testcase/failure")
    assert len(failures) == 1 and "LoadState" in (failures[0].text or "")


@pytest.mark.timeout(120)
def test_the_command_exits_1_and_writes_junit(wrong: tuple[Path, int], tmp_path: Path) -> None:
    daemon_available()
    trace, line = wrong
    xml_out = tmp_path / "junit.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "shim", "replay", "--spawn", "--junit", str(xml_out), str(trace)],
        cwd=ROOT, capture_output=True, text=True, timeout=110,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{trace}: FAIL" in proc.stdout
    assert f"call 13 (line {line}): reply" in proc.stdout
    assert "1 with differences" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    suite = ET.parse(xml_out).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "1"


def test_show_prints_the_normalised_conversation() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "shim", "replay", "--show", str(LAB / "systemctl-scope.log")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert 'Manager.StopUnit("replay1.scope", "replace")' in proc.stdout
    assert "reply return <job:replay1.scope#2>" in proc.stdout
    assert "--- marker set-property" in proc.stdout


def test_missing_trace_and_bad_rules_are_usage_errors(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "shim", "replay"]
    proc = subprocess.run([*run, str(tmp_path / "nope.log")], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2 and "no such trace" in proc.stderr
    rules = tmp_path / "rules.toml"
    rules.write_text('[[allow]]\nid = "x"\nwhat = ["sometimes"]\n')
    proc = subprocess.run([*run, "--rules", str(rules), str(LAB / "systemctl-scope.log")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2
    assert "allow.0.reason" in proc.stderr and "allow.0.what.0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_daemon_does_not_import_the_replay_code() -> None:
    code = (
        "import sys, shim.cli, shim.bus.daemon, shim.bus.service\n"
        "print(sorted(m for m in sys.modules if m.startswith('shim.replay') or m in "
        "('shim.bus.replay', 'shim.bus.cassette')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.stdout.strip() == "[]", proc.stderr
