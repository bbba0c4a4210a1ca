"""Normalisation: two runs of one scenario compare equal; symbols are named by role."""

from __future__ import annotations

from pathlib import Path

from shim.replay.conversation import select
from shim.replay.normalize import Normalizer, NVar, Sym
from shim.replay.trace import loads

TEMPLATE = (Path(__file__).with_name("data") / "normalize-template.log").read_text()


def run(**values):
    text = TEMPLATE.format(**values)
    trace = loads(text.encode(), "run.log")
    assert trace.issues == []
    conv = select(trace)
    norm = Normalizer(owners=conv.owners, clients=conv.clients)
    for ex in conv.exchanges:
        norm.learn(ex.call)
        if ex.reply is not None:
            norm.learn(ex.reply, ex.call)
    for e in conv.signals:
        norm.learn(e.msg)
    calls = [(norm.call(ex.call), norm.reply(ex.reply, ex.call)) for ex in conv.exchanges]
    signals = [norm.signal(e.msg) for e in conv.signals]
    return calls, signals


RUN_A = {"t": 1795391710, "logind": ":1.7", "pid1": ":1.0", "leader": 4242, "job": 25,
         "job2": 33, "inv": "8b 3a 0d da c7 29 42 7c 9f d5 31 e6 cf c4 18 1f"}  # fmt: skip
RUN_B = {"t": 1800000000, "logind": ":1.31", "pid1": ":1.2", "leader": 777, "job": 1203,
         "job2": 1207, "inv": "00 11 22 33 44 55 66 77 88 99 aa bb cc dd ee ff"}  # fmt: skip


def test_two_runs_compare_equal():
    assert run(**RUN_A) == run(**RUN_B)


def test_symbols_are_named_by_role():
    calls, signals = run(**RUN_A)
    (start, start_reply), (poll, _), (_, stop_reply) = calls
    assert start.client == "client-1"
    assert start.body[2][0] == ("PIDs", NVar("au", (Sym("pid", "session-c1.scope"),)))
    assert start_reply.body == (Sym("job", "session-c1.scope"),)
    assert poll.path == "<job:session-c1.scope>"
    assert stop_reply.body == (Sym("job", "session-c1.scope#2"),)  # the unit's second job
    job_new, changed = signals
    assert job_new.body[0] == Sym("job", "session-c1.scope")
    props = changed.body[1]
    assert props["ActiveEnterTimestamp"] == NVar("t", Sym("time", ""))
    assert props["InvocationID"] == NVar("ay", Sym("invocation", "session-c1.scope"))
    assert props["Job"] == NVar("(uo)", (Sym("job", "session-c1.scope"),) * 2)


def test_a_different_value_still_differs():
    a = run(**RUN_A)
    b = run(**{**RUN_A, "job2": 25})  # the stop "job" is the start job: not the same run
    assert a != b
