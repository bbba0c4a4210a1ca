"""systemd.time(7) calendar events and time spans (compat/calendar.py, compat/timespan.py),
checked against fixed cases and against Debian's `systemd-analyze` 252 when installed."""

from __future__ import annotations

import calendar
import datetime as dt
import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from compat.calendar import parse_calendar
from compat.timespan import USEC_INFINITY, format_timespan, parse_timespan

S = 10**6
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def utc(text: str) -> int:
    """'2026-12-08 02:28:50' (UTC) in microseconds."""
    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S")) * S


# each spec as `systemd-analyze calendar` 252 normalized it (observed)
NORMALIZED = {
    "Sat,Sun": "Sat,Sun *-*-* 00:00:00",
    "Mon,Tue,Wed": "Mon..Wed *-*-* 00:00:00",
    "Sun,Mon": "Mon,Sun *-*-* 00:00:00",
    "Mon..Sun": "*-*-* 00:00:00",
    "Wed..Wed 12:00": "Wed *-*-* 12:00:00",
    "*-*-5,1,3 1..3,2:00": "*-*-01,03,05 01..03,02:00:00",
    "*:*:1.25/2.5": "*-*-* *:*:01.250000/2.500000",
    "9:0:0.1234567": "*-*-* 09:00:00.123457",
    "Mon *-05~07/1": "Mon *-05~07/1 00:00:00",
    "weekly": "Mon *-*-* 00:00:00",
    "quarterly": "*-01,04,07,10-01 00:00:00",
    "hourly UTC": "*-*-* *:00:00 UTC",
    "*:0/15": "*-*-* *:00/15:00",
    "05-*-01": "2005-*-01 00:00:00",
    "70-1-1": "1970-01-01 00:00:00",
    "4/5-*-*": "2004/5-*-* 00:00:00",
    "@1700000000": "2023-11-14 22:13:20 UTC",
    "*-*-* 9:00 Europe/Berlin": "*-*-* 09:00:00 Europe/Berlin",
    "Monday..Wednesday": "Mon..Wed *-*-* 00:00:00",
    "*-*-* *:*:*": "*-*-* *:*:*",
}
# what systemd-analyze 252 refuses (observed)
REFUSED = ["Fri..Mon", "1,2", "tomorrow", "  daily ", " Mon", "foo", "*-*-* 24:00",
           "*-*-* 23:60", "*:*/10", "*:0:*/20", "*-*-~1", "2300-01-01",
           "*-*-* 00:00:00 Foo/Bar", "*:0/0", "*-13-01", "*-*-32"]  # fmt: skip


@pytest.mark.parametrize("spec", sorted(NORMALIZED))
def test_normalized_form(spec: str) -> None:
    assert parse_calendar(spec).normalized() == NORMALIZED[spec]


@pytest.mark.parametrize("spec", REFUSED)
def test_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_calendar(spec)


BASE = "2026-12-08 02:28:50"  # a Tuesday


@pytest.mark.parametrize(
    "spec, after, want",
    [
        ("*:0/15 UTC", BASE, "2026-12-08 02:30:00"),
        ("*:0/15 UTC", "2026-12-08 02:30:00", "2026-12-08 02:45:00"),  # strictly after
        ("Mon..Fri 9..17:00/30 UTC", BASE, "2026-12-08 09:00:00"),
        ("Mon..Fri 9..17:00/30 UTC", "2026-12-08 17:30:00", "2026-12-09 09:00:00"),
        ("daily UTC", BASE, "2026-12-09 00:00:00"),
        ("weekly UTC", BASE, "2026-12-14 00:00:00"),
        ("*-02~03 UTC", BASE, "2027-02-26 00:00:00"),
        ("*-02~03 UTC", "2027-02-26 00:00:00", "2028-02-27 00:00:00"),  # leap year
        ("Mon *-05~07/1 UTC", BASE, "2027-05-31 00:00:00"),  # the last Monday of May
        ("*-*-31 UTC", "2026-12-31 00:00:00", "2027-01-31 00:00:00"),
        ("*-2/5-* UTC", BASE, "2026-12-09 00:00:00"),
        ("4/5-*-* UTC", BASE, "2029-01-01 00:00:00"),
        ("Fri *-*-13 UTC", BASE, "2027-08-13 00:00:00"),
        ("*-*-* 9:00 Europe/Berlin", BASE, "2026-12-08 08:00:00"),  # CET is UTC+1
        ("*-07-01 9:00 Europe/Berlin", BASE, "2027-07-01 07:00:00"),  # CEST is UTC+2
    ],
)
def test_next_elapse(spec: str, after: str, want: str) -> None:
    assert parse_calendar(spec).next_after(utc(after)) == utc(want)


def test_never() -> None:
    for spec in ("2025-1-1", "*-02-30", "2024-*-* 12:00"):
        assert parse_calendar(spec).next_after(utc(BASE)) is None


def test_fractional_seconds_and_repetition() -> None:
    spec = parse_calendar("*:*:1.25/2.5 UTC")
    first = spec.next_after(utc(BASE))
    assert first == utc(BASE) + 1_250_000
    assert spec.next_after(first) == first + 2_500_000


# -- against systemd-analyze 252 --------------------------------------------------------

ORACLE_SPECS = [
    *NORMALIZED, "Mon,Wed..Fri", "Mon,Tue", "*-*-* 8..18/2:00", "*:*:0.5", "2024-02-29",
    "*-*-31", "Mon..Fri 9..17:00/30", "*-*-1..5/2,3", "*:2/3", "1/2:00", "minutely", "monthly",
    "yearly", "semiannually", "annually", "*-*~01..03", "Sun 23:59:59 Asia/Tokyo",
    "*-*-* 02:30 Europe/Berlin", "Tue..Thu,Sat 6:30", "*-12-25 12:00", "*-*-1/10 0/6:0",
    "*:0/7:0/13", "*-*-* *:*:59.999", "2030..2035-02-29", "Sat,Mon..Wed,Sat 1:2:3",
]  # fmt: skip


def _analyze(spec: str, tz: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    env = {**os.environ, "TZ": tz, "LC_ALL": "C"}
    return subprocess.run([ANALYZE, "calendar", "--iterations=5", spec], capture_output=True,
                          text=True, env=env, timeout=30)  # fmt: skip


@pytest.fixture
def local_tz(request: pytest.FixtureRequest) -> Iterator[str]:
    """The process's local time zone set to the parameter, restored afterwards."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = request.param
    time.tzset()
    yield str(request.param)
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()


@needs_analyze
@pytest.mark.parametrize("local_tz", ["UTC", "America/New_York"], indirect=True)
def test_against_systemd_analyze(local_tz: str) -> None:
    """Normalized form and five elapses of each spec equal what systemd-analyze prints
    (its first elapse is from "now": ours from just before or just after its run)."""
    for spec in ORACLE_SPECS + REFUSED:
        before = time.time_ns() // 1000
        done = _analyze(spec, local_tz)
        after = time.time_ns() // 1000
        if spec in REFUSED:
            # "Invalid argument" ("Numerical result out of range" for a repetition of 0)
            assert done.returncode != 0, spec
            assert "Failed to parse calendar specification" in done.stderr, spec
            continue
        lines = dict(
            line.strip().split(": ", 1) for line in done.stdout.splitlines() if ": " in line
        )
        parsed = parse_calendar(spec)
        assert parsed.normalized() == lines["Normalized form"], spec
        shown = [v for k, v in lines.items() if k == "Next elapse" or k.startswith("Iter.")]

        def fmt(usec: int | None) -> str:
            if usec is None:
                return "never"
            return dt.datetime.fromtimestamp(usec // S).astimezone().strftime(
                "%a %Y-%m-%d %H:%M:%S %Z"
            )

        firsts = {fmt(parsed.next_after(before)), fmt(parsed.next_after(after))}
        assert shown[0] in firsts, (spec, shown, firsts)
        if shown[0] == "never":
            continue
        current = parsed.next_after(before)
        if fmt(current) != shown[0]:
            current = parsed.next_after(after)
        for want in shown[1:]:
            current = parsed.next_after(current)  # type: ignore[arg-type]
            assert fmt(current) == want, (spec, shown)


# -- time spans ---------------------------------------------------------------------------

SPANS = {
    "1h 30min": 5400 * S,
    "5s": 5 * S,
    "5": 5 * S,
    "2h30min": 9000 * S,
    "1.5h": 5400 * S,
    "100ms": 100_000,
    "3us": 3,
    "1 min 2 s": 62 * S,
    "1M": 2629800 * S,
    "1y": 31557600 * S,
    "1w 2d": 9 * 86400 * S,
    "infinity": USEC_INFINITY,
}


@pytest.mark.parametrize("text", sorted(SPANS))
def test_timespan(text: str) -> None:
    assert parse_timespan(text) == SPANS[text]


@pytest.mark.parametrize("text", ["", "5x", "-5s", "s", "1h foo", "5 5x"])
def test_timespan_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timespan(text)


def test_format_timespan() -> None:
    assert format_timespan(5400 * S) == "1h 30min"
    assert format_timespan(0) == "0"
    assert format_timespan(USEC_INFINITY) == "infinity"
    assert format_timespan(1_500_000) == "1s 500ms"


@needs_analyze
def test_timespans_against_systemd_analyze() -> None:
    assert ANALYZE is not None
    for text, usec in SPANS.items():
        done = subprocess.run([ANALYZE, "timespan", text], capture_output=True, text=True,
                              timeout=30)  # fmt: skip
        got = [line.split(":", 1)[1].strip() for line in done.stdout.splitlines()
               if line.strip().startswith("μs:")]  # fmt: skip
        want = "infinity" if usec == USEC_INFINITY else str(usec)
        assert got == [want] or (usec == USEC_INFINITY and done.returncode == 0), (text, done)
