"""A user manager's requests to the system instance: AttachProcessesToUnit on its own
user@UID.service for processes outside its tree (what systemd --user does when the kernel
refuses it the move), over the system bus."""

from __future__ import annotations

import logging

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

from backends.base import BackendError

log = logging.getLogger(__name__)

SYSTEMD1 = "org.freedesktop.systemd1"


class SystemAttach:
    """Moves processes into a sub-cgroup of user@UID.service through the system instance."""

    def __init__(self, uid: int, address: str | None = None) -> None:
        self.unit = f"user@{uid}.service"
        self.address = address  # None: the system bus
        self._bus: MessageBus | None = None

    async def _connect(self) -> MessageBus:
        if self._bus is None or not self._bus.connected:
            if self.address is not None:
                bus = MessageBus(bus_address=self.address)
            else:
                bus = MessageBus(bus_type=BusType.SYSTEM)
            try:
                self._bus = await bus.connect()
            except (OSError, ConnectionError) as e:
                raise BackendError(f"cannot reach the system bus: {e}") from None
        return self._bus

    async def __call__(self, path: str, pids: list[int]) -> None:
        """PATH is relative to user@UID.service's cgroup, as this manager's backend has it."""
        bus = await self._connect()
        reply = await bus.call(
            Message(
                destination=SYSTEMD1,
                path="/org/freedesktop/systemd1",
                interface="org.freedesktop.systemd1.Manager",
                member="AttachProcessesToUnit",
                signature="ssau",
                body=[self.unit, path, pids],
            )
        )
        if reply is None or reply.message_type is not MessageType.METHOD_RETURN:
            why = reply.body[0] if reply is not None and reply.body else "no reply"
            name = reply.error_name if reply is not None else ""
            raise BackendError(f"{name}: {why}")
        log.info("moved %s into %s%s through the system manager", pids, self.unit, path)

    def close(self) -> None:
        if self._bus is not None and self._bus.connected:
            self._bus.disconnect()
