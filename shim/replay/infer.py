"""State inference: what must already exist when a capture begins mid-flight (units it names
but never creates, their slices and processes, subscriptions), worked out from the trace
alone, and the setup calls that make it. Pure: it builds messages and sends nothing."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from compat.buspath import JOB_PATH_PREFIX, MANAGER_PATH, UNIT_PATH_PREFIX, unit_name_from_path
from shim.replay.conversation import Emitted, Exchange
from shim.replay.trace import CALL, ERROR, RETURN, Issue, Message
from shim.replay.values import Var, parse_signature

SD = "org.freedesktop.systemd1"
MANAGER = SD + ".Manager"
UNIT = SD + ".Unit"
PROPERTIES = "org.freedesktop.DBus.Properties"
INFERRED = "(inferred)"  # the unique name of the client that makes the inferred world

# Manager methods whose first argument names a unit (org.freedesktop.systemd1(5))
_NAMES_UNIT = frozenset({
    "StartUnit", "StopUnit", "ReloadUnit", "RestartUnit", "TryRestartUnit",
    "ReloadOrRestartUnit", "ReloadOrTryRestartUnit", "KillUnit", "QueueSignalUnit",
    "ResetFailedUnit", "SetUnitProperties", "GetUnit", "LoadUnit", "GetUnitProcesses",
    "AttachProcessesToUnit", "AbandonScope", "RefUnit", "UnrefUnit", "FreezeUnit", "ThawUnit",
    "CleanUnit", "EnqueueUnitJob", "StartTransientUnit",
})  # fmt: skip
# calls that create or load the unit they name
_CREATES = frozenset({"StartTransientUnit", "StartUnit", "RestartUnit", "ReloadOrRestartUnit"})
# active states in which a unit exists before the trace (systemd.unit(5) "ActiveState")
_LIVE_STATES = frozenset({"active", "reloading", "deactivating", "refreshing"})
# the properties a setup StartTransientUnit carries when the trace shows them (the rest is
# left to the implementation's defaults: accounting read-outs and computed limits differ)
_CARRIED = (
    "Description", "SendSIGHUP", "SendSIGKILL", "KillMode", "KillSignal", "Delegate",
    "MemoryMax", "MemoryHigh", "MemoryLow", "MemoryMin", "CPUWeight", "IOWeight",
    "CPUQuotaPerSecUSec", "CollectMode", "RuntimeMaxUSec",
)  # fmt: skip
_MODELLED = (".scope", ".slice", ".service")
_USER_UNIT = re.compile(r"(?:user|user-runtime-dir)@(\d+)\.service")
_USER_SLICE = re.compile(r"user-(\d+)\.slice")
STAND_IN_PID = 4_190_000  # recorded PIDs made up for stand-ins (above any pid_max default)


@dataclass(slots=True)
class Unit:
    """A unit that existed before the trace began, as the trace shows it."""

    name: str
    line: int  # where the trace first shows it exists
    evidence: str
    props: dict[str, Var] = field(default_factory=dict)
    prop_lines: dict[str, int] = field(default_factory=dict)
    pids: list[int] = field(default_factory=list)
    slice: str | None = None
    slice_from: str = ""
    made_up_pid: bool = False

    @property
    def suffix(self) -> str:
        return self.name.rsplit(".", 1)[-1]


@dataclass(slots=True)
class World:
    """What the trace needs before its first call, the setup calls that make it, and what
    the trace does not tell."""

    source: str
    units: list[Unit] = field(default_factory=list)
    subscribed: list[tuple[str, int]] = field(default_factory=list)  # (unique name, line)
    calls: list[tuple[str, Message]] = field(default_factory=list)  # (unique name, call)
    notes: list[Issue] = field(default_factory=list)  # assumptions made
    missing: list[Issue] = field(default_factory=list)  # what the trace does not tell

    @property
    def empty(self) -> bool:
        return not self.calls and not self.missing

    def lines(self) -> list[str]:
        """What was inferred, for `--show` and reports."""
        out: list[str] = []
        for u in self.units:
            what = f"{u.name} ({u.evidence}, line {u.line})"
            extra = []
            if u.slice:
                extra.append(f"in {u.slice} ({u.slice_from})")
            if u.pids:
                extra.append(
                    "a stand-in process" if u.made_up_pid else f"stand-ins for PIDs {u.pids}"
                )
            carried = [k for k in _CARRIED if k in u.props]
            if carried:
                extra.append("with " + ", ".join(carried))
            out.append(f"exists: {what}" + (": " + "; ".join(extra) if extra else ""))
        for unique, line in self.subscribed:
            out.append(f"subscribed: {unique} (line {line})")
        out += [f"assumed: {n}" for n in self.notes]
        out += [f"missing: {m}" for m in self.missing]
        return out


@dataclass(slots=True)
class _Seen:
    first: str  # "exists" | "create" | "absent"
    line: int
    evidence: str


class _Inference:
    def __init__(self, source: str, items: list[Exchange | Emitted]) -> None:
        self.source = source
        self.items = items
        self.decided: dict[str, _Seen] = {}
        self.order: list[str] = []
        self.props: dict[str, dict[str, tuple[Var, int]]] = {}
        self.pids: dict[str, list[int]] = {}
        self.listed_desc: dict[str, tuple[str, int]] = {}
        self.subscribed: set[str] = set()
        self.need_subscribe: list[tuple[str, int]] = []
        self.jobs_made: set[int] = set()
        self.world = World(source)
        self.mentioned: list[str] = []
        self.named: set[str] = set()  # units a call acts on by name

    def see(self, unit: str, how: str, line: int, evidence: str) -> None:
        if not unit or unit == "self" or re.fullmatch(r"[0-9a-f]{32}", unit):
            return
        if unit not in self.mentioned:
            self.mentioned.append(unit)
        if unit in self.decided:
            return
        if how == "neutral":
            return
        self.decided[unit] = _Seen(how, line, evidence)
        if how == "exists":
            self.order.append(unit)

    def prop(self, unit: str | None, props: Any, line: int) -> None:
        if not unit or not isinstance(props, dict):
            return
        table = self.props.setdefault(unit, {})
        for k, v in props.items():
            if isinstance(k, str) and isinstance(v, Var) and k not in table:
                table[k] = (v, line)

    # -- the walk over the conversation ----------------------------------------------------

    def run(self) -> World:
        for item in self.items:
            if isinstance(item, Exchange):
                self.exchange(item)
            else:
                self.signal(item)
        return self.build()

    def exchange(self, ex: Exchange) -> None:
        call, reply = ex.call, ex.reply
        line = call.line
        ok = reply is not None and reply.kind == RETURN
        err = reply.error_name if reply is not None and reply.kind == ERROR else None
        member = call.member or ""
        if member == "Subscribe" and call.interface in (MANAGER, None):
            if err == SD + ".AlreadySubscribed" and ex.client not in self.subscribed:
                self.need_subscribe.append((ex.client, line))
            self.subscribed.add(ex.client)
        elif member == "Unsubscribe" and call.interface in (MANAGER, None):
            if ex.client not in self.subscribed and err is None:
                self.need_subscribe.append((ex.client, line))
            self.subscribed.discard(ex.client)
        unit: str | None = None
        iface = call.interface or ""
        if iface.startswith("org.freedesktop.DBus.") and iface != PROPERTIES:
            member = "Introspect"  # Peer, Introspectable: no unit is named
        if call.path == MANAGER_PATH and member in _NAMES_UNIT and call.body:
            unit = call.body[0] if isinstance(call.body[0], str) else None
        elif (call.path or "").startswith(UNIT_PATH_PREFIX):
            unit = unit_name_from_path(call.path or "")
        if (call.path or "").startswith(JOB_PATH_PREFIX) and ok:
            job = _job_id(call.path or "")
            if job is not None and job not in self.jobs_made:
                self.world.missing.append(
                    Issue(self.source, line, f"job {job} was queued before the capture began "
                          "(a replay cannot recreate a pending job)")
                )  # fmt: skip
                self.jobs_made.add(job)
        if member in ("Introspect", "Ping", "GetMachineId"):
            unit = None  # answered for any path, existing or not (sd-bus's object tree)
        if unit is not None and member not in ("Get", "GetAll"):
            self.named.add(unit)
        if unit is not None:
            if err is not None and ("NoSuchUnit" in err or "UnknownObject" in err):
                self.see(unit, "absent", line, f"{member} answered {err}")
            elif member in _CREATES:
                self.see(unit, "create", line, member)
                if member == "StartTransientUnit" and len(call.body) >= 3:
                    for p in call.body[2] if isinstance(call.body[2], list) else ():
                        if (
                            isinstance(p, list) and len(p) == 2 and p[0] == "Slice"
                            and isinstance(p[1], Var) and isinstance(p[1].value, str)
                        ):  # fmt: skip
                            self.see(p[1].value, "create", line, "the Slice= of a new unit")
            elif member == "Get" and ok and reply is not None and reply.body:
                value = reply.body[0]
                if len(call.body) >= 2 and call.body[1] == "LoadState":
                    state = value.value if isinstance(value, Var) else None
                    self.see(
                        unit, "absent" if state == "not-found" else "exists", line,
                        f"Get LoadState = {state!r}",
                    )  # fmt: skip
                elif len(call.body) >= 2 and call.body[1] == "ActiveState":
                    state = value.value if isinstance(value, Var) else None
                    how = "exists" if state in _LIVE_STATES else "neutral"
                    self.see(unit, how, line, f"Get ActiveState = {state!r}")
                else:
                    self.see(unit, "neutral", line, "Get")
                if len(call.body) >= 2 and isinstance(call.body[1], str):
                    self.prop(unit, {call.body[1]: value}, reply.line)
            elif ok:
                self.see(unit, "exists", line, f"{member} succeeded")
            else:
                self.see(unit, "neutral", line, member)
        if ok and reply is not None and reply.body:
            body = reply.body
            if member == "GetAll" and unit is not None:
                self.prop(unit, body[0], reply.line)
                state = body[0].get("ActiveState") if isinstance(body[0], dict) else None
                if isinstance(state, Var) and state.value in _LIVE_STATES:
                    self.see(unit, "exists", line, "GetAll shows it active")
            elif member == "GetUnitProcesses" and unit is not None and isinstance(body[0], list):
                for p in body[0]:
                    if isinstance(p, list) and len(p) == 3 and isinstance(p[1], int):
                        self.pids.setdefault(unit, [])
                        if p[1] not in self.pids[unit]:
                            self.pids[unit].append(p[1])
            elif member.startswith("ListUnits") and isinstance(body[0], list):
                for entry in body[0]:
                    if isinstance(entry, list) and len(entry) >= 4:
                        name, desc, load, active = entry[:4]
                        # of a listing, only the scopes: the services and slices a
                        # systemd lists are its boot's, which an implementation need not have
                        if load == "loaded" and active in _LIVE_STATES and _listed(str(name)):
                            self.see(str(name), "exists", reply.line, f"{member} lists it")
                            self.listed_desc.setdefault(str(name), (str(desc), reply.line))
            if member in ("StartUnit", "StopUnit", "StartTransientUnit", "RestartUnit",
                          "KillUnit", "EnqueueUnitJob") and isinstance(body[0], str):  # fmt: skip
                job = _job_id(body[0])
                if job is not None:
                    self.jobs_made.add(job)

    def signal(self, e: Emitted) -> None:
        msg = e.msg
        line = msg.line
        member = msg.member
        body = msg.body
        if member == "UnitNew" and body and isinstance(body[0], str):
            self.see(body[0], "create", line, "UnitNew")
        elif member == "UnitRemoved" and body and isinstance(body[0], str):
            self.see(body[0], "exists", line, "UnitRemoved")
        elif member in ("JobNew", "JobRemoved") and len(body) >= 3:
            if member == "JobNew" and isinstance(body[0], int):
                self.jobs_made.add(body[0])
            elif isinstance(body[0], int) and body[0] not in self.jobs_made:
                self.jobs_made.add(body[0])
                self.world.missing.append(
                    Issue(self.source, line, f"job {body[0]} of {body[2]} was queued before "
                          "the capture began (a replay cannot recreate a pending job)")
                )  # fmt: skip
            self.see(str(body[2]), "neutral", line, member)
        elif member == "PropertiesChanged" and len(body) >= 2:
            unit = unit_name_from_path(msg.path or "")
            if unit is None:
                return
            self.prop(unit, body[1], line)
            state = body[1].get("ActiveState") if isinstance(body[1], dict) else None
            if isinstance(state, Var) and body[0] == UNIT:
                if state.value in _LIVE_STATES:
                    self.see(unit, "exists", line, f"PropertiesChanged: {state.value}")
                elif state.value == "activating":
                    self.see(unit, "create", line, "PropertiesChanged: activating")
                else:
                    self.see(unit, "neutral", line, "PropertiesChanged")
            else:
                self.see(unit, "neutral", line, "PropertiesChanged")

    # -- the world -------------------------------------------------------------------------

    def build(self) -> World:
        world = self.world
        for client, line in self.need_subscribe:
            world.subscribed.append((client, line))
            world.calls.append((client, _call(MANAGER_PATH, MANAGER, "Subscribe", "", [], line)))
        units: dict[str, Unit] = {}
        for name in self.order:
            seen = self.decided[name]
            # PID 1's own scope and the root slice are the implementation's (systemd.special(7))
            if not name.endswith(_MODELLED) or name in ("-.slice", "init.scope"):
                continue
            if name.endswith(".slice") and name not in self.named:
                continue  # made with the first unit put into it
            if (
                name.endswith(".service")
                and name not in self.named
                and not _USER_UNIT.fullmatch(name)
            ):
                # a service only the signals show: one of the capturing system's own, which
                # an implementation has from unit files, not from a call
                world.notes.append(
                    Issue(self.source, seen.line, f"{name} existed ({seen.evidence}); not made: "
                          "no call names it")
                )  # fmt: skip
                continue
            u = Unit(name, seen.line, seen.evidence)
            for k, (v, line) in self.props.get(name, {}).items():
                u.props[k] = v
                u.prop_lines[k] = line
            if "Description" not in u.props and name in self.listed_desc:
                desc, line = self.listed_desc[name]
                u.props["Description"] = Var("s", desc)
                u.prop_lines["Description"] = line
            if not name.endswith(".slice"):  # a slice's processes are its units'
                u.pids = list(self.pids.get(name, []))
            units[name] = u
        created = {n for n, s in self.decided.items() if s.first == "create"}
        for u in units.values():
            self.place(u, units, created)
        # the slices that hold them, made before them (outermost first)
        slices = [u for u in units.values() if u.suffix == "slice"]
        others = [u for u in units.values() if u.suffix != "slice"]
        ordered = sorted(slices, key=lambda u: u.name.count("-")) + sorted(
            others, key=lambda u: (u.suffix != "service", u.line)
        )
        world.units = ordered
        held = {u.slice for u in ordered if u.slice}
        wanted = {w for u in ordered for w in _session_wants(u)}
        for u in ordered:
            if u.suffix == "slice":
                if u.name in held:
                    continue  # made with the first unit in it
                world.calls.append((INFERRED, _start(u.name, u.line)))
            elif u.suffix == "service":
                if u.name in wanted and u.name not in self.named:
                    # started by the session scope that wants it (below), as logind 252 has
                    # it; a client that names it (logind 262 starts and stops it itself)
                    # gets it started explicitly
                    continue
                world.calls.append((INFERRED, _start(u.name, u.line)))
            else:
                world.calls.append((INFERRED, self.scope(u)))
        return world

    def place(self, u: Unit, units: dict[str, Unit], created: set[str]) -> None:
        """The unit's slice: shown (Slice, ControlGroup), or the documented one of logind's
        units; otherwise left to the default (and said so)."""
        if u.suffix == "slice":
            return
        sl = u.props.get("Slice")
        cg = u.props.get("ControlGroup")
        if isinstance(sl, Var) and isinstance(sl.value, str) and sl.value:
            u.slice, u.slice_from = sl.value, f"Slice, line {u.prop_lines['Slice']}"
        elif isinstance(cg, Var) and isinstance(cg.value, str) and "/" in cg.value.strip("/"):
            parent = cg.value.rstrip("/").rsplit("/", 2)[-2]
            if parent.endswith(".slice"):
                u.slice = parent
                u.slice_from = f"ControlGroup, line {u.prop_lines['ControlGroup']}"
        elif m := _USER_UNIT.fullmatch(u.name):
            # user@.service and user-runtime-dir@.service: Slice=user-%i.slice (packaged units)
            u.slice, u.slice_from = f"user-{m.group(1)}.slice", "its template's Slice="
        elif u.name.startswith("session-") and u.suffix == "scope":
            # logind puts a session's scope into its user's slice (systemd-logind(8))
            users = sorted(
                {m.group(1) for n in self.mentioned if (m := _USER_SLICE.fullmatch(n))}
                | {m.group(1) for n in self.mentioned if (m := _USER_UNIT.fullmatch(n))}
            )
            if len(users) == 1:
                u.slice, u.slice_from = f"user-{users[0]}.slice", "the only user the trace names"
        if u.slice is None:
            self.world.notes.append(
                Issue(self.source, u.line, f"the slice of {u.name} is not shown (no Slice or "
                      "ControlGroup): left to the default")
            )  # fmt: skip
        if u.suffix == "scope" and not u.pids:
            u.made_up_pid = True
            u.pids = [STAND_IN_PID + len(self.world.units) + len(self.world.notes)]
            self.world.notes.append(
                Issue(self.source, u.line, f"the processes of {u.name} are not shown (no "
                      "GetUnitProcesses): one stand-in process")
            )  # fmt: skip

    def scope(self, u: Unit) -> Message:
        props: list[list[Any]] = []
        if u.slice:
            props.append(["Slice", Var("s", u.slice)])
        for k in _CARRIED:
            v = u.props.get(k)
            if v is not None:
                props.append([k, v])
        for w in _session_wants(u):
            props.append(["Wants", Var("as", [w])])
        for a in ("systemd-logind.service", *_session_wants(u)):
            if _session_wants(u):
                props.append(["After", Var("as", [a])])
        props.append(["PIDs", Var("au", list(u.pids))])
        return _call(
            MANAGER_PATH, MANAGER, "StartTransientUnit", "ssa(sv)a(sa(sv))",
            [u.name, "fail", props, []], u.line,
        )  # fmt: skip


def _session_wants(u: Unit) -> tuple[str, ...]:
    """What logind makes a session scope want: systemd-logind 252 creates every session-*.scope
    with Wants= and After= user-runtime-dir@UID.service and user@UID.service (its
    StartTransientUnit in fixtures/dbus-logs/real-systemd-252/real-logind-open-session.log:1888)."""
    m = _USER_SLICE.fullmatch(u.slice or "")
    if not (u.name.startswith("session-") and u.suffix == "scope" and m):
        return ()
    return (f"user-runtime-dir@{m.group(1)}.service", f"user@{m.group(1)}.service")


def _listed(name: str) -> bool:
    return name.endswith(".scope") and name != "init.scope"


def _job_id(path: str) -> int | None:
    tail = path[len(JOB_PATH_PREFIX) :] if path.startswith(JOB_PATH_PREFIX) else ""
    return int(tail) if tail.isdigit() else None


def _start(name: str, line: int) -> Message:
    return _call(MANAGER_PATH, MANAGER, "StartUnit", "ss", [name, "replace"], line)


def _call(path: str, iface: str, member: str, sig: str, body: list[Any], line: int) -> Message:
    return Message(
        kind=CALL, sender=INFERRED, destination=SD, serial=None, reply_serial=None, path=path,
        interface=iface, member=member, error_name=None, time=None, line=line,
        types=parse_signature(sig), body=body, recovered=True,
    )  # fmt: skip


def infer(source: str, items: list[Exchange | Emitted]) -> World:
    """The world the conversation `items` (in capture order) starts in."""
    return _Inference(source, items).run()


__all__ = ["INFERRED", "Unit", "World", "infer"]
