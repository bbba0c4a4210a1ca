"""Normalisation: the run-specific values of a conversation become stable symbols, so that two
runs of one scenario compare equal.

- unique names: the owner of org.freedesktop.systemd1 is `systemd1`, the N-th client to call
  it `client-N`, any other `peer-N`;
- jobs (ids and /job/N paths) are named after their unit: `job:session-c1.scope` (`#2` for the
  unit's second job), learnt from JobNew/JobRemoved, the replies of StartUnit & co and the
  units' `Job` property;
- PIDs (`PIDs`, `MainPID`, GetUnitProcesses, GetUnitByPID, ...): `pid:client-N` for a
  client's own PID, else named after the unit it was put into or whose main process it is
  (`pid:session-c1.scope`), else `pid:?N` in order of appearance;
- invocation IDs (`InvocationID`, GetUnitByInvocationID, 32-hex unit paths): named after their
  unit, `invocation:lab1.scope`;
- timestamps (`*Timestamp`, `*TimestampMonotonic`) other than 0 become `<time>`, cgroup ids
  `<cgroup-id>`, accounting read-outs (MemoryCurrent, CPUUsageNSec, ...) `<varies>`;
- run-specific strings (paths of the capturing machine, ...) are rewritten by the trace's
  metadata (`[normalize] replace`).

The same walker finds these values in a recorded call so that the replayer can send the live
equivalents (`Normalizer.symbol` on the recording, `Normalizer.live_value` on the live side).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from compat.buspath import JOB_PATH_PREFIX, UNIT_PATH_PREFIX, unit_name_from_path
from shim.replay.trace import CALL, ERROR, RETURN, SIGNAL, Message
from shim.replay.values import Fd, Type, Var, parse_type

UNIQUE_NAME = re.compile(r":\d+\.\d+")
HEX32 = re.compile(r"[0-9a-f]{32}")
UINT64_MAX = 2**64 - 1

PID_KEYS = frozenset({"PIDs", "MainPID", "ControlPID", "ExecMainPID", "ProcessID"})
# accounting read-outs and counters that differ between any two runs
VARYING_KEYS = frozenset({
    "MemoryCurrent", "MemoryAvailable", "MemoryPeak", "MemorySwapCurrent", "MemorySwapPeak",
    "MemoryZSwapCurrent", "CPUUsageNSec", "TasksCurrent", "IOReadBytes", "IOReadOperations",
    "IOWriteBytes", "IOWriteOperations", "IPIngressBytes", "IPIngressPackets", "IPEgressBytes",
    "IPEgressPackets", "NNames", "NJobs", "NInstalledJobs", "NFailedJobs", "NFailedUnits",
    "NRestarts", "EffectiveCPUs", "EffectiveMemoryNodes", "StatusErrno",
})  # fmt: skip
JOB_METHODS = frozenset({
    "StartUnit", "StartUnitReplace", "StartUnitWithFlags", "StopUnit", "ReloadUnit",
    "RestartUnit", "TryRestartUnit", "ReloadOrRestartUnit", "ReloadOrTryRestartUnit",
    "StartTransientUnit", "Start", "Stop", "Reload", "Restart", "TryRestart",
    "ReloadOrRestart", "ReloadOrTryRestart",
})  # fmt: skip


@dataclass(frozen=True, slots=True, order=True)
class Sym:
    """A run-specific value under its stable name."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"<{self.kind}:{self.name}>" if self.name else f"<{self.kind}>"


TIME = Sym("time", "")
VARIES = Sym("varies", "")
CGROUP_ID = Sym("cgroup-id", "")


@dataclass(frozen=True, slots=True)
class NVar:
    """A normalised variant."""

    sig: str
    value: Any


@dataclass(frozen=True, slots=True)
class NCall:
    client: str
    path: str
    interface: str | None
    member: str
    signature: str
    body: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class NReply:
    kind: str  # "return" | "error" | "none"
    error_name: str | None
    signature: str
    body: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class NSignal:
    path: str
    interface: str | None
    member: str
    signature: str
    body: tuple[Any, ...]

    def identity(self) -> tuple[str, str | None, str, str]:
        """What two versions of one signal share: path, interface, member, and the first
        argument when it names something (the interface of PropertiesChanged, a unit)."""
        first = self.body[0] if self.body and isinstance(self.body[0], str) else ""
        if self.member in ("JobNew", "JobRemoved") and len(self.body) >= 3:
            first = str(self.body[2])
        return (self.path, self.interface, self.member, first)


@dataclass(slots=True)
class Replacement:
    pattern: re.Pattern[str]
    replace: str


@dataclass(slots=True)
class Options:
    """Normalisation extras from a trace's metadata."""

    replace: list[Replacement] = field(default_factory=list)
    varying: frozenset[str] = frozenset()  # more properties whose value differs per run
    times: frozenset[str] = frozenset()  # more properties holding a timestamp


Leaf = Callable[[str, Any, str | None], Any]


class Normalizer:
    """Symbol tables of one side (the recording or the live run)."""

    def __init__(
        self, options: Options | None = None, *, owners: Iterable[str] = (),
        clients: Iterable[str] = (), client_pids: dict[str, int] | None = None,
    ) -> None:  # fmt: skip
        self.options = options or Options()
        self.names: dict[str, Sym] = {}
        self.by_sym: dict[Sym, Any] = {}
        self.job_unit: dict[int, str] = {}
        self.jobs: dict[int, Sym] = {}
        self.unit_jobs: dict[str, int] = {}
        self.invocation_unit: dict[bytes, str] = {}
        self.invocations: dict[bytes, Sym] = {}
        self.unit_invocations: dict[str, int] = {}
        self.pids: dict[int, Sym] = {}
        self.pid_unit: dict[int, str] = {}  # main/control PIDs of units
        self.pid_moved: dict[int, str] = {}  # PIDs a call put into a unit (these win)
        self.unit_pids: dict[str, int] = {}
        self.peers = 0
        self.unknown_jobs = 0
        self.unknown_invocations = 0
        self.anonymous_pids = 0
        for owner in owners:
            self.bind_name(owner, Sym("name", "systemd1"))
        for n, client in enumerate(clients):
            self.bind_name(client, Sym("name", f"client-{n + 1}"))
        for name, pid in (client_pids or {}).items():
            label = self.names.get(name)
            if label is not None and pid not in self.pids:
                self.bind_pid(pid, Sym("pid", label.name))

    # -- bindings ----------------------------------------------------------------------------

    def bind_name(self, unique: str, sym: Sym) -> None:
        self.names[unique] = sym
        self.by_sym[sym] = unique

    def bind_pid(self, pid: int, sym: Sym) -> None:
        self.pids[pid] = sym
        self.by_sym[sym] = pid

    def name(self, unique: str) -> Sym:
        sym = self.names.get(unique)
        if sym is None:
            self.peers += 1
            sym = Sym("name", f"peer-{self.peers}")
            self.bind_name(unique, sym)
        return sym

    def job(self, job_id: int) -> Sym:
        sym = self.jobs.get(job_id)
        if sym is None:
            unit = self.job_unit.get(job_id)
            if unit is None:
                self.unknown_jobs += 1
                sym = Sym("job", f"?{self.unknown_jobs}")
            else:
                n = self.unit_jobs.get(unit, 0) + 1
                self.unit_jobs[unit] = n
                sym = Sym("job", unit if n == 1 else f"{unit}#{n}")
            self.jobs[job_id] = sym
            self.by_sym[sym] = job_id
        return sym

    def new_phase(self, earlier_jobs: Iterable[int] = ()) -> None:
        """Jobs from here on are numbered afresh per unit: the jobs of a setup this side ran
        and the other did not record (an inferred world) do not shift the names; those of
        `earlier_jobs` not named yet are named as the setup's."""
        for job_id in earlier_jobs:
            if job_id not in self.jobs:
                unit = self.job_unit.get(job_id, "?")
                sym = Sym("job", f"{unit} (setup {job_id})")
                self.jobs[job_id] = sym
                self.by_sym[sym] = job_id
        self.unit_jobs.clear()

    def pid(self, pid: int) -> Sym | int:
        if pid == 0:
            return 0
        sym = self.pids.get(pid)
        if sym is None:
            unit = self.pid_moved.get(pid) or self.pid_unit.get(pid)
            if unit is not None:
                n = self.unit_pids.get(unit, 0) + 1
                self.unit_pids[unit] = n
                sym = Sym("pid", unit if n == 1 else f"{unit}#{n}")
            else:
                while sym is None or sym in self.by_sym:
                    self.anonymous_pids += 1
                    sym = Sym("pid", f"?{self.anonymous_pids}")
            self.bind_pid(pid, sym)
        return sym

    def invocation(self, value: bytes) -> Sym | bytes:
        if len(value) != 16 or not any(value):
            return value
        sym = self.invocations.get(value)
        if sym is None:
            unit = self.invocation_unit.get(value)
            if unit is None:
                self.unknown_invocations += 1
                sym = Sym("invocation", f"?{self.unknown_invocations}")
            else:
                n = self.unit_invocations.get(unit, 0) + 1
                self.unit_invocations[unit] = n
                sym = Sym("invocation", unit if n == 1 else f"{unit}#{n}")
            self.invocations[value] = sym
            self.by_sym[sym] = value
        return sym

    def live_value(self, sym: Sym) -> Any:
        """The value this side knows under `sym` (None if none)."""
        return self.by_sym.get(sym)

    # -- learning (before naming) ------------------------------------------------------------

    def learn(self, msg: Message, call: Message | None = None) -> None:
        """Associations a message shows: job -> unit, invocation ID -> unit, PID -> the unit
        it was put into (or whose main process it is)."""
        body = msg.body
        if msg.kind == CALL:
            if msg.member == "StartTransientUnit" and len(body) >= 3:
                for prop in body[2] if isinstance(body[2], list) else ():
                    if isinstance(prop, list) and len(prop) == 2 and prop[0] == "PIDs":
                        self._learn_pids(body[0], prop[1].value)
            elif msg.member == "AttachProcessesToUnit" and len(body) >= 3:
                self._learn_pids(body[0], body[2])
        elif msg.kind == SIGNAL:
            if msg.member in ("JobNew", "JobRemoved") and len(body) >= 3:
                if isinstance(body[0], int) and isinstance(body[2], str):
                    self.job_unit.setdefault(body[0], body[2])
            elif msg.member == "PropertiesChanged" and len(body) >= 2:
                self._learn_props(msg.path, body[1])
        elif msg.kind == RETURN and call is not None and body:
            if call.member in JOB_METHODS and isinstance(body[0], str):
                job_id = _job_id(body[0])
                unit = _call_unit(call)
                if job_id is not None and unit is not None:
                    self.job_unit.setdefault(job_id, unit)
            elif call.member == "GetAll" and isinstance(body[0], dict):
                self._learn_props(call.path, body[0])
            elif call.member == "Get" and len(call.body) >= 2 and isinstance(body[0], Var):
                self._learn_props(call.path, {call.body[1]: body[0]})
            elif call.member == "GetUnitProcesses" and call.body and isinstance(body[0], list):
                for p in body[0]:
                    if isinstance(p, list) and len(p) == 3 and isinstance(p[1], int):
                        self.pid_unit.setdefault(p[1], str(call.body[0]))

    def _learn_pids(self, unit: Any, pids: Any) -> None:
        if not isinstance(unit, str) or not isinstance(pids, list):
            return
        for pid in pids:
            if isinstance(pid, int) and pid:
                self.pid_moved.setdefault(pid, unit)

    def _learn_props(self, path: str | None, props: Any) -> None:
        if not isinstance(props, dict):
            return
        unit = unit_name_from_path(path or "")
        if unit is None or HEX32.fullmatch(unit) or unit == "self":
            return
        job = props.get("Job")
        if isinstance(job, Var) and isinstance(job.value, list) and job.value:
            job_id = job.value[0]
            if isinstance(job_id, int) and job_id:
                self.job_unit.setdefault(job_id, unit)
        for key in ("MainPID", "ControlPID", "ExecMainPID"):
            pid = props.get(key)
            if isinstance(pid, Var) and isinstance(pid.value, int) and pid.value:
                self.pid_unit.setdefault(pid.value, unit)
        inv = props.get("InvocationID")
        if isinstance(inv, Var) and isinstance(inv.value, bytes) and len(inv.value) == 16:
            self.invocation_unit.setdefault(inv.value, unit)

    # -- the walk ----------------------------------------------------------------------------

    def walk(self, msg: Message, call: Message | None, leaf: Leaf) -> list[Any]:
        """The message's body with every run-specific leaf passed through `leaf(kind, value,
        key)`; kinds: name, job-path, invocation-path, job-id, pid, invocation, time,
        varies, cgroup-id, string."""
        contexts = _arg_contexts(msg, call)
        out = []
        for n, (t, v) in enumerate(zip(msg.types, msg.body, strict=False)):
            ctx, key = contexts.get(n, (None, None))
            out.append(self._walk(v, t, key, ctx, leaf))
        return out

    def _walk(self, v: Any, t: Type, key: str | None, ctx: str | None, leaf: Leaf) -> Any:
        if isinstance(t, str):
            if t == "s":
                if UNIQUE_NAME.fullmatch(v):
                    return leaf("name", v, key)
                return leaf("string", v, key)
            if t == "o":
                if v.startswith(JOB_PATH_PREFIX):
                    return leaf("job-path", v, key)
                if v.startswith(UNIT_PATH_PREFIX) and HEX32.fullmatch(v[len(UNIT_PATH_PREFIX) :]):
                    return leaf("invocation-path", v, key)
                return leaf("string", v, key)
            if t == "v":
                try:
                    inner = parse_type(v.sig)
                except ValueError:
                    return v
                return Var(v.sig, self._walk(v.value, inner, key, ctx, leaf))
            if t in "ut":
                if ctx == "pid" or (key in PID_KEYS and t == "u"):
                    return leaf("pid", v, key)
                if ctx == "job-id":
                    return leaf("job-id", v, key)
                if key is not None and (
                    key.endswith(("Timestamp", "TimestampMonotonic")) or key in self.options.times
                ):
                    return leaf("time", v, key)
                if key == "ControlGroupId":
                    return leaf("cgroup-id", v, key)
                if key in VARYING_KEYS or key in self.options.varying:
                    return leaf("varies", v, key)
            return v
        kind = t[0]
        if kind == "a":
            elem = t[1]
            if elem == "y":
                if ctx == "invocation" or key == "InvocationID":
                    return leaf("invocation", v, key)
                return v
            if isinstance(elem, tuple) and elem[0] == "e":
                return {
                    self._walk(k, elem[1], key, None, leaf): self._walk(
                        x, elem[2], k if isinstance(k, str) else key, ctx, leaf
                    )
                    for k, x in v.items()
                }
            return [self._walk(x, elem, key, ctx, leaf) for x in v]
        if kind == "r":
            fields = t[1]
            if ctx == "procs" and len(fields) == 3:  # GetUnitProcesses a(sus)
                return [v[0], leaf("pid", v[1], key), v[2]]
            if ctx == "jobs" and fields and fields[0] == "u":  # ListJobs a(usssoo)
                return [leaf("job-id", v[0], key)] + [
                    self._walk(x, f, key, None, leaf)
                    for x, f in zip(v[1:], fields[1:], strict=True)
                ]
            if key == "Job" and len(fields) == 2:  # a unit's Job (uo)
                return [leaf("job-id", v[0], key), self._walk(v[1], fields[1], key, None, leaf)]
            if len(fields) == 2 and fields[0] == "s" and isinstance(v[0], str):
                return [v[0], self._walk(v[1], fields[1], v[0], ctx, leaf)]  # (sv) entries
            return [self._walk(x, f, key, ctx, leaf) for x, f in zip(v, fields, strict=True)]
        return v

    # -- naming --------------------------------------------------------------------------------

    def normal_leaf(self, kind: str, value: Any, key: str | None) -> Any:
        if kind == "name":
            return self.name(value)
        if kind == "job-path":
            job_id = _job_id(value)
            return value if job_id is None else self.job(job_id)
        if kind == "job-id":
            return self.job(value) if value else 0
        if kind == "pid":
            return self.pid(value)
        if kind == "invocation":
            return self.invocation(value)
        if kind == "invocation-path":
            inv = self.invocation(bytes.fromhex(value[len(UNIT_PATH_PREFIX) :]))
            return inv if isinstance(inv, Sym) else value
        if kind == "time":
            return TIME if value else 0
        if kind == "cgroup-id":
            return CGROUP_ID if value else 0
        if kind == "varies":
            return value if value == UINT64_MAX else VARIES
        if kind == "string":
            for r in self.options.replace:
                value = r.pattern.sub(r.replace, value)
            return value
        return value

    def path(self, path: str | None) -> str:
        if path is None:
            return ""
        if path.startswith(JOB_PATH_PREFIX):
            job_id = _job_id(path)
            if job_id is not None:
                return str(self.job(job_id))
        label = path[len(UNIT_PATH_PREFIX) :] if path.startswith(UNIT_PATH_PREFIX) else ""
        if label and HEX32.fullmatch(label):
            inv = self.invocation(bytes.fromhex(label))
            return UNIT_PATH_PREFIX + str(inv)
        return str(self.normal_leaf("string", path, None))

    def body(self, msg: Message, call: Message | None = None) -> tuple[Any, ...]:
        return tuple(freeze(v) for v in self.walk(msg, call, self.normal_leaf))

    def call(self, msg: Message) -> NCall:
        sender = self.name(msg.sender).name if msg.sender else ""
        return NCall(
            sender,
            self.path(msg.path),
            msg.interface,
            msg.member or "",
            msg.signature,
            self.body(msg),
        )

    def reply(self, msg: Message | None, call: Message) -> NReply:
        if msg is None:
            return NReply("none", None, "", ())
        if msg.kind == ERROR:
            return NReply("error", msg.error_name, msg.signature, self.body(msg, call))
        body = self.body(msg, call)
        if call.member == "Introspect" and len(body) == 1 and isinstance(body[0], str):
            structured = introspection(body[0], call.path or "/")
            if structured is not None:
                body = (structured,)
        return NReply("return", None, msg.signature, body)

    def signal(self, msg: Message) -> NSignal:
        return NSignal(
            self.path(msg.path), msg.interface, msg.member or "", msg.signature, self.body(msg)
        )


def introspection(xml: str, path: str) -> dict[str, Any] | None:
    """An Introspect document as comparable data: per interface its members with their
    signatures (methods "in -> out", properties "type access emits"), and the child nodes
    (unit names under .../unit). None if it is not one."""
    import xml.etree.ElementTree as ET

    start = xml.find("<node")
    if start < 0:
        return None
    try:
        root = ET.fromstring(xml[start:])
    except (ET.ParseError, ValueError):  # not XML, or not UTF-8 (a damaged capture)
        return None
    interfaces: dict[str, Any] = {}
    for iface in root.findall("interface"):
        members: dict[str, str] = {}
        for m in iface.findall("method"):
            args = m.findall("arg")
            ins = "".join(a.get("type", "") for a in args if a.get("direction", "in") == "in")
            outs = "".join(a.get("type", "") for a in args if a.get("direction") == "out")
            members[f"method {m.get('name')}"] = f"{ins} -> {outs}"
        for sig in iface.findall("signal"):
            members[f"signal {sig.get('name')}"] = "".join(
                a.get("type", "") for a in sig.findall("arg")
            )
        for prop in iface.findall("property"):
            emits = "true"
            for a in prop.findall("annotation"):
                if a.get("name") == "org.freedesktop.DBus.Property.EmitsChangedSignal":
                    emits = a.get("value", "true")
            members[f"property {prop.get('name')}"] = (
                f"{prop.get('type')} {prop.get('access')} emits={emits}"
            )
        interfaces[iface.get("name", "")] = members
    nodes: dict[str, str] = {}
    for node in root.findall("node"):
        name = node.get("name", "")
        if path.rstrip("/") + "/" == UNIT_PATH_PREFIX:
            name = unit_name_from_path(UNIT_PATH_PREFIX + name) or name
        nodes[name] = "node"
    return {"interfaces": interfaces, "nodes": nodes}


def freeze(v: Any) -> Any:
    """A normalised value in comparable form: Var -> NVar, lists -> tuples (dicts stay)."""
    if isinstance(v, Var):
        return NVar(v.sig, freeze(v.value))
    if isinstance(v, list):
        return tuple(freeze(x) for x in v)
    if isinstance(v, dict):
        return {freeze(k): freeze(x) for k, x in v.items()}
    if isinstance(v, Fd):
        return Sym("fd", "")
    return v


def _job_id(path: str) -> int | None:
    if not path.startswith(JOB_PATH_PREFIX):
        return None
    tail = path[len(JOB_PATH_PREFIX) :]
    return int(tail) if tail.isdigit() else None


def _call_unit(call: Message) -> str | None:
    if call.member == "StartTransientUnit" or call.path == "/org/freedesktop/systemd1":
        if call.body and isinstance(call.body[0], str):
            return call.body[0]
        return None
    return unit_name_from_path(call.path or "")


def _arg_contexts(msg: Message, call: Message | None) -> dict[int, tuple[str | None, str | None]]:
    """Per argument: (positional context, property name)."""
    member = msg.member
    if msg.kind == SIGNAL:
        if member in ("JobNew", "JobRemoved"):
            return {0: ("job-id", None)}
        return {}
    if msg.kind == CALL:
        if member == "GetUnitByPID":
            return {0: ("pid", None)}
        if member == "AttachProcessesToUnit":
            return {2: ("pid", None)}
        if member == "GetUnitByInvocationID":
            return {0: ("invocation", None)}
        if member in ("GetJob", "CancelJob"):
            return {0: ("job-id", None)}
        if member == "Set" and len(msg.body) >= 2 and isinstance(msg.body[1], str):
            return {2: (None, msg.body[1])}
        return {}
    if call is None or msg.kind != RETURN:
        return {}
    cm = call.member
    if cm == "GetUnitProcesses":
        return {0: ("procs", None)}
    if cm == "ListJobs":
        return {0: ("jobs", None)}
    if cm == "GetConnectionUnixProcessID":
        return {0: ("pid", None)}
    if cm == "Get" and len(call.body) >= 2 and isinstance(call.body[1], str):
        return {0: (None, call.body[1])}
    return {}


def render(v: Any, limit: int = 0) -> str:
    """A normalised value as one line of text."""
    text = _render(v)
    if limit and len(text) > limit:
        return text[: limit - 3] + "..."
    return text


def _render(v: Any) -> str:
    if isinstance(v, Sym):
        return str(v)
    if isinstance(v, NVar):
        return f"<{v.sig}> {_render(v.value)}"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, bytes):
        return "0x" + v.hex() if v else "b''"
    if isinstance(v, tuple):
        return "[" + ", ".join(_render(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_render(k)}: {_render(x)}" for k, x in v.items()) + "}"
    return repr(v)
