"""`.ci/run`'s tier check (.ci/tiers.py): counts per tier from pytest's JUnit XML; where every
tier can run, a tier that only skipped fails the run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

TIERS = ROOT / ".ci" / "tiers.py"


def junit(tmp_path: Path, cases: list[tuple[str, str]]) -> Path:
    """A JUnit file with one test case per (module, outcome)."""
    body = []
    for n, (module, outcome) in enumerate(cases):
        inner = {
            "passed": "",
            "skipped": '<skipped type="pytest.skip" message="the sandbox needs root"/>',
            "offline": '<skipped type="pytest.skip" message="logind 257: no network"/>',
            "failed": '<failure message="boom"/>',
        }[outcome]
        body.append(f'<testcase classname="{module}" name="t{n}">{inner}</testcase>')
    xml = tmp_path / "junit.xml"
    xml.write_text(f'<testsuites><testsuite name="pytest">{"".join(body)}</testsuite></testsuites>')
    return xml


def tiers(xml: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TIERS), str(xml), *args], capture_output=True, text=True, timeout=30
    )


ALL_RAN = [
    ("tests.bus.test_auth", "passed"),
    ("tests.e2e.test_pam", "passed"),
    ("tests.e2e.test_pam", "offline"),
    ("tests.packaging.test_install", "passed"),
    ("tests.replay.test_wire", "passed"),
    ("tests.test_cli", "passed"),
]


def test_every_tier_ran(tmp_path: Path) -> None:
    r = tiers(junit(tmp_path, ALL_RAN), "--capable")
    assert r.returncode == 0, r.stderr
    assert "ci: e2e           1 passed     1 skipped   0 failed" in r.stdout
    assert "ci: other         1 passed     0 skipped   0 failed" in r.stdout


def test_a_tier_that_only_skipped_fails_where_it_should_run(tmp_path: Path) -> None:
    cases = [c for c in ALL_RAN if not c[0].startswith("tests.e2e")]
    cases += [("tests.e2e.test_logind", "skipped")] * 3
    r = tiers(junit(tmp_path, cases), "--capable")
    assert r.returncode == 1
    assert "ci: e2e           0 passed     3 skipped   0 failed" in r.stdout
    assert "the e2e tier ran no test" in r.stderr
    assert "3 skipped: the sandbox needs root" in r.stderr
    # on a machine without root or namespaces the skips are expected: noted, not failed
    r = tiers(junit(tmp_path, cases))
    assert r.returncode == 0 and "the e2e tier ran no test" in r.stdout


def test_a_missing_tier_fails_where_it_should_run(tmp_path: Path) -> None:
    cases = [c for c in ALL_RAN if not c[0].startswith("tests.packaging")]
    r = tiers(junit(tmp_path, cases), "--capable")
    assert r.returncode == 1 and "the packaging tier ran no test" in r.stderr


def test_a_skip_for_a_capability_the_machine_has_fails(tmp_path: Path) -> None:
    """One e2e test ran, two skipped because "the sandbox needs root": on a machine with root,
    namespaces and dbus-daemon that is wrong; elsewhere it is the expected skip."""
    cases = [*ALL_RAN, ("tests.e2e.test_logind", "skipped"), ("tests.e2e.test_logind", "skipped")]
    r = tiers(junit(tmp_path, cases), "--capable")
    assert r.returncode == 1
    assert "2 e2e test(s) skipped for a capability this machine has" in r.stderr
    assert tiers(junit(tmp_path, cases)).returncode == 0
