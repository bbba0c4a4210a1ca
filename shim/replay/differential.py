"""Differential replay: one capture replayed against two live implementations, the first's
answers taken as the expected ones and the second's compared with them (same normalisation,
rules and report as against the recording)."""

from __future__ import annotations

import dataclasses

from shim.replay.compare import Live, Result, compare
from shim.replay.conversation import Emitted
from shim.replay.normalize import NReply
from shim.replay.plan import ExpectedSignal, Plan
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
    return result
