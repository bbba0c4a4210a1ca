"""Drop-ins, slice unit files, persistent SetUnitProperties, RevertUnitFiles and Reload over
the bus, each against what the real systemd 252 did with the same files in the lab
(fixtures/oracle/dropins/real-systemd-252.out). The search path's root is a tmp dir."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Variant

from backends.fake import FakeBackend
from compat import buspath
from compat.unitvalues import HEADER
from shim.bus.daemon import Options, serve
from shim.core.policy import Policy
from tests.bus.test_restart import Daemon as Process
from tests.bus.test_restart import bus_client, wait_owner
from tests.conftest import Client, Daemon, PrivateBus

__all__ = ["bus_client"]  # a fixture of test_restart.py, used here too

UNIT = "org.freedesktop.systemd1.Unit"
SLICE = "org.freedesktop.systemd1.Slice"
SCOPE = "org.freedesktop.systemd1.Scope"
MANAGER = "org.freedesktop.systemd1.Manager"
USER = buspath.unit_path("user-1000.slice")
GIB = 1024**3
INFINITY = 2**64 - 1


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


@pytest.fixture
async def daemon(
    private_bus: PrivateBus, tmp_path: Path, policy: Policy, root: Path
) -> AsyncIterator[Daemon]:
    backend = FakeBackend(tmp_path / "cgroupfs")
    options = Options(address=private_bus.address, policy=policy, unit_root=str(root))
    service = await serve(options, backend)
    yield Daemon(service, backend, private_bus.address)
    service.close()
    service.manager.close()
    service.bus.disconnect()
    await service.bus.wait_for_disconnect()
    backend.close()


def put(root: Path, path: str, text: str) -> Path:
    p = root / path.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


# Debian 12's /usr/lib/systemd/system/user-.slice.d/10-defaults.conf, as the lab read it
DEFAULTS = (
    "[Unit]\nDescription=User Slice of UID %j\nDocumentation=man:user@.service(5)\n"
    "StopWhenUnneeded=yes\n\n[Slice]\nTasksMax=33%\n"
)


async def start_scope(client: Client, name: str, pid: int, slice_name: str) -> None:
    props = [["PIDs", Variant("au", [pid])], ["Slice", Variant("s", slice_name)]]
    (job,) = await client.ok("StartTransientUnit", "ssa(sv)a(sa(sv))", [name, "fail", props, []])
    await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job)


async def show(client: Client, unit: str, iface: str, *names: str) -> dict[str, object]:
    path = buspath.unit_path(unit)
    return {n: await client.get(path, iface, n) for n in names}


async def test_user_slice_drop_in_applies_before_the_first_scope(
    daemon: Daemon, client: Client, root: Path, processes: Any
) -> None:
    put(root, "/usr/lib/systemd/system/user-.slice.d/10-defaults.conf", DEFAULTS)
    memory = put(
        root, "/etc/systemd/system/user-.slice.d/50-memory.conf", "[Slice]\nMemoryMax=2G\n"
    )
    for uid in (1000, 1001):
        await start_scope(client, f"session-{uid}.scope", processes().pid, f"user-{uid}.slice")
        got = await show(client, f"user-{uid}.slice", SLICE, "MemoryMax", "TasksMax")
        assert got["MemoryMax"] == 2 * GIB
        # TasksMax=33% of the kernel's limit, read back in tasks as systemd 252 showed it
        scale = (3300 * (2**32 - 1) + 5000) // 10000
        assert got["TasksMax"] == daemon.backend.totals.tasks * scale // (2**32 - 1)
        assert await client.get(buspath.unit_path(f"user-{uid}.slice"), UNIT, "DropInPaths") == [
            str(root / "usr/lib/systemd/system/user-.slice.d/10-defaults.conf"),
            str(memory),
        ]
        # systemd 252: "User Slice of UID 1000" (%j, the last dash component)
        assert (
            await client.get(buspath.unit_path(f"user-{uid}.slice"), UNIT, "Description")
            == f"User Slice of UID {uid}"
        )
        cg = f"/user.slice/user-{uid}.slice"
        assert daemon.backend.get_attribute(cg, "memory.max") == str(2 * GIB)
        # the limit was written before the session's process moved in
        ops = [(o.op, o.path, o.args) for o in daemon.backend.operations]
        limit = ops.index(("set", cg, ("memory.max", str(2 * GIB))))
        attach = next(
            i for i, o in enumerate(ops) if o[0] == "attach" and o[1] == f"{cg}/session-{uid}.scope"
        )
        assert limit < attach
    assert await client.get(USER, UNIT, "FragmentPath") == ""


async def test_search_path_order_and_precedence(daemon: Daemon, client: Client, root: Path) -> None:
    """Lexical order by file name across all directories; the same name in a higher
    directory, or for a more specific name, wins; a /dev/null symlink masks (and is listed);
    slice.d/ applies to every slice (as systemd 252 listed them in the lab)."""
    put(root, "/run/systemd/system/slice.d/10-all.conf", "[Slice]\nIOWeight=123\n")
    put(root, "/run/systemd/system/a-.slice.d/20.conf", "[Slice]\nCPUWeight=11\n")
    put(root, "/etc/systemd/system/a-b-.slice.d/20.conf", "[Slice]\nCPUWeight=12\n")
    put(root, "/usr/lib/systemd/system/a-b-c.slice.d/30.conf", "[Slice]\nTasksMax=13\n")
    put(root, "/usr/lib/systemd/system/a-b-c.slice.d/40.conf", "[Slice]\nTasksMax=14\n")
    put(root, "/etc/systemd/system/a-b-c.slice.d/40.conf", "[Slice]\nTasksMax=15\n")
    put(root, "/usr/lib/systemd/system/a-.slice.d/50.conf", "[Slice]\nMemoryMax=1G\n")
    (root / "etc/systemd/system/a-b-c.slice.d/50.conf").symlink_to("/dev/null")
    await client.ok("StartUnit", "ss", ["a-b-c.slice", "fail"])
    path = buspath.unit_path("a-b-c.slice")
    assert await client.get(path, UNIT, "DropInPaths") == [
        str(root / "run/systemd/system/slice.d/10-all.conf"),
        str(root / "etc/systemd/system/a-b-.slice.d/20.conf"),
        str(root / "usr/lib/systemd/system/a-b-c.slice.d/30.conf"),
        str(root / "etc/systemd/system/a-b-c.slice.d/40.conf"),
        str(root / "etc/systemd/system/a-b-c.slice.d/50.conf"),
    ]
    got = await show(client, "a-b-c.slice", SLICE, "IOWeight", "CPUWeight", "TasksMax", "MemoryMax")
    assert got == {"IOWeight": 123, "CPUWeight": 12, "TasksMax": 15, "MemoryMax": INFINITY}
    unit_path = await client.get("/org/freedesktop/systemd1", MANAGER, "UnitPath")
    assert unit_path[:3] == [str(root / "etc/systemd/system.control"),
                             str(root / "run/systemd/system.control"),
                             str(root / "run/systemd/transient")]  # fmt: skip


async def test_bad_lines_are_logged_with_file_and_line_and_skipped(
    daemon: Daemon, client: Client, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the file the lab's systemd 252 read (fixtures/oracle/dropins/pid1-config-errors.log)
    bad = put(
        root,
        "/run/systemd/system/user-1000.slice.d/60-bad.conf",
        "# comment\n; other\n[Unit]\nDescription=Hello %n %N %p %j %i\n[Slice]\nTasksMax=4\\\n2\n"
        "FooBar=1\nMemoryHigh=notanumber\nMemoryLow=5%\n[Bogus]\nX=1\n",
    )
    put(root, "/etc/systemd/system/user-1000.slice.d/70-unreadable.conf", "")
    os.chmod(root / "etc/systemd/system/user-1000.slice.d", 0o755)
    with caplog.at_level(logging.WARNING):
        await client.ok("StartUnit", "ss", ["user-1000.slice", "fail"])
    lines = {r.getMessage() for r in caplog.records}
    assert {
        f"{bad}:11: Unknown section 'Bogus'. Ignoring.",
        f"{bad}:7: Invalid maximum tasks value '4 2', ignoring: Invalid argument",
        f"{bad}:8: Unknown key 'FooBar' in section [Slice], ignoring.",
        f"{bad}:9: Invalid memory limit 'notanumber', ignoring: Invalid argument",
    } <= lines
    assert (
        await client.get(USER, UNIT, "Description")
        == "Hello user-1000.slice user-1000 user-1000 1000 "
    )
    total = daemon.backend.totals.memory
    assert await client.get(USER, SLICE, "MemoryLow") == total * (
        (500 * (2**32 - 1) + 5000) // 10000
    ) // (2**32 - 1)
    assert await client.get(USER, UNIT, "ActiveState") == "active"


async def test_persistent_set_property_outlives_the_slice(
    daemon: Daemon, client: Client, root: Path, processes: Any
) -> None:
    proc = processes()
    await start_scope(client, "session-1.scope", proc.pid, "user-1000.slice")
    await client.ok(
        "SetUnitProperties",
        "sba(sv)",
        ["user-1000.slice", False, [["MemoryMax", Variant("t", 3 * GIB)]]],
    )
    written = root / "etc/systemd/system.control/user-1000.slice.d/50-MemoryMax.conf"
    # systemd 252's file, byte for byte (real-systemd-252.out)
    assert written.read_text() == HEADER + "[Slice]\nMemoryMax=3221225472\n"
    assert await client.get(USER, UNIT, "DropInPaths") == [str(written)]
    assert daemon.backend.get_attribute("/user.slice/user-1000.slice", "memory.max") == str(3 * GIB)
    # logout: the scope and then its slice go; the next login makes the slice again
    proc.kill()
    proc.wait()
    await client.wait_signal(lambda m: m.member == "UnitRemoved" and m.body[0] == "user-1000.slice")
    await start_scope(client, "session-2.scope", processes().pid, "user-1000.slice")
    assert await client.get(USER, SLICE, "MemoryMax") == 3 * GIB
    assert daemon.backend.get_attribute("/user.slice/user-1000.slice", "memory.max") == str(3 * GIB)


async def test_runtime_and_transient_set_property_files(
    daemon: Daemon, client: Client, root: Path, processes: Any
) -> None:
    await start_scope(client, "lab-x.scope", processes().pid, "user-1000.slice")
    await client.ok(
        "SetUnitProperties",
        "sba(sv)",
        ["user-1000.slice", True, [["CPUQuotaPerSecUSec", Variant("t", 200_000)]]],
    )
    runtime = root / "run/systemd/system.control/user-1000.slice.d/50-CPUQuota.conf"
    assert runtime.read_text() == HEADER + "[Slice]\nCPUQuota=20%\n"
    # a transient unit's drop-ins go to its own directory, runtime or not (as in 252)
    await client.ok(
        "SetUnitProperties",
        "sba(sv)",
        ["lab-x.scope", False, [["MemoryMax", Variant("t", 400 * 1024**2)]]],
    )
    transient = root / "run/systemd/transient/lab-x.scope.d/50-MemoryMax.conf"
    assert transient.read_text() == HEADER + "[Scope]\nMemoryMax=419430400\n"
    assert await client.get(buspath.unit_path("lab-x.scope"), UNIT, "DropInPaths") == [
        str(transient)
    ]
    # documented difference (README): no transient file of its own, so FragmentPath is ""
    # (systemd 252: /run/systemd/transient/lab-x.scope)
    assert await client.get(buspath.unit_path("lab-x.scope"), UNIT, "FragmentPath") == ""
    # a list is written whole, starting with an empty assignment (as 252 wrote it)
    for dev in ("/dev/null", "/dev/zero"):
        await client.ok(
            "SetUnitProperties",
            "sba(sv)",
            [
                "user-1000.slice",
                False,
                [["IOReadBandwidthMax", Variant("a(st)", [[dev, 1_000_000]])]],
            ],
        )
    lst = root / "etc/systemd/system.control/user-1000.slice.d/50-IOReadBandwidthMax.conf"
    assert lst.read_text() == HEADER + (
        "[Slice]\nIOReadBandwidthMax=\nIOReadBandwidthMax=/dev/null 1000000\n"
        "IOReadBandwidthMax=/dev/zero 1000000\n\n"
    )


async def test_revert_and_reload(
    daemon: Daemon, client: Client, root: Path, processes: Any
) -> None:
    put(root, "/etc/systemd/system/user-.slice.d/50-memory.conf", "[Slice]\nMemoryMax=2G\n")
    await start_scope(client, "session-1.scope", processes().pid, "user-1000.slice")
    await client.ok(
        "SetUnitProperties",
        "sba(sv)",
        ["user-1000.slice", False, [["MemoryMax", Variant("t", GIB)]]],
    )
    # systemd 252 (real-systemd-252-e2e.out): the value applies at once and the new file
    # is added at the end of DropInPaths; a later load sorts it before 50-memory.conf
    assert await client.get(USER, SLICE, "MemoryMax") == GIB
    control_file = root / "etc/systemd/system.control/user-1000.slice.d/50-MemoryMax.conf"
    assert await client.get(USER, UNIT, "DropInPaths") == [
        str(root / "etc/systemd/system/user-.slice.d/50-memory.conf"),
        str(control_file),
    ]
    assert await client.get(USER, UNIT, "NeedDaemonReload") is False
    await client.ok(
        "SetUnitProperties", "sba(sv)", ["user-1000.slice", True, [["TasksMax", Variant("t", 77)]]]
    )
    assert await client.get(USER, SLICE, "TasksMax") == 77
    # a load from the files (Reload here; the next login in the e2e): 50-memory.conf sorts
    # after 50-MemoryMax.conf and wins, as on systemd 252
    await client.ok("Reload")
    assert await client.get(USER, SLICE, "MemoryMax") == 2 * GIB
    assert (await client.get(USER, UNIT, "DropInPaths"))[0] == str(control_file)
    (changes,) = await client.ok("RevertUnitFiles", "as", [["user-1000.slice"]])
    control = root / "etc/systemd/system.control/user-1000.slice.d"
    run = root / "run/systemd/system.control/user-1000.slice.d"
    assert [list(c) for c in changes] == [
        ["unlink", str(control / "50-MemoryMax.conf"), ""],
        ["unlink", str(control), ""],
        ["unlink", str(run / "50-TasksMax.conf"), ""],
        ["unlink", str(run), ""],
    ]
    assert not control.exists() and not run.exists()
    # what systemctl revert does next: Reload; the drop-in's 2G is back, TasksMax default
    assert await client.get(USER, UNIT, "NeedDaemonReload") is True
    await client.ok("Reload")
    assert await client.get(USER, UNIT, "NeedDaemonReload") is False
    assert await client.get(USER, SLICE, "MemoryMax") == 2 * GIB
    assert await client.get(USER, SLICE, "TasksMax") == INFINITY
    cg = "/user.slice/user-1000.slice"
    assert daemon.backend.get_attribute(cg, "memory.max") == str(2 * GIB)
    assert daemon.backend.get_attribute(cg, "pids.max") == "max"
    # an edited drop-in reaches the running slice at the next Reload
    put(
        root,
        "/etc/systemd/system/user-.slice.d/50-memory.conf",
        "[Slice]\nMemoryMax=1G\nCPUQuota=50%\n",
    )
    await client.ok("Reload")
    assert daemon.backend.get_attribute(cg, "memory.max") == str(GIB)
    assert daemon.backend.get_attribute(cg, "cpu.max") == "50000 100000"
    # a percentage that goes: the limit it stood for returns to infinity
    put(root, "/etc/systemd/system/user-.slice.d/50-memory.conf", "[Slice]\nMemoryMax=50%\n")
    await client.ok("Reload")
    half = (5000 * (2**32 - 1) + 5000) // 10000  # 50% as the bus carries it
    assert daemon.backend.get_attribute(cg, "memory.max") == str(
        daemon.backend.totals.memory * half // (2**32 - 1)
    )
    put(root, "/etc/systemd/system/user-.slice.d/50-memory.conf", "[Slice]\n")
    await client.ok("Reload")
    assert daemon.backend.get_attribute(cg, "memory.max") == "max"
    assert await client.get(USER, SLICE, "MemoryMax") == INFINITY
    assert await client.ok("RevertUnitFiles", "as", [["nothing.slice"]]) == [[]]


async def test_slice_unit_from_a_file(
    daemon: Daemon, client: Client, root: Path, processes: Any
) -> None:
    frag = put(root, "/etc/systemd/system/lab.slice",
               "[Unit]\nDescription=Lab slice\n[Slice]\nMemoryMax=1G\nCPUQuota=50%\n")  # fmt: skip
    put(root, "/etc/systemd/system/lab.slice.d/override.conf", "[Slice]\nMemoryHigh=500M\n")
    await start_scope(client, "in-lab.scope", processes().pid, "lab.slice")
    lab = buspath.unit_path("lab.slice")
    # systemd 252: FragmentPath, UnitFileState static, settings from both files
    assert await client.get(lab, UNIT, "FragmentPath") == str(frag)
    assert await client.get(lab, UNIT, "UnitFileState") == "static"
    assert await client.get(lab, UNIT, "Description") == "Lab slice"
    got = await show(client, "lab.slice", SLICE, "MemoryMax", "MemoryHigh", "CPUQuotaPerSecUSec")
    assert got == {"MemoryMax": GIB, "MemoryHigh": 500 * 1024**2, "CPUQuotaPerSecUSec": 500_000}
    assert daemon.backend.get_attribute("/lab.slice", "memory.max") == str(GIB)
    # a changed fragment: NeedDaemonReload, then Reload applies it (CPUQuota= gone: reset)
    frag.write_text("[Unit]\nDescription=Lab slice\n[Slice]\nMemoryMax=2G\n")
    os.utime(frag, ns=(1, 1))
    assert await client.get(lab, UNIT, "NeedDaemonReload") is True
    await client.ok("Reload")
    got = await show(client, "lab.slice", SLICE, "MemoryMax", "CPUQuotaPerSecUSec")
    assert got == {"MemoryMax": 2 * GIB, "CPUQuotaPerSecUSec": INFINITY}
    assert daemon.backend.get_attribute("/lab.slice", "cpu.max") == "max 100000"


async def test_masked_slice(daemon: Daemon, client: Client, root: Path) -> None:
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/masked1.slice").symlink_to("/dev/null")
    # systemd 252: "Unit masked1.slice is masked.", LoadState masked, FragmentPath the link
    name, message = await client.error("StartUnit", "ss", ["masked1.slice", "fail"])
    assert (name, message) == (
        "org.freedesktop.systemd1.UnitMasked",
        "Unit masked1.slice is masked.",
    )
    path = buspath.unit_path("masked1.slice")
    assert await client.get(path, UNIT, "LoadState") == "masked"
    assert await client.get(path, UNIT, "FragmentPath") == str(
        root / "etc/systemd/system/masked1.slice"
    )


async def test_transient_slice_drop_in_wins(daemon: Daemon, client: Client, root: Path) -> None:
    # systemd 252: a tr-.slice.d/ MemoryMax=700M won over StartTransientUnit's MemoryMax
    put(root, "/etc/systemd/system/tr-.slice.d/10.conf", "[Slice]\nMemoryMax=700M\n")
    props = [["MemoryMax", Variant("t", 1_000_000)]]
    (job,) = await client.ok(
        "StartTransientUnit", "ssa(sv)a(sa(sv))", ["tr-a.slice", "fail", props, []]
    )
    await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job)
    assert await client.get(buspath.unit_path("tr-a.slice"), SLICE, "MemoryMax") == 700 * 1024**2


async def test_set_property_unwritable_root_is_an_error_not_a_crash(
    daemon: Daemon, client: Client, root: Path
) -> None:
    (root / "etc/systemd").mkdir(parents=True)
    (root / "etc/systemd/system.control").write_text("not a directory")
    await client.ok("StartUnit", "ss", ["user-1000.slice", "fail"])
    name, message = await client.error(
        "SetUnitProperties",
        "sba(sv)",
        ["user-1000.slice", False, [["MemoryMax", Variant("t", GIB)]]],
    )
    assert name == "org.freedesktop.DBus.Error.Failed" or name.startswith("System.Error.")
    assert "50-MemoryMax.conf" in message
    # nothing applied
    assert await client.get(USER, SLICE, "MemoryMax") == INFINITY


async def test_set_property_survives_a_restart(
    private_bus: PrivateBus, tmp_path: Path, root: Path, bus_client: Client, processes: Any
) -> None:
    """kill -9 and a restart: the persistent value is read back from its drop-in, and a
    drop-in written while the daemon was down applies to the running slice."""
    c = bus_client
    shim = Process(private_bus.address, tmp_path)
    shim.command += ["--unit-root", str(root)]
    shim.start()
    try:
        await wait_owner(c)
        await start_scope(c, "session-1.scope", processes().pid, "user-1000.slice")
        await c.ok(
            "SetUnitProperties",
            "sba(sv)",
            ["user-1000.slice", False, [["MemoryMax", Variant("t", GIB)]]],
        )
        await asyncio.sleep(0.3)  # the state reaches the disk once per loop iteration
        shim.kill()
        await wait_owner(c, present=False)
        put(root, "/etc/systemd/system/user-.slice.d/40-cpu.conf", "[Slice]\nCPUWeight=77\n")
        shim.start()
        await wait_owner(c)
        assert await c.get(USER, SLICE, "MemoryMax") == GIB
        assert await c.get(USER, SLICE, "CPUWeight") == 77
        assert await c.get(USER, UNIT, "DropInPaths") == [
            str(root / "etc/systemd/system/user-.slice.d/40-cpu.conf"),
            str(root / "etc/systemd/system.control/user-1000.slice.d/50-MemoryMax.conf"),
        ]
        cg = tmp_path / "cgroupfs/user.slice/user-1000.slice"
        assert (cg / "cpu.weight").read_text() == "77\n"
        assert (cg / "memory.max").read_text() == f"{GIB}\n"
    finally:
        if shim.proc is not None and shim.proc.poll() is None:
            shim.kill(signal.SIGTERM)


async def test_revert_edge_cases(daemon: Daemon, client: Client, root: Path) -> None:
    """As systemd 252 answered them (fixtures/oracle/dropins/real-systemd-252-oracle3.out)."""
    for bad in ("foo", "foo bar.slice", "../x.slice"):
        assert await client.error("RevertUnitFiles", "as", [[bad]]) == (
            "org.freedesktop.DBus.Error.InvalidArgs",
            "Invalid argument",
        )
    assert await client.ok("RevertUnitFiles", "as", [["a@.service"]]) == [[]]
    assert await client.ok("RevertUnitFiles", "as", [[]]) == [[]]
    # a prefix directory is not the unit's own: kept
    put(root, "/etc/systemd/system/x-.slice.d/a.conf", "[Slice]\nMemoryMax=1G\n")
    assert await client.ok("RevertUnitFiles", "as", [["x-1.slice"]]) == [[]]
    # every file of the unit's own directory goes, not only *.conf
    d = root / "etc/systemd/system/x-2.slice.d"
    put(root, "/etc/systemd/system/x-2.slice.d/b.conf", "[Slice]\nMemoryMax=1G\n")
    put(root, "/etc/systemd/system/x-2.slice.d/README", "hi\n")
    (changes,) = await client.ok("RevertUnitFiles", "as", [["x-2.slice"]])
    assert sorted(tuple(c) for c in changes) == sorted(
        [
            ("unlink", str(d / "b.conf"), ""),
            ("unlink", str(d / "README"), ""),
            ("unlink", str(d), ""),
        ]
    )
    assert not d.exists()


async def test_masked_slice_file_state(daemon: Daemon, client: Client, root: Path) -> None:
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/m.slice").symlink_to("/dev/null")
    await client.error("StartUnit", "ss", ["m.slice", "fail"])
    path = buspath.unit_path("m.slice")
    # systemd 252: UnitFileState masked, LoadError UnitMasked (status: "masked (Reason: ...)")
    assert await client.get(path, UNIT, "UnitFileState") == "masked"
    assert list(await client.get(path, UNIT, "LoadError")) == [
        "org.freedesktop.systemd1.UnitMasked",
        "Unit m.slice is masked.",
    ]


async def test_transient_drop_ins_go_with_the_unit(
    daemon: Daemon, client: Client, root: Path, processes: Any
) -> None:
    """systemd frees a transient unit's drop-ins in /run/systemd/transient with it: the next
    scope of that name starts without them."""
    proc = processes()
    await start_scope(client, "again.scope", proc.pid, "user-1000.slice")
    await client.ok(
        "SetUnitProperties", "sba(sv)", ["again.scope", False, [["MemoryMax", Variant("t", GIB)]]]
    )
    d = root / "run/systemd/transient/again.scope.d"
    assert (d / "50-MemoryMax.conf").exists()
    proc.kill()
    proc.wait()
    await client.wait_signal(lambda m: m.member == "UnitRemoved" and m.body[0] == "again.scope")
    assert not d.exists()
    await start_scope(client, "again.scope", processes().pid, "user-1000.slice")
    path = buspath.unit_path("again.scope")
    assert await client.get(path, SCOPE, "MemoryMax") == INFINITY
    assert await client.get(path, UNIT, "DropInPaths") == []


async def test_handled_service_drop_ins(
    daemon: Daemon, client: Client, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The services scopeshim handles read their drop-ins, the template's too ([Unit] and
    resource control; systemd.service(5) settings are logged as unused)."""
    barrier = put(
        root,
        "/usr/lib/systemd/system/user-runtime-dir@.service.d/10-x.conf",
        "[Unit]\nAfter=systemd-user-sessions.service\n",
    )
    limit = put(
        root,
        "/etc/systemd/system/user-runtime-dir@1000.service.d/50-limit.conf",
        "[Unit]\nDescription=Runtime of %i\n[Service]\nMemoryMax=100M\nExecStart=/bin/false\n",
    )
    with caplog.at_level(logging.WARNING):
        (path,) = await client.ok("LoadUnit", "s", ["user-runtime-dir@1000.service"])
    assert await client.get(path, UNIT, "DropInPaths") == [str(barrier), str(limit)]
    assert await client.get(path, UNIT, "Description") == "Runtime of 1000"
    assert await client.get(path, "org.freedesktop.systemd1.Service", "MemoryMax") == 100 * 1024**2
    assert (
        f"{limit}:5: Setting 'ExecStart' in section [Service] is not used by scopeshim, ignoring."
        in {r.getMessage() for r in caplog.records}
    )
    # a masked unit reads nothing (user@UID.service is masked by default)
    (masked,) = await client.ok("LoadUnit", "s", ["user@1000.service"])
    assert await client.get(masked, UNIT, "DropInPaths") == []
