"""pytest plugin for `make e2e`: one line per case instead of pytest's progress dots,

    PASS  logind 252  root          open                        0.4 s
    FAIL  logind 257  unprivileged  loginctl                    1.1 s

and, as the very last line, "N passed, M failed" (", K skipped" when some were). A case's
name is its "case" user property (tests/e2e/test_logind.py sets it) or its test id; its time
is its "seconds" property (the step's time inside the sandbox run) or the test's own.
Failures are still explained by pytest's summary, above the last line.

Use: pytest -p tests.e2e.caselines tests/e2e
"""

from __future__ import annotations

from typing import Any

import pytest

_counts = {"passed": 0, "failed": 0, "skipped": 0}


def _name(report: pytest.TestReport) -> str:
    props = dict(report.user_properties)
    if "case" in props:
        return str(props["case"])
    path, _, test = report.nodeid.partition("::")
    return f"{path.rsplit('/', 1)[-1].removesuffix('.py')}::{test}"


def _seconds(report: pytest.TestReport, total: float) -> str:
    props = dict(report.user_properties)
    value = props.get("seconds")
    return f"{float(value if value is not None else total):6.1f} s"


_durations: dict[str, float] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> Any:
    """No progress letters: the case lines say it."""
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        return report.outcome, "", report.outcome.upper()
    if report.when == "teardown" and report.outcome == "failed":
        return "error", "", "ERROR"
    return None


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration
    verdict = None
    if report.when == "call" or (report.when == "setup" and not report.passed):
        verdict = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP"}[report.outcome]
    elif report.when == "teardown" and report.failed:
        verdict = "FAIL"
    if verdict is None:
        return
    _counts[{"PASS": "passed", "FAIL": "failed", "SKIP": "skipped"}[verdict]] += 1
    line = f"{verdict}  {_name(report):<54} {_seconds(report, _durations[report.nodeid])}"
    note = dict(report.user_properties).get("note")
    if verdict == "SKIP" and isinstance(report.longrepr, tuple):
        note = report.longrepr[2]
    if note:
        line += f"  ({note})"
    _write(report, line)


_config: list[pytest.Config] = []


def pytest_configure(config: pytest.Config) -> None:
    _config.append(config)


def _write(report: pytest.TestReport, line: str) -> None:
    terminal = _config[0].pluginmanager.get_plugin("terminalreporter") if _config else None
    if terminal is not None:
        terminal.ensure_newline()
        terminal.write_line(line)
    else:
        print(line, flush=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    line = f"{_counts['passed']} passed, {_counts['failed']} failed"
    if _counts["skipped"]:
        line += f", {_counts['skipped']} skipped"
    print(line, flush=True)
