"""The text `dbus-monitor` prints: the dbus 1.14 format (`method call time=... sender=...
-> destination=... serial=...`) and the older one of 2013-era logs (no `time=`, `dest=`,
method returns without `serial=`).

The format is lossy and this parser says where: strings are printed between quotes without
escaping (a string may span lines and contain quotes; it ends at a quote that ends a line
followed by something that can follow a value), an empty array shows no element type (left as
an unknown for recover.py), doubles are printed with %g, file descriptors without number.
"""

from __future__ import annotations

import re
from typing import Any

from shim.replay.trace import CALL, ERROR, RETURN, SIGNAL, Message, Trace, TraceError
from shim.replay.values import UNKNOWN, Fd, Type, unify

_KINDS = {"method call": CALL, "method return": RETURN, "error": ERROR, "signal": SIGNAL}
_HEADER = re.compile(
    r"(method call|method return|error|signal)(?: time=(\d+)\.(\d+))?"
    r" sender=(\(null sender\)|\S*) -> (?:destination|dest)=(\(null destination\)|\S*)(.*)"
)
# what may follow the last line of a string value
_FOLLOW = re.compile(
    r"(?:method call|method return|error|signal) "
    r"|[ \t,]*(?:string \"|object path \"|signature \"|u?int(?:16|32|64) -?\d|byte \d"
    r"|boolean (?:true|false)|double |variant |array |dict entry\(|struct \{"
    r"|file descriptor|unix fd|[\]\)\}][ \t]*$)"
    r"|[ \t]*$"
)
_FD_DETAIL = re.compile(r"(?:inode: |type: ?|address family: |name |peer )")
_FD_TYPE_CLOSE = re.compile(r"(\s*type:(?: [^\s\]\)\}]+)?)\s+([\]\)\}]\s*)$")
_INTS = {
    "int16": "n",
    "uint16": "q",
    "int32": "i",
    "uint32": "u",
    "int64": "x",
    "uint64": "t",
    "byte": "y",
}

Node = tuple[Type, Any]


class _Parser:
    def __init__(self, text: str, source: str) -> None:
        self.lines = text.split("\n")
        # dbus-monitor ends every line: a last line without its newline was cut off
        self.cut = bool(self.lines) and self.lines[-1].strip() != ""
        if self.lines and self.lines[-1] == "":
            self.lines.pop()
        self.n = len(self.lines)
        self.source = source

    def fail(self, i: int, message: str) -> TraceError:
        return TraceError(self.source, i + 1, message)

    # -- messages --------------------------------------------------------------------------

    def parse(self) -> Trace:
        messages: list[Message] = []
        lines = self.lines
        n = self.n
        header = _HEADER.match
        i = 0
        current: Message | None = None
        while i < n:
            line = lines[i]
            if not line.strip():
                i += 1
                continue
            if line[0] in " \t,":
                if current is None:
                    raise self.fail(i, "a value before any message header")
                node, i = self._value(line.lstrip(" \t,"), i)
                current.types.append(node[0])
                current.raw.append(node)
                continue
            m = header(line)
            if m is None:
                raise self.fail(i, self._not_a_header(line, i))
            try:
                current = self._header(m, i)
            except TraceError as e:
                if i != n - 1:
                    raise
                raise self.fail(
                    i, f"{e.message} (the capture ends on this line: cut off)"
                ) from None
            messages.append(current)
            i += 1
        if self.cut and n > 0:
            raise self.fail(n - 1, "the capture ends in the middle of this line (cut off)")
        return Trace(self.source, "text", messages)

    def _not_a_header(self, line: str, i: int = -1) -> str:
        shown = line if len(line) <= 60 else line[:57] + "..."
        if "\x00" in line or any("\udc80" <= c <= "\udcff" for c in line[:200]):
            # bytes that are not UTF-8 text: not what dbus-monitor prints
            return "binary data, not a capture dbus-monitor writes (text, --pcap or --binary)"
        if i == self.n - 1 and line.startswith(tuple(_KINDS)):
            return f"the capture ends in the middle of a message header (cut off): {shown!r}"
        if line.startswith(("sig\t", "mc\t", "mr\t", "err\t")):
            return f"dbus-monitor --profile output carries no message bodies: {shown!r}"
        return f"not a dbus-monitor message header or value: {shown!r}"

    def _header(self, m: re.Match[str], i: int) -> Message:
        kind = _KINDS[m.group(1)]
        time = None
        if m.group(2) is not None:
            time = int(m.group(2)) + int(m.group(3)) / 10 ** len(m.group(3))
        sender = m.group(4)
        dest = m.group(5)
        fields: dict[str, str] = {}
        for token in m.group(6).replace(";", " ").split():
            key, eq, value = token.partition("=")
            if not eq:
                raise self.fail(i, f"unexpected {token!r} in a message header")
            fields[key] = value
        try:
            serial = int(fields["serial"]) if "serial" in fields else None
            reply_serial = int(fields["reply_serial"]) if "reply_serial" in fields else None
        except ValueError:
            raise self.fail(i, "a serial that is not a number") from None
        msg = Message(
            kind=kind,
            sender=None if sender.startswith("(null") else sender,
            destination=None if dest.startswith("(null") else dest,
            serial=serial,
            reply_serial=reply_serial,
            path=_field(fields, "path"),
            interface=_field(fields, "interface"),
            member=_field(fields, "member"),
            error_name=_field(fields, "error_name"),
            time=time,
            line=i + 1,
        )
        if kind in (CALL, SIGNAL) and (msg.path is None or msg.member is None):
            raise self.fail(i, f"a {m.group(1)} header without path= or member=")
        if kind in (RETURN, ERROR) and reply_serial is None:
            raise self.fail(i, f"a {m.group(1)} header without reply_serial=")
        if kind == ERROR and msg.error_name is None:
            raise self.fail(i, "an error header without error_name=")
        return msg

    # -- values ----------------------------------------------------------------------------

    def _value(self, s: str, i: int) -> tuple[Node, int]:
        """The value whose text starts with `s` (on line i); the next line's index."""
        head = s[:4]
        if head == "stri" and s.startswith('string "'):
            return self._string("s", s[8:], i)
        if head == "dict" and s.startswith("dict entry("):
            key, j = self._item(i + 1, i)
            value, j = self._item(j, i)
            self._close(j, ")", i, "dict entry")
            return (("e", key[0], value[0]), (key, value)), j + 1
        if head == "vari" and s.startswith("variant"):
            rest = s[7:].lstrip(" \t")
            if not rest:
                raise self.fail(i, "a variant without its value")
            inner, j = self._value(rest, i)
            return ("v", inner), j
        if head == "obje" and s.startswith('object path "'):
            return self._string("o", s[13:], i)
        if head == "sign" and s.startswith('signature "'):
            return self._string("g", s[11:], i)
        word, _, rest = s.partition(" ")
        code = _INTS.get(word)
        if code is not None:
            try:
                return (code, int(rest)), i + 1
            except ValueError:
                raise self.fail(i, f"{word} {rest!r} is not a number") from None
        if word == "boolean":
            if rest not in ("true", "false"):
                raise self.fail(i, f"boolean {rest!r}")
            return ("b", rest == "true"), i + 1
        if word == "array":
            if rest.startswith("["):
                return self._array(i)
            if rest.startswith("of bytes"):
                return self._bytes(rest[8:].lstrip(" "), i)
        if word == "double":
            try:
                return ("d", float(rest)), i + 1
            except ValueError:
                raise self.fail(i, f"double {rest!r} is not a number") from None
        if s.startswith("struct {"):
            fields: list[Node] = []
            j = i + 1
            while not self._is_close(j, "}", i, "struct"):
                node, j = self._value(self.lines[j].lstrip(" \t,"), j)
                fields.append(node)
            if not fields:
                raise self.fail(i, "an empty struct")
            return (("r", tuple(f[0] for f in fields)), fields), j + 1
        if s.startswith("file descriptor"):
            j = i + 1
            info = []
            while j < self.n and _FD_DETAIL.match(self.lines[j].lstrip(" \t")):
                line = self.lines[j]
                cut = _FD_TYPE_CLOSE.match(line)
                if cut is not None:
                    # dbus-monitor ends a type it cannot name (a pidfd's anon inode) without
                    # a newline: the closer of the enclosing container follows on that line
                    info.append(cut.group(1).strip())
                    self.lines[j] = " " * (len(line) - len(cut.group(2))) + cut.group(2)
                    break
                info.append(line.strip())
                j += 1
            return ("h", Fd(None, "; ".join(info))), j
        if word == "unix" and rest.startswith("fd "):
            try:
                return ("h", Fd(int(rest[3:]))), i + 1
            except ValueError:
                raise self.fail(i, f"unix fd {rest[3:]!r}") from None
        if "too dumb to decipher" in s:
            raise self.fail(i, f"dbus-monitor could not print this value: {s.strip()!r}")
        shown = s if len(s) <= 60 else s[:57] + "..."
        raise self.fail(i, f"not a dbus-monitor value: {shown!r}")

    def _item(self, j: int, start: int) -> tuple[Node, int]:
        if j >= self.n:
            raise self.fail(start, "a dict entry that the capture cuts off")
        s = self.lines[j].lstrip(" \t,")
        if not s or s[0] in "])}":
            raise self.fail(j, "a dict entry without its key or value")
        return self._value(s, j)

    def _is_close(self, j: int, closer: str, start: int, what: str) -> bool:
        if j >= self.n:
            raise self.fail(start, f"a {what} that the capture cuts off (no closing {closer!r})")
        s = self.lines[j].strip(" \t,")
        if s == closer:
            return True
        if s and s in "])}":
            raise self.fail(j, f"{s!r} closes a {what} opened at line {start + 1}")
        if not s or self.lines[j][:1] not in " \t,":
            raise self.fail(start, f"a {what} that is not closed before line {j + 1}")
        return False

    def _close(self, j: int, closer: str, start: int, what: str) -> None:
        if not self._is_close(j, closer, start, what):
            raise self.fail(j, f"a {what} with more than two values")

    def _array(self, i: int) -> tuple[Node, int]:
        items: list[Node] = []
        j = i + 1
        while not self._is_close(j, "]", i, "array"):
            node, j = self._value(self.lines[j].lstrip(" \t,"), j)
            items.append(node)
        if not items:
            return (("a", (UNKNOWN, i + 1)), items), j + 1
        elem = items[0][0]
        for node in items[1:]:
            if node[0] != elem:
                merged = unify(elem, node[0])
                if merged is None:
                    raise self.fail(i, "an array whose elements have different types")
                elem = merged
        return (("a", elem), items), j + 1

    def _bytes(self, rest: str, i: int) -> tuple[Node, int]:
        if rest.startswith('"'):
            if rest.endswith('" + \\0'):
                return (("a", "y"), rest[1:-6].encode("latin-1", "replace") + b"\0"), i + 1
            if len(rest) >= 2 and rest.endswith('"'):
                return (("a", "y"), rest[1:-1].encode("latin-1", "replace")), i + 1
            raise self.fail(i, "an array of bytes with an unterminated string")
        if not rest.startswith("["):
            raise self.fail(i, "an array of bytes that is neither quoted nor in brackets")
        out = bytearray()
        j = i + 1
        while not self._is_close(j, "]", i, "array of bytes"):
            try:
                out += bytes.fromhex(self.lines[j])
            except ValueError:
                raise self.fail(j, "bytes that are not hexadecimal") from None
            j += 1
        return (("a", "y"), bytes(out)), j + 1

    def _string(self, code: str, rest: str, i: int) -> tuple[Node, int]:
        lines = self.lines
        if rest.endswith('"') and self._ends_here(i):
            return (code, rest[:-1]), i + 1
        parts = [rest]
        j = i + 1
        while j < self.n:
            line = lines[j]
            parts.append(line)
            if line.endswith('"') and self._ends_here(j):
                return (code, "\n".join(parts)[:-1]), j + 1
            j += 1
        raise self.fail(i, "a string that never ends (no closing quote before the end)")

    def _ends_here(self, i: int) -> bool:
        j = i + 1
        return j >= self.n or _FOLLOW.match(self.lines[j]) is not None


def _field(fields: dict[str, str], key: str) -> str | None:
    value = fields.get(key)
    if value is None or value.startswith("(null"):
        return None
    return value


def parse(text: str, source: str = "<text>") -> Trace:
    """Parse dbus-monitor text; TraceError (with the line) when it is malformed."""
    return _Parser(text, source).parse()
