"""Any caller may read (org.freedesktop.systemd1(5)), so one long read must not hold others up:
a ListUnitsByNames of many names is answered in steps, and other calls are served between."""

from __future__ import annotations

import asyncio

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from shim.bus.manager import NAMES_PER_STEP
from shim.bus.transport import patient
from tests.conftest import MANAGER_IFACE, MANAGER_PATH, SYSTEMD1, Daemon


async def test_a_long_list_of_names_does_not_hold_up_a_ping(daemon: Daemon) -> None:
    # patient: dbus-fast's own writer drops the connection when the big call meets a full
    # socket buffer (EAGAIN), which a loaded machine gives (seen once in a full run)
    flooder = patient(await MessageBus(bus_address=daemon.address).connect())
    names = [f"nobody-{i}.service" for i in range(NAMES_PER_STEP * 100)]
    order: list[str] = []
    try:
        big = asyncio.ensure_future(
            flooder.call(
                Message(destination=SYSTEMD1, path=MANAGER_PATH, interface=MANAGER_IFACE,
                        member="ListUnitsByNames", signature="as", body=[names])
            )
        )  # fmt: skip
        big.add_done_callback(lambda _: order.append("ListUnitsByNames"))
        await asyncio.sleep(0)
        # on the same connection, so that the daemon surely reads the big call first
        ping = await flooder.call(
            Message(destination=SYSTEMD1, path=MANAGER_PATH,
                    interface="org.freedesktop.DBus.Peer", member="Ping")
        )  # fmt: skip
        order.append("Ping")
        assert ping is not None and ping.message_type is MessageType.METHOD_RETURN
        reply = await big
        assert reply is not None and reply.message_type is MessageType.METHOD_RETURN
        (units,) = reply.body
        assert len(units) == len(names)
        assert [u[0] for u in units[:3]] == names[:3] and units[-1][2] == "not-found"
        assert order == ["Ping", "ListUnitsByNames"]  # served in between, not after
        # nothing was loaded or kept for the names asked about
        assert not any(n.startswith("nobody-") for n in daemon.manager.units)
    finally:
        flooder.disconnect()
