"""The system instance starts and stops user managers for user@UID.service (user_manager =
"scopeshim"): Delegate=yes, the manager in user@UID.service/init.scope, the start job done
once it says READY=1 and failed with its reason otherwise, nothing left after a stop."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
from dbus_fast import MessageType, Variant
from dbus_fast.aio import MessageBus

from backends.base import BackendError
from backends.fake import FakeBackend
from compat.buspath import unit_path
from shim.bus.daemon import Options, serve
from shim.bus.escalate import SystemAttach
from shim.core.instance import Instance
from shim.core.policy import POWER_TARGETS, RECORD, Policy, UserManager
from tests.bus.test_auth import NOBODY, bus_address, gdbus, open_dir  # noqa: F401 (fixtures)
from tests.bus.test_user_instance import stop_daemon
from tests.conftest import Client, Daemon, PrivateBus, start_bus

UID = os.getuid()
UNIT_IFACE = "org.freedesktop.systemd1.Unit"
USER = f"user@{UID}.service"
SERVICE = f"/user.slice/user-{UID}.slice/user@{UID}.service"


def policy_with(command: list[str], *, zygote: tuple[str, ...] = ()) -> Policy:
    return Policy(
        user_manager=UserManager.SCOPESHIM,
        user_manager_command=tuple(command),
        user_manager_args=zygote,
        runtime_dir_helper="",
        power_actions=dict.fromkeys(POWER_TARGETS, RECORD),
    )


@pytest.fixture
def user_bus(tmp_path: Path) -> Iterator[str]:
    """A second private bus standing in for the user's session bus."""
    bus = start_bus(tmp_path, name="user-bus")
    yield bus.address
    bus.process.terminate()
    bus.process.wait(10)


async def system_daemon(address: str, root: Path, policy: Policy) -> Daemon:
    backend = FakeBackend(root)
    service = await serve(Options(address=address, policy=policy), backend)
    return Daemon(service, backend, address)


async def connect(address: str) -> Client:
    bus = await MessageBus(bus_address=address).connect()
    client = Client(bus)
    bus.add_message_handler(client._on_message)
    await client.ok(
        "AddMatch",
        "s",
        ["type='signal',sender='org.freedesktop.systemd1'"],
        path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus",
        destination="org.freedesktop.DBus",
    )
    return client


async def run_job(client: Client, member: str, name: str) -> str:
    (job,) = await client.ok(member, "ss", [name, "replace"])
    done = await client.wait_signal(
        lambda m: m.member == "JobRemoved" and m.body[1] == job, timeout=60
    )
    return str(done.body[3])


async def test_user_manager_started_and_stopped(
    private_bus: PrivateBus, user_bus: str, tmp_path: Path
) -> None:
    # XDG_RUNTIME_DIR in the test's directory: nothing is made in the host's /run/user
    command = ["/usr/bin/env", f"XDG_RUNTIME_DIR={tmp_path}",
               sys.executable, "-m", "shim", "serve", "--user", "--backend", "fake",
               "--cgroup-root", str(tmp_path / "user-cgroupfs"), "--state-dir",
               str(tmp_path / "user-state"), "--address", user_bus, "--notify-ready"]  # fmt: skip
    d = await system_daemon(private_bus.address, tmp_path / "cg", policy_with(command))
    client = await connect(private_bus.address)
    user_client = await connect(user_bus)
    try:
        assert await run_job(client, "StartUnit", USER) == "done"
        # ready means served: the user manager answers on its bus at once
        root = "/org/freedesktop/systemd1"
        manager = "org.freedesktop.systemd1.Manager"
        assert await user_client.get(root, manager, "ControlGroup") == SERVICE
        # Delegate=yes: the unit's cgroup and init.scope belong to the user
        assert d.backend.delegated[SERVICE] == (UID, os.getgid())
        assert d.backend.delegated[SERVICE + "/init.scope"] == (UID, os.getgid())
        pids = d.backend.pids(SERVICE)
        assert len(pids) == 1 and d.backend.cgroup_of(pids[0]) == SERVICE + "/init.scope"
        path = unit_path(USER)
        unit = "org.freedesktop.systemd1.Unit"
        assert await client.get(path, unit, "SubState") == "running"
        assert await run_job(client, "StopUnit", USER) == "done"
        assert not d.backend.exists(SERVICE)
        assert d.backend.pids("/") == []
        assert not os.path.exists(f"/proc/{pids[0]}") or _zombie(pids[0])
    finally:
        user_client.bus.disconnect()
        client.bus.disconnect()
        await stop_daemon(d)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ("echo cannot reach the bus >&2; exit 1", "cannot reach the bus"),
        ("echo starting; exec sleep 0", "starting"),
    ],
)
async def test_user_manager_that_fails_fails_the_job(
    private_bus: PrivateBus,
    tmp_path: Path,
    script: str,
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    d = await system_daemon(
        private_bus.address, tmp_path / "cg", policy_with(["/bin/sh", "-c", script])
    )
    client = await connect(private_bus.address)
    try:
        assert await run_job(client, "StartUnit", USER) == "failed"
        assert reason in caplog.text
        assert not d.backend.exists(SERVICE)
        assert d.backend.pids("/") == []
        unit = d.manager.units[USER]
        assert (unit.active_state, unit.result) == ("failed", "exit-code")
    finally:
        client.bus.disconnect()
        await stop_daemon(d)


async def stop_everything(d: Daemon) -> None:
    """Kill what the test's user managers left running, then stop the daemon."""
    if d.manager.forkserver is not None:
        await d.manager.forkserver.aclose()
    d.backend.kill("/", signal.SIGKILL)
    for _ in range(100):
        if not d.backend.pids("/"):
            break
        await asyncio.sleep(0.05)
    await stop_daemon(d)


class RefusingOutsiders(FakeBackend):
    """A fake tree that, like the kernel for a user manager, refuses to move processes that
    sit outside it (EACCES: no write access to the common ancestor's cgroup.procs)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.outsiders: set[int] = set()

    def attach(self, path: str, pids: Iterable[int]) -> None:
        pids = list(pids)
        if set(pids) & self.outsiders:
            raise BackendError("permission denied", errno.EACCES)
        super().attach(path, pids)


READY_THEN_SLEEP = ["/bin/sh", "-c", "echo READY=1; exec sleep 300"]


async def test_user_manager_moves_outsiders_through_the_system_instance(
    private_bus: PrivateBus,
    user_bus: str,
    tmp_path: Path,
    processes: Callable[..., subprocess.Popen[bytes]],
) -> None:
    system = await system_daemon(
        private_bus.address, tmp_path / "cg", policy_with(READY_THEN_SLEEP)
    )
    client = await connect(private_bus.address)
    user = None
    try:
        assert await run_job(client, "StartUnit", USER) == "done"
        # the user manager's tree is the system's user@UID.service directory
        backend = RefusingOutsiders(tmp_path / "cg" / SERVICE.lstrip("/"))
        p = processes()
        backend.outsiders = {p.pid}
        options = Options(
            address=user_bus, policy=Policy.for_user_instance(), instance=Instance.for_user(UID)
        )
        service = await serve(options, backend)
        user = Daemon(service, backend, user_bus)
        escalate = SystemAttach(UID, private_bus.address)
        service.manager.escalate_attach = escalate
        user_client = await connect(user_bus)
        (job,) = await user_client.ok(
            "StartTransientUnit",
            "ssa(sv)a(sa(sv))",
            ["run-x.scope", "fail", [["PIDs", Variant("au", [p.pid])]], []],
        )
        done = await user_client.wait_signal(
            lambda m: m.member == "JobRemoved" and m.body[1] == job
        )
        assert done.body[3] == "done"
        # the system instance moved it into user@UID.service/app.slice/run-x.scope
        assert system.backend.cgroup_of(p.pid) == SERVICE + "/app.slice/run-x.scope"
        user_client.bus.disconnect()
        escalate.close()
    finally:
        client.bus.disconnect()
        if user is not None:
            await stop_daemon(user)
        await stop_everything(system)


@pytest.fixture
def nobody_sleeper() -> Iterator[subprocess.Popen[bytes]]:
    if os.geteuid() != 0:
        pytest.skip("starting processes as another user needs root")
    proc = subprocess.Popen(["sleep", "300"], user=NOBODY, group=NOBODY, extra_groups=[])
    yield proc
    proc.kill()
    proc.wait()


async def test_a_user_attaches_only_own_processes_to_own_user_unit(
    bus_address: str,  # noqa: F811 (fixtures from test_auth)
    open_dir: Path,  # noqa: F811
    nobody_sleeper: subprocess.Popen[bytes],
    processes: Callable[..., subprocess.Popen[bytes]],
) -> None:
    """systemd's AttachProcessesToUnit needs no polkit: uid nobody may move its own
    processes into user@65534.service (delegated to it), nothing else."""
    policy = policy_with(READY_THEN_SLEEP)
    system = await system_daemon(bus_address, open_dir / "cg", policy)
    client = await connect(bus_address)
    nobody_unit = f"user@{NOBODY}.service"
    nobody_cgroup = f"/user.slice/user-{NOBODY}.slice/{nobody_unit}"
    try:
        assert await run_job(client, "StartUnit", nobody_unit) == "done"
        # the user manager of uid nobody runs as nobody, in init.scope
        (pid,) = system.backend.pids(nobody_cgroup)
        assert os.stat(f"/proc/{pid}").st_uid == NOBODY
        system.backend.create(nobody_cgroup + "/app.slice")
        method = "org.freedesktop.systemd1.Manager.AttachProcessesToUnit"
        me = nobody_sleeper.pid
        status, out = await gdbus(bus_address, method, nobody_unit, "/app.slice", f"[{me}]")
        assert status == 0, out
        assert system.backend.cgroup_of(me) == nobody_cgroup + "/app.slice"
        root_process = processes()
        status, out = await gdbus(
            bus_address, method, nobody_unit, "/app.slice", f"[{root_process.pid}]"
        )
        assert "AccessDenied" in out
        assert f"Process {root_process.pid} not owned by client's UID. Refusing." in out
        # another user's unit: refused although the process is the caller's
        assert await run_job(client, "StartUnit", USER) == "done"
        status, out = await gdbus(bus_address, method, USER, "/", f"[{me}]")
        assert "org.freedesktop.DBus.Error.AccessDenied: Permission denied" in out
        assert system.backend.cgroup_of(me) == nobody_cgroup + "/app.slice"
    finally:
        client.bus.disconnect()
        await stop_everything(system)


async def test_stopping_the_runtime_dir_stops_the_user_manager(
    private_bus: PrivateBus, tmp_path: Path
) -> None:
    """logind 256+ stops only user-runtime-dir@UID.service at logout; user@UID.service
    Requires= it, so it stops too (systemd.unit(5) Requires=), and first (After=)."""
    system = await system_daemon(
        private_bus.address, tmp_path / "cg", policy_with(READY_THEN_SLEEP)
    )
    client = await connect(private_bus.address)
    try:
        assert await run_job(client, "StartUnit", USER) == "done"
        assert system.backend.pids(SERVICE)
        runtime = f"user-runtime-dir@{UID}.service"
        assert await run_job(client, "StopUnit", runtime) == "done"
        await client.wait_signal(lambda m: m.member == "UnitRemoved" and m.body[0] == USER)
        slice_jobs = 0
        while slice_jobs < 2:  # its start job, then its stop job once it is not needed
            await asyncio.sleep(0.05)
            slice_jobs = sum(
                m.member == "JobRemoved" and m.body[2] == f"user-{UID}.slice"
                for m in client.signals
            )
        removed = [m.body[2] for m in client.signals if m.member == "JobRemoved"]
        # user@ stopped before what it is after, then the user's slice, no longer needed
        assert removed[-3:] == [USER, runtime, f"user-{UID}.slice"]
        assert system.manager.units.get(USER) is None or (
            system.manager.units[USER].active_state == "inactive"
        )
        assert not system.backend.exists(SERVICE)
        assert system.backend.pids("/") == []
    finally:
        client.bus.disconnect()
        await stop_everything(system)


@pytest.fixture
def open_user_bus(open_dir: Path) -> Iterator[str]:  # noqa: F811
    """A second bus (the user's session bus) every user may use."""
    bus = start_bus(open_dir, everyone=True, name="user-bus")
    yield bus.address
    bus.process.terminate()
    bus.process.wait(10)


async def test_user_manager_forked_from_the_zygote(
    bus_address: str,  # noqa: F811 (fixtures from test_auth)
    open_dir: Path,  # noqa: F811
    open_user_bus: str,
) -> None:
    """The default way: the fork of one pre-imported parent is moved into
    user@UID.service/init.scope, then becomes the user (nobody here) and serves; the job is
    done once it does; a stop leaves nothing (the zygote lives on, the fork does not)."""
    if os.geteuid() != 0:
        pytest.skip("a user manager for uid nobody needs root")
    mine = open_dir / "nobody"  # where the user manager (uid nobody) may write
    mine.mkdir()
    mine.chmod(0o777)
    args = ("serve", "--user", "--backend", "fake", "--cgroup-root", str(mine / "cg"),
            "--state-dir", str(mine / "state"), "--address", open_user_bus,
            "--private-socket", "", "--notify-ready")  # fmt: skip
    system = await system_daemon(bus_address, open_dir / "cg", policy_with([], zygote=args))
    client = await connect(bus_address)
    nobody_unit = f"user@{NOBODY}.service"
    tree = f"/user.slice/user-{NOBODY}.slice/{nobody_unit}"
    try:
        assert await run_job(client, "StartUnit", nobody_unit) == "done"
        (pid,) = system.backend.pids(tree)
        assert system.backend.cgroup_of(pid) == tree + "/init.scope"
        status = Path(f"/proc/{pid}/status").read_text()
        assert f"Uid:\t{NOBODY}\t{NOBODY}\t{NOBODY}\t{NOBODY}" in status
        assert system.backend.delegated[tree] == (NOBODY, NOBODY)
        # it serves: the user manager of uid nobody answers on its bus
        user_client = await connect(open_user_bus)
        manager = "org.freedesktop.systemd1.Manager"
        assert await user_client.get("/org/freedesktop/systemd1", manager, "ControlGroup") == tree
        user_client.bus.disconnect()
        assert await run_job(client, "StopUnit", nobody_unit) == "done"
        assert not system.backend.exists(tree)
        assert system.backend.pids("/") == []
    finally:
        client.bus.disconnect()
        await stop_everything(system)


async def test_a_killed_user_manager_is_started_again_and_takes_its_scopes_back(
    private_bus: PrivateBus,
    user_bus: str,
    tmp_path: Path,
    processes: Callable[..., subprocess.Popen[bytes]],
) -> None:
    """SIGKILL of the user manager while a user's scope runs: the system instance starts it
    again in init.scope; it takes the scope back from its state directory, the process never
    left it."""
    command = ["/usr/bin/env", f"XDG_RUNTIME_DIR={tmp_path}",
               sys.executable, "-m", "shim", "serve", "--user", "--backend", "fake",
               "--cgroup-root", str(tmp_path / "user-cgroupfs"), "--state-dir",
               str(tmp_path / "user-state"), "--address", user_bus, "--notify-ready"]  # fmt: skip
    system = await system_daemon(private_bus.address, tmp_path / "cg", policy_with(command))
    client = await connect(private_bus.address)
    user_client = await connect(user_bus)
    try:
        assert await run_job(client, "StartUnit", USER) == "done"
        (first,) = system.backend.pids(SERVICE)
        p = processes()
        (job,) = await user_client.ok(
            "StartTransientUnit",
            "ssa(sv)a(sa(sv))",
            ["run-k.scope", "fail", [["PIDs", Variant("au", [p.pid])]], []],
        )
        await user_client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job)
        # on a real hierarchy the system sees the scope in its user@ tree; each fake backend
        # has its own directory, so the system's is told
        system.backend.create(SERVICE + "/app.slice/run-k.scope")
        system.backend.attach(SERVICE + "/app.slice/run-k.scope", [p.pid])
        os.kill(first, signal.SIGKILL)
        second = None
        for _ in range(400):
            await asyncio.sleep(0.05)
            now = system.backend.pids(SERVICE + "/init.scope")
            if now and now[0] != first:
                second = now[0]
                break
        assert second is not None, "the user manager was not started again"
        assert system.backend.cgroup_of(second) == SERVICE + "/init.scope"
        assert system.manager.units[USER].sub_state == "running"
        # the new manager answers for the scope it took back; the process is still in it
        unit_path_k = None
        for _ in range(200):
            reply = await user_client.call("GetUnit", "s", ["run-k.scope"])
            if reply.message_type is MessageType.METHOD_RETURN:
                unit_path_k = reply.body[0]
                break
            await asyncio.sleep(0.05)
        assert unit_path_k is not None
        assert await user_client.get(unit_path_k, UNIT_IFACE, "ActiveState") == "active"
        (procs,) = await user_client.ok("GetUnitProcesses", "s", ["run-k.scope"])
        assert [x[1] for x in procs] == [p.pid]
        assert system.manager.units[USER].result == "success"
        assert await run_job(client, "StopUnit", USER) == "done"
        assert not system.backend.exists(SERVICE)
        await client.wait_signal(lambda m: m.member == "UnitRemoved" and m.body[0] == USER)
    finally:
        user_client.bus.disconnect()
        client.bus.disconnect()
        await stop_everything(system)
