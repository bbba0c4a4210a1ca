"""systemd.time(7) time spans: "1h 30min", "5s", "2.5ms" <-> microseconds (pure functions)."""

from __future__ import annotations

import re

USEC_INFINITY = 2**64 - 1
_S = 10**6
# systemd.time(7): the time units, each with its spellings; a month is 30.44 days and a
# year 365.25 days; "M" is a month, "m" a minute
_UNITS: dict[str, int] = {
    "usec": 1, "us": 1, "µs": 1, "μs": 1,
    "msec": 1000, "ms": 1000,
    "seconds": _S, "second": _S, "sec": _S, "s": _S,
    "minutes": 60 * _S, "minute": 60 * _S, "min": 60 * _S, "m": 60 * _S,
    "hours": 3600 * _S, "hour": 3600 * _S, "hr": 3600 * _S, "h": 3600 * _S,
    "days": 86400 * _S, "day": 86400 * _S, "d": 86400 * _S,
    "weeks": 604800 * _S, "week": 604800 * _S, "w": 604800 * _S,
    "months": 2629800 * _S, "month": 2629800 * _S, "M": 2629800 * _S,
    "years": 31557600 * _S, "year": 31557600 * _S, "y": 31557600 * _S,
}  # fmt: skip
# longest spelling first, so that "min" is not read as "m" followed by "in"
_UNIT_RE = "|".join(sorted(map(re.escape, _UNITS), key=len, reverse=True))
_PART = re.compile(rf"\s*(\d+(?:\.\d*)?|\.\d+)\s*({_UNIT_RE})?")
# what format_timespan prints, largest first (systemd.time(7) spellings)
_FORMAT = (("y", 31557600 * _S), ("month", 2629800 * _S), ("w", 604800 * _S),
           ("d", 86400 * _S), ("h", 3600 * _S), ("min", 60 * _S), ("s", _S),
           ("ms", 1000), ("us", 1))  # fmt: skip


def parse_timespan(text: str, default_unit: int = _S) -> int:
    """Microseconds of a time span; a number without a unit is in DEFAULT_UNIT (seconds for
    the *Sec= settings); "infinity" is USEC_INFINITY. Raises ValueError."""
    stripped = text.strip()
    if stripped == "infinity":
        return USEC_INFINITY
    if not stripped:
        raise ValueError(f"empty time span: {text!r}")
    total, pos, end = 0, 0, len(stripped)
    while pos < end:
        m = _PART.match(stripped, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"invalid time span: {text!r}")
        number, unit = m.group(1), m.group(2)
        factor = _UNITS[unit] if unit else default_unit
        # systemd.time(7): "the time span is the sum of its components"
        whole, _, frac = number.partition(".")
        value = int(whole or "0") * factor
        if frac:
            value += int(frac) * factor // 10 ** len(frac)
        total += value
        pos = m.end()
        # a unit must end at a space or the next number ("5sx" is not a span)
        if pos < end and not (stripped[pos].isspace() or stripped[pos].isdigit()
                              or stripped[pos] == "."):  # fmt: skip
            raise ValueError(f"invalid time span: {text!r}")
    if total >= USEC_INFINITY:
        raise ValueError(f"time span out of range: {text!r}")
    return total


def format_timespan(usec: int) -> str:
    """The span as systemd prints it to the microsecond ("1h 30min", "0", "infinity")."""
    if usec == USEC_INFINITY:
        return "infinity"
    if usec == 0:
        return "0"
    parts: list[str] = []
    left = usec
    for name, size in _FORMAT:
        if left >= size:
            parts.append(f"{left // size}{name}")
            left %= size
    return " ".join(parts)
