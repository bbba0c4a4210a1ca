"""Private sockets: D-Bus peer-to-peer connections without a bus daemon (systemd's
/run/systemd/private and /run/user/UID/systemd/private).

The D-Bus specification's "Authentication Protocol" on the server side (a NUL byte, then
`AUTH EXTERNAL`, optional `NEGOTIATE_UNIX_FD`, `BEGIN`), then messages read and written with
dbus-fast's marshaller. There is no `Hello` and there are no bus names: the caller is known by
its socket's SO_PEERCRED, and only the admitted uids are served. dbus-fast serves the client
side only and GDBusServer would bring a second D-Bus library and a GLib main loop; the
handshake is small, so it is done here on top of dbus-fast's message reader.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import stat
import struct
from collections.abc import Callable, Collection
from dataclasses import dataclass

from dbus_fast import Message
from dbus_fast.aio.message_reader import build_message_reader

log = logging.getLogger(__name__)

# sd-bus sets the sender of every message on systemd's direct connections to the bus name
# (clients match signals on it)
SENDER = "org.freedesktop.systemd1"
MAX_LINE = 16 * 1024  # a handshake line longer than this is garbage
AUTH_TIMEOUT = 30.0  # dbus-daemon(1) auth_timeout: 30 s
MAX_QUEUED = 16 * 1024 * 1024  # bytes waiting for a peer that does not read, then it is dropped
MAX_CONNECTIONS = 4096  # systemd's CONNECTIONS_MAX for its private connections
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class PrivateSocketBusyError(Exception):
    """Another process serves the socket path (never unlinked from under it)."""


@dataclass(frozen=True, slots=True)
class PeerCredentials:
    pid: int
    uid: int
    gid: int


def peer_credentials(sock: socket.socket) -> PeerCredentials:
    """socket(7) SO_PEERCRED: the peer's credentials at connect() time."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return PeerCredentials(pid, uid, gid)


def with_sender(data: bytes | bytearray, sender: str) -> bytes:
    """A marshalled message with a SENDER header field added (dbus-fast, a client library,
    never writes one; the bus daemon adds it on a bus)."""
    if data[0] != ord("l"):
        raise ValueError("only little-endian messages are rewritten")
    end = 16 + int(struct.unpack_from("<I", data, 12)[0])
    body = data[end + (-end % 8) :]
    name = sender.encode()
    # header field 7 (SENDER), a STRING variant, 8-aligned as every header field struct
    field = b"\x07\x01s\x00" + struct.pack("<I", len(name)) + name + b"\x00"
    fields = bytes(data[16:end]) + b"\x00" * (-end % 8) + field
    header = bytes(data[:12]) + struct.pack("<I", len(fields)) + fields
    return header + b"\x00" * (-len(header) % 8) + bytes(body)


class PeerConnection:
    """One authenticated private connection; `name` stands in for a bus name."""

    def __init__(
        self,
        server: PeerServer,
        sock: socket.socket,
        creds: PeerCredentials,
        name: str,
    ) -> None:
        self.server = server
        self.sock = sock
        self.creds = creds
        self.name = name
        self.unix_fds = False
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._fd = sock.fileno()
        self._serial = 0
        self._queue: collections.deque[memoryview] = collections.deque()
        self._queued = 0
        self._line = bytearray()
        self._got_nul = False
        self._authenticated = False
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(
            server.auth_timeout, self._auth_timed_out
        )
        self._loop.add_reader(self._fd, self._read_handshake)

    # -- the handshake ------------------------------------------------------------------

    def _auth_timed_out(self) -> None:
        self.close(f"no complete handshake within {self.server.auth_timeout:g} s")

    def _read_handshake(self) -> None:
        """Read whole lines only: the bytes after BEGIN belong to the message reader."""
        try:
            if not self._got_nul:
                first = self.sock.recv(1)
                if not first:
                    self.close("closed during the handshake")
                    return
                if first != b"\0":
                    self.close("did not begin with the credentials byte")
                    return
                self._got_nul = True
            peeked = self.sock.recv(MAX_LINE, socket.MSG_PEEK)
        except BlockingIOError:
            return
        except OSError as e:
            self.close(f"handshake: {e.strerror}")
            return
        if not peeked:
            self.close("closed during the handshake")
            return
        end = (bytes(self._line[-1:]) + peeked).find(b"\r\n")
        take = len(peeked) if end < 0 else end + 2 - min(len(self._line), 1)
        self._line += self.sock.recv(take)
        if end < 0:
            if len(self._line) > MAX_LINE:
                self.close("sent a handshake line longer than 16 KiB")
            return
        line, self._line = bytes(self._line[:-2]), bytearray()
        try:
            self._handshake_line(line.decode("ascii"))
        except UnicodeDecodeError:
            self.close("sent a handshake line that is not ASCII")

    def _handshake_line(self, line: str) -> None:
        command, _, arg = line.partition(" ")
        if command == "AUTH":
            mechanism, _, initial = arg.partition(" ")
            if mechanism != "EXTERNAL":
                self._write_raw(b"REJECTED EXTERNAL\r\n")
            elif initial:
                self._external(initial)
            else:
                self._write_raw(b"DATA\r\n")  # the identity follows in a DATA line
        elif command == "DATA":
            self._external(arg)
        elif command == "NEGOTIATE_UNIX_FD" and self._authenticated:
            self.unix_fds = True
            self._write_raw(b"AGREE_UNIX_FD\r\n")
        elif command == "BEGIN" and self._authenticated:
            self._begin()
        elif command in ("CANCEL", "ERROR"):
            self._write_raw(b"REJECTED EXTERNAL\r\n")
        else:
            self._write_raw(b'ERROR "unknown command"\r\n')

    def _external(self, hex_identity: str) -> None:
        """EXTERNAL: an empty identity or the decimal uid, hex-encoded, that SO_PEERCRED
        shows (the D-Bus specification; sd-bus sends it empty)."""
        if hex_identity:
            try:
                claimed = bytes.fromhex(hex_identity).decode("ascii")
            except ValueError:
                claimed = ""
            if claimed != str(self.creds.uid):
                self._write_raw(b"REJECTED EXTERNAL\r\n")
                return
        self._authenticated = True
        self._write_raw(f"OK {self.server.guid}\r\n".encode())

    def _begin(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop.remove_reader(self._fd)
        reader = build_message_reader(self.sock, self._on_message, self._on_error, self.unix_fds)
        self._loop.add_reader(self._fd, reader)
        log.debug("private connection %s (pid %d, uid %d) ready", self.name, self.creds.pid,
                  self.creds.uid)  # fmt: skip

    def _write_raw(self, data: bytes) -> None:
        self._queue.append(memoryview(data))
        self._queued += len(data)
        self._flush()

    # -- messages -----------------------------------------------------------------------

    def _on_message(self, msg: Message) -> None:
        if not self.closed:
            self.server.on_message(self, msg)

    def _on_error(self, error: Exception | None) -> None:
        if isinstance(error, EOFError | ConnectionError) or error is None:
            self.close(None)
        else:
            self.close(f"unreadable message: {error}")

    def send(self, msg: Message) -> None:
        """Queue MSG with this connection's own serial; a peer that lets more than
        MAX_QUEUED bytes pile up is dropped."""
        if self.closed or not self._authenticated:
            return
        self._serial = self._serial % 0xFFFFFFFF + 1
        msg.serial = self._serial
        try:
            data = with_sender(bytes(msg._marshall(self.unix_fds)), SENDER)
        finally:
            msg.serial = 0  # the same signal goes to other connections with their serials
        self._queue.append(memoryview(data))
        self._queued += len(data)
        if self._queued > self.server.max_queued:
            self.close(f"does not read its messages ({self._queued} bytes waiting)")
            return
        if len(self._queue) == 1:
            self._flush()

    def _flush(self) -> None:
        while self._queue:
            head = self._queue[0]
            try:
                sent = self.sock.send(head)
            except BlockingIOError:
                self._loop.add_writer(self._fd, self._flush)
                return
            except OSError as e:
                self.close(None if isinstance(e, ConnectionError) else f"write: {e.strerror}")
                return
            self._queued -= sent
            if sent < len(head):
                self._queue[0] = head[sent:]
            else:
                self._queue.popleft()
        self._loop.remove_writer(self._fd)

    def close(self, reason: str | None) -> None:
        """Drop the connection (REASON logged, None for an ordinary disconnect)."""
        if self.closed:
            return
        self.closed = True
        if reason is not None:
            log.warning("private connection %s (pid %d, uid %d) dropped: %s", self.name,
                        self.creds.pid, self.creds.uid, reason)  # fmt: skip
        if self._timer is not None:
            self._timer.cancel()
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        self._queue.clear()
        self.sock.close()
        self.server.forget(self)


class PeerServer:
    """A listening private socket and its connections."""

    def __init__(
        self,
        path: str,
        admitted: Collection[int],
        on_message: Callable[[PeerConnection, Message], None],
        on_close: Callable[[PeerConnection], None],
        *,
        auth_timeout: float = AUTH_TIMEOUT,
        max_queued: int = MAX_QUEUED,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.path = path
        self.admitted = frozenset(admitted)
        self.on_message = on_message
        self._on_close = on_close
        self.auth_timeout = auth_timeout
        self.max_queued = max_queued
        self.max_connections = max_connections
        self.guid = os.urandom(16).hex()
        self.connections: dict[str, PeerConnection] = {}
        self._count = 0
        self._listener: socket.socket | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of our socket file

    def start(self) -> None:
        """Bind and listen; a stale socket file is replaced, a live one is left alone."""
        if os.path.lexists(self.path):
            if _answers(self.path):
                raise PrivateSocketBusyError(f"{self.path} is served by another process")
            if not stat.S_ISSOCK(os.lstat(self.path).st_mode):
                raise PrivateSocketBusyError(f"{self.path} exists and is not a socket")
            os.unlink(self.path)
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o755, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        try:
            sock.bind(self.path)
            # reachable by every local user (as systemd's is); uids not admitted are refused
            # at accept(), with a log line
            os.chmod(self.path, 0o666)
            sock.listen(socket.SOMAXCONN)
        except OSError:
            sock.close()
            raise
        st = os.stat(self.path)
        self._identity = (st.st_dev, st.st_ino)
        self._listener = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._accept)
        log.info("listening on %s (uids %s)", self.path, ", ".join(map(str, sorted(self.admitted))))

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            sock, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            log.warning("%s: accept: %s", self.path, e.strerror)
            return
        sock.setblocking(False)
        try:
            creds = peer_credentials(sock)
        except OSError as e:
            log.warning("%s: no peer credentials: %s", self.path, e.strerror)
            sock.close()
            return
        if creds.uid not in self.admitted:
            log.warning("%s: refused a connection from pid %d uid %d (not admitted)", self.path,
                        creds.pid, creds.uid)  # fmt: skip
            sock.close()
            return
        if len(self.connections) >= self.max_connections:
            log.warning("%s: too many connections, refusing pid %d", self.path, creds.pid)
            sock.close()
            return
        self._count += 1
        name = f"private:{self._count}"
        self.connections[name] = PeerConnection(self, sock, creds, name)

    def broadcast(self, msg: Message) -> None:
        for conn in list(self.connections.values()):
            conn.send(msg)

    def forget(self, conn: PeerConnection) -> None:
        if self.connections.pop(conn.name, None) is not None:
            self._on_close(conn)

    def close(self) -> None:
        """Stop listening, drop every connection, remove the socket file if it is ours."""
        for conn in list(self.connections.values()):
            conn.close(None)
        if self._listener is not None:
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
        if self._identity is not None:
            with contextlib.suppress(OSError):
                st = os.lstat(self.path)
                if (st.st_dev, st.st_ino) == self._identity:
                    os.unlink(self.path)
            self._identity = None


def _answers(path: str) -> bool:
    """Whether something accepts connections on the socket at PATH."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True
