"""Reads the reference captures of the real systemd 252 (introspection XML, GetAll values).

Used by tests that hold our tables against what systemd 252 put on the wire, and by
`python -m tests.systemd252` which regenerates compat/readable.py from them.
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CAPTURES_CANDIDATES = [
    ROOT / "fixtures" / "dbus-logs" / "real-systemd-252",
    ROOT.parent / "shared" / "lab" / "captures" / "real-systemd-252",
]


def captures_dir() -> Path:
    for c in CAPTURES_CANDIDATES:
        if c.is_dir():
            return c
    raise FileNotFoundError("no real-systemd-252 captures found")


def interfaces() -> dict[str, ET.Element]:
    """The first Introspect XML block of each org.freedesktop.systemd1.* interface."""
    text = (captures_dir() / "real-busctl-tree.log").read_text()
    out: dict[str, ET.Element] = {}
    for m in re.finditer(
        r' <interface name="(org\.freedesktop\.systemd1\.[A-Za-z]+)">.*?'
        r"\n </interface>",
        text,
        re.S,
    ):
        if m.group(1) not in out:
            out[m.group(1)] = ET.fromstring(m.group(0))
    return out


def properties(iface: ET.Element) -> list[tuple[str, str, str]]:
    """(name, signature, emits-changed annotation) in introspection order."""
    out = []
    for p in iface.findall("property"):
        emits = "true"
        for a in p.findall("annotation"):
            if a.get("name") == "org.freedesktop.DBus.Property.EmitsChangedSignal":
                emits = a.get("value", "true")
        out.append((p.get("name", ""), p.get("type", ""), emits))
    return out


def methods(iface: ET.Element) -> list[tuple[str, str, str]]:
    """(name, in signature, out signature) in introspection order."""
    out = []
    for m in iface.findall("method"):
        ins = "".join(a.get("type", "") for a in m.findall("arg") if a.get("direction") == "in")
        outs = "".join(a.get("type", "") for a in m.findall("arg") if a.get("direction") == "out")
        out.append((m.get("name", ""), ins, outs))
    return out


def signals(iface: ET.Element) -> list[tuple[str, str]]:
    return [
        (s.get("name", ""), "".join(a.get("type", "") for a in s.findall("arg")))
        for s in iface.findall("signal")
    ]


# -- the values of one GetAll reply in dbus-monitor's text ----------------------------------

_SCALAR = re.compile(
    r"^(string|object path|uint64|int64|uint32|int32|uint16|int16|byte|"
    r"boolean|double) (.*)$"
)


def _parse_value(lines: list[str], i: int) -> tuple[Any, int]:
    line = lines[i].strip()
    if line.startswith("variant"):
        rest = line[len("variant") :].strip()
        lines[i] = rest
        return _parse_value(lines, i)
    if line.startswith("array of bytes ["):
        vals: list[int] = []
        i += 1
        while lines[i].strip() != "]":
            vals += [int(x, 16) for x in lines[i].split()]
            i += 1
        return bytes(vals), i + 1
    if line.startswith('array of bytes "'):
        return line[len('array of bytes "') : -1].encode(), i + 1
    if line.startswith("array ["):
        items: list[Any] = []
        i += 1
        while lines[i].strip() != "]":
            v, i = _parse_value(lines, i)
            items.append(v)
        return items, i + 1
    if line.startswith("struct {"):
        fields: list[Any] = []
        i += 1
        while lines[i].strip() != "}":
            v, i = _parse_value(lines, i)
            fields.append(v)
        return tuple(fields), i + 1
    if line.startswith("dict entry("):
        k, i = _parse_value(lines, i + 1)
        v, i = _parse_value(lines, i)
        assert lines[i].strip() == ")"
        return (k, v), i + 1
    m = _SCALAR.match(line)
    if not m:
        raise ValueError(f"cannot parse {line!r}")
    kind, raw = m.groups()
    if kind in ("string", "object path"):
        return raw[1:-1], i + 1
    if kind == "boolean":
        return raw == "true", i + 1
    if kind == "double":
        return float(raw), i + 1
    return int(raw), i + 1


def getall_values(log_name: str = "real-systemctl-status.log") -> dict[str, Any]:
    """Name -> value of the first GetAll reply in a capture."""
    lines = (captures_dir() / log_name).read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "member=GetAll" in line)
    ret = next(i for i in range(start, len(lines)) if lines[i].startswith("method return"))
    value, _ = _parse_value(lines, ret + 1)
    return dict(value)


def _default(sig: str, value: Any) -> Any:
    if sig == "ay" and value == []:
        return b""
    if sig.startswith("a") and sig != "ay" and value == []:
        return []
    if sig.startswith("(") and isinstance(value, tuple):
        return list(value)
    return value


RUN_SPECIFIC = {
    "ControlGroup",
    "ControlGroupId",
    "MemoryCurrent",
    "CPUUsageNSec",
    "TasksCurrent",
    "InvocationID",
    "Id",
    "Names",
    "Description",
    "Slice",
    "LoadState",
    "ActiveState",
    "SubState",
    "FreezerState",
    "Job",
    "Transient",
    "Perpetual",
    "Refs",
    "Controller",
    "Result",
    "CanStart",
    "CanStop",
    "CanFreeze",
}
# values of the captured scope that came from its own settings or the lab's configuration,
# replaced by systemd's documented defaults
OVERRIDES: dict[str, Any] = {
    "FragmentPath": "",  # we write no unit file
    "MemoryMax": 2**64 - 1,  # the capture set MemoryMax=100M
    "TimeoutStopUSec": 90_000_000,  # systemd-system.conf(5) DefaultTimeoutStopSec=90s
    "TasksMax": 2**64 - 1,  # DefaultTasksMax= is computed from the kernel's pid limit
}


def generate() -> str:
    ifaces = interfaces()
    values = getall_values()
    lines = [
        '"""Readable properties of systemd 252, per interface: name, signature, EmitsChanged,',
        "and the value a fresh transient scope reports when nothing else is known.",
        "",
        "Generated by `python -m tests.systemd252` from the Introspect XML and a GetAll reply",
        "that the real systemd 252 put on the bus (fixtures/dbus-logs/real-systemd-252);",
        "tests/compat/test_readable.py checks it still matches. Do not edit by hand.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "ReadableTable = tuple[tuple[str, str, str], ...]",
        "",
    ]
    for short in ("Manager", "Unit", "Scope", "Slice", "Service", "Target"):
        iface = ifaces[f"org.freedesktop.systemd1.{short}"]
        lines.append(f"{short.upper()}: ReadableTable = (")
        for name, sig, emits in properties(iface):
            lines.append(f"    ({name!r}, {sig!r}, {emits!r}),")
        lines.append(")")
        lines.append("")
    lines.append("# values of a transient scope on systemd 252 (run-specific ones left out)")
    lines.append("DEFAULTS: dict[str, object] = {")
    sigs = {}
    for short in ("Unit", "Scope", "Slice"):
        for name, sig, _ in properties(ifaces[f"org.freedesktop.systemd1.{short}"]):
            sigs[name] = sig
    for name, sig in sigs.items():
        if name in values and name not in RUN_SPECIFIC:
            value = OVERRIDES.get(name, _default(sig, values[name]))
            if name.endswith(("Timestamp", "TimestampMonotonic")):
                value = 0
            if sig == "as" and isinstance(value, list):
                value = []  # dependency and path lists come from the unit itself
            lines.append(f"    {name!r}: {value!r},")
    lines.append("}")
    lines.append("")
    lines.append("MANAGER_METHODS: tuple[tuple[str, str, str], ...] = (")
    for m in methods(ifaces["org.freedesktop.systemd1.Manager"]):
        lines.append(f"    {m!r},")
    lines.append(")")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(generate())
