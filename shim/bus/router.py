"""Interface descriptions, Introspect XML, and dispatch of one method call to its handler.

systemd's tree is dynamic (any valid unit path answers, finished jobs vanish), so objects
are resolved per call instead of being exported one by one. This module knows the shapes
(interfaces, members, signatures) and sd-bus's standard error texts; shim/bus/service.py
knows what the paths mean.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from compat import errors

PEER = "org.freedesktop.DBus.Peer"
INTROSPECTABLE = "org.freedesktop.DBus.Introspectable"
PROPERTIES = "org.freedesktop.DBus.Properties"

Handler = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Method:
    """One method: D-Bus signatures, argument names (for Introspect) and its handler."""

    name: str
    in_sig: str
    out_sig: str
    handler: Handler
    in_names: tuple[str, ...] = ()
    out_names: tuple[str, ...] = ()
    needs_caller: bool = False  # the handler wants the caller's PID resolved first


@dataclass(frozen=True, slots=True)
class Signal:
    name: str
    sig: str
    names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Prop:
    """A readable property; `emits` is the org.freedesktop.DBus.Property.EmitsChangedSignal
    annotation value systemd declares ("true", "false", "invalidates" or "const")."""

    name: str
    sig: str
    emits: str = "false"


@dataclass(slots=True)
class Interface:
    name: str
    methods: dict[str, Method] = field(default_factory=dict)
    signals: list[Signal] = field(default_factory=list)
    properties: dict[str, Prop] = field(default_factory=dict)

    def add(self, method: Method) -> None:
        self.methods[method.name] = method


@functools.cache
def split_signature(sig: str) -> tuple[str, ...]:
    """Split a D-Bus signature into its complete types."""
    out: list[str] = []
    i = 0
    while i < len(sig):
        j = i
        while sig[j] == "a":
            j += 1
        if sig[j] in "({":
            depth = 0
            k = j
            while True:
                if sig[k] in "({":
                    depth += 1
                elif sig[k] in ")}":
                    depth -= 1
                    if depth == 0:
                        break
                k += 1
            j = k
        out.append(sig[i : j + 1])
        i = j + 1
    return tuple(out)


def _method_xml(m: Method) -> str:
    args = []
    in_types = split_signature(m.in_sig)
    out_types = split_signature(m.out_sig)
    for i, t in enumerate(in_types):
        n = m.in_names[i] if i < len(m.in_names) else f"arg_{i}"
        args.append(f'   <arg type="{t}" name="{n}" direction="in"/>\n')
    for i, t in enumerate(out_types):
        n = m.out_names[i] if i < len(m.out_names) else f"out_{i}"
        args.append(f'   <arg type="{t}" name="{n}" direction="out"/>\n')
    if not args:
        return f'  <method name="{m.name}">\n  </method>\n'
    return f'  <method name="{m.name}">\n{"".join(args)}  </method>\n'


def _signal_xml(s: Signal) -> str:
    types = split_signature(s.sig)
    args = "".join(
        f'   <arg type="{t}" name="{s.names[i] if i < len(s.names) else f"arg_{i}"}"/>\n'
        for i, t in enumerate(types)
    )
    return f'  <signal name="{s.name}">\n{args}  </signal>\n'


def _prop_xml(p: Prop) -> str:
    head = f'  <property name="{p.name}" type="{p.sig}" access="read">\n'
    ann = (
        '   <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" '
        f'value="{p.emits}"/>\n'
    )
    return head + ann + "  </property>\n"


def interface_xml(iface: Interface) -> str:
    body = "".join(_method_xml(m) for m in iface.methods.values())
    body += "".join(_signal_xml(s) for s in iface.signals)
    body += "".join(_prop_xml(p) for p in iface.properties.values())
    return f' <interface name="{iface.name}">\n{body} </interface>\n'


_STANDARD_XML = """ <interface name="org.freedesktop.DBus.Peer">
  <method name="Ping"/>
  <method name="GetMachineId">
   <arg type="s" name="machine_uuid" direction="out"/>
  </method>
 </interface>
 <interface name="org.freedesktop.DBus.Introspectable">
  <method name="Introspect">
   <arg name="xml_data" type="s" direction="out"/>
  </method>
 </interface>
 <interface name="org.freedesktop.DBus.Properties">
  <method name="Get">
   <arg name="interface_name" direction="in" type="s"/>
   <arg name="property_name" direction="in" type="s"/>
   <arg name="value" direction="out" type="v"/>
  </method>
  <method name="GetAll">
   <arg name="interface_name" direction="in" type="s"/>
   <arg name="props" direction="out" type="a{sv}"/>
  </method>
  <method name="Set">
   <arg name="interface_name" direction="in" type="s"/>
   <arg name="property_name" direction="in" type="s"/>
   <arg name="value" direction="in" type="v"/>
  </method>
  <signal name="PropertiesChanged">
   <arg type="s" name="interface_name"/>
   <arg type="a{sv}" name="changed_properties"/>
   <arg type="as" name="invalidated_properties"/>
  </signal>
 </interface>
"""

_DOCTYPE = (
    '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
    '"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n'
)


def _attr(value: str) -> str:
    """An XML attribute value (xml.sax would pull urllib and http.client into start-up)."""
    return (
        value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


class XmlCache:
    """Introspect XML per interface set, built once (children are appended per call)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, ...], str] = {}

    def document(self, interfaces: Sequence[Interface], children: Sequence[str]) -> str:
        key = tuple(i.name for i in interfaces)
        head = self._cache.get(key)
        if head is None:
            head = (
                _DOCTYPE
                + "<node>\n"
                + _STANDARD_XML
                + "".join(interface_xml(i) for i in interfaces)
            )
            self._cache[key] = head
        nodes = "".join(f' <node name="{_attr(c)}"/>\n' for c in children)
        return head + nodes + "</node>\n"


# -- sd-bus's standard error texts ----------------------------------------------------------


def unknown_object(path: str) -> errors.UnknownObject:
    return errors.UnknownObject(f"Unknown object '{path}'.")


def unknown_method(interface: str | None, member: str) -> errors.UnknownMethod:
    return errors.UnknownMethod(f"Unknown method {member} or interface {interface}.")


def unknown_interface(interface: str) -> errors.UnknownInterface:
    return errors.UnknownInterface(f"Unknown interface '{interface}'.")


def unknown_property(interface: str, name: str) -> errors.UnknownProperty:
    return errors.UnknownProperty(f"Unknown interface {interface} or property {name}.")


def bad_arguments(sig: str, interface: str, member: str, expected: str) -> errors.InvalidArgs:
    return errors.InvalidArgs(
        f"Invalid arguments '{sig}' to call {interface}.{member}(), expecting '{expected}'."
    )
