"""Comparison of a live run with the recording, after normalisation, and the readable
conversation diff.

Replies are compared call by call (kind, error name and message, every value; a poll's reply
may be any reply the recording has for the same call). Signals are compared as a multiset:
equal ones pair first, then the remaining ones of one identity (path, interface, member, first
argument) pair by similarity and are compared value by value; what is left is missing or
unexpected. Each difference is then looked up in the rules: allowed ones are listed (with the
rule), known differences are listed as such, the rest fail the trace.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from compat.buspath import unit_name_from_path
from shim.replay.normalize import NReply, NSignal, NVar, Sym, render
from shim.replay.plan import ExpectedSignal, Plan, Step
from shim.replay.rules import Rule
from shim.replay.trace import Issue

_MAX_VALUE = 160
NO_CHANGE = "(no change)"  # a PropertiesChanged that repeats the values of the previous one


@dataclass(slots=True)
class Difference:
    kind: str  # reply | missing-signal | unexpected-signal | signal | not-sent
    where: str  # "call 3 (line 120)" / "after call 3"
    title: str  # the call or signal concerned
    field: str  # which part differs ("" for a whole message)
    expected: str
    got: str
    unit: str | None
    member: str
    call: int | None
    rule: Rule | None = None
    interface: str | None = None

    def lines(self) -> list[str]:
        head = f"{self.where}: {self.kind}"
        if self.field:
            head += f" [{self.field}]"
        out = [head, f"    {self.title}"]
        if self.expected:
            out.append(f"    expected: {self.expected}")
        if self.got:
            out.append(f"    got:      {self.got}")
        if self.rule is not None:
            out.append(f"    ({self.rule.label()}: {self.rule.reason})")
        return out


@dataclass(slots=True)
class LiveSignal:
    after: int
    nsignal: NSignal


@dataclass(slots=True)
class Live:
    """What the live run produced (normalised)."""

    replies: dict[int, NReply] = field(default_factory=dict)  # global step index -> reply
    not_sent: dict[int, str] = field(default_factory=dict)  # step index -> why
    signals: list[LiveSignal] = field(default_factory=list)
    error: str | None = None  # the replay could not run at all


@dataclass(slots=True)
class Result:
    trace: str
    failures: list[Difference] = field(default_factory=list)
    allowed: list[Difference] = field(default_factory=list)
    known: list[Difference] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    calls: int = 0
    signals: int = 0
    matched_signals: int = 0
    seconds: float = 0.0
    error: str | None = None
    compared: bool = True
    provenance: dict[str, Any] = field(default_factory=dict)
    inferred: list[str] = field(default_factory=list)  # the world made before the trace
    not_made: list[str] = field(default_factory=list)  # inferred setup calls that failed

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failures

    def add(self, diff: Difference) -> None:
        if diff.rule is None:
            self.failures.append(diff)
        elif diff.rule.section == "known-differences":
            self.known.append(diff)
        else:
            self.allowed.append(diff)


# -- values -----------------------------------------------------------------------------------


def value_diffs(expected: Any, got: Any, path: str = "") -> Iterator[tuple[str, str, str, str]]:
    """(field, property name, expected, got) for every leaf that differs."""
    if isinstance(expected, NVar) and isinstance(got, NVar):
        if expected.sig != got.sig:
            yield (
                path,
                _prop(path),
                f"<{expected.sig}> " + render(expected.value, _MAX_VALUE),
                (f"<{got.sig}> " + render(got.value, _MAX_VALUE)),
            )
            return
        yield from value_diffs(expected.value, got.value, path)
        return
    if isinstance(expected, dict) and isinstance(got, dict):
        for k in expected:
            sub = f"{path}.{k}" if path else str(k)
            if k not in got:
                yield sub, str(k), render(expected[k], _MAX_VALUE), "(absent)"
            else:
                yield from value_diffs(expected[k], got[k], sub)
        for k in got:
            if k not in expected:
                sub = f"{path}.{k}" if path else str(k)
                yield sub, str(k), "(absent)", render(got[k], _MAX_VALUE)
        return
    if isinstance(expected, tuple) and isinstance(got, tuple) and _keyed(expected, got):
        # lists of structs named by their first field (ListUnits): compare by name
        ek = {x[0]: x for x in expected}
        gk = {x[0]: x for x in got}
        for k in ek:
            sub = f"{path}[{k}]"
            if k not in gk:
                yield sub, str(k), render(ek[k], _MAX_VALUE), "(absent)"
            else:
                yield from value_diffs(ek[k], gk[k], sub)
        for k in gk:
            if k not in ek:
                yield f"{path}[{k}]", str(k), "(absent)", render(gk[k], _MAX_VALUE)
        return
    if (
        isinstance(expected, tuple)
        and isinstance(got, tuple)
        and len(expected) == len(got)
        and not _is_set_like(expected)
    ):
        for n, (e, g) in enumerate(zip(expected, got, strict=True)):
            yield from value_diffs(e, g, f"{path}[{n}]")
        return
    if (
        isinstance(expected, tuple)
        and isinstance(got, tuple)
        and _is_set_like(expected)
        and sorted(map(render, expected)) == sorted(map(render, got))
    ):
        return  # the same members in another order
    if type(expected) is not type(got) or expected != got:
        yield path, _prop(path), render(expected, _MAX_VALUE), render(got, _MAX_VALUE)


def _keyed(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Lists of structs whose first fields are distinct unit names."""
    for v in (a, b):
        if not all(isinstance(x, tuple) and x and isinstance(x[0], str) for x in v):
            return False
        if len({x[0] for x in v}) != len(v):
            return False
    return bool(a or b) and all(_unit_like(x[0]) for x in (*a, *b))


def _unit_like(name: str) -> bool:
    return "." in name and "/" not in name and name.rsplit(".", 1)[1] in _UNIT_SUFFIXES


_UNIT_SUFFIXES = frozenset({
    "service", "socket", "target", "device", "mount", "automount", "swap", "timer", "path",
    "slice", "scope",
})  # fmt: skip


def _is_set_like(v: tuple[Any, ...]) -> bool:
    """A list of strings (dependency lists, names): order does not carry meaning."""
    return bool(v) and all(isinstance(x, str) for x in v)


def _prop(path: str) -> str:
    """The property name a field path ends in (`[0].ActiveState` -> ActiveState)."""
    tail = path.rsplit(".", 1)[-1]
    return tail.split("[", 1)[0] or path


def _equal(a: Any, b: Any) -> bool:
    return next(value_diffs(a, b), None) is None


# -- the comparison ---------------------------------------------------------------------------


def _call_unit(step: Step) -> str | None:
    body = step.ncall.body
    if step.ncall.path == "/org/freedesktop/systemd1" and body and isinstance(body[0], str):
        return body[0] if "." in body[0] else None
    return unit_name_from_path(step.ncall.path)


def _signal_unit(sig: NSignal) -> str | None:
    if sig.member in ("UnitNew", "UnitRemoved") and sig.body and isinstance(sig.body[0], str):
        return sig.body[0]
    if sig.member in ("JobNew", "JobRemoved") and len(sig.body) >= 3:
        return str(sig.body[2])
    unit = unit_name_from_path(sig.path)
    if unit is not None:
        return unit
    if sig.path.startswith("<job:"):
        return sig.path[5:-1].split("#", 1)[0]
    return None


def _short_path(path: str) -> str:
    unit = unit_name_from_path(path)
    if unit is not None:
        return f"unit {unit}"
    if path == "/org/freedesktop/systemd1":
        return "Manager"
    return path


def _signal_interface(sig: NSignal) -> str | None:
    if sig.member == "PropertiesChanged" and sig.body and isinstance(sig.body[0], str):
        return sig.body[0]
    return sig.interface


def describe_call(step: Step, limit: int = 140) -> str:
    c = step.ncall
    iface = (c.interface or "").rsplit(".", 1)[-1]
    args = ", ".join(render(a, 60) for a in c.body)
    text = f"{c.client} -> {_short_path(c.path)}: {iface}.{c.member}({args})"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_signal(sig: NSignal, limit: int = 140) -> str:
    iface = (sig.interface or "").rsplit(".", 1)[-1]
    args = ", ".join(render(a, 60) for a in sig.body)
    text = f"{_short_path(sig.path)}: {iface}.{sig.member}({args})"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_reply(r: NReply) -> str:
    if r.kind == "none":
        return "(no reply)"
    if r.kind == "error":
        msg = render(r.body[0], _MAX_VALUE) if r.body else ""
        return f"error {r.error_name} {msg}".rstrip()
    return "return " + (", ".join(render(b, _MAX_VALUE) for b in r.body) or "(nothing)")


def _poll_replies(plan: Plan, step: Step) -> list[NReply] | None:
    c = step.ncall
    if c.member != "Get" or len(c.body) != 2:
        return None
    iface, prop = c.body
    if not isinstance(iface, str) or not isinstance(prop, str):
        return None
    if not plan.rules.is_poll(iface, prop):
        return None
    return [s.nreply for s in plan.steps if s.ncall == c and s.nreply.kind != "none"]


def _compare_reply(plan: Plan, step: Step, got: NReply, result: Result) -> None:
    exp = step.nreply
    if exp.kind == "none":
        return
    where = f"call {step.number} (line {step.line})"
    title = describe_call(step)
    unit = _call_unit(step)
    member = step.ncall.member
    polls = _poll_replies(plan, step)
    if polls is not None and any(same_reply(p, got) for p in polls):
        return
    diffs: list[tuple[str, str, str, str]] = []
    if exp.kind != got.kind:
        diffs.append(("reply", "reply", describe_reply(exp), describe_reply(got)))
    elif exp.kind == "error":
        if exp.error_name != got.error_name:
            diffs.append(("error name", "error", describe_reply(exp), describe_reply(got)))
        elif not _equal(exp.body, got.body):
            diffs.append(("error message", "message", describe_reply(exp), describe_reply(got)))
    elif exp.signature != got.signature:
        diffs.append(
            ("signature", "signature", f"{exp.signature!r} " + describe_reply(exp),
             f"{got.signature!r} " + describe_reply(got))
        )  # fmt: skip
    else:
        for fld, prop, e, g in value_diffs(exp.body, got.body):
            diffs.append((f"reply{fld}", prop, e, g))
    for fld, prop, e, g in diffs:
        d = Difference("reply", where, title, fld, e, g, unit, member, step.number)
        if _unit_like(prop):
            d.unit = prop  # an entry of a unit list, a child node of .../unit
        d.interface = step.ncall.interface
        if polls is not None:
            d.expected += "  (a poll: any recorded reply to this call would do)"
        d.rule = plan.rules.find("reply", d.unit, member, prop, step.number, d.interface, fld)
        result.add(d)


def same_reply(a: NReply, b: NReply) -> bool:
    return (
        a.kind == b.kind
        and a.error_name == b.error_name
        and (a.kind == "error" or _equal(a.body, b.body))
    )


def _similarity(a: NSignal, b: NSignal) -> int:
    score = 0
    for x, y in zip(a.body, b.body, strict=False):
        if isinstance(x, dict) and isinstance(y, dict):
            score += sum(1 for k in x if k in y and _equal(x[k], y[k]))
        elif _equal(x, y):
            score += 1
    return score


def _compare_signals(plan: Plan, live: Live, result: Result) -> None:
    expected = [e for e in plan.signals if not e.setup]
    # live signals that came before the first compared call were caused by the setup, unless
    # the recording shows them there too (a trace cut from a longer run starts with the tail
    # of the previous phase): those are matched, the others ignored
    got = [g for g in live.signals if g.after >= plan.main_start]
    before_first = [g.after == plan.main_start and plan.main_start > 0 for g in got]
    result.signals = len(expected)
    used = [False] * len(got)
    pending: list[ExpectedSignal] = []
    by_identity: dict[Any, list[int]] = {}
    for n, g in enumerate(got):
        by_identity.setdefault(g.nsignal.identity(), []).append(n)
    # 1. equal signals
    for e in expected:
        # the equal signal that came nearest the recorded moment
        equal = [
            n
            for n in by_identity.get(e.nsignal.identity(), ())
            if not used[n] and _equal(e.nsignal.body, got[n].nsignal.body)
        ]
        hit = min(equal, key=lambda n: (abs(got[n].after - e.after), n)) if equal else None
        if hit is None:
            pending.append(e)
        else:
            used[hit] = True
            result.matched_signals += 1
    # 2. the same signal with other values: pair by similarity (PropertiesChanged only
    # when they announce a change of at least one same property)
    exp_changes = _changes([e.nsignal for e in plan.signals])
    got_changes = _changes([g.nsignal for g in live.signals])
    offset = len(plan.signals) - len(expected)
    first_live = len(live.signals) - len(got)
    position = {id(e): n for n, e in enumerate(expected)}
    missing: list[ExpectedSignal] = []
    for e in pending:
        echanged = exp_changes[offset + position[id(e)]]
        candidates = [
            n
            for n in by_identity.get(e.nsignal.identity(), ())
            if not used[n] and _overlap(echanged, got_changes[first_live + n])
        ]
        if not candidates:
            missing.append(e)
            continue
        best = max(
            candidates,
            key=lambda n: (
                _similarity(e.nsignal, got[n].nsignal),
                -abs(got[n].after - e.after),
                -n,
            ),
        )
        used[best] = True
        unit = _signal_unit(e.nsignal)
        where = f"after call {e.after - plan.main_start} (line {e.line})"
        for fld, prop, ev, gv in value_diffs(e.nsignal.body, got[best].nsignal.body):
            d = Difference(
                "signal", where, describe_signal(e.nsignal), fld, ev, gv, unit,
                e.nsignal.member, None,
            )  # fmt: skip
            d.interface = _signal_interface(e.nsignal)
            d.rule = plan.rules.find("signal", unit, e.nsignal.member, prop, None, d.interface, fld)
            result.add(d)
    for e in missing:
        unit = _signal_unit(e.nsignal)
        changed = exp_changes[offset + position[id(e)]]
        d = Difference(
            "missing-signal", f"after call {e.after - plan.main_start} (line {e.line})",
            describe_signal(e.nsignal), "", "", "", unit, e.nsignal.member, None,
        )  # fmt: skip
        if changed is not None:
            d.field = "changes " + ", ".join(changed)
        d.interface = _signal_interface(e.nsignal)
        d.rule = plan.rules.find_for_all(
            "missing-signal", unit, e.nsignal.member, changed or [], d.interface
        )
        result.add(d)
    for n, g in enumerate(got):
        if used[n] or before_first[n]:
            continue
        unit = _signal_unit(g.nsignal)
        changed = got_changes[first_live + n]
        d = Difference(
            "unexpected-signal", f"after call {g.after - plan.main_start}",
            describe_signal(g.nsignal), "", "", "", unit, g.nsignal.member, None,
        )  # fmt: skip
        if changed is not None:
            d.field = "changes " + ", ".join(changed)
        d.interface = _signal_interface(g.nsignal)
        d.rule = plan.rules.find_for_all(
            "unexpected-signal", unit, g.nsignal.member, changed or [], d.interface
        )
        result.add(d)


def _overlap(a: list[str] | None, b: list[str] | None) -> bool:
    if a is None or b is None:
        return True
    if NO_CHANGE in a or NO_CHANGE in b:
        return False  # a repeat is paired only with an equal signal
    return bool(set(a) & set(b))


def _changes(signals: list[NSignal]) -> list[list[str] | None]:
    """For each PropertiesChanged: the properties whose value differs from the previous
    PropertiesChanged of the same object and interface (all of them for the first)."""
    last: dict[Any, dict[Any, Any]] = {}
    out: list[list[str] | None] = []
    for sig in signals:
        if sig.member != "PropertiesChanged" or len(sig.body) < 2:
            out.append(None)
            continue
        props = sig.body[1] if isinstance(sig.body[1], dict) else {}
        key = sig.identity()
        before = last.get(key, {})
        changed = [str(k) for k, v in props.items() if k not in before or not _equal(before[k], v)]
        last[key] = {**before, **props}
        out.append(changed or [NO_CHANGE])
    return out


def compare(plan: Plan, live: Live) -> Result:
    result = Result(plan.trace, provenance=dict(plan.meta.provenance))
    result.issues = list(plan.issues)
    if plan.world is not None:
        result.inferred = plan.world.lines()
    if live.error is not None:
        result.error = live.error
        return result
    made = len(plan.world.calls) if plan.world is not None else 0
    for step in plan.steps[:made]:
        got = live.replies.get(step.index)
        why = live.not_sent.get(step.index)
        if why is None and got is not None and got.kind == "error":
            why = f"{got.error_name} {render(got.body, 120)}"
        if why is not None:
            result.not_made.append(f"{describe_call(step)}: {why}")
    for step in plan.compared_steps:
        result.calls += 1
        if step.index in live.not_sent:
            d = Difference(
                "not-sent", f"call {step.number} (line {step.line})", describe_call(step),
                "", "", live.not_sent[step.index], _call_unit(step), step.ncall.member,
                step.number,
            )  # fmt: skip
            d.interface = step.ncall.interface
            d.rule = plan.rules.find("not-sent", d.unit, d.member, None, step.number, d.interface)
            result.add(d)
            continue
        got = live.replies.get(step.index)
        if got is None:
            got = NReply("none", None, "", ())
        _compare_reply(plan, step, got, result)
    _compare_signals(plan, live, result)
    return result


def allows_missing(plan: Plan, sig: NSignal) -> bool:
    """Whether the rules would forgive this signal's absence (not worth waiting for)."""
    unit = _signal_unit(sig)
    rule = plan.rules.find("missing-signal", unit, sig.member, None, None, _signal_interface(sig))
    return rule is not None


__all__ = ["Difference", "Live", "LiveSignal", "Result", "Sym", "allows_missing", "compare"]
