"""The private socket (shim/bus/peer.py): peer-to-peer calls and signals as on the bus, only
admitted uids, and bad peers dropped alone (the daemon and its other connections go on)."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dbus_fast import MessageType

from backends.fake import FakeBackend
from shim.bus.daemon import Options, serve
from shim.bus.peer import PeerServer, PrivateSocketBusyError
from tests.bus.peer_client import PeerClient
from tests.conftest import Client, Daemon, PrivateBus

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def daemon(private_bus: PrivateBus, tmp_path: Path, policy) -> AsyncIterator[Daemon]:
    """The conftest daemon, also listening on a private socket in TMP_PATH (uid 0 and ours)."""
    backend = FakeBackend(tmp_path / "cgroupfs")
    reachable = Path(tempfile.mkdtemp(prefix="scopeshim-test-private-"))
    reachable.chmod(0o755)  # uid 65534 must reach the socket to be refused by the daemon
    options = Options(
        address=private_bus.address,
        policy=policy,
        private_socket=str(reachable / "private"),
        private_uids=frozenset({0, os.getuid()}),
    )
    service = await serve(options, backend)
    yield Daemon(service, backend, private_bus.address)
    service.close()
    service.manager.close()
    service.bus.disconnect()
    await service.bus.wait_for_disconnect()
    backend.close()
    shutil.rmtree(reachable, ignore_errors=True)


@pytest.fixture
def socket_path(daemon: Daemon) -> str:
    return daemon.service.peer_servers[0].path


@pytest.fixture
async def peer(socket_path: str) -> AsyncIterator[PeerClient]:
    c = await PeerClient.connect(socket_path)
    yield c
    c.close()


async def _start_scope(c: PeerClient | Client, name: str, pid: int) -> str:
    (job,) = await c.ok(
        "StartTransientUnit",
        "ssa(sv)a(sa(sv))",
        [name, "fail", [["PIDs", _variant("au", [pid])]], []],
    )
    return str(job)


def _variant(sig: str, value: object):
    from dbus_fast import Variant

    return Variant(sig, value)


async def test_handshake_as_sd_bus_sends_it(peer: PeerClient) -> None:
    lines = peer.greeting.split(b"\r\n")
    assert lines[0] == b"DATA"
    assert lines[1].startswith(b"OK ") and len(lines[1]) == 3 + 32
    assert lines[2] == b"AGREE_UNIX_FD"


async def test_calls_signals_and_sender(peer: PeerClient, processes) -> None:
    """A scope started over the private socket; JobRemoved arrives there without any
    Subscribe or match (systemd sends its signals to direct connections unconditionally),
    every message carries the sender sd-bus's matches expect, serials increase."""
    (version,) = await peer.ok(
        "Get", "ss", ["org.freedesktop.systemd1.Manager", "Version"],
        path="/org/freedesktop/systemd1", interface="org.freedesktop.DBus.Properties",
    )  # fmt: skip
    assert version.value == "252"
    p = processes()
    job = await _start_scope(peer, "peer-test.scope", p.pid)
    removed = await peer.wait_signal("JobRemoved", lambda m: m.body[1] == job)
    assert removed.body[1] == job and removed.body[3] == "done"
    assert removed.sender == "org.freedesktop.systemd1"
    assert removed.path == "/org/freedesktop/systemd1"
    assert peer.serials == sorted(set(peer.serials))
    (unit,) = await peer.ok("GetUnit", "s", ["peer-test.scope"])
    state = await peer.ok(
        "Get", "ss", ["org.freedesktop.systemd1.Unit", "ActiveState"],
        path=unit, interface="org.freedesktop.DBus.Properties",
    )  # fmt: skip
    assert state[0].value == "active"


async def test_same_answers_as_on_the_bus(peer: PeerClient, client: Client) -> None:
    for member, sig, body in [
        ("GetUnit", "s", ["-.slice"]),
        ("GetUnit", "s", ["nope.scope"]),
        ("LoadUnit", "s", ["bad..name"]),
        ("ListUnits", "", []),
        ("StartTransientUnit", "ssa(sv)a(sa(sv))", ["x.scope", "fail", [], []]),
    ]:
        on_bus = await client.call(member, sig, body)
        on_peer = await peer.call(member, sig, body)
        assert on_peer.message_type == on_bus.message_type, member
        assert on_peer.error_name == on_bus.error_name, member
        assert on_peer.body == on_bus.body, member
    xml_bus = await client.ok("Introspect", path="/org/freedesktop/systemd1",
                              interface="org.freedesktop.DBus.Introspectable")  # fmt: skip
    xml_peer = await peer.ok("Introspect", path="/org/freedesktop/systemd1",
                             interface="org.freedesktop.DBus.Introspectable")  # fmt: skip
    assert xml_bus == xml_peer


async def test_references_of_a_closed_connection_are_dropped(
    peer: PeerClient, client: Client, processes
) -> None:
    p = processes()
    await _start_scope(client, "ref-test.scope", p.pid)
    await client.wait_signal(lambda m: m.member == "JobRemoved")
    await peer.ok("RefUnit", "s", ["ref-test.scope"])
    (path,) = await client.ok("GetUnit", "s", ["ref-test.scope"])
    refs = await client.get(path, "org.freedesktop.systemd1.Unit", "Refs")
    assert len(refs) == 1 and refs[0].startswith("private:")
    peer.close()
    for _ in range(200):
        if not await client.get(path, "org.freedesktop.systemd1.Unit", "Refs"):
            break
        await asyncio.sleep(0.01)
    assert await client.get(path, "org.freedesktop.systemd1.Unit", "Refs") == []


def _as_nobody(path: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import os,socket\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "s=socket.socket(socket.AF_UNIX); s.connect(os.environ['P'])\n"
        "try:\n"
        "    s.sendall(b'\\0AUTH EXTERNAL\\r\\nDATA\\r\\nBEGIN\\r\\n')\n"
        "    print('closed' if s.recv(100) == b'' else 'answered')\n"
        "except (ConnectionResetError, BrokenPipeError):\n    print('closed')\n"
    )
    return subprocess.run([sys.executable, "-c", code], env={"P": path}, capture_output=True,
                          text=True, timeout=30)  # fmt: skip


@pytest.mark.skipif(os.getuid() != 0, reason="switching to uid 65534 needs root")
async def test_a_uid_not_admitted_is_refused(
    socket_path: str, peer: PeerClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="shim.bus.peer")
    done = await asyncio.to_thread(_as_nobody, socket_path)
    assert done.stdout.strip() == "closed", done.stdout + done.stderr  # nothing said
    assert "refused a connection" in caplog.text and "uid 65534" in caplog.text
    (path,) = await peer.ok("GetUnit", "s", ["-.slice"])
    assert path == "/org/freedesktop/systemd1/unit/_2d_2eslice"


async def _count(daemon: Daemon, ok) -> None:
    for _ in range(1000):
        if ok(len(daemon.service.peer_servers[0].connections)):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the connection count never got there")


async def _dropped(daemon: Daemon, before: int) -> None:
    await _count(daemon, lambda n: n <= before)


async def _bad_peer(daemon: Daemon, path: str, data: bytes) -> socket.socket:
    """A raw connection that sends DATA, once the daemon has accepted it."""
    before = len(daemon.service.peer_servers[0].connections)
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX)
    sock.setblocking(False)
    await loop.sock_connect(sock, path)
    await _count(daemon, lambda n: n > before)
    await loop.sock_sendall(sock, data)
    return sock


async def _read_all(sock: socket.socket) -> bytes:
    loop, out = asyncio.get_running_loop(), b""
    while chunk := await asyncio.wait_for(loop.sock_recv(sock, 4096), 10):
        out += chunk
    return out


async def test_a_peer_that_never_finishes_the_handshake(
    daemon: Daemon, socket_path: str, peer: PeerClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="shim.bus.peer")
    daemon.service.peer_servers[0].auth_timeout = 0.2
    stalled = await _bad_peer(daemon, socket_path, b"\0AUTH EXTERNAL\r\n")  # nothing more
    await _dropped(daemon, 1)
    assert "no complete handshake" in caplog.text
    assert await _read_all(stalled) == b"DATA\r\n"
    stalled.close()
    assert await peer.ok("GetUnit", "s", ["-.slice"])


@pytest.mark.parametrize(
    ("data", "logged"),
    [
        (os.urandom(4096).replace(b"\0", b"x"), "credentials byte"),
        (b"\0" + b"A" * 40000, "longer than 16 KiB"),
        (b"\0AUTH EXTERNAL\r\nDATA\r\nBEGIN\r\n" + b"\xff" * 64, "unreadable message"),
        # a header announcing a 200 MB body (the D-Bus limit is 128 MiB)
        (b"\0AUTH EXTERNAL\r\nDATA\r\nBEGIN\r\n"
         + b"l\x01\x00\x01" + struct.pack("<III", 200_000_000, 1, 0), "unreadable message"),
        (b"\0AUTH EXTERNAL\r\nDATA\r\nBEGIN\r\n\xff\xfe", None),  # garbage, then a close
    ],
    ids=["random-bytes", "endless-line", "garbage-after-begin", "huge-message", "cut-off"],
)  # fmt: skip
async def test_bad_input_drops_that_peer_only(
    daemon: Daemon,
    socket_path: str,
    peer: PeerClient,
    client: Client,
    caplog: pytest.LogCaptureFixture,
    data: bytes,
    logged: str | None,
) -> None:
    caplog.set_level(logging.WARNING, logger="shim.bus.peer")
    bad = await _bad_peer(daemon, socket_path, data)
    if logged is None:
        bad.close()
    await _dropped(daemon, 1)
    if logged is not None:
        assert logged in caplog.text
    bad.close()
    assert await peer.ok("GetUnit", "s", ["-.slice"])
    assert await client.ok("GetUnit", "s", ["-.slice"])


async def test_a_peer_that_stops_reading_is_dropped(
    daemon: Daemon, peer: PeerClient, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """Signals pile up for a peer that never reads; past the bound it is dropped, and the
    reading peer and the bus client receive every signal."""
    caplog.set_level(logging.WARNING, logger="shim.bus.peer")
    daemon.service.peer_servers[0].max_queued = 64 * 1024
    deaf = await PeerClient.connect(daemon.service.peer_servers[0].path)
    asyncio.get_running_loop().remove_reader(deaf.sock.fileno())  # never reads again
    deaf.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    for i in range(300):
        await client.ok("StartUnit", "ss", [f"flood-{i}.slice", "fail"])
        if len(daemon.service.peer_servers[0].connections) == 1:
            break
    await _dropped(daemon, 1)
    assert "does not read its messages" in caplog.text
    assert await peer.ok("GetUnit", "s", ["-.slice"])
    deaf.sock.close()


async def test_disconnect_in_the_middle_of_a_call(
    daemon: Daemon, socket_path: str, client: Client, processes
) -> None:
    """A caller that sends StartTransientUnit and goes before the reply: the unit is
    created and started all the same (the answer was owed, not the work undone)."""
    p = processes()
    gone = await PeerClient.connect(socket_path)
    from dbus_fast import Message, Variant

    body = ["gone.scope", "fail", [["PIDs", Variant("au", [p.pid])]], []]
    gone.send(Message(path="/org/freedesktop/systemd1",
                      interface="org.freedesktop.systemd1.Manager", member="StartTransientUnit",
                      signature="ssa(sv)a(sa(sv))", body=body))  # fmt: skip
    gone.close()
    removed = await client.wait_signal(
        lambda m: m.member == "JobRemoved" and m.body[2] == "gone.scope"
    )
    assert removed.body[3] == "done"
    await _dropped(daemon, 0)


async def test_calls_without_reply_expected(peer: PeerClient) -> None:
    from dbus_fast import Message

    msg = Message(path="/org/freedesktop/systemd1", interface="org.freedesktop.DBus.Peer",
                  member="Ping", flags=1)  # fmt: skip
    peer.send(msg)
    (path,) = await peer.ok("GetUnit", "s", ["-.slice"])
    assert path and not [s for s in peer.signals if s.message_type is MessageType.ERROR]


async def test_a_live_socket_is_never_taken_over(tmp_path: Path) -> None:
    path = str(tmp_path / "busy")
    other = socket.socket(socket.AF_UNIX)
    other.bind(path)
    other.listen()
    server = PeerServer(path, {0}, lambda c, m: None, lambda c: None)
    with pytest.raises(PrivateSocketBusyError):
        server.start()
    assert os.path.exists(path)
    other.close()
    # a stale socket (nobody listening) is replaced, and removed at close as ours
    server.start()
    server.close()
    assert not os.path.exists(path)


async def test_the_socket_is_removed_at_exit_only_if_ours(tmp_path: Path) -> None:
    path = str(tmp_path / "mine")
    server = PeerServer(path, {0}, lambda c, m: None, lambda c: None)
    server.start()
    assert os.stat(path).st_mode & 0o777 == 0o666
    os.unlink(path)
    replacement = socket.socket(socket.AF_UNIX)
    replacement.bind(path)  # somebody else's now
    server.close()
    assert os.path.exists(path)
    replacement.close()


def _systemctl_in_namespace(address: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    """Root's systemctl (252) in a mount namespace whose /run/systemd is a tmpfs holding only
    scopeshim's private socket: no SYSTEMCTL_FORCE_BUS, nothing else to fall back to."""
    script = f"""
set -e
mount -t tmpfs tmpfs /run/systemd
mkdir /run/systemd/system
export DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent
{sys.executable} -m shim serve --address '{address}' --backend fake --state-dir '{state_dir}' \
  --private-socket /run/systemd/private --log-level debug 2> '{state_dir}/daemon.log' &
pid=$!
for i in $(seq 100); do [ -S /run/systemd/private ] && break; sleep 0.1; done
systemctl --no-pager show -p Version -p ControlGroup
systemctl --no-pager list-units --all '*.slice' --no-legend
status=$?
kill $pid; wait $pid || true
[ ! -e /run/systemd/private ] && echo removed
exit $status
"""
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


@pytest.mark.skipif(os.getuid() != 0, reason="a mount namespace for /run/systemd needs root")
@pytest.mark.skipif(shutil.which("systemctl") is None, reason="systemctl is not installed")
async def test_root_systemctl_over_the_private_socket(private_bus: PrivateBus,
                                                      tmp_path: Path) -> None:  # fmt: skip
    """The system bus is unreachable in the namespace: every answer came over the socket."""
    done = await asyncio.to_thread(_systemctl_in_namespace, private_bus.address, tmp_path)
    log = (tmp_path / "daemon.log").read_text()
    assert done.returncode == 0, done.stdout + done.stderr + log
    assert "Version=252" in done.stdout
    assert "-.slice" in done.stdout
    assert "removed" in done.stdout
    assert "unknown member" not in log, log
