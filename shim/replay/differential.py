"""Differential replay: one capture replayed against two live implementations, the first's
answers taken as the expected ones and the second's compared with them (same normalisation,
rules and report as against the recording)."""

from __future__ import annotations

import dataclasses

from shim.replay.compare import Difference, Live, Result, compare, same_reply
from shim.replay.conversation import Emitted
from shim.replay.normalize import NReply
from shim.replay.plan import ExpectedSignal, Plan, Step
from shim.replay.trace import SIGNAL, Message


def as_reference(plan: Plan, first: Live, label: str) -> Plan:
    """A copy of `plan` whose expected replies and signals are what `first` answered."""
    steps = []
    for step in plan.steps:
        if step.setup:
            steps.append(step)
            continue
        got = first.replies.get(step.index, NReply("none", None, "", ()))
        steps.append(dataclasses.replace(step, nreply=got))
    signals = []
    lines = {step.index: step.line for step in plan.steps}
    for s in first.signals:
        msg = Message(
            kind=SIGNAL, sender=label, destination=None, serial=None, reply_serial=None,
            path=s.nsignal.path, interface=s.nsignal.interface, member=s.nsignal.member,
            error_name=None, time=None, line=lines.get(s.after, 0),
        )  # fmt: skip
        # what came before the first compared call was the setup's doing (as compare.py
        # ignores it on the live side)
        setup = s.after <= plan.main_start
        signals.append(ExpectedSignal(s.after, label, setup, Emitted(msg, s.after), s.nsignal))
    return dataclasses.replace(plan, steps=steps, signals=signals)


def differ(plan: Plan, first: Live, second: Live, first_label: str, second_label: str) -> Result:
    """`second` compared with `first` ("expected" is the first's answer, "got" the second's)."""
    if first.error is not None:
        result = Result(plan.trace, provenance=dict(plan.meta.provenance))
        result.error = f"{first_label}: {first.error}"
        return result
    result = compare(as_reference(plan, first, first_label), second)
    if result.error is not None:
        result.error = f"{second_label}: {result.error}"
    # a poll (Job.State, ActiveState) answered as either run or the recording answered it
    # is no difference: when the answer changes depends on timing
    polled = {s.index: s for s in plan.steps if _is_poll(plan, s)}
    kept = []
    for d in result.failures:
        index = _index_of(plan, d)
        step = polled.get(index) if index is not None else None
        got = second.replies.get(step.index) if step is not None else None
        if step is not None and got is not None and _answered_so(plan, first, step, got):
            continue
        kept.append(d)
    result.failures = kept
    return result


def _is_poll(plan: Plan, step: Step) -> bool:
    c = step.ncall
    if step.setup or c.member != "Get" or len(c.body) != 2:
        return False
    iface, prop = c.body
    return isinstance(iface, str) and isinstance(prop, str) and plan.rules.is_poll(iface, prop)


def _index_of(plan: Plan, d: Difference) -> int | None:
    if d.kind != "reply" or d.call is None:
        return None
    for s in plan.steps:
        if not s.setup and s.number == d.call:
            return s.index
    return None


def _answered_so(plan: Plan, first: Live, step: Step, got: NReply) -> bool:
    same = [s for s in plan.steps if s.ncall == step.ncall and not s.setup]
    answers = [s.nreply for s in same] + [
        first.replies[s.index] for s in same if s.index in first.replies
    ]
    return any(same_reply(a, got) for a in answers)
