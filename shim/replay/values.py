"""D-Bus types and values as the replay code holds them, without any D-Bus library.

A type is a tree: a basic type code ("s", "u", "v", ...), ("a", ELEMENT), ("r", (FIELD, ...))
for a struct, ("e", KEY, VALUE) for a dict entry, or ("?", LINE) for a type the capture did
not show (dbus-monitor's text prints an empty array without its element type). `unify` fills
the unknowns from a known signature.

Values are plain Python, shaped as the bus layer sends them: str, int, float, bool, bytes for
"ay", list for arrays and structs, dict for arrays of dict entries, `Var` for variants and
`Fd` for unix file descriptors.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

BASIC = frozenset("ybnqiuxtdsoghv")
INTEGER = frozenset("ynqiuxth")
UNKNOWN = "?"

Type = Any  # str | tuple[str, Type] | tuple[str, tuple[Type, ...]] | tuple[str, Type, Type]


class SignatureError(ValueError):
    """A malformed D-Bus signature."""


@dataclass(frozen=True, slots=True)
class Var:
    """A variant: the contained value's signature and the value."""

    sig: str
    value: Any


@dataclass(frozen=True, slots=True)
class Fd:
    """A unix file descriptor as a capture shows it (the text format prints no number)."""

    index: int | None = None
    info: str = ""


def parse_signature(sig: str) -> list[Type]:
    """The complete types of a signature, as type trees."""
    out: list[Type] = []
    i = 0
    while i < len(sig):
        t, i = _parse_one(sig, i)
        out.append(t)
    return out


def parse_type(sig: str) -> Type:
    """One complete type."""
    types = parse_signature(sig)
    if len(types) != 1:
        raise SignatureError(f"not a single complete type: {sig!r}")
    return types[0]


def _parse_one(sig: str, i: int) -> tuple[Type, int]:
    if i >= len(sig):
        raise SignatureError(f"signature ends early: {sig!r}")
    c = sig[i]
    if c in BASIC:
        return c, i + 1
    if c == UNKNOWN:
        return (UNKNOWN, 0), i + 1
    if c == "a":
        elem, j = _parse_one(sig, i + 1)
        return ("a", elem), j
    if c == "(":
        fields: list[Type] = []
        j = i + 1
        while j < len(sig) and sig[j] != ")":
            f, j = _parse_one(sig, j)
            fields.append(f)
        if j >= len(sig) or not fields:
            raise SignatureError(f"bad struct in signature {sig!r}")
        return ("r", tuple(fields)), j + 1
    if c == "{":
        key, j = _parse_one(sig, i + 1)
        value, j = _parse_one(sig, j)
        if j >= len(sig) or sig[j] != "}":
            raise SignatureError(f"bad dict entry in signature {sig!r}")
        return ("e", key, value), j + 1
    raise SignatureError(f"unknown type code {c!r} in signature {sig!r}")


def to_signature(t: Type) -> str:
    """The signature of a type tree ("?" where it is unknown)."""
    if isinstance(t, str):
        return t
    kind = t[0]
    if kind == "a":
        return "a" + to_signature(t[1])
    if kind == "r":
        return "(" + "".join(to_signature(f) for f in t[1]) + ")"
    if kind == "e":
        return "{" + to_signature(t[1]) + to_signature(t[2]) + "}"
    return UNKNOWN


def signature_of(types: list[Type]) -> str:
    return "".join(to_signature(t) for t in types)


def unknown_lines(t: Type) -> list[int]:
    """The capture lines of the unknowns left in a type tree."""
    if isinstance(t, str):
        return []
    kind = t[0]
    if kind == UNKNOWN:
        return [t[1]]
    if kind == "a":
        return unknown_lines(t[1])
    if kind == "r":
        return [n for f in t[1] for n in unknown_lines(f)]
    return unknown_lines(t[1]) + unknown_lines(t[2])


def is_complete(t: Type) -> bool:
    if isinstance(t, str):
        return True
    kind = t[0]
    if kind == UNKNOWN:
        return False
    if kind == "a":
        return is_complete(t[1])
    if kind == "r":
        return all(is_complete(f) for f in t[1])
    return is_complete(t[1]) and is_complete(t[2])


def unify(a: Type, b: Type) -> Type | None:
    """The most precise type that both trees describe, None if they disagree."""
    if isinstance(a, tuple) and a[0] == UNKNOWN:
        return b
    if isinstance(b, tuple) and b[0] == UNKNOWN:
        return a
    if isinstance(a, str) or isinstance(b, str):
        return a if a == b else None
    if a[0] != b[0]:
        return None
    if a[0] == "a":
        elem = unify(a[1], b[1])
        return None if elem is None else ("a", elem)
    if a[0] == "r":
        if len(a[1]) != len(b[1]):
            return None
        fields = []
        for x, y in zip(a[1], b[1], strict=True):
            f = unify(x, y)
            if f is None:
                return None
            fields.append(f)
        return ("r", tuple(fields))
    key = unify(a[1], b[1])
    value = unify(a[2], b[2])
    if key is None or value is None:
        return None
    return ("e", key, value)


# -- JSON (for the replay peer and for reports) ----------------------------------------------


def to_json(t: Type, value: Any) -> Any:
    """A JSON-able form of a value of complete type `t` (bytes in base64, variants as
    {"sig": ..., "value": ...})."""
    if isinstance(t, str):
        if t == "v":
            inner = parse_type(value.sig)
            return {"sig": value.sig, "value": to_json(inner, value.value)}
        if t == "h":
            return None if not isinstance(value, Fd) else value.index
        if t == "d":
            return float(value)
        return value
    kind = t[0]
    if kind == "a":
        elem = t[1]
        if elem == "y":
            return {"bytes": base64.b64encode(bytes(value)).decode()}
        if isinstance(elem, tuple) and elem[0] == "e":
            return [[to_json(elem[1], k), to_json(elem[2], v)] for k, v in value.items()]
        return [to_json(elem, v) for v in value]
    if kind == "r":
        return [to_json(f, v) for f, v in zip(t[1], value, strict=True)]
    raise SignatureError(f"incomplete type {to_signature(t)}")


def from_json(t: Type, data: Any) -> Any:
    """The inverse of `to_json`."""
    if isinstance(t, str):
        if t == "v":
            inner = parse_type(data["sig"])
            return Var(data["sig"], from_json(inner, data["value"]))
        if t == "h":
            return Fd(data)
        if t == "d":
            return float(data)
        return data
    kind = t[0]
    if kind == "a":
        elem = t[1]
        if elem == "y":
            return base64.b64decode(data["bytes"])
        if isinstance(elem, tuple) and elem[0] == "e":
            return {from_json(elem[1], k): from_json(elem[2], v) for k, v in data}
        return [from_json(elem, v) for v in data]
    if kind == "r":
        return [from_json(f, v) for f, v in zip(t[1], data, strict=True)]
    raise SignatureError(f"incomplete type {to_signature(t)}")


def body_to_json(signature: str, body: list[Any]) -> list[Any]:
    return [to_json(t, v) for t, v in zip(parse_signature(signature), body, strict=True)]


def body_from_json(signature: str, data: list[Any]) -> list[Any]:
    return [from_json(t, v) for t, v in zip(parse_signature(signature), data, strict=True)]
