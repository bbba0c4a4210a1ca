"""The settable-property table: append vs last-wins, phases, and systemd's error texts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compat import errors
from compat.properties import (
    PROPERTIES,
    UINT64_MAX,
    merge_into,
    parse_assignments,
    scaled,
)
from compat.unitname import UnitType


def parse(items, unit_type=UnitType.SCOPE, transient=True):
    settings: dict[str, object] = {}
    merge_into(settings, parse_assignments(unit_type, items, transient=transient))
    return settings


def test_dependencies_append_and_scalars_last_wins():
    s = parse(
        [
            ("Wants", "as", ["a.service"]),
            ("Wants", "as", ["b.service"]),
            ("After", "as", ["x.service"]),
            ("After", "as", ["y.service"]),
            ("Description", "s", "one"),
            ("Description", "s", "two"),
        ]
    )
    assert s["Wants"] == ["a.service", "b.service"]
    assert s["After"] == ["x.service", "y.service"]
    assert s["Description"] == "two"


def test_logind_252_session_properties_are_all_accepted():
    # the exact list logind 252.38 sends (api-surface §1.3)
    items = [
        ("Slice", "s", "user-1000.slice"),
        ("Description", "s", "Session 1 of User u"),
        ("Wants", "as", ["user-runtime-dir@1000.service"]),
        ("Wants", "as", ["user@1000.service"]),
        ("After", "as", ["systemd-logind.service"]),
        ("After", "as", ["user-runtime-dir@1000.service"]),
        ("After", "as", ["systemd-user-sessions.service"]),
        ("After", "as", ["user@1000.service"]),
        ("RequiresMountsFor", "as", ["/home/u"]),
        ("SendSIGHUP", "b", True),
        ("PIDs", "au", [1234]),
        ("OOMPolicy", "s", "continue"),
        ("TasksMax", "t", UINT64_MAX),
        ("MemoryMax", "t", 1 << 30),
        ("RuntimeMaxUSec", "t", 10**6),
        ("CPUWeight", "t", 100),
        ("IOWeight", "t", 100),
    ]
    s = parse(items)
    assert s["Wants"] == ["user-runtime-dir@1000.service", "user@1000.service"]
    assert len(s["After"]) == 4
    assert s["PIDs"] == [1234]


def test_empty_list_resets_device_allow():
    s = parse([("DeviceAllow", "a(ss)", [("/dev/null", "rw")]), ("DeviceAllow", "a(ss)", [])])
    assert s["DeviceAllow"] == []


def test_device_allow_prepends_and_updates_in_place():
    """systemd 252 dbus-cgroup.c: a new path is LIST_PREPENDed, a known one (path_equal) takes
    the new rights where it is, rights read back as "rwm" flags. Observed with runc 1.1.5
    against the real systemd 252: the list reads back in the reverse of the order sent
    (tests/e2e/test_clients_runc.py)."""
    s = parse(
        [
            ("DeviceAllow", "a(ss)", [("/dev/null", "rw"), ("char-pts", "rwm")]),
            ("DeviceAllow", "a(ss)", [("/dev/zero", "r"), ("/dev//null", "mr")]),
        ]
    )
    assert s["DeviceAllow"] == [("/dev/zero", "r"), ("char-pts", "rwm"), ("/dev/null", "rm")]
    s = parse([("DeviceAllow", "a(ss)", [("/dev/null", "r")]), ("DeviceAllow", "a(ss)", [])])
    assert s["DeviceAllow"] == []


def test_scale_and_absolute_replace_each_other():
    s = parse([("MemoryMax", "t", 100), ("MemoryMaxScale", "u", 2**31)])
    assert "MemoryMax" not in s and s["MemoryMaxScale"] == 2**31
    s = parse([("MemoryMaxScale", "u", 2**31), ("MemoryMax", "t", 100)])
    assert s == {"MemoryMax": 100}
    assert scaled(2**32 - 1, 1000) == 1000


@pytest.mark.parametrize("name", ["Bogus", "Id", "ActiveState", "ExecStart"])
def test_unknown_property_text(name):
    with pytest.raises(errors.PropertyReadOnly) as e:
        parse([(name, "s", "x")])
    assert e.value.message == f"Cannot set property {name}, or unknown property."
    assert e.value.error_name == "org.freedesktop.DBus.Error.PropertyReadOnly"


def test_transient_only_properties_are_read_only_at_runtime():
    for name, sig, value in [
        ("Slice", "s", "a.slice"),
        ("PIDs", "au", [1]),
        ("KillMode", "s", "mixed"),
        ("Wants", "as", ["a.service"]),
    ]:
        with pytest.raises(errors.PropertyReadOnly):
            parse([(name, sig, value)], transient=False)
    assert parse([("MemoryMax", "t", 5)], transient=False) == {"MemoryMax": 5}


def test_scope_only_properties_are_refused_for_slices():
    with pytest.raises(errors.PropertyReadOnly):
        parse([("PIDs", "au", [1])], unit_type=UnitType.SLICE)


def test_wrong_signature_is_enxio_as_systemd_answers():
    with pytest.raises(errors.ENXIO):
        parse([("Description", "u", 3)])


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        ("CPUWeight", [0, 1, 10000, UINT64_MAX], [10001, 2**40]),
        ("IOWeight", [1, 10000, UINT64_MAX], [0, 10001]),
        ("CPUShares", [2, 262144], [1, 262145]),
        ("BlockIOWeight", [10, 1000], [9, 1001]),
        ("TasksMax", [1, UINT64_MAX], [0]),
    ],
)
def test_ranges(name, good, bad):
    for v in good:
        assert parse([(name, "t", v)])[name] == v
    for v in bad:
        with pytest.raises(errors.InvalidArgs) as e:
            parse([(name, "t", v)])
        assert e.value.message == f"Value specified in {name} is out of range"


def test_enums_and_names():
    with pytest.raises(errors.InvalidArgs):
        parse([("KillMode", "s", "bogus")])
    assert parse([("KillMode", "s", "mixed")])["KillMode"] == "mixed"
    with pytest.raises(errors.InvalidArgs):
        parse([("Slice", "s", "foo.service")])
    with pytest.raises(errors.InvalidArgs):
        parse([("Wants", "as", ["../etc.service"])])
    with pytest.raises(errors.InvalidArgs):
        parse([("RequiresMountsFor", "as", ["relative/path"])])
    with pytest.raises(errors.InvalidArgs):
        parse([("DeviceAllow", "a(ss)", [("/dev/null", "rwx")])])


@given(
    st.lists(
        st.lists(st.sampled_from(["a.service", "b.target", "c.slice"]), max_size=3), max_size=6
    )
)
def test_append_is_concatenation(chunks):
    s = parse([("Wants", "as", c) for c in chunks])
    flat = [x for c in chunks for x in c]
    if not chunks:
        assert "Wants" not in s
    elif chunks[-1] == []:
        assert s["Wants"] == []
    else:
        last_reset = max((i for i, c in enumerate(chunks) if not c), default=-1)
        assert s["Wants"] == [x for c in chunks[last_reset + 1 :] for x in c]
        assert set(s["Wants"]) <= set(flat)


def test_every_spec_has_a_valid_signature():
    for spec in PROPERTIES.values():
        assert spec.signature and spec.types
