"""systemd.time(7) calendar events (OnCalendar=): parsed, normalized as `systemd-analyze
calendar` prints them, and their next elapse after a given time (pure functions)."""

from __future__ import annotations

import calendar as _cal
import datetime as _dt
import functools
import re
import zoneinfo
from dataclasses import dataclass

_S = 10**6
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# systemd.time(7): the shorthands and what they stand for
SHORTHANDS = {
    "minutely": "*-*-* *:*:00",
    "hourly": "*-*-* *:00:00",
    "daily": "*-*-* 00:00:00",
    "monthly": "*-*-01 00:00:00",
    "weekly": "Mon *-*-* 00:00:00",
    "yearly": "*-01-01 00:00:00",
    "annually": "*-01-01 00:00:00",
    "quarterly": "*-01,04,07,10-01 00:00:00",
    "semiannually": "*-01,07-01 00:00:00",
}
YEAR_MIN, YEAR_MAX = 1970, 2199  # the years systemd 252 accepts (2300-01-01 is refused)
_NUMBER = re.compile(r"^\d+$")
_SECONDS = re.compile(r"^(\d+)(?:\.(\d+))?$")


@dataclass(frozen=True, slots=True)
class Entry:
    """One comma-separated item: a value, a range start..stop, each optionally /repeat
    (seconds in microseconds)."""

    start: int
    stop: int | None = None
    repeat: int = 0


Component = tuple[Entry, ...]  # () is "*"


@dataclass(frozen=True, slots=True)
class CalendarSpec:
    """A parsed calendar event."""

    weekdays: frozenset[int]  # 0 = Monday; empty: any day
    year: Component
    month: Component
    day: Component
    hour: Component
    minute: Component
    second: Component
    end_of_month: bool = False  # "~": days counted from the month's end
    utc: bool = False
    timezone: str = ""

    def normalized(self) -> str:
        """The normalized form (`systemd-analyze calendar`'s "Normalized form:")."""
        out = ""
        if self.weekdays:
            out = _format_weekdays(self.weekdays) + " "
        sep = "~" if self.end_of_month else "-"
        out += f"{_fmt(self.year, 4)}-{_fmt(self.month)}{sep}{_fmt(self.day)} "
        out += f"{_fmt(self.hour)}:{_fmt(self.minute)}:{_fmt(self.second, seconds=True)}"
        if self.utc:
            out += " UTC"
        elif self.timezone:
            out += " " + self.timezone
        return out

    def next_after(self, usec: int) -> int | None:
        """The first elapse strictly after USEC (CLOCK_REALTIME microseconds), None if
        there is none (systemd.time(7): "never")."""
        return _next(self, usec)


def _fmt_value(v: int, width: int, seconds: bool) -> str:
    if not seconds:
        return f"{v:0{width}d}"
    whole, frac = divmod(v, _S)
    return f"{whole:02d}.{frac:06d}" if frac else f"{whole:02d}"


def _fmt_repeat(r: int, seconds: bool) -> str:
    if not seconds:
        return str(r)
    whole, frac = divmod(r, _S)
    return f"{whole}.{frac:06d}" if frac else str(whole)


def _fmt(component: Component, width: int = 2, seconds: bool = False) -> str:
    if not component:
        return "*"
    parts = []
    for e in component:
        text = _fmt_value(e.start, width, seconds)
        if e.stop is not None:
            text += ".." + _fmt_value(e.stop, width, seconds)
        if e.repeat:
            text += "/" + _fmt_repeat(e.repeat, seconds)
        parts.append(text)
    return ",".join(parts)


def _format_weekdays(days: frozenset[int]) -> str:
    # runs of three or more days print as a range, shorter runs as a list (observed, 252)
    parts: list[str] = []
    d = 0
    while d < 7:
        if d not in days:
            d += 1
            continue
        end = d
        while end + 1 < 7 and end + 1 in days:
            end += 1
        if end - d >= 2:
            parts.append(f"{WEEKDAYS[d]}..{WEEKDAYS[end]}")
        else:
            parts.extend(WEEKDAYS[i] for i in range(d, end + 1))
        d = end + 1
    return ",".join(parts)


# -- parsing ------------------------------------------------------------------------------


def _weekday(name: str) -> int:
    low = name.lower()
    for i, (short, full) in enumerate(zip(WEEKDAYS, _FULL_DAYS, strict=True)):
        if low in (short.lower(), full):
            return i
    raise ValueError(f"unknown weekday {name!r}")


def _parse_weekdays(text: str) -> frozenset[int]:
    days: set[int] = set()
    for item in text.split(","):
        first, dots, last = item.partition("..")
        a = _weekday(first)
        b = _weekday(last) if dots else a
        if b < a:
            raise ValueError(f"weekday range goes backwards: {item!r}")  # "Fri..Mon"
        days.update(range(a, b + 1))
    # every day is no restriction: "Mon..Sun" normalizes to "*-*-*" (observed)
    return frozenset(days) if len(days) < 7 else frozenset()


def _number(text: str, seconds: bool) -> int:
    if seconds:
        m = _SECONDS.match(text)
        if m is None:
            raise ValueError(f"not a number: {text!r}")
        frac = (m.group(2) or "")[:7].ljust(7, "0")
        # six decimals kept, rounded (09:00:00.1234567 -> 00.123457, observed)
        return int(m.group(1)) * _S + (int(frac) + 5) // 10
    if not _NUMBER.match(text):
        raise ValueError(f"not a number: {text!r}")
    return int(text)


def _parse_component(text: str, lo: int, hi: int, *, seconds: bool = False,
                     year: bool = False) -> Component:  # fmt: skip
    if text == "*":
        return ()
    entries: set[Entry] = set()
    for item in text.split(","):
        value, slash, rep = item.partition("/")
        first, dots, last = value.partition("..")
        start = _number(first, seconds)
        stop = _number(last, seconds) if dots else None
        repeat = _number(rep, seconds) if slash else 0
        if year:
            # systemd.time(7): two-digit years are 1970..2069
            start = start + (2000 if start < 70 else 1900) if len(first) <= 2 else start
            if stop is not None and len(last) <= 2:
                stop += 2000 if stop < 70 else 1900
        if slash and repeat == 0:
            raise ValueError("a repetition of 0")
        for v in (start, stop):
            if v is not None and not lo <= v <= hi:
                raise ValueError(f"{v} out of range {lo}..{hi}")
        if stop is not None and stop < start:
            raise ValueError(f"range goes backwards: {item!r}")
        if stop == start and not repeat:
            stop = None  # "1..1" is "01" (observed)
        entries.add(Entry(start, stop, repeat))
    return tuple(sorted(entries, key=lambda e: (e.start, -1 if e.stop is None else e.stop,
                                                e.repeat)))  # fmt: skip


def _parse_date(text: str) -> tuple[Component, Component, Component, bool]:
    end_of_month = "~" in text
    if end_of_month:
        head, _, day = text.rpartition("~")
        parts = [*head.split("-"), day]
    else:
        parts = text.split("-")
    if len(parts) == 2:
        parts = ["*", *parts]
    if len(parts) != 3 or any(not p for p in parts):
        raise ValueError(f"invalid date: {text!r}")
    return (
        _parse_component(parts[0], YEAR_MIN, YEAR_MAX, year=True),
        _parse_component(parts[1], 1, 12),
        _parse_component(parts[2], 1, 31),
        end_of_month,
    )


def _parse_time(text: str) -> tuple[Component, Component, Component]:
    parts = text.split(":")
    if len(parts) == 2:
        parts.append("00")  # systemd.time(7): seconds default to 0
    if len(parts) != 3 or any(not p for p in parts):
        raise ValueError(f"invalid time: {text!r}")
    return (
        _parse_component(parts[0], 0, 23),
        _parse_component(parts[1], 0, 59),
        _parse_component(parts[2], 0, 60 * _S - 1, seconds=True),
    )


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _timezone(word: str) -> bool:
    if "/" not in word and word not in _zones():
        return False
    try:
        zoneinfo.ZoneInfo(word)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        return False
    return True


def parse_calendar(text: str) -> CalendarSpec:
    """Parse a calendar event as systemd.time(7) describes it; raises ValueError for what
    `systemd-analyze calendar` refuses with "Invalid argument"."""
    if text != text.strip() or not text:
        raise ValueError(f"invalid calendar event: {text!r}")  # " Mon" is refused (observed)
    if text.startswith("@"):
        # systemd.time(7): "@" and seconds since the epoch, in UTC
        seconds = _number(text[1:], False)
        t = _dt.datetime.fromtimestamp(seconds, _dt.UTC)
        return CalendarSpec(frozenset(), (Entry(t.year),), (Entry(t.month),), (Entry(t.day),),
                            (Entry(t.hour),), (Entry(t.minute),), (Entry(t.second * _S),),
                            utc=True)  # fmt: skip
    words = text.split()
    utc, tz = False, ""
    if len(words) > 1 and words[-1] == "UTC":
        utc, words = True, words[:-1]
    elif len(words) > 1 and not any(c in words[-1] for c in ":-*~,") and _timezone(words[-1]):
        tz, words = words[-1], words[:-1]
    if len(words) == 1 and words[0] in SHORTHANDS:
        words = SHORTHANDS[words[0]].split()
    weekdays: frozenset[int] = frozenset()
    named_days = bool(words) and words[0][:1].isalpha()
    if named_days:
        weekdays, words = _parse_weekdays(words[0]), words[1:]
    date: tuple[Component, Component, Component, bool] = ((), (), (), False)
    time_: tuple[Component, Component, Component] = ((Entry(0),), (Entry(0),), (Entry(0),))
    if len(words) > 2 or (not words and not named_days):
        raise ValueError(f"invalid calendar event: {text!r}")
    if len(words) == 2:
        date, time_ = _parse_date(words[0]), _parse_time(words[1])
    elif len(words) == 1 and ":" in words[0]:
        time_ = _parse_time(words[0])
    elif len(words) == 1:
        date = _parse_date(words[0])
    year, month, day, end_of_month = date
    return CalendarSpec(weekdays, year, month, day, *time_, end_of_month=end_of_month,
                        utc=utc, timezone=tz)  # fmt: skip


# -- the next elapse ----------------------------------------------------------------------


def _next_value(component: Component, value: int, hi: int, unit: int = 1) -> int | None:
    """The smallest value >= VALUE the component allows, at most HI ("*": every UNIT)."""
    if not component:
        component = (Entry(0, hi, unit),)
    best: int | None = None
    for e in component:
        step = e.repeat or (unit if e.stop is not None else 0)
        if value <= e.start:
            c = e.start
        elif step:
            c = e.start + -(-(value - e.start) // step) * step
        else:
            continue
        if (e.stop is not None and c > e.stop) or c > hi:
            continue
        if best is None or c < best:
            best = c
    return best


def _day_matches(spec: CalendarSpec, y: int, m: int, d: int, dim: int) -> bool:
    if spec.weekdays and _cal.weekday(y, m, d) not in spec.weekdays:
        return False
    if not spec.day:
        return True
    if not spec.end_of_month:
        return _next_value(spec.day, d, d) == d
    # "~": counted from the end (~01 is the last day); a repetition goes towards the end,
    # "Mon *-05~07/1" is the last Monday of May (systemd.time(7))
    back = dim + 1 - d
    for e in spec.day:
        if e.repeat and e.stop is not None:
            if e.start <= back <= e.stop and (back - e.start) % e.repeat == 0:
                return True
        elif e.repeat:
            if back <= e.start and (e.start - back) % e.repeat == 0:
                return True
        elif e.start <= back <= (e.start if e.stop is None else e.stop):
            return True
    return False


def _to_usec(spec: CalendarSpec, t: tuple[int, int, int, int, int, int]) -> int:
    y, mo, d, h, mi, us = t
    sec, micro = divmod(us, _S)
    if spec.utc:
        return _cal.timegm((y, mo, d, h, mi, sec)) * _S + micro
    tzinfo = zoneinfo.ZoneInfo(spec.timezone) if spec.timezone else None
    local = _dt.datetime(y, mo, d, h, mi, sec, micro, tzinfo=tzinfo)
    if tzinfo is None:
        local = local.astimezone()  # the local time zone (TZ, /etc/localtime)
    return int(local.timestamp()) * _S + micro


def _broken_down(spec: CalendarSpec, usec: int) -> tuple[int, int, int, int, int, int]:
    seconds, micro = divmod(usec, _S)
    if spec.utc:
        t = _dt.datetime.fromtimestamp(seconds, _dt.UTC)
    elif spec.timezone:
        t = _dt.datetime.fromtimestamp(seconds, zoneinfo.ZoneInfo(spec.timezone))
    else:
        t = _dt.datetime.fromtimestamp(seconds)
    return t.year, t.month, t.day, t.hour, t.minute, t.second * _S + micro


def _next(spec: CalendarSpec, after: int) -> int | None:
    y, mo, d, h, mi, us = _broken_down(spec, after + 1)
    while True:
        ny = _next_value(spec.year, y, YEAR_MAX)
        if ny is None:
            return None
        if ny != y:
            y, mo, d, h, mi, us = ny, 1, 1, 0, 0, 0
        nmo = _next_value(spec.month, mo, 12)
        if nmo is None:
            y, mo, d, h, mi, us = y + 1, 1, 1, 0, 0, 0
            continue
        if nmo != mo:
            mo, d, h, mi, us = nmo, 1, 0, 0, 0
        dim = _cal.monthrange(y, mo)[1]
        nd = next((x for x in range(d, dim + 1) if _day_matches(spec, y, mo, x, dim)), None)
        if nd is None:
            y, mo, d, h, mi, us = (y + 1, 1, 1, 0, 0, 0) if mo == 12 else (y, mo + 1, 1, 0, 0, 0)
            continue
        if nd != d:
            d, h, mi, us = nd, 0, 0, 0
        nh = _next_value(spec.hour, h, 23)
        nmi = None if nh is None else _next_value(spec.minute, mi if nh == h else 0, 59)
        if nh is None or nmi is None:
            if nh is not None and nh < 23:
                h, mi, us = nh + 1, 0, 0  # no minute left in this hour: the next hour
                continue
            y, mo, d = _day_after(y, mo, d)
            h, mi, us = 0, 0, 0
            continue
        if nh != h:
            mi, us = 0, 0
        h = nh
        if nmi != mi:
            us = 0
        mi = nmi
        nus = _next_value(spec.second, us, 60 * _S - 1, _S)
        if nus is None:
            mi, us = mi + 1, 0
            if mi == 60:
                h, mi = h + 1, 0
                if h == 24:
                    (y, mo, d), h = _day_after(y, mo, d), 0
            continue
        found = _to_usec(spec, (y, mo, d, h, mi, nus))
        if found > after:
            return found
        us = nus + 1  # a local time repeated by a clock change: look further


def _day_after(y: int, mo: int, d: int) -> tuple[int, int, int]:
    t = _dt.date(y, mo, d) + _dt.timedelta(days=1)
    return t.year, t.month, t.day
