"""Type recovery: the text capture drops an empty array's element type and all signatures;
the expected signatures (shim/replay/signatures.py) fill them in. What cannot be recovered is
reported with the capture's file and line (`Trace.issues`); such a message keeps a "?" in its
signature and cannot be sent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shim.replay.signatures import PROPERTIES_IFACE, Signatures, interfaces_for_path
from shim.replay.trace import CALL, ERROR, RETURN, SIGNAL, Issue, Message, Trace, TraceError
from shim.replay.values import (
    UNKNOWN,
    SignatureError,
    Type,
    Var,
    is_complete,
    parse_signature,
    parse_type,
    to_signature,
    unify,
)

Hint = Callable[[str], str | None]
_SETTABLE_CALLS = {"StartTransientUnit", "SetUnitProperties", "SetProperties"}


class _Recovery:
    def __init__(self, trace: Trace, sigs: Signatures) -> None:
        self.trace = trace
        self.sigs = sigs
        self.issues: list[Issue] = []
        self.msg: Message | None = None

    def issue(self, line: int, text: str) -> None:
        assert self.msg is not None
        self.issues.append(Issue(self.trace.source, line or self.msg.line, text))

    def message(self, msg: Message, call: Message | None) -> None:
        self.msg = msg
        expected, hint, where = self.expectation(msg, call)
        if expected is not None and len(expected) != len(msg.raw):
            expected = None
        types: list[Type] = []
        body: list[Any] = []
        for n, node in enumerate(msg.raw):
            exp = expected[n] if expected is not None else None
            t, v = self.node(node, exp, hint, None, where)
            types.append(t)
            body.append(v)
        msg.types = types
        msg.body = body
        msg.recovered = all(is_complete(t) for t in types)

    def expectation(
        self, msg: Message, call: Message | None
    ) -> tuple[list[Type] | None, Hint | None, str]:
        sigs = self.sigs
        hint: Hint | None = None
        sig: str | None = None
        where = msg.describe()
        if msg.kind == CALL:
            found = sigs.method(msg.interface, msg.member)
            sig = found[0] if found else None
            if msg.member in _SETTABLE_CALLS:
                hint = sigs.settable
            elif msg.interface in (PROPERTIES_IFACE, None) and msg.member == "Set":
                args = _strings(msg.raw)
                if len(args) >= 2:
                    prop = sigs.prop(args[0], args[1])
                    if prop is not None:
                        return ["s", "s", ("V", parse_type(prop))], None, where
        elif msg.kind == RETURN and call is not None:
            found = sigs.method(call.interface, call.member)
            sig = found[1] if found else None
            where = f"reply to {call.interface}.{call.member} (line {call.line})"
            if call.member in ("Get", "GetAll") and call.interface in (PROPERTIES_IFACE, None):
                args = _strings(call.raw) if call.raw else _strings_body(call)
                if call.member == "Get" and len(args) >= 2:
                    prop = sigs.prop(args[0], args[1])
                    if prop is not None:
                        return [("V", parse_type(prop))], None, where
                elif call.member == "GetAll" and args:
                    ifaces = [args[0]] if args[0] else interfaces_for_path(call.path)
                    hint = _props_hint(sigs, ifaces)
            elif call.member == "GetConnectionCredentials":
                hint = _props_hint(sigs, ["org.freedesktop.DBus"])
        elif msg.kind == ERROR:
            sig = "s" if len(msg.raw) == 1 else None
        elif msg.kind == SIGNAL:
            sig = sigs.signal(msg.interface, msg.member)
            if msg.member == "PropertiesChanged" and msg.interface == PROPERTIES_IFACE:
                args = _strings(msg.raw)
                if args:
                    hint = _props_hint(sigs, [args[0]])
                    where = f"PropertiesChanged of {args[0]} on {msg.path}"
        if hint is None:
            hint = sigs.settable if msg.kind == CALL else _props_hint(sigs, [])
        if sig is None:
            return None, hint, where
        try:
            return parse_signature(sig), hint, where
        except SignatureError:
            return None, hint, where

    def node(
        self, node: tuple[Type, Any], exp: Type | None, hint: Hint | None, key: str | None,
        where: str,
    ) -> tuple[Type, Any]:  # fmt: skip
        t, payload = node
        if isinstance(t, str):
            if t == "v":
                inner_exp: Type | None = None
                if isinstance(exp, tuple) and exp[0] == "V":
                    inner_exp = exp[1]
                elif key is not None and hint is not None:
                    sig = hint(key)
                    if sig is not None:
                        try:
                            inner_exp = parse_type(sig)
                        except SignatureError:
                            inner_exp = None
                what = f"{where}, {key}" if key is not None else where
                it, iv = self.node(payload, inner_exp, hint, None, what)
                return "v", Var(to_signature(it), iv)
            if exp is not None and isinstance(exp, str) and exp != t:
                self.issue(0, f"{where}: the capture shows type {t!r} where {exp!r} is expected")
            return t, payload
        kind = t[0]
        if kind == "a":
            elem_exp = exp[1] if isinstance(exp, tuple) and exp[0] == "a" else None
            if isinstance(payload, bytes):
                return t, payload
            if not payload:
                elem = t[1]
                if elem_exp is not None:
                    merged = unify(elem, elem_exp)
                    if merged is not None:
                        elem = merged
                if not is_complete(elem):
                    line = elem[1] if isinstance(elem, tuple) and elem[0] == UNKNOWN else 0
                    self.issue(line, f"{where}: the element type of an empty array is not known")
                if elem == "y":
                    return ("a", "y"), b""
                if isinstance(elem, tuple) and elem[0] == "e":
                    return ("a", elem), {}
                return ("a", elem), []
            items = [self.node(n, elem_exp, hint, None, where) for n in payload]
            elem = items[0][0]
            for it, _ in items[1:]:
                if it != elem:
                    elem = unify(elem, it) or elem
            if elem == "y":
                return ("a", "y"), bytes(v for _, v in items)
            if isinstance(elem, tuple) and elem[0] == "e":
                return ("a", elem), dict(v for _, v in items)
            return ("a", elem), [v for _, v in items]
        if kind == "e":
            kexp = vexp = None
            if isinstance(exp, tuple) and exp[0] == "e":
                kexp, vexp = exp[1], exp[2]
            knode, vnode = payload
            kt, kv = self.node(knode, kexp, hint, None, where)
            vt, vv = self.node(vnode, vexp, hint, kv if isinstance(kv, str) else None, where)
            return ("e", kt, vt), (kv, vv)
        if kind == "r":
            fexp: tuple[Type, ...] | None = None
            if isinstance(exp, tuple) and exp[0] == "r" and len(exp[1]) == len(payload):
                fexp = exp[1]
            fields = []
            first: str | None = None
            for n, f in enumerate(payload):
                ft, fv = self.node(
                    f, fexp[n] if fexp else None, hint, first if n == 1 else None, where
                )
                if n == 0 and isinstance(fv, str):
                    first = fv
                fields.append((ft, fv))
            return ("r", tuple(ft for ft, _ in fields)), [fv for _, fv in fields]
        return t, payload


def _strings(raw: list[Any]) -> list[str]:
    out = []
    for t, v in raw:
        if t != "s":
            break
        out.append(v)
    return out


def _strings_body(msg: Message) -> list[str]:
    out = []
    for v in msg.body:
        if not isinstance(v, str):
            break
        out.append(v)
    return out


def _props_hint(sigs: Signatures, ifaces: list[str]) -> Hint:
    def hint(name: str) -> str | None:
        for iface in ifaces:
            sig = sigs.props.get(iface, {}).get(name)
            if sig is not None:
                return sig
        return sigs.any_prop.get(name)

    return hint


_SD = "org.freedesktop.systemd1"


def _check_count(trace: Trace, sigs: Signatures, msg: Message, call: Message | None) -> None:
    """A systemd1 message whose values are fewer or more than its interface's signature has
    is a damaged capture (cut off, or a string whose quoting swallowed the next value): a
    TraceError naming its line, rather than a call that systemd would refuse."""
    sig: str | None = None
    what = ""
    if msg.kind == CALL and (msg.interface or "").startswith(_SD):
        found = sigs.method(msg.interface, msg.member)
        sig, what = (found[0] if found else None), f"{msg.member}"
    elif msg.kind == RETURN and call is not None and (call.interface or "").startswith(_SD):
        found = sigs.method(call.interface, call.member)
        sig, what = (found[1] if found else None), f"the reply to {call.member}"
    elif msg.kind == SIGNAL and (msg.interface or "").startswith(_SD):
        sig, what = sigs.signal(msg.interface, msg.member), f"the signal {msg.member}"
    if sig is None:
        return
    try:
        want = len(parse_signature(sig))
    except SignatureError:
        return
    got = len(msg.raw)
    if got == want:
        return
    last = msg is trace.messages[-1]
    if got < want and last:
        why = "the capture ends inside this message (cut off)"
    elif got < want:
        why = "values are missing (a damaged capture?)"
    else:
        why = "a string's quoting is damaged, or values were added"
    strings = [v for t, v in msg.raw if t in ("s", "o") and isinstance(v, str)]
    if any("\n" in v and ('string "' in v or 'object path "' in v) for v in strings):
        why = "a string without its closing quote swallowed the lines after it"
    raise TraceError(
        trace.source,
        msg.line,
        f"{what} carries {want} values ({sig}), the capture shows {got}: {why}",
    )


def recover(trace: Trace, sigs: Signatures | None = None) -> Trace:
    """Give every text message its types and values; record what stays unknown."""
    sigs = sigs or Signatures()
    calls: dict[tuple[str | None, int | None], Message] = {}
    # introspection data in the capture comes first: it describes this systemd
    for msg in trace.messages:
        if msg.kind == CALL:
            calls[(msg.sender, msg.serial)] = msg
        elif msg.kind == RETURN and msg.raw and msg.raw[0][0] == "s":
            call = calls.get((msg.destination, msg.reply_serial))
            if call is not None and call.member == "Introspect":
                sigs.add_introspection(msg.raw[0][1])
    rec = _Recovery(trace, sigs)
    for msg in trace.messages:
        if trace.format == "text":
            reply_to = None
            if msg.kind == RETURN:
                reply_to = calls.get((msg.destination, msg.reply_serial))
            _check_count(trace, sigs, msg, reply_to)
        if msg.recovered or not msg.raw:
            msg.recovered = True
            continue
        call = None
        if msg.kind in (RETURN, ERROR):
            call = calls.get((msg.destination, msg.reply_serial))
        rec.message(msg, call)
    trace.issues.extend(rec.issues)
    return trace
