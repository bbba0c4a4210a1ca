"""Unit file syntax (systemd.syntax(7), systemd.unit(5)): sections, assignments, comments,
continuation lines and specifiers; text in, entries and problems out."""

from __future__ import annotations

import re
from dataclasses import dataclass

from compat import unitname


@dataclass(frozen=True, slots=True)
class Entry:
    """One `Key=value` assignment, with the section it is in and its (first) line number."""

    section: str
    key: str
    value: str
    line: int


@dataclass(frozen=True, slots=True)
class Problem:
    """A line that was ignored, and why (worded as systemd logs it)."""

    line: int
    message: str


def parse(text: str, sections: tuple[str, ...] = ()) -> tuple[list[Entry], list[Problem]]:
    """The assignments of a unit file in order; bad lines are reported and skipped. With
    SECTIONS, another section is reported once at its header and its lines skipped (as
    systemd 252 logs it: "FILE:LINE: Unknown section 'X'. Ignoring.")."""
    entries: list[Entry] = []
    problems: list[Problem] = []
    section: str | None = None
    pending: list[str] = []
    last = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if pending and line[:1] in ("#", ";"):
            continue  # systemd.syntax(7): comment lines inside a continuation are ignored
        if not pending and (not line or line[:1] in ("#", ";")):
            continue
        # systemd.syntax(7): a line ending in a backslash continues on the next one, the
        # backslash replaced by a space
        if line.endswith("\\"):
            pending.append(line[:-1] + " ")
            continue
        joined = "".join(pending) + line
        pending = []
        # systemd 252 names the last line of a continued assignment (observed)
        section = _line(joined, number, section, entries, problems)
        last = number
    if pending:
        _line("".join(pending).rstrip(), last + len(pending), section, entries, problems)
    if sections:
        known = [e for e in entries if e.section in sections or e.section.startswith("X-")]
        return known, _unknown_sections(text, sections) + problems
    return entries, problems


def _unknown_sections(text: str, sections: tuple[str, ...]) -> list[Problem]:
    out = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("[") and line.endswith("]") and len(line) > 2:
            name = line[1:-1]
            # systemd.unit(5): sections named X-... are for other programs and ignored silently
            if name not in sections and not name.startswith("X-"):
                out.append(Problem(number, f"Unknown section '{name}'. Ignoring."))
    return out


def _line(
    line: str, number: int, section: str | None, entries: list[Entry], problems: list[Problem]
) -> str | None:
    if line.startswith("["):
        if not line.endswith("]") or len(line) < 3:
            problems.append(Problem(number, f"Invalid section header '{line}'"))
            return None
        return line[1:-1]
    if section is None:
        problems.append(Problem(number, "Assignment outside of section. Ignoring."))
        return section
    key, sep, value = line.partition("=")
    if not sep:
        problems.append(Problem(number, "Missing '=', ignoring line."))
        return section
    entries.append(Entry(section, key.strip(), value.strip(), number))
    return section


def _unescape(s: str) -> str:
    # the unescaped specifiers undo "\\xNN" only; "-" stays (only %f is a path)
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), s)


def expand_specifiers(value: str, unit: str) -> str:
    """systemd.unit(5) "Specifiers" that depend on the unit name only (%n %N %p %P %i %I %j
    %J %f %%); others are left as written."""
    prefix, _, rest = unit.rpartition(".")[0].partition("@")
    instance = rest if "@" in unit else ""
    final = prefix.rsplit("-", 1)[-1] if "-" in prefix else prefix
    table = {
        "n": unit,
        "N": _unescape(unit.rpartition(".")[0]),
        "p": prefix,
        "P": _unescape(prefix),
        "i": instance,
        "I": _unescape(instance),
        "j": final,
        "J": _unescape(final),
        "f": "/" + unitname.unescape(instance or prefix).lstrip("/"),
        "%": "%",
    }
    out: list[str] = []
    i = 0
    while i < len(value):
        c = value[i]
        if c == "%" and i + 1 < len(value) and value[i + 1] in table:
            out.append(table[value[i + 1]])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)
