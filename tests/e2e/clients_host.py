"""Host side of the client scenarios: run one in the sandbox once per module, hand out its
steps, and parse what the clients printed."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from tests.e2e.conftest import HERE, run_in_sandbox

ROOT = HERE.parents[1]
# SCOPESHIM_CAPTURE_TRACES=1: the scenarios write their per-step bus traces here
TRACES = ROOT / "fixtures" / "dbus-logs" / "scopeshim-clients"


class Steps:
    """The JSON objects a scenario printed, by step name."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = {e["step"]: e for e in events}

    def __getitem__(self, name: str) -> dict[str, Any]:
        if name not in self.events:
            pytest.fail(f"step {name} did not report; steps: {sorted(self.events)}")
        facts = self.events[name]
        if "error" in facts:
            pytest.fail(f"step {name} raised inside the sandbox:\n{facts['error']}")
        return facts

    def names(self) -> list[str]:
        return list(self.events)


def run_scenario(
    python: str, script: str, *args: str, timeout: int = 300, unified: bool = False
) -> Steps:
    extra: list[str] = []
    if os.environ.get("SCOPESHIM_CAPTURE_TRACES"):
        extra = ["--capture", str(TRACES)]
    events = run_in_sandbox(
        python, str(HERE / script), *args, *extra, timeout=timeout, unified=unified
    )
    return Steps(events)


def explain(facts: Any) -> str:
    """A step's facts, readable in an assertion message."""
    return json.dumps(facts, indent=1)[:6000]


def lines(result: dict[str, Any]) -> list[str]:
    return [line.rstrip() for line in result["out"].splitlines()]


def rows(result: dict[str, Any]) -> dict[str, list[str]]:
    """`systemctl list-units --plain --no-legend`: {unit: [load, active, sub, description]}."""
    out: dict[str, list[str]] = {}
    for line in result["out"].splitlines():
        parts = line.split(None, 4)
        if len(parts) >= 4:
            out[parts[0]] = [*parts[1:4], parts[4] if len(parts) > 4 else ""]
    return out


def show_dict(result: dict[str, Any]) -> dict[str, str]:
    return dict(line.split("=", 1) for line in result["out"].splitlines() if "=" in line)


def field(result: dict[str, Any], name: str) -> str | None:
    """The value of `Name: value` in `systemctl status` or `loginctl session-status`."""
    for line in result["out"].splitlines():
        key, sep, value = line.strip().partition(": ")
        if sep and key == name:
            return value
    return None


def daemon_notes(facts: dict[str, Any], *words: str) -> list[str]:
    return [line for line in facts.get("daemon_log", []) if all(w in line for w in words)]


def no_unknown_members(facts: dict[str, Any]) -> None:
    assert facts.get("unknown_members") == [], (
        "clients called members the daemon does not implement:\n"
        + "\n".join(facts.get("unknown_members", []))
    )
