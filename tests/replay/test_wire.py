"""`dbus-monitor --binary` and `--pcap` captures: the wire format read without dbus-fast (the
messages here are marshalled with dbus-fast, the reference)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from dbus_fast import Message, MessageType, Variant

from shim.replay.compare import _equal
from shim.replay.plan import build
from shim.replay.trace import CALL, RETURN, SIGNAL, TraceError, detect_format, loads
from shim.replay.values import Var

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "fixtures" / "dbus-logs" / "real-systemd-252-lab"


def messages() -> list[Message]:
    call = Message(
        destination="org.freedesktop.systemd1",
        path="/org/freedesktop/systemd1",
        interface="org.freedesktop.systemd1.Manager",
        member="StartTransientUnit",
        signature="ssa(sv)a(sa(sv))",
        body=[
            "a.scope",
            "fail",
            [["PIDs", Variant("au", [1, 2])], ["Description", Variant("s", "x")]],
            [],
        ],
        serial=7,
        sender=":1.5",
    )
    ret = Message(
        message_type=MessageType.METHOD_RETURN,
        reply_serial=7,
        destination=":1.5",
        signature="o",
        body=["/org/freedesktop/systemd1/job/3"],
        serial=9,
        sender=":1.0",
    )
    sig = Message(
        message_type=MessageType.SIGNAL,
        path="/org/freedesktop/systemd1/unit/a_2escope",
        interface="org.freedesktop.DBus.Properties",
        member="PropertiesChanged",
        signature="sa{sv}as",
        body=[
            "org.freedesktop.systemd1.Unit",
            {"InvocationID": Variant("ay", bytes(range(16))), "Job": Variant("(uo)", [0, "/"])},
            ["Conditions"],
        ],
        serial=10,
        sender=":1.0",
    )
    return [call, ret, sig]


def pcap(records: list[bytes]) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 1 << 27, 231)
    for n, r in enumerate(records):
        out += struct.pack("<IIII", 1795391720 + n, 500000, len(r), len(r)) + r
    return out


def check(trace):
    call, ret, sig = trace.messages
    assert (call.kind, ret.kind, sig.kind) == (CALL, RETURN, SIGNAL)
    # dbus-fast does not marshal a sender (the bus adds it): the real captures below have one
    assert call.serial == 7 and call.signature == "ssa(sv)a(sa(sv))"
    assert call.body[2] == [["PIDs", Var("au", [1, 2])], ["Description", Var("s", "x")]]
    assert call.body[3] == []
    assert ret.reply_serial == 7 and ret.body == ["/org/freedesktop/systemd1/job/3"]
    assert sig.body[1]["InvocationID"] == Var("ay", bytes(range(16)))
    assert sig.body[1]["Job"] == Var("(uo)", [0, "/"])
    assert trace.issues == []


def test_binary_stream():
    data = b"".join(m._marshall(False) for m in messages())
    assert detect_format(data[:16]) == "binary"
    trace = loads(data, "x.bin")
    assert trace.format == "binary"
    check(trace)
    assert [m.line for m in trace.messages] == [1, 2, 3]


def test_pcap_file():
    data = pcap([m._marshall(False) for m in messages()])
    trace = loads(data, "x.pcap")
    assert trace.format == "pcap"
    check(trace)
    assert trace.messages[1].time == pytest.approx(1795391721.5)


def test_cut_off_capture_names_the_record():
    records = [m._marshall(False) for m in messages()]
    data = pcap(records)[:-5]
    with pytest.raises(TraceError) as e:
        loads(data, "cut.pcap")
    assert e.value.line == 3 and "record 3" in str(e.value)
    with pytest.raises(TraceError) as e:
        loads(b"".join(records)[:-3], "cut.bin")
    assert e.value.line == 3 and "cuts the message off" in str(e.value)


def test_pcap_of_another_link_type_is_refused():
    data = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    with pytest.raises(TraceError, match="link type 1"):
        loads(data, "eth.pcap")


def test_text_and_pcap_of_one_run_give_the_same_conversation():
    """The lab records every run twice (text and --pcap): after type recovery and
    normalisation the text shows exactly what the wire carried."""
    text = build(str(LAB / "logind-session.log"))
    wire = build(str(LAB / "logind-session.pcap"))
    assert len(text.steps) == len(wire.steps) == 30
    assert [s.ncall for s in text.steps] == [s.ncall for s in wire.steps]
    for a, b in zip(text.steps, wire.steps, strict=True):
        assert a.nreply.kind == b.nreply.kind and _equal(a.nreply.body, b.nreply.body)
    assert len(text.signals) == len(wire.signals)
    for a, b in zip(text.signals, wire.signals, strict=True):
        assert a.nsignal.signature == b.nsignal.signature
        assert _equal(a.nsignal.body, b.nsignal.body)


def test_binary_stream_of_a_real_capture():
    """`dbus-monitor --binary` writes the records of `--pcap` back to back."""
    data = (LAB / "logind-session.pcap").read_bytes()
    records, pos = [], 24
    while pos < len(data):
        (length,) = struct.unpack_from("<I", data, pos + 8)
        records.append(data[pos + 16 : pos + 16 + length])
        pos += 16 + length
    from_pcap = loads(data, "x.pcap")
    from_binary = loads(b"".join(records), "x.bin")
    assert len(from_binary.messages) == len(from_pcap.messages) == len(records) > 500
    for a, b in zip(from_pcap.messages, from_binary.messages, strict=True):
        assert (a.kind, a.sender, a.destination, a.serial, a.member) == (
            b.kind, b.sender, b.destination, b.serial, b.member,
        )  # fmt: skip
        assert a.signature == b.signature and a.body == b.body
    assert any(m.sender == ":1.0" for m in from_binary.messages)
