"""Transient timers (systemd.timer(5)) as org.freedesktop.systemd1(5) takes and shows them:
the trigger settings' checks, the Timer interface's properties and the elapse rules."""

from __future__ import annotations

from compat import errors
from compat.calendar import parse_calendar

USEC_INFINITY = 2**64 - 1
# systemd.timer(5): the monotonic bases; on the bus a base is named with "Sec" when set
# (TimersMonotonic a(st), as systemd-run 252 sends it) and "USec" when read (a(stt))
MONOTONIC_BASES = ("OnActiveSec", "OnBootSec", "OnStartupSec", "OnUnitActiveSec",
                   "OnUnitInactiveSec")  # fmt: skip
CALENDAR_BASE = "OnCalendar"
# systemd.timer(5): AccuracySec= defaults to 1min
DEFAULT_ACCURACY_USEC = 60 * 10**6

# org.freedesktop.systemd1(5) Timer interface of systemd 252: name, signature, EmitsChanged
# (the names `systemctl show` printed for a transient timer in the lab)
TIMER: tuple[tuple[str, str, str], ...] = (
    ("Unit", "s", "const"),
    ("TimersMonotonic", "a(stt)", "invalidates"),
    ("TimersCalendar", "a(sst)", "invalidates"),
    ("OnClockChange", "b", "const"),
    ("OnTimezoneChange", "b", "const"),
    ("NextElapseUSecRealtime", "t", "true"),
    ("NextElapseUSecMonotonic", "t", "true"),
    ("LastTriggerUSec", "t", "true"),
    ("LastTriggerUSecMonotonic", "t", "true"),
    ("Result", "s", "true"),
    ("AccuracyUSec", "t", "const"),
    ("RandomizedDelayUSec", "t", "const"),
    ("FixedRandomDelay", "b", "const"),
    ("Persistent", "b", "const"),
    ("WakeSystem", "b", "const"),
    ("RemainAfterElapse", "b", "const"),
)
# what a transient timer reads when not set (systemd 252 in the lab; RemainAfterElapse=
# defaults to yes in systemd.timer(5), systemd-run sends no)
TIMER_DEFAULTS: dict[str, object] = {
    "AccuracyUSec": DEFAULT_ACCURACY_USEC,
    "RandomizedDelayUSec": 0,
    "RemainAfterElapse": True,
}


def check_monotonic(name: str, value: object) -> object:
    """TimersMonotonic a(st): each base one of systemd.timer(5)'s, as systemd 252 answers."""
    assert isinstance(value, list)
    out = []
    for base, usec in value:
        if base not in MONOTONIC_BASES:
            raise errors.InvalidArgs(f"Invalid timer base: {base}")  # observed, 252
        out.append((str(base), int(usec)))
    return out


def check_calendar(name: str, value: object) -> object:
    """TimersCalendar a(ss): base OnCalendar and a valid systemd.time(7) calendar event."""
    assert isinstance(value, list)
    out = []
    for base, text in value:
        if base != CALENDAR_BASE:
            raise errors.InvalidArgs(f"Invalid timer base: {base}")  # observed, 252
        out.append((CALENDAR_BASE, check_one_calendar(name, text)))
    return out


def check_one_calendar(name: str, text: object) -> str:
    try:
        parse_calendar(str(text))
    except ValueError:
        raise errors.InvalidArgs("Invalid calendar spec") from None  # observed, 252
    return str(text)


def as_list(name: str, value: object) -> object:
    """OnActiveSec=... t and OnCalendar=... s one at a time: appended like the lists."""
    if name == CALENDAR_BASE:
        return [(CALENDAR_BASE, check_one_calendar(name, value))]
    return [(name, int(str(value)))]


def read_name(base: str) -> str:
    """The base as TimersMonotonic reads it: OnActiveSec -> OnActiveUSec (observed)."""
    return base.removesuffix("Sec") + "USec"
