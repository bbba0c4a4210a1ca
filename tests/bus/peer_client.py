"""A peer-to-peer D-Bus client for the tests, speaking as sd-bus does on systemd's private
socket: a NUL byte, `AUTH EXTERNAL` with the DATA exchange, `NEGOTIATE_UNIX_FD` and `BEGIN`
sent at once, then messages (no Hello)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast._private.unmarshaller import Unmarshaller

MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER_IFACE = "org.freedesktop.systemd1.Manager"
HANDSHAKE = b"\0AUTH EXTERNAL\r\nDATA\r\nNEGOTIATE_UNIX_FD\r\nBEGIN\r\n"


class PeerClient:
    """One private connection; replies are matched by serial, signals collected."""

    def __init__(self, sock: socket.socket, greeting: bytes) -> None:
        self.sock = sock
        self.greeting = greeting  # what the server answered to the handshake
        self.signals: list[Message] = []
        self.serials: list[int] = []  # serials of every message received, in order
        self._serial = 0
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._closed = asyncio.get_running_loop().create_future()
        self._unmarshaller = Unmarshaller(None, sock, True)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._read)

    @classmethod
    async def connect(cls, path: str, handshake: bytes = HANDSHAKE) -> PeerClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, path)
        await loop.sock_sendall(sock, handshake)
        greeting = b""
        while greeting.count(b"\r\n") < 3:  # DATA, OK <guid>, AGREE_UNIX_FD
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 1), 10)
            if not chunk:
                raise ConnectionError(f"closed during the handshake after {greeting!r}")
            greeting += chunk
        return cls(sock, greeting)

    def _read(self) -> None:
        try:
            while True:
                msg = self._unmarshaller.unmarshall()
                if msg is None:
                    return
                self.serials.append(msg.serial)
                if msg.message_type is MessageType.SIGNAL:
                    self.signals.append(msg)
                else:
                    fut = self._pending.pop(msg.reply_serial, None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
        except (EOFError, OSError) as e:
            self._close(e)

    def _close(self, e: BaseException) -> None:
        if self.sock.fileno() >= 0:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError(str(e)))
        if not self._closed.done():
            self._closed.set_result(None)

    async def wait_closed(self, timeout: float = 10) -> None:
        await asyncio.wait_for(asyncio.shield(self._closed), timeout)

    def send(self, msg: Message) -> int:
        self._serial += 1
        msg.serial = self._serial
        self.sock.send(msg._marshall(True))
        return self._serial

    async def call(
        self,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
        *,
        path: str = MANAGER_PATH,
        interface: str | None = MANAGER_IFACE,
        timeout: float = 10,
    ) -> Message:
        msg = Message(
            path=path, interface=interface, member=member, signature=signature, body=body or []
        )
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        serial = self.send(msg)
        self._pending[serial] = fut
        return await asyncio.wait_for(fut, timeout)

    async def ok(self, member: str, signature: str = "", body: list[Any] | None = None,
                 **kw: Any) -> list[Any]:  # fmt: skip
        reply = await self.call(member, signature, body, **kw)
        assert reply.message_type is MessageType.METHOD_RETURN, (reply.error_name, reply.body)
        return list(reply.body)

    async def wait_signal(
        self, member: str, pred: Callable[[Message], bool] = lambda m: True, timeout: float = 10
    ) -> Message:
        async def poll() -> Message:
            while True:
                for s in self.signals:
                    if s.member == member and pred(s):
                        return s
                await asyncio.sleep(0.01)

        return await asyncio.wait_for(poll(), timeout)

    def close(self) -> None:
        self._close(ConnectionError("closed by the test"))
        self.sock.close()
