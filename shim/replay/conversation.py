"""The conversation between clients and org.freedesktop.systemd1 in a capture.

Kept: method calls addressed to org.freedesktop.systemd1 (or to its owner's unique name), their
replies, and the signals its owner emitted. Left out: traffic with the bus driver, between
other peers, systemd1's own calls (its GetConnectionUnixUser lookups), and clients the trace's
metadata names as harness. Each signal is anchored to the last call sent before it; the
lab's phase markers (`lab.Marker.Phase`) and client departures are anchored the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shim.replay.trace import CALL, ERROR, RETURN, SIGNAL, Message, Trace

SYSTEMD1 = "org.freedesktop.systemd1"
DRIVER = "org.freedesktop.DBus"
MARKER_INTERFACE = "lab.Marker"


@dataclass(slots=True)
class Exchange:
    """One call to systemd1 and its reply (None when the capture shows none)."""

    index: int  # 1-based, in capture order
    client: str  # the caller's unique name
    call: Message
    reply: Message | None = None


@dataclass(slots=True)
class Emitted:
    """A signal systemd1 emitted, after call number `after` (0: before any call)."""

    msg: Message
    after: int


@dataclass(slots=True)
class Conversation:
    source: str
    owners: list[str] = field(default_factory=list)
    exchanges: list[Exchange] = field(default_factory=list)
    signals: list[Emitted] = field(default_factory=list)
    clients: list[str] = field(default_factory=list)  # in the order of their first call
    client_pids: dict[str, int] = field(default_factory=dict)
    departures: list[tuple[int, str]] = field(default_factory=list)  # (after, unique name)
    markers: list[tuple[int, str]] = field(default_factory=list)  # (after, phase name)
    excluded: list[str] = field(default_factory=list)  # unique names left out

    def client_label(self, unique: str) -> str:
        """client-N: the N-th client to call systemd1 in this capture."""
        try:
            return f"client-{self.clients.index(unique) + 1}"
        except ValueError:
            return unique


def _owners(trace: Trace) -> list[str]:
    owners: list[str] = []
    calls: dict[tuple[str | None, int | None], Message] = {}
    for msg in trace.messages:
        found: str | None = None
        if msg.kind == SIGNAL and msg.sender == DRIVER and msg.member == "NameOwnerChanged":
            if len(msg.body) == 3 and msg.body[0] == SYSTEMD1 and msg.body[2]:
                found = msg.body[2]
        elif msg.kind == SIGNAL and msg.member == "NameAcquired" and msg.body == [SYSTEMD1]:
            found = msg.destination
        elif msg.kind == CALL and msg.destination == SYSTEMD1:
            calls[(msg.sender, msg.serial)] = msg
        elif msg.kind in (RETURN, ERROR) and msg.sender and msg.sender.startswith(":"):
            found = msg.sender if (msg.destination, msg.reply_serial) in calls else None
        if found and found not in owners:
            owners.append(found)
    return owners


def select(
    trace: Trace,
    *,
    exclude_clients: list[str] | tuple[str, ...] = (),
    from_marker: str | None = None,
    until_marker: str | None = None,
) -> Conversation:
    """The systemd1 conversation of a trace. `exclude_clients` holds client labels
    ("client-2") or unique names; the markers cut the trace (exclusive)."""
    conv = Conversation(trace.source, owners=_owners(trace))
    owners = set(conv.owners)
    messages = trace.messages
    if from_marker is not None or until_marker is not None:
        messages = _cut(trace.messages, from_marker, until_marker, trace.source)
    # clients: in the order of their first call to systemd1 (before any exclusion, so that
    # the labels of a trace do not depend on what its metadata leaves out)
    for msg in messages:
        if (
            msg.kind == CALL
            and _to_systemd1(msg, owners)
            and msg.sender
            and msg.sender not in owners
            and msg.sender not in conv.clients
        ):
            conv.clients.append(msg.sender)
    excluded = {
        conv.clients[int(c.split("-")[1]) - 1] if _is_label(c, len(conv.clients)) else c
        for c in exclude_clients
    }
    conv.excluded = sorted(excluded)
    pending: dict[tuple[str | None, int | None], Exchange] = {}
    driver_calls: dict[tuple[str | None, int | None], Message] = {}
    index = 0
    for msg in messages:
        kind = msg.kind
        if kind == CALL:
            if _to_systemd1(msg, owners) and msg.sender not in owners:
                if msg.sender in excluded:
                    continue
                index += 1
                exchange = Exchange(index, msg.sender or "", msg)
                conv.exchanges.append(exchange)
                pending[(msg.sender, msg.serial)] = exchange
            elif msg.destination == DRIVER and msg.member in (
                "GetConnectionUnixProcessID",
                "GetConnectionCredentials",
            ):
                driver_calls[(msg.sender, msg.serial)] = msg
        elif kind in (RETURN, ERROR):
            key = (msg.destination, msg.reply_serial)
            answered = pending.pop(key, None)
            if answered is not None:
                if msg.sender in owners or msg.sender == SYSTEMD1 or kind == ERROR:
                    answered.reply = msg  # an error may be the driver's (ServiceUnknown)
                continue
            call = driver_calls.pop(key, None)
            if call is not None and kind == RETURN and msg.body and call.body:
                _learn_pid(conv, call, msg)
        elif kind == SIGNAL:
            if msg.sender in owners:
                conv.signals.append(Emitted(msg, index))
            elif msg.interface == MARKER_INTERFACE and msg.body:
                conv.markers.append((index, str(msg.body[0])))
            elif (
                msg.sender == DRIVER
                and msg.member == "NameOwnerChanged"
                and len(msg.body) == 3
                and msg.body[0] == msg.body[1]
                and not msg.body[2]
                and msg.body[0] in conv.clients
            ):
                conv.departures.append((index, msg.body[0]))
    return conv


def _learn_pid(conv: Conversation, call: Message, reply: Message) -> None:
    name = call.body[0]
    if not isinstance(name, str):
        return
    value = reply.body[0]
    if call.member == "GetConnectionUnixProcessID" and isinstance(value, int):
        conv.client_pids.setdefault(name, value)
    elif isinstance(value, dict) and "ProcessID" in value:
        pid = getattr(value["ProcessID"], "value", None)
        if isinstance(pid, int):
            conv.client_pids.setdefault(name, pid)


def _to_systemd1(msg: Message, owners: set[str]) -> bool:
    return msg.destination == SYSTEMD1 or (msg.destination in owners)


def _is_label(c: str, n: int) -> bool:
    if not c.startswith("client-"):
        return False
    tail = c[7:]
    return tail.isdigit() and 1 <= int(tail) <= n


class MarkerError(ValueError):
    pass


def _cut(
    messages: list[Message], start: str | None, until: str | None, source: str
) -> list[Message]:
    def is_marker(msg: Message, name: str) -> bool:
        return (
            msg.kind == SIGNAL
            and msg.interface == MARKER_INTERFACE
            and bool(msg.body)
            and msg.body[0] == name
        )

    begin = 0
    if start is not None:
        found = [i for i, m in enumerate(messages) if is_marker(m, start)]
        if not found:
            raise MarkerError(f"{source}: no marker {start!r}")
        begin = found[0] + 1
    end = len(messages)
    if until is not None:
        found = [i for i, m in enumerate(messages) if i >= begin and is_marker(m, until)]
        if not found:
            raise MarkerError(f"{source}: no marker {until!r} after {start!r}")
        end = found[0]
    return messages[begin:end]
