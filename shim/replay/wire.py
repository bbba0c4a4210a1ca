"""The D-Bus wire format, read without any D-Bus library: `dbus-monitor --binary` (marshalled
messages one after the other) and `dbus-monitor --pcap` (a pcap file, link type 231
DLT_DBUS, one message per record). Both are exact: every value comes with its signature.

A message's "line" is its record number (1-based) in the capture.
"""

from __future__ import annotations

import struct
from typing import Any

from shim.replay.trace import CALL, ERROR, RETURN, SIGNAL, Message, Trace, TraceError
from shim.replay.values import Fd, SignatureError, Type, Var, parse_signature, parse_type

DLT_DBUS = 231
_KINDS = {1: CALL, 2: RETURN, 3: ERROR, 4: SIGNAL}
_FIXED = {
    "y": (1, "B"),
    "b": (4, "I"),
    "n": (2, "h"),
    "q": (2, "H"),
    "i": (4, "i"),
    "u": (4, "I"),
    "x": (8, "q"),
    "t": (8, "Q"),
    "d": (8, "d"),
    "h": (4, "I"),
}
_HEADER_FIELD_TYPE = ("r", ("y", "v"))
MAX_MESSAGE = 1 << 27


class WireError(Exception):
    pass


def _alignment(t: Type) -> int:
    if isinstance(t, str):
        if t in _FIXED:
            return _FIXED[t][0]
        if t in "so":
            return 4
        return 1  # g, v
    return 4 if t[0] == "a" else 8


class _Reader:
    def __init__(self, data: bytes, little: bool) -> None:
        self.data = data
        self.end = "<" if little else ">"
        self.pos = 0

    def align(self, n: int) -> None:
        pad = (-self.pos) % n
        if self.pos + pad > len(self.data):
            raise WireError("the message ends inside padding")
        if any(self.data[self.pos : self.pos + pad]):
            raise WireError(f"non-zero padding at byte {self.pos}")
        self.pos += pad

    def fixed(self, code: str) -> Any:
        size, fmt = _FIXED[code]
        self.align(size)
        if self.pos + size > len(self.data):
            raise WireError("the message ends inside a value")
        (value,) = struct.unpack_from(self.end + fmt, self.data, self.pos)
        self.pos += size
        if code == "b":
            if value > 1:
                raise WireError(f"boolean {value}")
            return bool(value)
        return value

    def string(self, length: int) -> str:
        start = self.pos
        if start + length + 1 > len(self.data) or self.data[start + length] != 0:
            raise WireError("a string that is not NUL-terminated inside the message")
        self.pos = start + length + 1
        return self.data[start : start + length].decode("utf-8", "surrogateescape")

    def value(self, t: Type) -> Any:
        if isinstance(t, str):
            if t in "so":
                return self.string(self.fixed("u"))
            if t == "g":
                return self.string(self.fixed("y"))
            if t == "v":
                sig = self.string(self.fixed("y"))
                try:
                    inner = parse_type(sig)
                except SignatureError as e:
                    raise WireError(f"a variant with a bad signature: {e}") from None
                return Var(sig, self.value(inner))
            if t == "h":
                return Fd(self.fixed("h"))
            return self.fixed(t)
        kind = t[0]
        if kind == "a":
            length = self.fixed("u")
            if length > 1 << 26:
                raise WireError(f"array length {length} is over the limit")
            elem = t[1]
            self.align(_alignment(elem))
            end = self.pos + length
            if end > len(self.data):
                raise WireError("an array longer than the message")
            if elem == "y":
                self.pos = end
                return self.data[end - length : end]
            if isinstance(elem, tuple) and elem[0] == "e":
                out: dict[Any, Any] = {}
                while self.pos < end:
                    self.align(8)
                    k = self.value(elem[1])
                    out[k] = self.value(elem[2])
                return out
            items = []
            while self.pos < end:
                items.append(self.value(elem))
            if self.pos != end:
                raise WireError("an array element crosses the array's end")
            return items
        if kind == "r":
            self.align(8)
            return [self.value(f) for f in t[1]]
        raise WireError("a dict entry outside an array")


def _message(data: bytes, record: int, time: float | None, source: str) -> tuple[Message, int]:
    """One message from the start of `data`; its length."""
    if len(data) < 16:
        raise TraceError(source, record, f"record {record}: shorter than a message header")
    endian = data[0:1]
    if endian not in (b"l", b"B"):
        raise TraceError(source, record, f"record {record}: bad endianness byte {endian!r}")
    little = endian == b"l"
    end = "<" if little else ">"
    mtype, flags, version = data[1], data[2], data[3]
    if version != 1 or mtype not in _KINDS:
        raise TraceError(source, record, f"record {record}: not a D-Bus message (type {mtype})")
    body_len, serial, fields_len = struct.unpack_from(end + "III", data, 4)
    header_end = 16 + fields_len
    body_start = header_end + (-header_end) % 8
    total = body_start + body_len
    if total > MAX_MESSAGE:
        raise TraceError(source, record, f"record {record}: message length {total} too large")
    if len(data) < total:
        raise TraceError(
            source, record, f"record {record}: the capture cuts the message off "
            f"({len(data)} of {total} bytes)",
        )  # fmt: skip
    reader = _Reader(data[:total], little)
    reader.pos = 12
    try:
        fields = reader.value(("a", _HEADER_FIELD_TYPE))
        reader.align(8)
        header = {code: var.value for code, var in fields}
        sig = header.get(8, "")
        types = parse_signature(sig)
        body = [reader.value(t) for t in types]
    except (WireError, SignatureError) as e:
        raise TraceError(source, record, f"record {record}: {e}") from None
    if reader.pos != total:
        raise TraceError(source, record, f"record {record}: the body is longer than its values")
    msg = Message(
        kind=_KINDS[mtype],
        sender=header.get(7),
        destination=header.get(6),
        serial=serial,
        reply_serial=header.get(5),
        path=header.get(1),
        interface=header.get(2),
        member=header.get(3),
        error_name=header.get(4),
        time=time,
        line=record,
        types=types,
        body=body,
        flags=flags,
        recovered=True,
    )
    return msg, total


def parse_binary(data: bytes, source: str = "<binary>") -> Trace:
    """`dbus-monitor --binary`: marshalled messages back to back."""
    messages = []
    pos = 0
    record = 1
    while pos < len(data):
        msg, length = _message(data[pos:], record, None, source)
        messages.append(msg)
        pos += length
        record += 1
    return Trace(source, "binary", messages)


def parse_pcap(data: bytes, source: str = "<pcap>") -> Trace:
    """`dbus-monitor --pcap`: a pcap file of link type DLT_DBUS."""
    if len(data) < 24:
        raise TraceError(source, 0, "a pcap file shorter than its header")
    magic = data[:4]
    end = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    _, _, _, _, _, network = struct.unpack_from(end + "HHiIII", data, 4)
    if network != DLT_DBUS:
        raise TraceError(source, 0, f"pcap link type {network}, not D-Bus ({DLT_DBUS})")
    messages = []
    pos = 24
    record = 1
    while pos < len(data):
        if pos + 16 > len(data):
            raise TraceError(source, record, f"record {record}: a record header cut off")
        sec, frac, incl, orig = struct.unpack_from(end + "IIII", data, pos)
        pos += 16
        if incl != orig:
            raise TraceError(
                source, record, f"record {record}: truncated by the capture ({incl} of {orig})"
            )
        if pos + incl > len(data):
            # dbus-monitor's --pcap output is block-buffered: stopped by a signal, it leaves
            # its last record part-written
            raise TraceError(
                source, record, f"record {record}: the file ends inside it ({len(data) - pos} "
                f"of {incl} bytes; a monitor stopped mid-write?): the records before it end at "
                f"byte {pos - 16} (head -c {pos - 16})",
            )  # fmt: skip
        chunk = data[pos : pos + incl]
        time = sec + frac / (1e9 if nano else 1e6)
        msg, length = _message(chunk, record, time, source)
        if length != incl:
            raise TraceError(source, record, f"record {record}: extra bytes after the message")
        messages.append(msg)
        pos += incl
        record += 1
    return Trace(source, "pcap", messages)
