"""The dbus-monitor text parsers (1.14 and 2013 formats), type recovery, malformed logs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shim.replay.textlog import parse
from shim.replay.trace import CALL, ERROR, RETURN, SIGNAL, TraceError, loads
from shim.replay.values import Fd, Var

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / "fixtures" / "dbus-logs"

# dbus 1.14's format, with what makes it lossy: a multi-line string with quotes inside, empty
# arrays (no element type), byte arrays, a file descriptor
SAMPLE = (Path(__file__).with_name("data") / "sample-1.14.log").read_text()


def test_1_14_format_headers_and_values():
    trace = loads(SAMPLE.encode(), "sample.log")
    kinds = [m.kind for m in trace.messages]
    assert kinds == [CALL, RETURN, SIGNAL, ERROR, RETURN]
    call, ret, sig, err, last = trace.messages
    assert (call.sender, call.destination, call.serial) == (":1.94", "org.freedesktop.systemd1", 3)
    assert call.member == "StartTransientUnit" and call.line == 1
    assert abs((call.time or 0) - 1795391720.363979) < 1e-6
    assert ret.reply_serial == 3 and ret.body == ["/org/freedesktop/systemd1/job/79"]
    assert sig.destination is None
    assert err.error_name == "org.freedesktop.systemd1.NoSuchUnit" and err.serial is None
    assert err.body == ["Unit lab2.scope not loaded."]
    assert last.body[1] == Fd(None, "inode: 58; type: fifo")
    assert last.body[2] == 0.5 and last.body[3] == b"abc\0"


def test_multi_line_string_with_quotes():
    call = loads(SAMPLE.encode(), "sample.log").messages[0]
    desc = call.body[2][0]
    assert desc == ["Description", Var("s", 'say "hi"\nand "bye"')]


def test_empty_arrays_get_their_types_from_the_compat_tables():
    trace = loads(SAMPLE.encode(), "sample.log")
    call, _, sig, _, _ = trace.messages
    # StartTransientUnit: ssa(sv)a(sa(sv)); Wants is "as" (compat/properties.py)
    assert call.signature == "ssa(sv)a(sa(sv))"
    assert call.body[2][1] == ["Wants", Var("as", [])]
    assert call.body[3] == []
    # PropertiesChanged of .Unit: After is "as" (compat/readable.py), InvocationID "ay"
    assert sig.signature == "sa{sv}as"
    assert sig.body[1]["After"] == Var("as", [])
    assert sig.body[1]["InvocationID"].sig == "ay"
    assert sig.body[1]["Job"] == Var("(uo)", [0, "/"])
    assert trace.issues == []


def test_what_cannot_be_recovered_is_reported_with_file_and_line():
    text = (
        "method call time=1.0 sender=:1.5 -> destination=org.example.Thing serial=2 path=/; "
        "interface=org.example.Thing; member=Frob\n   array [\n   ]\n"
    )
    trace = loads(text.encode(), "unknown.log")
    assert [str(i) for i in trace.issues] == [
        "unknown.log:2: call org.example.Thing.Frob on /: the element type of an empty array "
        "is not known"
    ]
    assert trace.messages[0].signature == "a?"
    assert not trace.messages[0].recovered


def test_2013_format_synthetic_sample():
    """dbus 1.6/1.8 (2013): no time=, dest=, method returns without serial=, `unix fd N`."""
    path = LOGS / "synthetic" / "fedora20-logind-2013.log"
    from shim.replay.trace import load

    trace = load(path)
    assert trace.format == "text" and len(trace.messages) == 24
    first_call = next(m for m in trace.messages if m.member == "StartTransientUnit")
    assert first_call.time is None and first_call.serial == 15 and first_call.sender == ":1.3"
    assert first_call.destination == "org.freedesktop.systemd1"
    assert first_call.signature == "ssa(sv)a(sa(sv))"
    props = dict(first_call.body[2])
    assert props["After"] == Var("as", ["systemd-logind.service", "systemd-user-sessions.service"])
    ret = trace.messages[trace.messages.index(first_call) + 1]
    assert ret.kind == RETURN and ret.serial is None and ret.reply_serial == 15
    created = next(m for m in trace.messages if m.kind == RETURN and m.reply_serial == 2)
    assert created.body[3] == Fd(21)
    # logind 208's CreateSession has one argument less than 252's (no desktop): the table
    # does not fit, the empty property array stays unknown, and it is said where
    assert [i.line for i in trace.issues] == [23]
    assert "CreateSession" in trace.issues[0].message


MALFORMED = [
    ('   string "x"\n', 1, "a value before any message header"),
    ("hello world\n", 1, "not a dbus-monitor message header or value"),
    (
        "method call time=1.0 sender=:1.5 -> destination=x serial=2 path=/; interface=i; member=M\n"
        '   array [\n      string "a"\n',
        2,
        "cuts off",
    ),
    (
        "method call time=1.0 sender=:1.5 -> destination=x serial=2 path=/; interface=i; member=M\n"
        '   string "never ends\n   more\n',
        2,
        "never ends",
    ),
    (
        "method call time=1.0 sender=:1.5 -> destination=x serial=2 path=/; interface=i; member=M\n"
        "   uint32 12x\n",
        2,
        "not a number",
    ),
    (
        "method call time=1.0 sender=:1.5 -> destination=x serial=2 path=/; interface=i; member=M\n"
        '   string "a"\n'
        "   array [\n   }\n",
        4,
        "closes a array opened at line 3",
    ),
    (
        "method return time=1.0 sender=:1.5 -> destination=:1.6 serial=2\n",
        1,
        "without reply_serial",
    ),
    (
        "method call time=1.0 sender=:1.5 -> destination=x serial=2 path=/; interface=i; member=M\n"
        '   dict entry(\n      string "k"\n   )\n',
        4,
        "without its key or value",
    ),
    ("sig\t1.0\t2\t:1.0\t/\ti\tM\n", 1, "--profile"),
]


@pytest.mark.parametrize(("text", "line", "fragment"), MALFORMED)
def test_malformed_logs_name_the_line(text, line, fragment):
    with pytest.raises(TraceError) as e:
        parse(text, "bad.log")
    assert e.value.line == line
    assert fragment in e.value.message
    assert str(e.value).startswith(f"bad.log:{line}: ")


@pytest.mark.parametrize(("text", "line", "fragment"), MALFORMED[:3])
def test_malformed_log_on_the_command_line_is_one_clear_line(tmp_path, text, line, fragment):
    log = tmp_path / "bad.log"
    log.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "shim", "replay", str(log)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{log}:{line}: " in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_pidfd_whose_type_dbus_monitor_cannot_name() -> None:
    """dbus-monitor 1.14 prints `type: ` and no newline for a pidfd (an anonymous inode), so
    the container's closer follows on that line (logind 262's PIDFDs, as captured)."""
    text = (
        "method call time=1.0 sender=:1.5 -> destination=org.freedesktop.systemd1 serial=2"
        " path=/org/freedesktop/systemd1; interface=org.freedesktop.systemd1.Manager;"
        " member=StartTransientUnit\n"
        '   string "a.scope"\n   string "fail"\n   array [\n      struct {\n'
        '         string "PIDFDs"\n         variant             array [\n'
        "               file descriptor\n                     inode: 77615\n"
        "                     type:             ]\n      }\n   ]\n   array [\n   ]\n"
    )
    [msg] = loads(text.encode(), "fd.log").messages
    assert msg.signature == "ssa(sv)a(sa(sv))" and msg.recovered
    [[name, value]] = msg.body[2]
    assert name == "PIDFDs" and value.sig == "ah"
    [fd] = value.value
    assert isinstance(fd, Fd) and fd.info == "inode: 77615; type:"
