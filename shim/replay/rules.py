"""Rules that allow differences, and what a trace's metadata says, as plain data (the
pydantic model that reads them is shim/replay/meta.py)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

from shim.replay.normalize import Options, Replacement


class MetaError(Exception):
    """A metadata or rules file that cannot be used (the message names file and key)."""


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    reason: str
    section: str  # "allow" or "known-differences"
    what: tuple[str, ...] = ("any",)
    units: tuple[str, ...] = ("*",)
    members: tuple[str, ...] = ("*",)
    properties: tuple[str, ...] = ("*",)
    calls: tuple[int, ...] = ()
    interfaces: tuple[str, ...] = ("*",)
    not_units: tuple[str, ...] = ()
    owner: str = ""
    source: str = ""

    def matches(
        self, kind: str, unit: str | None, member: str, prop: str | None, call: int | None,
        interface: str | None = None, field: str | None = None,
    ) -> bool:  # fmt: skip
        if "any" not in self.what and kind not in self.what:
            return False
        if self.interfaces != ("*",) and not _match(self.interfaces, interface or ""):
            return False
        if self.calls and call not in self.calls:
            return False
        if not _match(self.members, member):
            return False
        if self.units != ("*",) and (unit is None or not _match(self.units, unit)):
            return False
        if self.not_units and unit is not None and _match(self.not_units, unit):
            return False
        if self.properties == ("*",):
            return True
        return prop is not None and (
            _match(self.properties, prop) or (field is not None and _match(self.properties, field))
        )

    def label(self) -> str:
        return f"{self.section}: {self.id}"


@functools.cache
def _glob(pattern: str) -> re.Pattern[str]:
    """`*` and `?` only: brackets are literal (field paths such as reply[0][*][2])."""
    return re.compile(re.escape(pattern).replace(r"\*", ".*").replace(r"\?", "."))


def _match(patterns: tuple[str, ...], value: str) -> bool:
    return any(_glob(p).fullmatch(value) for p in patterns)


# Properties whose reads are polls: how often a client asks and when the answer changes
# depends on timing, so the reply may be any reply the recording has for the same call.
DEFAULT_POLLS = (
    ("org.freedesktop.systemd1.Job", "State"),
    ("org.freedesktop.systemd1.Unit", "ActiveState"),
    ("org.freedesktop.systemd1.Unit", "SubState"),
)


@dataclass(slots=True)
class RuleSet:
    allow: list[Rule] = field(default_factory=list)
    known: list[Rule] = field(default_factory=list)
    replace: list[tuple[str, str]] = field(default_factory=list)
    varying: list[str] = field(default_factory=list)
    times: list[str] = field(default_factory=list)
    polls: list[tuple[str, str]] = field(default_factory=list)

    def extend(self, other: RuleSet) -> None:
        self.allow.extend(other.allow)
        self.known.extend(other.known)
        self.replace.extend(other.replace)
        self.varying.extend(other.varying)
        self.times.extend(other.times)
        self.polls.extend(other.polls)

    def find(
        self, kind: str, unit: str | None, member: str, prop: str | None, call: int | None,
        interface: str | None = None, field: str | None = None,
    ) -> Rule | None:  # fmt: skip
        """The rule that allows this difference: known differences first (so that they are
        counted as such), then allowances. `prop` is the property (or field) name, `field`
        the whole path of the value (`reply[0][1][2]`); a rule's `properties` may name
        either."""
        for rule in self.known:
            if rule.matches(kind, unit, member, prop, call, interface, field):
                return rule
        for rule in self.allow:
            if rule.matches(kind, unit, member, prop, call, interface, field):
                return rule
        return None

    def find_for_all(
        self, kind: str, unit: str | None, member: str, props: list[str],
        interface: str | None,
    ) -> Rule | None:  # fmt: skip
        """The rule that allows a missing or unexpected signal: a rule naming properties
        applies when every property the signal changes is one of them."""
        for rules in (self.known, self.allow):
            for rule in rules:
                if rule.properties == ("*",):
                    if rule.matches(kind, unit, member, None, None, interface):
                        return rule
                elif props and all(
                    rule.matches(kind, unit, member, p, None, interface) for p in props
                ):
                    return rule
        return None

    def options(self) -> Options:
        return Options(
            replace=[Replacement(re.compile(p), r) for p, r in self.replace],
            varying=frozenset(self.varying),
            times=frozenset(self.times),
        )

    def is_poll(self, interface: str, prop: str) -> bool:
        return (interface, prop) in DEFAULT_POLLS or (interface, prop) in self.polls


@dataclass(frozen=True, slots=True)
class Action:
    after: int
    kill: str  # a PID symbol, e.g. "pid:session-c1.scope" or "pid:client-2"
    signal: str = "TERM"
    delay: float = 0.0


@dataclass(slots=True)
class TraceMeta:
    path: str | None
    provenance: dict[str, Any] = field(default_factory=dict)
    exclude_clients: tuple[str, ...] = ()
    exclude_reason: str = ""
    from_marker: str | None = None
    until_marker: str | None = None
    requires: tuple[str, ...] = ()
    compare: bool = True
    signal_timeout: float = 2.0
    actions: tuple[Action, ...] = ()
    rules: RuleSet = field(default_factory=RuleSet)
