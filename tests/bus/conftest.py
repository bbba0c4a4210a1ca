"""The fault-injection suite's figures (calls, kills, units checked, worst stall) at the end
of every run that includes it, captured output or not."""

from __future__ import annotations

import sys

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    faults = sys.modules.get("tests.bus.test_faults")
    lines = getattr(faults, "FIGURES", [])
    if lines:
        terminalreporter.section("fault injection figures")
        for line in lines:
            terminalreporter.write_line(line)
