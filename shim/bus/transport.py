"""The bus connection's writer, made to survive a full socket buffer; calls to the bus driver.

dbus-fast (5.2, as python-dbus-next before it: python-dbus-next issue #153) treats EAGAIN from
`send()` on its non-blocking socket as fatal and drops the connection. A manager that
broadcasts signals in bursts (50 clients starting scopes at once) fills the buffer: the
daemon lost the bus. This writer waits for the socket to be writable instead.
"""

from __future__ import annotations

import array
import socket
from typing import Any

from dbus_fast import Message, MessageFlag
from dbus_fast.aio import message_bus
from dbus_fast.aio.message_bus import MessageBus

DRIVER = "org.freedesktop.DBus"  # the bus driver's name, path and interface (D-Bus spec)


class _PatientWriter(message_bus._MessageWriter):
    """_MessageWriter whose write_callback keeps its place on EAGAIN, and which drops what is
    sent once the connection is gone (dbus-fast would register the closed descriptor)."""

    def schedule_write(self, msg: Any = None, future: Any = None) -> None:
        if self.bus._disconnected:
            # the daemon is on its way out (daemon.serve logs the loss once)
            if future is not None and not future.done():
                future.set_result(None)
            return
        super().schedule_write(msg, future)

    def write_callback(self, remove_writer: bool = True) -> None:
        sock: Any = self.sock
        fd: Any = self.fd
        try:
            while True:
                if self.buf is None:
                    if not self.messages:
                        if remove_writer:
                            self.loop.remove_writer(fd)
                        return
                    buf, unix_fds, fut = self.messages.popleft()
                    self.unix_fds = unix_fds
                    self.buf = memoryview(buf)
                    self.offset = 0
                    self.fut = fut
                try:
                    if self.unix_fds and self.negotiate_unix_fd:
                        ancdata = [
                            (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", self.unix_fds))
                        ]
                        self.offset += sock.sendmsg([self.buf[self.offset :]], ancdata)
                        self.unix_fds = None
                    else:
                        self.offset += sock.send(self.buf[self.offset :])
                except BlockingIOError:
                    # the socket buffer is full: continue when the socket is writable
                    self.loop.add_writer(fd, self.write_callback)
                    return
                if self.offset < len(self.buf):
                    self.loop.add_writer(fd, self.write_callback)
                    return
                self.buf = None
                if self.fut is not None and not self.fut.done():
                    self.fut.set_result(None)
        except Exception as e:
            if self.fut is not None and not self.fut.done():
                if self.bus._user_disconnect:
                    self.fut.set_result(None)
                else:
                    self.fut.set_exception(e)
                    self.fut.exception()  # a send nobody awaits: no "never retrieved" noise
            self.bus._finalize(e)


def patient(bus: MessageBus) -> MessageBus:
    """Give a connected bus the writer above (same state, other write_callback)."""
    writer = bus._writer
    if writer is not None and type(writer) is message_bus._MessageWriter:
        writer.__class__ = _PatientWriter
    return bus


def to_driver(member: str, signature: str, body: list[Any], reply: bool = True) -> Message:
    """A call to the bus driver (org.freedesktop.DBus); REPLY False: none is expected."""
    return Message(
        destination=DRIVER,
        path="/org/freedesktop/DBus",
        interface=DRIVER,
        member=member,
        signature=signature,
        body=body,
        flags=MessageFlag.NONE if reply else MessageFlag.NO_REPLY_EXPECTED,
    )
