"""Malformed or truncated captures a user may bring: each gives `FILE:LINE: what` and exit
status 2 on the command line, never a traceback."""

from __future__ import annotations

import gzip
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from shim.replay.compare import Live, compare
from shim.replay.plan import build
from shim.replay.report import conversation
from shim.replay.rules import MetaError
from shim.replay.trace import TraceError, loads

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / "fixtures" / "dbus-logs"
STOP = LOGS / "real-systemd-252" / "real-systemctl-stop.log"
PCAP = LOGS / "real-systemd-252-lab" / "logind-session.pcap"
OLD = LOGS / "synthetic" / "fedora20-logind-2013.log"


def _cut_inside_start_unit() -> bytes:
    """The 2013 sample cut after StartUnit's first value (its mode is lost)."""
    lines = OLD.read_text().splitlines(keepends=True)
    at = next(n for n, t in enumerate(lines) if t.startswith('   string "user@1000.service"'))
    return "".join(lines[: at + 1]).encode()


def _pcap_record_length(data: bytes, length: int) -> bytes:
    out = bytearray(data)
    out[24 + 8 : 24 + 12] = struct.pack("<I", length)
    return bytes(out)


def _pcap_garbage_record(data: bytes) -> bytes:
    (incl,) = struct.unpack("<I", data[24 + 8 : 24 + 12])
    out = bytearray(data)
    out[40 : 40 + incl] = b"\xff" * incl
    return bytes(out)


def _quoted(old: str, new: str) -> bytes:
    text = OLD.read_text()
    assert old in text
    return text.replace(old, new, 1).encode()


CASES = {
    # name: (file name, content, line, fragment of the message)
    "text cut in a header": (
        "cut.log",
        STOP.read_bytes()[: STOP.read_bytes().index(b"member=StopUnit") + 10],
        None,
        "cut off",
    ),
    "text cut inside a message's values": (
        "cut.log",
        _cut_inside_start_unit(),
        None,
        "the capture ends inside this message",
    ),
    "text cut inside an array": (
        "cut.log",
        STOP.read_bytes()[:-1] + b"\n   array [\n",
        None,
        "cuts off",
    ),
    "binary garbage": (
        "junk.log",
        bytes(random.Random(7).randrange(256) for _ in range(3000)),
        1,
        "binary data",
    ),
    "a gzipped log": ("gz.log", gzip.compress(STOP.read_bytes()), 1, "binary data"),
    "an empty file": ("empty.log", b"", 0, "empty capture"),
    "pcap record longer than the file": (
        "big.pcap",
        _pcap_record_length(PCAP.read_bytes(), 0x7FFFFFFF),
        1,
        "record 1",
    ),
    "pcap record shorter than its message": (
        "short.pcap",
        _pcap_record_length(PCAP.read_bytes(), 100),
        1,
        "record 1",
    ),
    "pcap record of garbage": (
        "garbage.pcap",
        _pcap_garbage_record(PCAP.read_bytes()),
        1,
        "record 1",
    ),
    "pcap cut in a record header": ("hdr.pcap", PCAP.read_bytes()[:30], 1, "record header cut off"),
    "2013 log with single quotes": (
        "quote.log",
        _quoted('string "user@1000.service"', "string 'user@1000.service'"),
        None,
        "not a dbus-monitor value",
    ),
    "2013 log with a string missing its closing quote": (
        "quote.log",
        _quoted('string "user@1000.service"', 'string "user@1000.service'),
        None,
        "swallowed the lines after it",
    ),
}


def _line_of(name: str, data: bytes) -> int:
    """The line the error must name where it is not fixed: the header of the damaged message
    (text captures), found from the content."""
    text = data.decode("utf-8", "surrogateescape").splitlines()
    if "header" in name:
        return len(text)
    if "quote" in name:
        if "single" in name:
            return next(n for n, t in enumerate(text, 1) if "'user@1000.service'" in t)
        return next(n for n, t in enumerate(text, 1) if "member=StartUnit" in t)
    if "array" in name:
        return len(text) - 1 + 1
    return next(n for n, t in reversed(list(enumerate(text, 1))) if not t.startswith(" "))


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_capture_is_one_line_with_file_and_line(case: str, tmp_path: Path) -> None:
    name, data, line, fragment = CASES[case]
    path = tmp_path / name
    path.write_bytes(data)
    expected_line = line if line is not None else _line_of(case, data)
    with pytest.raises(TraceError) as e:
        build(str(path))
    assert fragment in e.value.message, str(e.value)
    assert e.value.line == expected_line, str(e.value)
    proc = subprocess.run(
        [sys.executable, "-m", "shim", "replay", str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert f"{path}:{expected_line}: " in out, out
    assert "Traceback" not in out


def test_odd_but_valid_2013_quoting_parses() -> None:
    """dbus-monitor does not escape quotes or newlines: a string with a quote inside, ending in
    a backslash or spanning lines is what it printed, not damage."""
    for old, new, want in [
        ('string "gdm-password"', 'string "gdm-"password"', 'gdm-"password'),
        ('string "x11"', 'string "x11\\"', "x11\\"),
        ('string "seat0"', 'string "sea\nt0""', 'sea\nt0"'),
    ]:
        trace = loads(_quoted(old, new), "odd.log")
        values = [v for m in trace.messages for v in m.body if isinstance(v, str)]
        assert want in values


def test_damaged_bytes_and_cuts_never_raise_anything_else(tmp_path: Path) -> None:
    """Every fixture, cut at 6 places and with 6 runs of damaged bytes (a fixed seed):
    building the plan, printing it and comparing it raise TraceError or nothing."""
    rnd = random.Random(21)
    files = sorted(LOGS.glob("*/*.log")) + sorted(LOGS.glob("*/*.pcap"))
    tried = 0
    for f in files:
        data = f.read_bytes()
        variants = [data[: rnd.randrange(len(data))] for _ in range(6)]
        for _ in range(6):
            d = bytearray(data)
            for _ in range(rnd.randrange(1, 16)):
                d[rnd.randrange(len(d))] = rnd.randrange(256)
            variants.append(bytes(d))
        for v in variants:
            p = tmp_path / f"x{f.suffix}"
            p.write_bytes(v)
            try:
                plan = build(str(p))
                conversation(plan)
                compare(plan, Live())
            except (TraceError, MetaError) as e:
                assert str(e).startswith(f"{p}:"), str(e)
            tried += 1
    assert tried == len(files) * 12


def test_show_into_a_pipe_closed_early_is_no_traceback() -> None:
    """`scopeshim replay --show X | head -1`: the reader leaves, the command ends quietly."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "shim", "replay", "--show", str(LOGS / "real-systemd-252-lab")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b"=== ")
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(60) == 0, err
    assert "Traceback" not in err
