"""Bad input of every kind: systemd's error name and message, no traceback, no state change."""

from __future__ import annotations

import subprocess
import sys

import pytest
from dbus_fast import Variant

from tests.conftest import Client, Daemon

STU = "ssa(sv)a(sa(sv))"


def snapshot(daemon: Daemon) -> tuple[object, ...]:
    m = daemon.manager
    return (sorted(m.units), sorted(m.jobs), len(daemon.backend.operations), m._next_job_id)


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


async def assert_refused(
    daemon: Daemon,
    client: Client,
    member: str,
    sig: str,
    body: list[object],
    name: str,
    message: str | None = None,
    **kw: object,
) -> None:
    before = snapshot(daemon)
    got_name, got_message = await client.error(member, sig, body, **kw)
    assert got_name == name, got_message
    if message is not None:
        assert got_message == message
    assert "Traceback" not in got_message
    await client.ok("Ping", path="/", interface="org.freedesktop.DBus.Peer")  # still up
    assert snapshot(daemon) == before


def pids(*values: int) -> list[object]:
    return ["PIDs", Variant("au", list(values))]


@pytest.mark.parametrize(
    ("props", "name", "message"),
    [
        (
            [["Bogus", Variant("s", "x")]],
            "org.freedesktop.DBus.Error.PropertyReadOnly",
            "Cannot set property Bogus, or unknown property.",
        ),
        ([["Description", Variant("u", 1)]], "org.freedesktop.DBus.Error.InvalidArgs", None),
        ([["PIDs", Variant("as", ["1"])]], "org.freedesktop.DBus.Error.InvalidArgs", None),
        (
            [["RequiredBy", Variant("as", ["a.service"])]],
            "org.freedesktop.DBus.Error.InvalidArgs",
            "Dependency type RequiredBy may not be created transiently.",
        ),
        ([["Slice", Variant("s", "foo.service")]], "org.freedesktop.DBus.Error.InvalidArgs", None),
        ([["Slice", Variant("s", "a--b.slice")]], "org.freedesktop.DBus.Error.InvalidArgs", None),
        (
            [["Wants", Variant("as", ["not a unit"])]],
            "org.freedesktop.DBus.Error.InvalidArgs",
            None,
        ),
        ([["KillMode", Variant("s", "bogus")]], "org.freedesktop.DBus.Error.InvalidArgs", None),
        (
            [["CPUWeight", Variant("t", 10001)]],
            "org.freedesktop.DBus.Error.InvalidArgs",
            "Value specified in CPUWeight is out of range",
        ),
        ([["TasksMax", Variant("t", 0)]], "org.freedesktop.DBus.Error.InvalidArgs", None),
        ([["OOMPolicy", Variant("s", "bogus")]], "org.freedesktop.DBus.Error.InvalidArgs", None),
        ([["KillSignal", Variant("i", 99)]], "org.freedesktop.DBus.Error.InvalidArgs", None),
        (
            [["BPFProgram", Variant("a(ss)", [["device", "/sys/fs/bpf/x"]])]],
            "org.freedesktop.DBus.Error.PropertyReadOnly",
            "Cannot set property BPFProgram, or unknown property.",
        ),
        ([], "org.freedesktop.systemd1.BadUnitSetting", None),
        ([["PIDs", Variant("au", [])]], "org.freedesktop.systemd1.BadUnitSetting", None),
    ],
)
async def test_bad_scope_properties(
    daemon: Daemon, client: Client, processes, props, name, message
) -> None:
    proc = processes()
    # the valid PIDs come first, so only the bad entry can be the reason for refusing
    body = [
        "bad.scope",
        "fail",
        [pids(proc.pid), *props] if props and props[0][0] != "PIDs" else props,
        [],
    ]
    await assert_refused(daemon, client, "StartTransientUnit", STU, body, name, message)


async def test_dead_pid_is_refused(daemon: Daemon, client: Client) -> None:
    await assert_refused(
        daemon,
        client,
        "StartTransientUnit",
        STU,
        ["dead.scope", "fail", [pids(dead_pid())], []],
        "org.freedesktop.DBus.Error.InvalidArgs",
    )


@pytest.mark.parametrize(
    "unit",
    [
        "foo",
        "a/b.scope",
        "../x.scope",
        "x" * 250 + ".scope",
        "foo@.scope",
        "",
        ".scope",
        "foo.bogus",
    ],
)
async def test_invalid_unit_names(daemon: Daemon, client: Client, processes, unit) -> None:
    proc = processes()
    await assert_refused(
        daemon,
        client,
        "StartTransientUnit",
        STU,
        [unit, "fail", [pids(proc.pid)], []],
        "org.freedesktop.DBus.Error.InvalidArgs",
    )


@pytest.mark.parametrize(
    "unit", ["foo.service", "foo.target", "foo.mount", "foo.socket", "foo.timer", "foo.device"]
)
async def test_transient_types_other_than_scope_and_slice(
    daemon: Daemon, client: Client, processes, unit
) -> None:
    proc = processes()
    await assert_refused(
        daemon,
        client,
        "StartTransientUnit",
        STU,
        [unit, "fail", [pids(proc.pid)], []],
        "org.freedesktop.DBus.Error.InvalidArgs",
    )


async def test_bad_job_mode(daemon: Daemon, client: Client, processes) -> None:
    proc = processes()
    await assert_refused(
        daemon,
        client,
        "StartTransientUnit",
        STU,
        ["m.scope", "bogus", [pids(proc.pid)], []],
        "org.freedesktop.DBus.Error.InvalidArgs",
        "Job mode bogus invalid.",
    )
    await assert_refused(
        daemon,
        client,
        "StopUnit",
        "ss",
        ["m.scope", "bogus"],
        "org.freedesktop.DBus.Error.InvalidArgs",
        "Job mode bogus invalid.",
    )


async def test_wrong_call_signature(daemon: Daemon, client: Client) -> None:
    await assert_refused(
        daemon,
        client,
        "GetUnit",
        "u",
        [1],
        "org.freedesktop.DBus.Error.InvalidArgs",
        "Invalid arguments 'u' to call org.freedesktop.systemd1.Manager.GetUnit(), expecting 's'.",
    )


async def test_unknown_method_and_objects(daemon: Daemon, client: Client) -> None:
    await assert_refused(
        daemon, client, "Bogus", "", [], "org.freedesktop.DBus.Error.UnknownMethod"
    )
    await assert_refused(
        daemon,
        client,
        "Ping",
        "",
        [],
        "org.freedesktop.DBus.Error.UnknownObject",
        "Unknown object '/org/freedesktop/systemd1/foo'.",
        path="/org/freedesktop/systemd1/foo",
        interface="org.freedesktop.DBus.Peer",
    )
    await assert_refused(
        daemon,
        client,
        "Get",
        "ss",
        ["org.freedesktop.systemd1.Job", "State"],
        "org.freedesktop.DBus.Error.UnknownObject",
        "Unknown object '/org/freedesktop/systemd1/job/999999'.",
        path="/org/freedesktop/systemd1/job/999999",
        interface="org.freedesktop.DBus.Properties",
    )
    # a label that is no unit name is no object
    await assert_refused(
        daemon,
        client,
        "Get",
        "ss",
        ["org.freedesktop.systemd1.Unit", "Id"],
        "org.freedesktop.DBus.Error.UnknownObject",
        path="/org/freedesktop/systemd1/unit/foo",
        interface="org.freedesktop.DBus.Properties",
    )


async def test_unknown_property_and_read_only_set(daemon: Daemon, client: Client) -> None:
    path = "/org/freedesktop/systemd1/unit/_2d_2eslice"
    name, _ = await client.error(
        "Get",
        "ss",
        ["org.freedesktop.systemd1.Unit", "Bogus"],
        path=path,
        interface="org.freedesktop.DBus.Properties",
    )
    assert name == "org.freedesktop.DBus.Error.UnknownProperty"
    name, _ = await client.error(
        "Set",
        "ssv",
        ["org.freedesktop.systemd1.Unit", "Description", Variant("s", "x")],
        path=path,
        interface="org.freedesktop.DBus.Properties",
    )
    assert name == "org.freedesktop.DBus.Error.PropertyReadOnly"


async def test_missing_units(daemon: Daemon, client: Client) -> None:
    await assert_refused(
        daemon,
        client,
        "GetUnit",
        "s",
        ["never.scope"],
        "org.freedesktop.systemd1.NoSuchUnit",
        "Unit never.scope not loaded.",
    )
    # StartUnit loads on demand; a unit nothing backs is refused and garbage-collected
    name, message = await client.error("StartUnit", "ss", ["nonexistent.service", "replace"])
    assert (name, message) == (
        "org.freedesktop.systemd1.NoSuchUnit",
        "Unit nonexistent.service not found.",
    )
    name, _ = await client.error("StopUnit", "ss", ["nonexistent.service", "replace"])
    assert name == "org.freedesktop.systemd1.NoSuchUnit"
    name, _ = await client.error("KillUnit", "ssi", ["nonexistent.scope", "all", 15])
    assert name == "org.freedesktop.systemd1.NoSuchUnit"
    name, _ = await client.error("GetJob", "u", [4242])
    assert name == "org.freedesktop.systemd1.NoSuchJob"
    name, _ = await client.error("CancelJob", "u", [4242])
    assert name == "org.freedesktop.systemd1.NoSuchJob"
    name, _ = await client.error("GetUnitByPID", "u", [dead_pid()])
    assert name == "org.freedesktop.systemd1.NoUnitForPID"
    name, _ = await client.error("GetUnitByInvocationID", "ay", [bytes(16)])
    assert name == "org.freedesktop.systemd1.NoUnitForInvocationID"
    name, _ = await client.error(
        "Abandon",
        path="/org/freedesktop/systemd1/unit/gone_2escope",
        interface="org.freedesktop.systemd1.Scope",
    )
    assert name == "org.freedesktop.systemd1.NoSuchUnit"
    name, _ = await client.error("UnrefUnit", "s", ["-.slice"])
    assert name == "org.freedesktop.systemd1.NotReferenced"


async def test_kill_arguments(daemon: Daemon, client: Client) -> None:
    await assert_refused(
        daemon,
        client,
        "KillUnit",
        "ssi",
        ["-.slice", "bogus", 15],
        "org.freedesktop.DBus.Error.InvalidArgs",
    )
    for sig in (0, 65, -1):
        await assert_refused(
            daemon,
            client,
            "KillUnit",
            "ssi",
            ["-.slice", "all", sig],
            "org.freedesktop.DBus.Error.InvalidArgs",
        )


async def test_abandon_when_not_running(daemon: Daemon, client: Client) -> None:
    name, _ = await client.error("AbandonScope", "s", ["-.slice"])
    assert name == "org.freedesktop.DBus.Error.InvalidArgs"


async def test_set_properties_bad_input(daemon: Daemon, client: Client, processes) -> None:
    proc = processes()
    (job,) = await client.ok("StartTransientUnit", STU, ["sp.scope", "fail", [pids(proc.pid)], []])
    await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job)
    # Slice= can only be set while the transient unit is created
    await assert_refused(
        daemon,
        client,
        "SetUnitProperties",
        "sba(sv)",
        ["sp.scope", True, [["Slice", Variant("s", "x.slice")]]],
        "org.freedesktop.DBus.Error.PropertyReadOnly",
        "Cannot set property Slice, or unknown property.",
    )
    # all-or-nothing: a bad entry after a good one applies neither
    await assert_refused(
        daemon,
        client,
        "SetUnitProperties",
        "sba(sv)",
        [
            "sp.scope",
            True,
            [["MemoryMax", Variant("t", 4096)], ["CPUWeight", Variant("t", 0xFFFFF)]],
        ],
        "org.freedesktop.DBus.Error.InvalidArgs",
    )
    path = "/org/freedesktop/systemd1/unit/sp_2escope"
    assert await client.get(path, "org.freedesktop.systemd1.Scope", "MemoryMax") == 2**64 - 1
    await client.ok(
        "SetUnitProperties", "sba(sv)", ["sp.scope", True, [["MemoryMax", Variant("t", 4096)]]]
    )
    assert await client.get(path, "org.freedesktop.systemd1.Scope", "MemoryMax") == 4096


async def test_aux_units_refused(daemon: Daemon, client: Client, processes) -> None:
    proc = processes()
    await assert_refused(
        daemon,
        client,
        "StartTransientUnit",
        STU,
        ["aux.scope", "fail", [pids(proc.pid)], [["other.scope", [pids(proc.pid)]]]],
        "org.freedesktop.DBus.Error.NotSupported",
    )
