"""`scopeshim serve --cassette TRACE`: answer clients from a recording, without the engine.

The cassette owns org.freedesktop.systemd1 and, for each call, finds the recorded call that
matches it after normalisation (shim/replay/normalize.py: job ids, PIDs, unique names,
invocation IDs compare by role, not value), in recording order: the first unanswered match at
or after the current position (the calls in between were skipped), else the last answered one
(a client polling more often than the recording did). It sends the recorded reply, with the
caller's own PIDs and names put back, and the signals the recording shows after that call
(those of skipped calls first). A call the recording does not have is answered
org.freedesktop.DBus.Error.Failed and reported.

At exit (SIGTERM, SIGINT) it reports unexpected calls and recorded calls that never came
(a poll made fewer times than recorded is only noted). Exit status 0: the client made every
recorded call and nothing else; 3: it did not; 1: the bus or the name; 2: the trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

from dbus_fast import BusType, Message, MessageType, RequestNameReply
from dbus_fast.aio import MessageBus

from shim.bus.replay import from_dbus, to_dbus, to_trace
from shim.replay.compare import describe_call
from shim.replay.normalize import NCall, Normalizer, NVar, Sym, render
from shim.replay.plan import ExpectedSignal, Plan, Step
from shim.replay.trace import Message as TMessage

log = logging.getLogger("scopeshim.cassette")

SYSTEMD1 = "org.freedesktop.systemd1"
MISMATCH = 3


def call_key(c: NCall) -> tuple[str, str | None, str, str, str]:
    """What a recorded and a live call must share to match: not the client, and not the
    PIDs it names (any PID stands for the recorded one in its place)."""
    return (c.path, c.interface, c.member, c.signature, render(_any_pid(c.body)))


def _any_pid(v: Any) -> Any:
    if isinstance(v, Sym):
        return Sym("pid", "*") if v.kind == "pid" else v
    if isinstance(v, tuple):
        return tuple(_any_pid(x) for x in v)
    if isinstance(v, dict):
        return {k: _any_pid(x) for k, x in v.items()}
    if isinstance(v, NVar):
        return NVar(v.sig, _any_pid(v.value))
    return v


class Cassette:
    def __init__(self, plan: Plan, bus: MessageBus) -> None:
        self.plan = plan
        self.bus = bus
        self.steps: list[Step] = list(plan.steps)
        self.rec = plan.recorded
        self.live = Normalizer(plan.rules.options(), owners=[bus.unique_name or ""])
        self.answered = [0] * len(self.steps)
        self.pos = 0
        self.by_key: dict[Any, list[int]] = {}
        for n, step in enumerate(self.steps):
            self.by_key.setdefault(call_key(step.ncall), []).append(n)
        self.signals_after: dict[int, list[ExpectedSignal]] = {}
        for e in plan.signals:
            self.signals_after.setdefault(e.after, []).append(e)
        self.unexpected: list[str] = []
        self.emitted: set[int] = set()

    # -- sending ---------------------------------------------------------------------------

    def _leaf(self, kind: str, value: Any, key: str | None) -> Any:
        """Recorded values the live side knows under the same symbol (the caller's PIDs,
        unique names) are put back; job ids and the rest stay as recorded."""
        if kind not in ("name", "pid"):
            return value
        sym = self.rec.normal_leaf(kind, value, key)
        if not isinstance(sym, Sym):
            return value
        live = self.live.live_value(sym)
        return value if live is None else live

    def _outgoing(self, rec: TMessage, call: TMessage | None) -> list[Any]:
        body = self.rec.walk(rec, call, self._leaf)
        return [to_dbus(t, v) for t, v in zip(rec.types, body, strict=True)]

    def _emit(self, after: int, before_line: int | None = None) -> None:
        """The recorded signals after call `after` (only those before `before_line`)."""
        for e in self.signals_after.get(after, []):
            if id(e) in self.emitted:
                continue
            if before_line is not None and e.line > before_line:
                continue
            self.emitted.add(id(e))
            rec = e.emitted.msg
            if not rec.recovered:
                log.warning("not emitting the signal of line %d: its types are unknown", rec.line)
                continue
            msg = Message(
                message_type=MessageType.SIGNAL,
                path=rec.path,
                interface=rec.interface,
                member=rec.member,
                signature=rec.signature,
                body=self._outgoing(rec, None),
            )
            self.bus.send(msg)
            sent = to_trace(msg)
            self.live.learn(sent)
            self.live.signal(sent)  # named in stream order, as the recording was

    def start(self) -> None:
        self._emit(0)

    # -- answering -------------------------------------------------------------------------

    def _match(self, key: Any) -> tuple[int | None, bool]:
        """(step, fresh): the step to answer with; fresh when it is a first answer."""
        candidates = self.by_key.get(key, [])
        for n in candidates:
            if n >= self.pos and not self.answered[n]:
                return n, True
        for n in candidates:
            if not self.answered[n]:
                return n, True
        answered = [n for n in candidates if self.answered[n]]
        return (max(answered), False) if answered else (None, False)

    def on_message(self, msg: Message) -> Message | bool | None:
        if msg.message_type is not MessageType.METHOD_CALL:
            return None
        live_call = to_trace(msg)
        self.live.learn(live_call)
        if msg.sender is not None:
            self.live.name(msg.sender)
        ncall = self.live.call(live_call)
        n, fresh = self._match(call_key(ncall))
        if n is None:
            self.unexpected.append(
                f"{ncall.interface}.{ncall.member}({', '.join(render(a, 80) for a in ncall.body)})"
                f" on {ncall.path}"
            )
            log.warning("unexpected call: %s", self.unexpected[-1])
            if msg.flags & 0x1:
                return True
            return Message.new_error(
                msg, "org.freedesktop.DBus.Error.Failed",
                "scopeshim cassette: this call is not in the recording",
            )  # fmt: skip
        step = self.steps[n]
        self._bind(step, msg, live_call)
        reply = step.exchange.reply
        if fresh:
            for skipped in range(self.pos, n):
                if not self.answered[skipped]:
                    self._emit(self.steps[skipped].index)
            self.pos = max(self.pos, n + 1)
            if reply is not None:
                self._emit(step.index, before_line=reply.line)
        self.answered[n] += 1
        out = self._reply(msg, step, reply)
        if fresh:
            self._emit(step.index)
        return out

    def _bind(self, step: Step, msg: Message, live_call: TMessage) -> None:
        """The caller is the recorded client; its arguments' PIDs are the recorded ones."""
        if msg.sender and self.live.names.get(msg.sender, Sym("name", "peer")).name.startswith(
            "peer"
        ):
            self.live.bind_name(msg.sender, Sym("name", step.client))
        recorded: list[int] = []
        live: list[int] = []

        def collect(into: list[int]) -> Any:
            def leaf(kind: str, value: Any, key: str | None) -> Any:
                if kind == "pid":
                    into.append(value)
                return value

            return leaf

        self.rec.walk(step.call, None, collect(recorded))
        self.live.walk(live_call, None, collect(live))
        for r, x in zip(recorded, live, strict=False):
            sym = self.rec.pid(r)
            if isinstance(sym, Sym):
                self.live.bind_pid(x, sym)

    def _reply(self, msg: Message, step: Step, reply: TMessage | None) -> Message | bool:
        if msg.flags & 0x1:
            return True
        if reply is None:  # the recording has no answer (the capture ended): an empty one
            return Message.new_method_return(msg, "", [])
        if not reply.recovered:
            log.warning("the reply of line %d has unknown types; answering Failed", reply.line)
            return Message.new_error(
                msg, "org.freedesktop.DBus.Error.Failed",
                "scopeshim cassette: the recorded reply cannot be rebuilt",
            )  # fmt: skip
        body = self._outgoing(reply, step.call)
        if reply.kind == "error":
            out = Message(
                message_type=MessageType.ERROR, reply_serial=msg.serial,
                destination=msg.sender, error_name=reply.error_name,
                signature=reply.signature, body=body,
            )  # fmt: skip
        else:
            out = Message.new_method_return(msg, reply.signature, body)
        answer, call = to_trace(out), to_trace(msg)
        self.live.learn(answer, call)
        self.live.reply(answer, call)  # named in stream order, as the recording was
        return out

    # -- the report --------------------------------------------------------------------------

    def report(self) -> tuple[list[str], list[str], list[str]]:
        """(unexpected calls, recorded calls never made, polls made fewer times)."""
        seen_keys = {call_key(s.ncall) for n, s in enumerate(self.steps) if self.answered[n]}
        missing: list[str] = []
        fewer: list[str] = []
        for n, step in enumerate(self.steps):
            if self.answered[n] or step.setup:
                continue  # a required trace's calls made the state; nobody must repeat them
            text = f"call {step.number} of {step.source} (line {step.line}): {describe_call(step)}"
            (fewer if call_key(step.ncall) in seen_keys else missing).append(text)
        return list(self.unexpected), missing, fewer


async def run(trace: str, address: str | None) -> int:
    from shim.replay.plan import build
    from shim.replay.rules import MetaError
    from shim.replay.trace import TraceError

    try:
        plan = build(trace)
    except (TraceError, MetaError) as e:
        print(f"scopeshim: cassette {e}", file=sys.stderr)
        return 2
    for issue in plan.issues:
        log.warning("type not recovered: %s", issue)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if address is not None:
        bus = MessageBus(bus_address=address, negotiate_unix_fd=True)
    else:
        bus = MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=True)
    try:
        await bus.connect()
    except (OSError, ConnectionError) as e:
        print(f"scopeshim: cannot connect to the bus: {e}", file=sys.stderr)
        return 1
    cassette = Cassette(plan, bus)
    bus.add_message_handler(cassette.on_message)
    reply = await bus.request_name(SYSTEMD1)
    if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
        bus.disconnect()
        print(f"scopeshim: {SYSTEMD1} is already owned on this bus ({reply.name})",
              file=sys.stderr)  # fmt: skip
        return 1
    log.info("serving the cassette %s (%d calls) as %s", trace, len(plan.steps), bus.unique_name)
    cassette.start()
    disconnected = loop.create_task(bus.wait_for_disconnect())  # type: ignore[no-untyped-call]
    stopped = loop.create_task(stop.wait())
    done, pending = await asyncio.wait({disconnected, stopped}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    unexpected, missing, fewer = cassette.report()
    main = [n for n, s in enumerate(plan.steps) if not s.setup]
    out = [f"scopeshim cassette {trace}: {sum(1 for n in main if cassette.answered[n])} of "
           f"{len(main)} recorded calls made, {len(unexpected)} unexpected, "
           f"{len(missing)} missing"]  # fmt: skip
    out += [f"  unexpected: {u}" for u in unexpected]
    out += [f"  missing: {m}" for m in missing]
    out += [f"  polled fewer times than recorded: {f}" for f in fewer]
    print("\n".join(out), file=sys.stderr, flush=True)
    if disconnected in done:
        print("scopeshim: lost the bus connection", file=sys.stderr)
        return 1
    with contextlib.suppress(Exception):
        bus.disconnect()
    return MISMATCH if unexpected or missing else 0


def serve(trace: str, address: str | None, log_level: str | None) -> int:
    logging.basicConfig(
        level=str(log_level or "info").upper(),
        format="scopeshim[%(process)d]: %(levelname)s %(name)s: %(message)s",
    )
    return asyncio.run(run(trace, address))


__all__ = ["Cassette", "from_dbus", "serve"]
