"""`scopeshim replay` on the bus: re-send a trace's client calls to a running
org.freedesktop.systemd1, collect its replies and signals, and hand them to
shim/replay/compare.py.

Each recorded client gets its own connection. A client whose own PID the recording puts into a
unit (`systemd-run --scope` moves itself into the scope, then asks for `unit/self`) is a
separate process (shim/bus/replay_peer.py), so that the daemon sees the right PID; PIDs the
calls name otherwise are stood in for by `sleep` processes started for the run. Job ids,
invocation IDs and unique names in the recorded calls are replaced by their live equivalents
(shim/replay/normalize.py names both sides). Before each call the replayer waits (bounded by
the trace's `signal_timeout`) for the signals the recording shows before it, and it performs
the trace's actions (a PID's exit) where the metadata puts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal as signals
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from compat.buspath import JOB_PATH_PREFIX, UNIT_PATH_PREFIX
from shim.replay import values as rv
from shim.replay.compare import Live, LiveSignal, allows_missing
from shim.replay.normalize import Normalizer, Sym
from shim.replay.plan import Plan, Step
from shim.replay.trace import CALL, ERROR, RETURN, SIGNAL
from shim.replay.trace import Message as TMessage

log = logging.getLogger(__name__)

SYSTEMD1 = "org.freedesktop.systemd1"
DRIVER = "org.freedesktop.DBus"
DRIVER_PATH = "/org/freedesktop/DBus"
NO_JOB = 4294967295  # a job id no daemon hands out before 2^32 jobs
_KINDS = {
    MessageType.METHOD_CALL: CALL,
    MessageType.METHOD_RETURN: RETURN,
    MessageType.ERROR: ERROR,
    MessageType.SIGNAL: SIGNAL,
}


# -- values between dbus-fast and shim/replay --------------------------------------------------


def from_dbus(t: rv.Type, v: Any) -> Any:
    """A dbus-fast value as shim/replay holds it (Variant -> Var, structs as lists)."""
    if isinstance(t, str):
        if t == "v":
            inner = rv.parse_type(v.signature)
            return rv.Var(v.signature, from_dbus(inner, v.value))
        if t == "h":
            return rv.Fd(v)
        return v
    kind = t[0]
    if kind == "a":
        elem = t[1]
        if elem == "y":
            return bytes(v)
        if isinstance(elem, tuple) and elem[0] == "e":
            return {from_dbus(elem[1], k): from_dbus(elem[2], x) for k, x in v.items()}
        return [from_dbus(elem, x) for x in v]
    return [from_dbus(f, x) for f, x in zip(t[1], v, strict=True)]


def to_dbus(t: rv.Type, v: Any) -> Any:
    """The inverse of `from_dbus`."""
    if isinstance(t, str):
        if t == "v":
            inner = rv.parse_type(v.sig)
            return Variant(v.sig, to_dbus(inner, v.value))
        if t == "h":
            return v.index if isinstance(v, rv.Fd) else v
        return v
    kind = t[0]
    if kind == "a":
        elem = t[1]
        if elem == "y":
            return bytes(v)
        if isinstance(elem, tuple) and elem[0] == "e":
            return {to_dbus(elem[1], k): to_dbus(elem[2], x) for k, x in v.items()}
        return [to_dbus(elem, x) for x in v]
    return [to_dbus(f, x) for f, x in zip(t[1], v, strict=True)]


def to_trace(msg: Message, line: int = 0) -> TMessage:
    """A dbus-fast message as shim/replay's Message."""
    types = rv.parse_signature(msg.signature or "")
    body = [from_dbus(t, v) for t, v in zip(types, msg.body, strict=False)]
    return TMessage(
        kind=_KINDS.get(msg.message_type, SIGNAL),
        sender=msg.sender,
        destination=msg.destination,
        serial=msg.serial,
        reply_serial=msg.reply_serial,
        path=msg.path,
        interface=msg.interface,
        member=msg.member,
        error_name=msg.error_name,
        time=time.time(),
        line=line,
        types=types,
        body=body,
        recovered=True,
    )


# -- clients ------------------------------------------------------------------------------------


class _Client:
    label: str
    unique_name: str
    pid: int | None = None

    async def call(self, msg: Message, timeout: float) -> Message | None:
        raise NotImplementedError

    async def depart(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class _BusClient(_Client):
    def __init__(self, label: str, bus: MessageBus) -> None:
        self.label = label
        self.bus = bus
        self.unique_name = bus.unique_name or ""
        self.connected = True

    async def call(self, msg: Message, timeout: float) -> Message | None:
        if not self.connected:
            raise ConnectionError(f"{self.label} has left the bus")
        return await asyncio.wait_for(self.bus.call(msg), timeout)

    async def depart(self) -> None:
        if self.connected:
            self.connected = False
            self.bus.disconnect()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.bus.wait_for_disconnect(), 5)  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        await self.depart()


class _PeerClient(_Client):
    """A client in a process of its own (shim/bus/replay_peer.py)."""

    def __init__(self, label: str, proc: asyncio.subprocess.Process, hello: dict[str, Any]) -> None:
        self.label = label
        self.proc = proc
        self.unique_name = str(hello["name"])
        self.pid = int(hello["pid"])
        self.serial = 0
        self.connected = True

    @staticmethod
    async def start(label: str, address: str) -> _PeerClient:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shim.bus.replay_peer", address,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        )  # fmt: skip
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 20)
            hello = json.loads(line)
        except (TimeoutError, ValueError):
            proc.kill()
            await proc.wait()
            raise ConnectionError(f"the replay peer for {label} did not start") from None
        return _PeerClient(label, proc, hello)

    async def _ask(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise ConnectionError(f"the replay peer for {self.label} has exited")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def call(self, msg: Message, timeout: float) -> Message | None:
        if not self.connected:
            raise ConnectionError(f"{self.label} has left the bus")
        sig = msg.signature or ""
        types = rv.parse_signature(sig)
        body = [from_dbus(t, v) for t, v in zip(types, msg.body, strict=True)]
        request = {
            "op": "call",
            "destination": msg.destination,
            "path": msg.path,
            "interface": msg.interface,
            "member": msg.member,
            "signature": sig,
            "body": rv.body_to_json(sig, body),
            "timeout": timeout,
        }
        answer = await self._ask(request, timeout + 5)
        if "error" in answer and "kind" not in answer:
            raise ConnectionError(str(answer["error"]))
        rsig = answer.get("signature", "")
        rtypes = rv.parse_signature(rsig)
        rbody = [
            to_dbus(t, v)
            for t, v in zip(rtypes, rv.body_from_json(rsig, answer["body"]), strict=True)
        ]
        if answer["kind"] == "error":
            return Message(
                message_type=MessageType.ERROR, error_name=answer["error_name"],
                reply_serial=msg.serial or 1, sender=answer.get("sender"), signature=rsig,
                body=rbody,
            )  # fmt: skip
        return Message(
            message_type=MessageType.METHOD_RETURN, reply_serial=msg.serial or 1,
            sender=answer.get("sender"), signature=rsig, body=rbody,
        )  # fmt: skip

    async def depart(self) -> None:
        if self.connected:
            self.connected = False
            with contextlib.suppress(Exception):
                await self._ask({"op": "disconnect"}, 5)

    async def close(self) -> None:
        self.connected = False
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 3)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


# -- the replay ---------------------------------------------------------------------------------


class NotSendableError(Exception):
    pass


@dataclass(slots=True)
class _Event:
    kind: str  # call | reply | signal
    step: int
    msg: TMessage
    call: TMessage | None = None


class Replayer:
    def __init__(
        self, plan: Plan, address: str, *, call_timeout: float = 10.0, grace: float = 0.3,
        quiet: float = 0.5,
    ) -> None:  # fmt: skip
        self.plan = plan
        self.quiet = quiet  # seconds without a signal after which waiting stops
        self.last_signal = time.monotonic()
        self.address = address
        self.call_timeout = call_timeout
        self.grace = grace
        self.rec = plan.recorded
        self.live = Normalizer(plan.rules.options())
        self.clients: dict[str, _Client] = {}
        self.sleepers: dict[Sym, subprocess.Popen[bytes]] = {}
        self.events: list[_Event] = []
        self.after = 0
        self.seen: Counter[Any] = Counter()
        self.given_up: Counter[Any] = Counter()
        self.arrived = asyncio.Event()
        self.result = Live()
        self.departed: set[str] = set()
        self.done_actions: set[int] = set()
        self.fds: list[int] = []
        self.fd_unit: str | None = None  # the unit the call being sent puts processes into

    # -- collecting signals ----------------------------------------------------------------

    def _on_message(self, msg: Message) -> None:
        if msg.message_type is not MessageType.SIGNAL or msg.sender != self.owner:
            return
        tm = to_trace(msg)
        self.events.append(_Event("signal", self.after, tm))
        self.live.learn(tm)
        self.seen[self.live.signal(tm).identity()] += 1
        self.last_signal = time.monotonic()
        self.arrived.set()

    async def _wait_signals(self, upto: int, step: Step | None = None) -> None:
        """Until the signals recorded before call `upto`+1 have come (or the timeout). For a
        call that only reads, also those the recording shows between it and its reply: the
        real systemd emitted them before answering (its answer depends on them)."""
        wanted: Counter[Any] = Counter()
        early = _answered_after(step)
        for e in self.plan.signals:
            if allows_missing(self.plan, e.nsignal):
                continue
            if e.after <= upto or (early is not None and e.after == upto + 1 and e.line < early):
                if early is not None and e.after == upto + 1 and _loads(step, e):
                    continue  # the call's own on-demand load of the unit it names
                wanted[e.nsignal.identity()] += 1
        deadline = time.monotonic() + self.plan.meta.signal_timeout
        quiet = min(self.quiet, self.plan.meta.signal_timeout)
        while any(self.seen[k] + self.given_up[k] < n for k, n in wanted.items()):
            # give up at the deadline, or once the daemon has been quiet for a while
            left = min(deadline, self.last_signal + quiet) - time.monotonic()
            if left <= 0:
                # what did not come is not waited for again (compare.py reports it)
                for k, n in wanted.items():
                    if self.seen[k] + self.given_up[k] < n:
                        log.debug("before call %d: %d x %s did not come", upto + 1,
                                  n - self.seen[k] - self.given_up[k], k)  # fmt: skip
                    self.given_up[k] = max(self.given_up[k], n - self.seen[k])
                return
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), left)

    # -- PIDs ------------------------------------------------------------------------------

    def _spawn(self, sym: Sym) -> int:
        proc = subprocess.Popen(
            ["sleep", "3600"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        self.sleepers[sym] = proc
        self.live.bind_pid(proc.pid, sym)
        return proc.pid

    def _kill(self, name: str, signame: str) -> None:
        sym = Sym("pid", name.split(":", 1)[1] if name.startswith("pid:") else name)
        pid = self.live.live_value(sym)
        if not isinstance(pid, int):
            log.warning("action: %s has no live process; nothing to kill", name)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, getattr(signals, f"SIG{signame}"))

    # -- de-normalisation ------------------------------------------------------------------

    def _leaf(self, kind: str, value: Any, key: str | None) -> Any:
        if kind in ("string", "time", "varies", "cgroup-id"):
            return value
        sym = self.rec.normal_leaf(kind, value, key)
        if not isinstance(sym, Sym):
            return value
        live = self.live.live_value(sym)
        if kind == "name":
            return live if isinstance(live, str) else value
        if kind == "job-path":
            return f"{JOB_PATH_PREFIX}{live if isinstance(live, int) else NO_JOB}"
        if kind == "job-id":
            return live if isinstance(live, int) else NO_JOB
        if kind == "pid":
            return live if isinstance(live, int) else self._spawn(sym)
        if kind == "invocation":
            return live if isinstance(live, bytes) else bytes(16)
        if kind == "invocation-path":
            return UNIT_PATH_PREFIX + (live.hex() if isinstance(live, bytes) else "0" * 32)
        return value

    def _path(self, path: str) -> str:
        if path.startswith(JOB_PATH_PREFIX):
            return str(self._leaf("job-path", path, None))
        label = path[len(UNIT_PATH_PREFIX) :] if path.startswith(UNIT_PATH_PREFIX) else ""
        if len(label) == 32 and all(c in "0123456789abcdef" for c in label):
            return str(self._leaf("invocation-path", path, None))
        return path

    def _fds(self, t: rv.Type, v: Any, out: list[int]) -> Any:
        """File descriptors in a call (PIDFDs): a pidfd of a fresh stand-in process each."""
        if isinstance(t, str):
            if t == "h":
                proc = subprocess.Popen(["sleep", "3600"], stdin=subprocess.DEVNULL)
                # the first process a call puts into a unit by pidfd stands in for the unit's
                # recorded PID (the actions name it so: pid:session-c1.scope)
                sym = Sym("pid", self.fd_unit) if self.fd_unit else None
                if sym is None or sym in self.sleepers or self.live.live_value(sym) is not None:
                    sym = Sym("fd-process", str(proc.pid))
                else:
                    self.live.bind_pid(proc.pid, sym)
                self.sleepers[sym] = proc
                fd = os.pidfd_open(proc.pid)
                self.fds.append(fd)
                out.append(fd)
                return rv.Fd(len(out) - 1)
            if t == "v":
                return rv.Var(v.sig, self._fds(rv.parse_type(v.sig), v.value, out))
            return v
        if t[0] == "a":
            if t[1] == "y":
                return v
            if isinstance(t[1], tuple) and t[1][0] == "e":
                return {k: self._fds(t[1][2], x, out) for k, x in v.items()}
            return [self._fds(t[1], x, out) for x in v]
        return [self._fds(f, x, out) for f, x in zip(t[1], v, strict=True)]

    def _live_call(self, step: Step) -> tuple[Message, TMessage]:
        rec = step.call
        if not rec.recovered:
            lines = ", ".join(str(n) for t in rec.types for n in rv.unknown_lines(t))
            raise NotSendableError(
                f"the recording does not show all argument types (lines {lines or rec.line})"
            )
        body = self.rec.walk(rec, None, self._leaf)
        fds: list[int] = []
        if "h" in rec.signature or "v" in rec.signature:  # PIDFDs come in a variant
            unit = body[0] if rec.member in _PUTS_PIDS and body else None
            self.fd_unit = unit if isinstance(unit, str) else None
            body = [self._fds(t, v, fds) for t, v in zip(rec.types, body, strict=True)]
        path = self._path(rec.path or "/")
        msg = Message(
            destination=SYSTEMD1,
            path=path,
            interface=rec.interface,
            member=rec.member,
            signature=rec.signature,
            body=[to_dbus(t, v) for t, v in zip(rec.types, body, strict=True)],
            unix_fds=fds,
        )
        sent = TMessage(
            kind=CALL, sender=None, destination=SYSTEMD1, serial=None, reply_serial=None,
            path=path, interface=rec.interface, member=rec.member, error_name=None,
            time=time.time(), line=0, types=list(rec.types), body=body, recovered=True,
        )  # fmt: skip
        return msg, sent

    # -- clients ---------------------------------------------------------------------------

    def _peer_labels(self) -> set[str]:
        """Clients whose own PID the recording puts into a call, or that ask for unit/self."""
        wanted: set[str] = set()
        for step in self.plan.steps:
            if step.call.path == UNIT_PATH_PREFIX + "self":
                wanted.add(step.client)

            def leaf(kind: str, value: Any, key: str | None) -> Any:
                if kind == "pid":
                    sym = self.rec.pids.get(value)
                    if sym is not None and sym.name.startswith("client-"):
                        wanted.add(sym.name)
                return value

            self.rec.walk(step.call, None, leaf)
        return wanted

    async def _client(self, label: str) -> _Client:
        client = self.clients.get(label)
        if client is None:
            if label in self.peers:
                client = await _PeerClient.start(label, self.address)
            else:
                bus = await MessageBus(bus_address=self.address, negotiate_unix_fd=True).connect()
                client = _BusClient(label, bus)
            self.clients[label] = client
            self.live.bind_name(client.unique_name, Sym("name", label))
            if client.pid is not None:
                self.live.bind_pid(client.pid, Sym("pid", label))
        return client

    async def _before(self, index: int) -> None:
        """What happens between call index-1 and call index: actions, departures, signals."""
        for n, action in enumerate(self.plan.actions):
            if action.after < index and n not in self.done_actions:
                self.done_actions.add(n)
                if action.delay:
                    await asyncio.sleep(action.delay)
                self._kill(action.kill, action.signal)
        for after, label in self.plan.departures:
            if after < index and label not in self.departed:
                self.departed.add(label)
                client = self.clients.get(label)
                if client is not None:
                    await client.depart()
        step = next((s for s in self.plan.steps if s.index == index), None)
        await self._wait_signals(index - 1, step)
        if index == self.plan.main_start + 1 and self.plan.main_start > 0:
            await self._settle()  # what the setup set off, before the compared part

    async def _settle(self) -> None:
        """Until no signal came for the quiet period (bounded by the signal timeout)."""
        deadline = time.monotonic() + self.plan.meta.signal_timeout
        while True:
            left = min(deadline, self.last_signal + self.quiet) - time.monotonic()
            if left <= 0:
                return
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), left)

    # -- the run ---------------------------------------------------------------------------

    async def run(self) -> tuple[Live, Normalizer]:
        try:
            self.collector = await MessageBus(bus_address=self.address).connect()
        except Exception as e:
            self.result.error = f"cannot connect to {self.address}: {e}"
            return self.result, self.live
        try:
            return await self._run()
        finally:
            await self._cleanup()

    async def _run(self) -> tuple[Live, Normalizer]:
        bus = self.collector
        reply = await bus.call(
            Message(destination=DRIVER, path=DRIVER_PATH, interface=DRIVER,
                    member="GetNameOwner", signature="s", body=[SYSTEMD1])
        )  # fmt: skip
        if reply is None or reply.message_type is not MessageType.METHOD_RETURN:
            self.result.error = f"{SYSTEMD1} has no owner on {self.address}"
            return self.result, self.live
        self.owner: str = reply.body[0]
        self.live.bind_name(self.owner, Sym("name", "systemd1"))
        bus.add_message_handler(self._on_message)
        await bus.call(
            Message(destination=DRIVER, path=DRIVER_PATH, interface=DRIVER, member="AddMatch",
                    signature="s", body=[f"type='signal',sender='{self.owner}'"])
        )  # fmt: skip
        self.peers = self._peer_labels()
        for step in self.plan.steps:
            await self._before(step.index)
            try:
                client = await self._client(step.client)
                msg, sent = self._live_call(step)
            except NotSendableError as e:
                self.result.not_sent[step.index] = str(e)
                self.after = step.index
                continue
            except (ConnectionError, OSError) as e:
                self.result.not_sent[step.index] = f"{step.client}: {e}"
                self.after = step.index
                continue
            sent.sender = client.unique_name
            self.after = step.index
            self.events.append(_Event("call", step.index, sent))
            try:
                answer = await client.call(msg, self.call_timeout)
            except TimeoutError:
                answer = None
            except (ConnectionError, OSError) as e:
                self.result.not_sent[step.index] = f"{step.client}: {e}"
                continue
            self.last_signal = max(self.last_signal, time.monotonic())
            if answer is not None:
                tm = to_trace(answer)
                self.events.append(_Event("reply", step.index, tm, sent))
                self.live.learn(sent)
                self.live.learn(tm, sent)
                self.live.reply(tm, sent)  # names what it shows, for later calls
        last = self.plan.steps[-1].index if self.plan.steps else 0
        await self._before(last + 1)
        await asyncio.sleep(self.grace)
        return self._final(), self.live

    def _final(self) -> Live:
        """The live run normalised from scratch (learn everything, then name in order)."""
        final = Normalizer(self.plan.rules.options())
        for unique, sym in self.live.names.items():
            if sym.name == "systemd1" or sym.name.startswith("client-"):
                final.bind_name(unique, sym)
        for pid, sym in self.live.pids.items():
            if sym in self.sleepers or sym.name.startswith("client-"):
                final.bind_pid(pid, sym)
        for ev in self.events:
            final.learn(ev.msg, ev.call)
        live = self.result
        # an inferred world is made here, not in the recording: its jobs number nothing
        fresh = self.plan.world is not None and bool(self.plan.world.calls)
        for ev in self.events:
            if fresh and ev.step > self.plan.main_start:
                final.new_phase(self._setup_jobs())
                fresh = False
            if ev.kind == "reply" and ev.call is not None:
                live.replies[ev.step] = final.reply(ev.msg, ev.call)
            elif ev.kind == "signal":
                live.signals.append(LiveSignal(ev.step, final.signal(ev.msg)))
            else:
                final.call(ev.msg)
        return live

    def _setup_jobs(self) -> list[int]:
        """The ids of the jobs the setup made (its replies, JobNew/JobRemoved before the first
        compared call)."""
        out: list[int] = []
        for ev in self.events:
            if ev.step > self.plan.main_start or ev.kind == "call":
                continue
            body = ev.msg.body
            first = body[0] if body else None
            if ev.kind == "signal" and ev.msg.member in ("JobNew", "JobRemoved"):
                if isinstance(first, int):
                    out.append(first)
            elif isinstance(first, str) and first.startswith(JOB_PATH_PREFIX):
                tail = first[len(JOB_PATH_PREFIX) :]
                if tail.isdigit():
                    out.append(int(tail))
        return out

    async def _cleanup(self) -> None:
        for client in self.clients.values():
            with contextlib.suppress(Exception):
                await client.close()
        for proc in self.sleepers.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(Exception):
            self.collector.disconnect()
            await asyncio.wait_for(self.collector.wait_for_disconnect(), 5)  # type: ignore[no-untyped-call]


_PUTS_PIDS = frozenset({"StartTransientUnit", "AttachProcessesToUnit"})
_READS = frozenset({
    "Get", "GetAll", "Introspect", "Ping", "GetMachineId", "GetUnit", "GetUnitByPID",
    "GetUnitByInvocationID", "GetUnitByControlGroup", "ListUnits", "ListUnitsFiltered",
    "ListUnitsByPatterns", "ListUnitsByNames", "ListJobs", "GetJob", "GetUnitProcesses",
    "GetJobAfter", "GetJobBefore",
})  # fmt: skip


def _answered_after(step: Step | None) -> int | None:
    """The reply's line for a call that only reads (None for others)."""
    if step is None or step.call.member not in _READS or step.exchange.reply is None:
        return None
    return step.exchange.reply.line


def _loads(step: Step | None, e: Any) -> bool:
    """Whether the signal is the call's own load on demand of the unit it names (a read on
    the unit's object, LoadUnit): UnitNew, and UnitRemoved when nothing holds the unit."""
    if step is None or e.nsignal.member not in ("UnitNew", "UnitRemoved"):
        return False
    unit = e.nsignal.body[0] if e.nsignal.body else None
    path = step.call.path or ""
    if step.call.member == "LoadUnit":
        return bool(step.call.body) and unit == step.call.body[0]
    return path.startswith(UNIT_PATH_PREFIX) and path.endswith(f"/{label(unit)}")


def label(unit: Any) -> str:
    from compat.buspath import label_escape

    return label_escape(str(unit))


async def replay(plan: Plan, address: str, **kw: Any) -> Live:
    live, _ = await Replayer(plan, address, **kw).run()
    return live


# -- a private bus and daemon for --spawn -------------------------------------------------------

_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"""

_SPAWN_CONFIG = """[serve]
backend = "fake"
cgroup_root = "{root}/cgroupfs"
state_dir = "{root}/state"
log_level = "warning"

[units]
user_manager = "noop"          # the lab's user@.service runs `sleep infinity`
runtime_dir_helper = ""

[power]
record_file = "{root}/actions.log"
poweroff = "record"
reboot = "record"
halt = "record"
kexec = "record"
suspend = "record"
hibernate = "record"
hybrid-sleep = "record"
suspend-then-hibernate = "record"
factory-reset = "record"
"""


async def drive(plan: Plan, address: str | None) -> Live:
    """Replay PLAN on the daemon at ADDRESS, or on a spawned one for None; a daemon that
    cannot be reached or spawned is a Live with its error."""
    try:
        if address is None:
            async with spawned_daemon() as spawned:
                return await replay(plan, spawned)
        return await replay(plan, address)
    except (SpawnError, OSError) as e:
        return Live(error=str(e))


class SpawnError(Exception):
    pass


@contextlib.contextmanager
def private_bus(directory: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A dbus-daemon of our own (never the host's buses)."""
    if shutil.which("dbus-daemon") is None:
        raise SpawnError("dbus-daemon is not installed (apt-get install dbus-daemon)")
    socket = os.path.join(directory, "bus.sock")
    conf = os.path.join(directory, "bus.conf")
    with open(conf, "w") as f:
        f.write(_BUS_CONFIG.format(socket=socket))
    proc = subprocess.Popen(
        ["dbus-daemon", f"--config-file={conf}", "--nofork", "--nopidfile", "--print-address=1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().decode().strip()
        proc.stdout.close()
        if not address:
            raise SpawnError("dbus-daemon did not start")
        yield address, proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _wait_owner(address: str, proc: asyncio.subprocess.Process, timeout: float) -> None:
    bus = await MessageBus(bus_address=address).connect()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise SpawnError(f"scopeshim exited with status {proc.returncode}")
            reply = await bus.call(
                Message(destination=DRIVER, path=DRIVER_PATH, interface=DRIVER,
                        member="NameHasOwner", signature="s", body=[SYSTEMD1])
            )  # fmt: skip
            if reply is not None and reply.body and reply.body[0]:
                return
            await asyncio.sleep(0.05)
        raise SpawnError("scopeshim did not own org.freedesktop.systemd1 in time")
    finally:
        bus.disconnect()


@contextlib.asynccontextmanager
async def spawned_daemon(config: str | None = None) -> AsyncIterator[str]:
    """A private dbus-daemon plus `scopeshim serve` (fake backend) on it; the address."""
    with (
        tempfile.TemporaryDirectory(prefix="scopeshim-replay-") as d,
        private_bus(d) as (
            address,
            _,
        ),
    ):
        conf = os.path.join(d, "scopeshim.toml")
        with open(conf, "w") as f:
            f.write(config or _SPAWN_CONFIG.format(root=d))
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shim", "serve", "--address", address, "--config", conf,
            cwd=root, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            await _wait_owner(address, proc, 20)
            yield address
        finally:
            if proc.returncode is None:
                proc.send_signal(signals.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            if proc.stderr is not None:
                err = (await proc.stderr.read()).decode(errors="replace")
                if "Traceback" in err or "ERROR" in err:
                    log.warning("scopeshim's log:\n%s", err)
