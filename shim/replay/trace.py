"""One captured message, the errors a capture can have, and loading a capture of any format."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shim.replay.values import Type, is_complete, signature_of

CALL, RETURN, ERROR, SIGNAL = "call", "return", "error", "signal"


class TraceError(Exception):
    """A capture that cannot be read: which file, which line (or record), what is wrong."""

    def __init__(self, source: str, line: int, message: str) -> None:
        super().__init__(f"{source}:{line}: {message}")
        self.source = source
        self.line = line
        self.message = message


@dataclass(frozen=True, slots=True)
class Issue:
    """A part of a message whose type the capture did not show and no table recovered."""

    source: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.message}"


@dataclass(slots=True)
class Message:
    """One message as captured. `types`/`raw` are what the capture showed; `body` holds the
    values once every type is known (`complete`)."""

    kind: str
    sender: str | None
    destination: str | None
    serial: int | None
    reply_serial: int | None
    path: str | None
    interface: str | None
    member: str | None
    error_name: str | None
    time: float | None
    line: int
    types: list[Type] = field(default_factory=list)
    raw: list[Any] = field(default_factory=list)
    body: list[Any] = field(default_factory=list)
    flags: int = 0
    recovered: bool = False

    @property
    def signature(self) -> str:
        return signature_of(self.types)

    @property
    def complete(self) -> bool:
        return all(is_complete(t) for t in self.types)

    def describe(self) -> str:
        if self.kind in (CALL, SIGNAL):
            return f"{self.kind} {self.interface}.{self.member} on {self.path}"
        if self.kind == ERROR:
            return f"error {self.error_name}"
        return "method return"


@dataclass(slots=True)
class Trace:
    """A whole capture: its messages in capture order and what could not be recovered."""

    source: str
    format: str
    messages: list[Message]
    issues: list[Issue] = field(default_factory=list)
    size: int = 0


PCAP_MAGICS = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")


def detect_format(head: bytes) -> str:
    """The format of a capture: pcap, binary (`dbus-monitor --binary`: raw marshalled
    messages) or text."""
    if head[:4] in PCAP_MAGICS:
        return "pcap"
    if (
        len(head) >= 16
        and head[:1] in (b"l", b"B")
        and head[1:2] in (b"\x01", b"\x02", b"\x03", b"\x04")
        and head[3:4] == b"\x01"
    ):
        return "binary"
    return "text"


def load(path: str | Path, *, recover: bool = True, name: str | None = None) -> Trace:
    """Read a capture in any supported format; TraceError when it is malformed."""
    p = Path(path)
    source = name or str(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise TraceError(source, 0, f"cannot read: {e.strerror or e}") from None
    return loads(data, source, recover=recover)


def loads(data: bytes, source: str = "<trace>", *, recover: bool = True) -> Trace:
    if not data.strip():
        raise TraceError(source, 0, "an empty capture (no messages)")
    fmt = detect_format(data[:16])
    if fmt == "text":
        from shim.replay import textlog

        trace = textlog.parse(data.decode("utf-8", "surrogateescape"), source)
    else:
        from shim.replay import wire

        trace = wire.parse_pcap(data, source) if fmt == "pcap" else wire.parse_binary(data, source)
    trace.size = len(data)
    if recover:
        from shim.replay import recover as rec

        rec.recover(trace)
    return trace
