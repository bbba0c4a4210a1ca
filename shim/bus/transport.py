"""The bus connection's writer, made to survive a full socket buffer; calls to the bus driver.

dbus-fast (5.2, as python-dbus-next before it: python-dbus-next issue #153) treats EAGAIN from
`send()` on its non-blocking socket as fatal and drops the connection. A manager that
broadcasts signals in bursts (50 clients starting scopes at once) fills the buffer: the
daemon lost the bus. This writer waits for the socket to be writable instead, and writes the
messages queued in one turn of the event loop with one send() (issue 20: one send per message
was a fifth of the daemon's busy time on the stop path). Once the connection is gone, what is
still sent is dropped (dbus-fast would register the closed descriptor again).
"""

from __future__ import annotations

import array
import socket
from typing import Any

from dbus_fast import Message, MessageFlag
from dbus_fast.aio import message_bus
from dbus_fast.aio.message_bus import MessageBus

DRIVER = "org.freedesktop.DBus"  # the bus driver's name, path and interface (D-Bus spec)

# one write carries at most this much: several messages queued in one turn of the event loop
# (a reply and the signals its call caused) go out in one send(), not one each
BATCH_BYTES = 64 * 1024
DEFER = 3


class _PatientWriter(message_bus._MessageWriter):
    """_MessageWriter whose write_callback keeps its place on EAGAIN and which writes the
    messages queued during one turn of the event loop together, in order."""

    futs: list[Any]
    scheduled: bool
    deferred: int

    def schedule_write(self, msg: Any = None, future: Any = None) -> None:
        if self.bus._disconnected:
            # the daemon is on its way out (daemon.serve logs the loss once)
            if future is not None and not future.done():
                future.set_result(None)
            return
        if msg is not None:
            self.buffer_message(msg, future)
        if self.bus.unique_name and not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self._soon)

    def _soon(self) -> None:
        """Once the callbacks ready now have run (the state write, job dispatch and signal
        flush a call set off each take a turn), at most DEFER turns later: more per send."""
        ready: Any = getattr(self.loop, "_ready", None)
        if ready and self.deferred < DEFER:
            self.deferred += 1
            self.loop.call_soon(self._soon)
            return
        self.flush()

    def flush(self) -> None:
        """Write what is queued now; what the socket does not take waits for writability."""
        self.scheduled = False
        self.deferred = 0
        if self.bus._disconnected:
            return
        self.write_callback(remove_writer=False)
        fd: Any = self.fd
        if self.buf is not None or self.messages:
            self.loop.add_writer(fd, self.write_callback)

    def _next(self) -> bool:
        """Take the next buffer: one message with fds, or messages without, joined."""
        if not self.messages:
            return False
        buf, unix_fds, fut = self.messages.popleft()
        self.futs = [fut]
        if not unix_fds:
            joined: bytearray | None = None
            while self.messages and not self.messages[0][1]:
                if len(buf) + len(self.messages[0][0]) > BATCH_BYTES:
                    break
                if joined is None:
                    joined = bytearray(buf)
                more, _, fut = self.messages.popleft()
                joined += more
                self.futs.append(fut)
            if joined is not None:
                buf = joined
        self.unix_fds = unix_fds
        self.buf = memoryview(buf)
        self.offset = 0
        return True

    def _done(self, error: Exception | None = None) -> None:
        for fut in self.futs:
            if fut is not None and not fut.done():
                if error is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(error)
                    fut.exception()  # a send nobody awaits: no "never retrieved" noise
        self.futs = []

    def write_callback(self, remove_writer: bool = True) -> None:
        sock: Any = self.sock
        fd: Any = self.fd
        try:
            while True:
                if self.buf is None and not self._next():
                    if remove_writer:
                        self.loop.remove_writer(fd)
                    return
                assert self.buf is not None
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
                self._done()
        except Exception as e:
            self._done(None if self.bus._user_disconnect else e)
            self.bus._finalize(e)


def flush(bus: MessageBus) -> None:
    """Write now what is queued (before a disconnect): the batching writer waits for the end
    of the event loop's turn otherwise."""
    writer = bus._writer
    if isinstance(writer, _PatientWriter) and bus.connected:
        writer.flush()


def patient(bus: MessageBus) -> MessageBus:
    """Give a connected bus the writer above (same state, other write_callback)."""
    writer = bus._writer
    if writer is not None and type(writer) is message_bus._MessageWriter:
        writer.__class__ = _PatientWriter
        assert isinstance(writer, _PatientWriter)
        writer.futs = [writer.fut] if writer.fut is not None else []
        writer.scheduled = False
        writer.deferred = 0
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
