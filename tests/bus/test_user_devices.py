"""DevicePolicy=/DeviceAllow= where no device controller works (no v1 devices hierarchy, no
BPF device program: an unprivileged user manager's case): the user manager takes them, as
systemd --user does and rootless runc --systemd-cgroup needs; the system instance refuses."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from dbus_fast import Variant

from backends.base import Capability
from backends.fake import FakeBackend
from shim.bus.daemon import Options, serve
from shim.core.policy import Policy
from tests.bus.test_user_instance import STU_SIG, start_scope, stop_daemon, unit_path
from tests.conftest import Client, Daemon, PrivateBus

CGROUP = "org.freedesktop.systemd1.Scope"
DEVICES = [
    ["DevicePolicy", Variant("s", "strict")],
    ["DeviceAllow", Variant("a(ss)", [["/dev/null", "rwm"], ["char-pts", "rw"]])],
]


class NoDevicesBackend(FakeBackend):
    """The fake backend without device access control."""

    capabilities = FakeBackend.capabilities - {Capability.DEVICES}


@pytest.fixture
async def daemon(private_bus: PrivateBus, tmp_path: Path) -> AsyncIterator[Daemon]:
    from shim.core.instance import Instance
    from tests.bus.test_user_instance import UID

    backend = NoDevicesBackend(tmp_path / "cgroupfs")
    options = Options(
        address=private_bus.address, policy=Policy.for_user_instance(),
        instance=Instance.for_user(UID),
    )  # fmt: skip
    d = Daemon(await serve(options, backend), backend, private_bus.address)
    yield d
    await stop_daemon(d)


async def test_user_manager_takes_device_settings(
    daemon: Daemon, client: Client, processes: Callable[..., subprocess.Popen[bytes]]
) -> None:
    p = processes()
    # StartTransientUnit with them, then SetUnitProperties with them (runc's two calls)
    await start_scope(client, "runc-x.scope", p.pid, *DEVICES)
    path = unit_path("runc-x.scope")
    assert await client.get(path, CGROUP, "DevicePolicy") == "strict"
    allowed = await client.get(path, CGROUP, "DeviceAllow")
    assert sorted(tuple(x) for x in allowed) == [("/dev/null", "rwm"), ("char-pts", "rw")]
    policy = ["DevicePolicy", Variant("s", "closed")]
    await client.ok("SetUnitProperties", "sba(sv)", ["runc-x.scope", True, [policy]])
    assert await client.get(path, CGROUP, "DevicePolicy") == "closed"
    # bad values are still refused, with systemd's error
    bad = ["DevicePolicy", Variant("s", "nonsense")]
    name, _ = await client.error("SetUnitProperties", "sba(sv)", ["runc-x.scope", True, [bad]])
    assert name == "org.freedesktop.DBus.Error.InvalidArgs"


async def test_system_instance_refuses_them(private_bus: PrivateBus, tmp_path: Path) -> None:
    backend = NoDevicesBackend(tmp_path / "cg")
    service = await serve(
        Options(address=private_bus.address, policy=Policy.harmless(tmp_path)), backend
    )
    d = Daemon(service, backend, private_bus.address)
    try:
        from dbus_fast.aio import MessageBus

        bus = await MessageBus(bus_address=d.address).connect()
        c = Client(bus)
        props = [["PIDs", Variant("au", [])], DEVICES[0]]
        name, text = await c.error("StartTransientUnit", STU_SIG, ["x.scope", "fail", props, []])
        assert name == "org.freedesktop.DBus.Error.PropertyReadOnly"
        assert text == "Cannot set property DevicePolicy, or unknown property."
        bus.disconnect()
    finally:
        await stop_daemon(d)
