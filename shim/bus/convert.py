"""Variant <-> plain value conversion at the edge of the bus layer."""

from __future__ import annotations

from typing import Any

from dbus_fast import Variant

from compat.errors import InvalidArgs


def unwrap_properties(raw: list[Any]) -> list[tuple[str, str, object]]:
    """An a(sv) body value as (name, signature, plain value) triples, in wire order."""
    out: list[tuple[str, str, object]] = []
    for name, variant in raw:
        if not isinstance(variant, Variant):
            raise InvalidArgs("Invalid property assignment")
        out.append((name, variant.signature, _plain(variant.value)))
    return out


def _plain(value: Any) -> object:
    if isinstance(value, Variant):
        return _plain(value.value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def wrap(signature: str, value: object) -> Variant:
    """A Variant for an outgoing property value."""
    return Variant(signature, value)
