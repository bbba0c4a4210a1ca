"""Shared fixtures: a private dbus-daemon, scopeshim in-process with the fake backend, clients."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from backends.fake import FakeBackend
from shim.bus.daemon import Options, serve
from shim.bus.service import Service
from shim.core.policy import Policy

ROOT = Path(__file__).resolve().parent.parent
BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
  <limit name="max_replies_per_connection">50000</limit>
  <limit name="max_match_rules_per_connection">50000</limit>
</busconfig>
"""

MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER_IFACE = "org.freedesktop.systemd1.Manager"
SYSTEMD1 = "org.freedesktop.systemd1"


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        f"dbus-daemon: {shutil.which('dbus-daemon')}, busctl: {shutil.which('busctl')}, "
        f"gdbus: {shutil.which('gdbus')}, uid {os.getuid()}"
    ]


@dataclass
class PrivateBus:
    address: str
    process: subprocess.Popen[bytes]


def start_bus(d: Path, everyone: bool = False, name: str = "bus", limits: str = "") -> PrivateBus:
    """A dbus-daemon listening on D/NAME.sock (the caller terminates it). EVERYONE: every uid
    may connect (a session-type bus admits only its owner otherwise); LIMITS: more <limit>s."""
    socket = d / f"{name}.sock"
    conf = d / f"{name}.conf"
    config = BUS_CONFIG.replace("</busconfig>", limits + "</busconfig>")
    if everyone:
        config = config.replace(
            '<policy context="default">', '<policy context="default">\n    <allow user="*"/>'
        )
    conf.write_text(config.format(socket=socket))
    log = d / f"{name}-daemon.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [
                "dbus-daemon",
                f"--config-file={conf}",
                "--nofork",
                "--nopidfile",
                "--print-address=1",
            ],
            stdout=subprocess.PIPE,
            stderr=err,
        )
    assert proc.stdout is not None
    address = proc.stdout.readline().decode().strip()
    proc.stdout.close()
    if not address:
        proc.kill()
        proc.wait()
        pytest.fail(f"dbus-daemon did not start: {log.read_text()}")
    return PrivateBus(address, proc)


@pytest.fixture(scope="session")
def private_bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBus]:
    """A private dbus-daemon (never the host's buses), for the whole session."""
    if shutil.which("dbus-daemon") is None:
        pytest.skip("dbus-daemon is not installed (apt-get install dbus-daemon)")
    bus = start_bus(tmp_path_factory.mktemp("bus"))
    yield bus
    bus.process.terminate()
    bus.process.wait(timeout=10)


def idle_witness(d: Path, exit_on_idle: str, rounds: int = 2) -> None:
    """Let a daemon with nothing to look after and --exit-on-idle EXIT_ON_IDLE, on a bus of its
    own in D, leave by itself ROUNDS times: afterwards another daemon started before it with
    the same setting has had at least as long to leave if it was going to, measured by the
    same daemon code on the same loaded machine instead of by a sleep."""
    d.mkdir(exist_ok=True)
    bus = start_bus(d)
    try:
        for n in range(rounds):
            proc = subprocess.run(
                [sys.executable, "-m", "shim", "serve", "--address", bus.address,
                 "--backend", "fake", "--state-dir", str(d / f"state{n}"),
                 "--exit-on-idle", exit_on_idle],
                cwd=ROOT, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert proc.returncode == 0 and "exiting" in proc.stderr, proc.stderr
    finally:
        bus.process.terminate()
        bus.process.wait(timeout=10)


@dataclass
class Daemon:
    """scopeshim running in the test's event loop, with the fake backend."""

    service: Service
    backend: FakeBackend
    address: str

    @property
    def manager(self) -> Any:
        return self.service.manager


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    """What stands behind handled units; modules override this fixture to change it."""
    return Policy.harmless(tmp_path)


@pytest.fixture
async def daemon(private_bus: PrivateBus, tmp_path: Path, policy: Policy) -> AsyncIterator[Daemon]:
    backend = FakeBackend(tmp_path / "cgroupfs")
    service = await serve(Options(address=private_bus.address, policy=policy), backend)
    yield Daemon(service, backend, private_bus.address)
    service.close()
    service.manager.close()
    service.bus.disconnect()
    await service.bus.wait_for_disconnect()
    backend.close()


@dataclass
class Client:
    """A dbus-fast client with helpers for calls and for the signals it has seen."""

    bus: MessageBus
    signals: list[Message] = field(default_factory=list, repr=False)
    _waiters: list[tuple[Callable[[Message], bool], asyncio.Future[Message]]] = field(
        default_factory=list, repr=False
    )

    async def call(
        self,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
        *,
        path: str = MANAGER_PATH,
        interface: str | None = MANAGER_IFACE,
        destination: str = SYSTEMD1,
        unix_fds: list[int] | None = None,
    ) -> Message:
        reply = await self.bus.call(
            Message(
                destination=destination,
                path=path,
                interface=interface,
                member=member,
                signature=signature,
                body=body or [],
                unix_fds=unix_fds or [],
            )
        )
        assert reply is not None
        return reply

    async def ok(
        self, member: str, signature: str = "", body: list[Any] | None = None, **kw: Any
    ) -> list[Any]:
        reply = await self.call(member, signature, body, **kw)
        assert reply.message_type is MessageType.METHOD_RETURN, (
            f"{member} failed: {reply.error_name}: {reply.body}"
        )
        return list(reply.body)

    async def error(
        self, member: str, signature: str = "", body: list[Any] | None = None, **kw: Any
    ) -> tuple[str, str]:
        reply = await self.call(member, signature, body, **kw)
        assert reply.message_type is MessageType.ERROR, f"{member} unexpectedly succeeded"
        return reply.error_name or "", reply.body[0] if reply.body else ""

    async def get(self, path: str, interface: str, name: str) -> Any:
        (value,) = await self.ok(
            "Get", "ss", [interface, name], path=path, interface="org.freedesktop.DBus.Properties"
        )
        return value.value

    def _on_message(self, msg: Message) -> None:
        if msg.message_type is not MessageType.SIGNAL:
            return
        self.signals.append(msg)
        for pred, fut in list(self._waiters):
            if not fut.done() and pred(msg):
                fut.set_result(msg)

    async def wait_signal(self, pred: Callable[[Message], bool], timeout: float = 10) -> Message:
        for msg in self.signals:
            if pred(msg):
                return msg
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiters.append((pred, fut))
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._waiters.remove((pred, fut))


@pytest.fixture
async def client(daemon: Daemon) -> AsyncIterator[Client]:
    bus = await MessageBus(bus_address=daemon.address, negotiate_unix_fd=True).connect()
    c = Client(bus)
    bus.add_message_handler(c._on_message)
    await c.ok(
        "AddMatch",
        "s",
        [f"type='signal',sender='{SYSTEMD1}'"],
        path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus",
        destination="org.freedesktop.DBus",
    )
    yield c
    bus.disconnect()
    await bus.wait_for_disconnect()


def dead_pid() -> int:
    """A PID no process has, now or later in the test: pid_max itself (proc(5): PIDs stay
    below /proc/sys/kernel/pid_max). A process that has exited frees a PID that a busy
    machine hands out again within seconds (pid_max is 32768 on the CI machine), which made
    'a dead PID' tests fail now and then."""
    return int(Path("/proc/sys/kernel/pid_max").read_text())


def sleeper(seconds: int = 300, ignore_term: bool = False) -> subprocess.Popen[bytes]:
    """A real child process to put into scopes (the caller must reap it)."""
    code = (
        "import signal,time\n"
        + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_term else "")
        + "print('ready', flush=True)\n"
        + f"time.sleep({seconds})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()
    proc.stdout.close()
    return proc


@pytest.fixture
def processes() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start sleeper processes; every one is killed and reaped at teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(seconds: int = 300, ignore_term: bool = False) -> subprocess.Popen[bytes]:
        p = sleeper(seconds, ignore_term)
        started.append(p)
        return p

    yield start
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)


@pytest.fixture
def fuzz_sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """One long-lived process that generated calls may put into scopes."""
    p = sleeper()
    yield p
    if p.poll() is None:
        p.kill()
    p.wait(timeout=10)
