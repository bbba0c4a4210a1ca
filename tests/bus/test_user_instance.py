"""A user manager (systemd --user's differences) on a private bus with the fake backend: the
same engine and bus layer, app.slice by default, its own tree only, its user and root only,
the environment API."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from backends.fake import FakeBackend
from shim.bus.daemon import Options, serve
from shim.core.instance import Instance, user_cgroup
from shim.core.policy import Policy
from tests.bus.test_auth import NOBODY, bus_address, gdbus, open_dir  # noqa: F401 (fixtures)
from tests.conftest import Client, Daemon, PrivateBus

UID = os.getuid()
PREFIX = user_cgroup(UID)
UNIT = "org.freedesktop.systemd1.Unit"
MANAGER = "org.freedesktop.systemd1.Manager"
STU_SIG = "ssa(sv)a(sa(sv))"
SELF = "/org/freedesktop/systemd1/unit/self"


async def start_user_daemon(address: str, root: Path, uid: int = UID) -> Daemon:
    backend = FakeBackend(root)
    options = Options(
        address=address, policy=Policy.for_user_instance(), instance=Instance.for_user(uid)
    )
    service = await serve(options, backend)
    return Daemon(service, backend, address)


async def stop_daemon(d: Daemon) -> None:
    d.service.close()
    d.service.manager.close()
    d.service.bus.disconnect()
    await d.service.bus.wait_for_disconnect()
    d.backend.close()


@pytest.fixture
async def daemon(private_bus: PrivateBus, tmp_path: Path) -> AsyncIterator[Daemon]:
    d = await start_user_daemon(private_bus.address, tmp_path / "cgroupfs")
    yield d
    await stop_daemon(d)


def scope_props(pid: int, *extra: list[object]) -> list[list[object]]:
    return [["PIDs", Variant("au", [pid])], *extra]


async def start_scope(client: Client, name: str, pid: int, *extra: list[object]) -> None:
    (job,) = await client.ok(
        "StartTransientUnit", STU_SIG, [name, "fail", scope_props(pid, *extra), []]
    )
    await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job)


def unit_path(name: str) -> str:
    from compat.buspath import unit_path as path

    return path(name)


async def test_manager_properties(daemon: Daemon, client: Client) -> None:
    # systemd --user: Manager.ControlGroup is the user manager's own cgroup
    assert await client.get("/org/freedesktop/systemd1", MANAGER, "ControlGroup") == PREFIX
    env = await client.get("/org/freedesktop/systemd1", MANAGER, "Environment")
    assert f"XDG_RUNTIME_DIR=/run/user/{UID}" in env
    assert f"DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/{UID}/bus" in env
    assert any(e.startswith("PATH=") for e in env)
    assert await client.get("/org/freedesktop/systemd1", MANAGER, "Version") == "252"


async def test_root_slice_and_init_scope(daemon: Daemon, client: Client) -> None:
    root = unit_path("-.slice")
    assert await client.get(root, "org.freedesktop.systemd1.Slice", "ControlGroup") == PREFIX
    init = unit_path("init.scope")
    assert await client.get(init, UNIT, "ActiveState") == "active"
    assert await client.get(init, UNIT, "Perpetual") is True
    assert await client.get(init, "org.freedesktop.systemd1.Scope", "ControlGroup") == (
        PREFIX + "/init.scope"
    )
    assert daemon.backend.exists("/init.scope")
    (units,) = await client.ok("ListUnits")
    assert {u[0] for u in units} == {"-.slice", "init.scope"}
    name, text = await client.error("StopUnit", "ss", ["init.scope", "replace"])
    assert name == "org.freedesktop.systemd1.JobTypeNotApplicable"
    assert text == "Job type stop is not applicable for unit init.scope."


async def test_scope_goes_to_app_slice(
    daemon: Daemon, client: Client, processes: Callable[..., subprocess.Popen[bytes]]
) -> None:
    p = processes()
    await start_scope(client, "run-u1.scope", p.pid, ["TasksMax", Variant("t", 10)])
    path = unit_path("run-u1.scope")
    assert await client.get(path, "org.freedesktop.systemd1.Scope", "Slice") == "app.slice"
    cgroup = await client.get(path, "org.freedesktop.systemd1.Scope", "ControlGroup")
    assert cgroup == PREFIX + "/app.slice/run-u1.scope"
    # the backend works inside the delegated tree: its paths are relative to user@UID.service
    assert daemon.backend.cgroup_of(p.pid) == "/app.slice/run-u1.scope"
    assert daemon.backend.get_attribute("/app.slice/run-u1.scope", "pids.max") == "10"
    (unit,) = await client.ok("GetUnitByPID", "u", [p.pid])
    assert unit == path
    (procs,) = await client.ok("GetUnitProcesses", "s", ["run-u1.scope"])
    assert list(procs[0][:2]) == [PREFIX + "/app.slice/run-u1.scope", p.pid]
    (unit,) = await client.ok("GetUnitByControlGroup", "s", [cgroup + "/sub"])
    assert unit == path
    (unit,) = await client.ok("GetUnitByControlGroup", "s", [PREFIX])
    assert unit == unit_path("-.slice")
    # app.slice is a standard slice: it stays when its last unit goes, another slice does not
    await start_scope(client, "other.scope", p.pid, ["Slice", Variant("s", "mine.slice")])
    await client.ok("StopUnit", "ss", ["other.scope", "replace"])
    await client.wait_signal(lambda m: m.member == "UnitRemoved" and m.body[0] == "mine.slice")
    p.kill()
    p.wait()
    await client.wait_signal(lambda m: m.member == "UnitRemoved" and m.body[0] == "run-u1.scope")
    assert await client.get(unit_path("app.slice"), UNIT, "ActiveState") == "active"
    assert daemon.backend.exists("/app.slice")


@pytest.mark.parametrize(
    "cgroup",
    [
        "/user.slice/user-99999.slice/user@99999.service/app.slice",
        "/system.slice",
        "/user.slice",
        PREFIX + "x/app.slice",
        "/",
    ],
)
async def test_foreign_cgroups_are_not_this_instance(
    daemon: Daemon, client: Client, cgroup: str
) -> None:
    assert await client.error("GetUnitByControlGroup", "s", [cgroup]) == (
        "org.freedesktop.systemd1.NoSuchUnit",
        f"Control group '{cgroup}' is not valid or not managed by this instance",
    )


async def test_process_outside_the_tree_has_no_unit(
    daemon: Daemon, client: Client, processes: Callable[..., subprocess.Popen[bytes]]
) -> None:
    p = processes()
    assert await client.error("GetUnitByPID", "u", [p.pid]) == (
        "org.freedesktop.systemd1.NoUnitForPID",
        f"PID {p.pid} does not belong to any loaded unit.",
    )
    # the caller's own unit (unit/self) likewise
    name, _ = await client.error(
        "Get", "ss", [UNIT, "Id"], path=SELF, interface="org.freedesktop.DBus.Properties"
    )
    assert name == "org.freedesktop.systemd1.NoUnitForPID"


@pytest.fixture
def foreign_process() -> Iterator[subprocess.Popen[bytes]]:
    """A process of another user (uid nobody; needs root to make)."""
    if os.geteuid() != 0:
        pytest.skip("starting a process as another user needs root")
    proc = subprocess.Popen(["sleep", "300"], user=NOBODY, group=NOBODY, extra_groups=[])
    yield proc
    proc.kill()
    proc.wait()


async def test_another_users_process_is_refused(
    daemon: Daemon, client: Client, foreign_process: subprocess.Popen[bytes]
) -> None:
    # even root cannot put another user's process into a user manager's tree
    pid = foreign_process.pid
    reply = await client.error(
        "StartTransientUnit", STU_SIG, ["f.scope", "fail", scope_props(pid), []]
    )
    assert reply == (
        "org.freedesktop.DBus.Error.AccessDenied",
        f"Process {pid} not owned by target unit's UID. Refusing.",
    )
    assert not daemon.backend.exists("/app.slice/f.scope")
    assert daemon.backend.cgroup_of(pid) is None


@pytest.fixture
async def foreign_instance(
    bus_address: str,  # noqa: F811 (the fixture from test_auth)
    open_dir: Path,  # noqa: F811
) -> AsyncIterator[Daemon]:
    """The user manager of uid 4711, on a bus every user may reach."""
    if os.geteuid() != 0:
        pytest.skip("calling as another user needs root")
    d = await start_user_daemon(bus_address, open_dir / "cgroupfs", uid=4711)
    yield d
    await stop_daemon(d)


async def test_other_users_may_read_but_not_change(
    foreign_instance: Daemon, foreign_process: subprocess.Popen[bytes]
) -> None:
    address = foreign_instance.address
    status, out = await gdbus(address, "org.freedesktop.systemd1.Manager.ListUnits")
    assert status == 0 and "init.scope" in out
    stu = "org.freedesktop.systemd1.Manager.StartTransientUnit"
    args = ["n.scope", "fail", f"[('PIDs', <[uint32 {foreign_process.pid}]>)]", "[]"]
    for method, method_args in [
        (stu, args),
        ("org.freedesktop.systemd1.Manager.SetEnvironment", ["['A=1']"]),
        ("org.freedesktop.systemd1.Manager.StopUnit", ["init.scope", "replace"]),
        ("org.freedesktop.systemd1.Manager.KillUnit", ["init.scope", "all", "0"]),
    ]:
        status, out = await gdbus(address, method, *method_args)
        assert status != 0
        assert "org.freedesktop.DBus.Error.AccessDenied: Permission denied" in out, method
    assert not foreign_instance.backend.exists("/app.slice")
    assert "A=1" not in foreign_instance.manager.instance.environment


async def test_environment_api(daemon: Daemon, client: Client) -> None:
    path = "/org/freedesktop/systemd1"

    async def env() -> list[str]:
        return list(await client.get(path, MANAGER, "Environment"))

    before = await env()
    await client.ok("SetEnvironment", "as", [["A=1", "B=two words", "A=3"]])
    now = await env()
    assert "A=3" in now and "B=two words" in now and "A=1" not in now
    assert now == sorted(now)
    await client.ok("UnsetEnvironment", "as", [["A", "NOT_SET"]])
    assert "A=3" not in await env()
    # an assignment in the unset list removes only a matching value; set overrides unset
    await client.ok("UnsetAndSetEnvironment", "asas", [["B=other", "C"], ["C=1"]])
    now = await env()
    assert "B=two words" in now and "C=1" in now
    await client.ok("UnsetAndSetEnvironment", "asas", [["B", "C"], []])
    assert await env() == before
    for bad in (["NOEQUALS"], ["=1"], ["1A=1"], ["A-B=1"], ["A=\x01"]):
        assert await client.error("SetEnvironment", "as", [bad]) == (
            "org.freedesktop.DBus.Error.InvalidArgs",
            "Invalid environment assignments",
        )
    assert await client.error("UnsetEnvironment", "as", [["A B"]]) == (
        "org.freedesktop.DBus.Error.InvalidArgs",
        "Invalid environment variable names or assignments",
    )
    # a bad entry anywhere leaves everything as it was
    await client.error("UnsetAndSetEnvironment", "asas", [["PATH"], ["X=1", "bad"]])
    assert await env() == before


async def test_set_environment_reaches_the_activation_environment(
    daemon: Daemon, client: Client, private_bus: PrivateBus
) -> None:
    monitor = await MessageBus(bus_address=private_bus.address).connect()
    seen: asyncio.Queue[Message] = asyncio.Queue()

    def on_message(msg: Message) -> None:
        if msg.member == "UpdateActivationEnvironment":
            seen.put_nowait(msg)

    reply = await monitor.call(
        Message(
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus.Monitoring",
            member="BecomeMonitor",
            signature="asu",
            body=[["type='method_call',member='UpdateActivationEnvironment'"], 0],
        )
    )
    assert reply is not None and reply.message_type is MessageType.METHOD_RETURN
    monitor.add_message_handler(on_message)
    try:
        await client.ok("SetEnvironment", "as", [["DISPLAY=:1", "XDG_CURRENT_DESKTOP=test"]])
        msg = await asyncio.wait_for(seen.get(), 10)
        assert msg.sender == daemon.service.bus.unique_name
        assert msg.body == [{"DISPLAY": ":1", "XDG_CURRENT_DESKTOP": "test"}]
    finally:
        monitor.disconnect()


async def test_system_instance_is_unchanged(private_bus: PrivateBus, tmp_path: Path) -> None:
    """The same engine with the system configuration: system.slice, no init.scope."""
    backend = FakeBackend(tmp_path / "cg")
    service = await serve(
        Options(address=private_bus.address, policy=Policy.harmless(tmp_path)), backend
    )
    try:
        assert service.manager.instance.default_slice == "system.slice"
        assert "init.scope" not in service.manager.units
        assert service.manager.instance.shown("/x.slice") == "/x.slice"
    finally:
        await stop_daemon(Daemon(service, backend, private_bus.address))
