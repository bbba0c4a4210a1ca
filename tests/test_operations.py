"""Operating the daemon: SIGHUP reloads the configuration (a bad file keeps the running one),
SIGTERM leaves units and processes alone (a manager, not their parent), syslog logging."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from tests.conftest import ROOT, PrivateBus, start_bus


@pytest.fixture
async def bus(private_bus: PrivateBus) -> AsyncIterator[MessageBus]:
    b = await MessageBus(bus_address=private_bus.address).connect()
    yield b
    b.disconnect()
    await b.wait_for_disconnect()


async def call(bus: MessageBus, member: str, sig: str, body: list[object]) -> Message:
    reply = await bus.call(
        Message(
            destination="org.freedesktop.systemd1",
            path="/org/freedesktop/systemd1",
            interface="org.freedesktop.systemd1.Manager",
            member=member,
            signature=sig,
            body=body,
        )
    )
    assert reply is not None
    return reply


async def until(bus: MessageBus, member: str, sig: str, body: list[object], want: str) -> Message:
    """Retry a call until it answers with WANT (a message type name or an error name)."""
    for _ in range(250):
        reply = await call(bus, member, sig, body)
        got = reply.error_name or reply.message_type.name
        if got == want:
            return reply
        await asyncio.sleep(0.02)
    raise AssertionError(f"{member} never answered {want}; last: {got} {reply.body}")


def serve(address: str, tmp: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "shim", "serve", "--address", address, "--backend", "fake",
         "--cgroup-root", str(tmp / "cg"), "--state-dir", str(tmp / "state"), *extra],
        cwd=ROOT, stderr=subprocess.PIPE,
    )  # fmt: skip


class LogLines:
    """The daemon's standard error, read line by line in a thread; wait for a line by text."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        self.lines: list[str] = []
        self._stream = proc.stderr
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for raw in self._stream:
            self.lines.append(raw.decode(errors="replace"))

    async def wait_for(self, text: str, seen: int = 0) -> int:
        """Wait until a line after the first SEEN lines contains TEXT; its index. No clock:
        pytest's timeout ends a daemon that never writes it."""
        while True:
            for i in range(seen, len(self.lines)):
                if text in self.lines[i]:
                    return i
            if not self._thread.is_alive():
                raise AssertionError(f"the daemon exited without logging {text!r}")
            await asyncio.sleep(0.01)

    def close(self) -> str:
        """Once the daemon has exited: everything it wrote."""
        self._thread.join(timeout=10)
        self._stream.close()
        return "".join(self.lines)


async def test_sighup_reloads_and_a_bad_file_keeps_the_running_config(
    private_bus: PrivateBus, bus: MessageBus, tmp_path: Path
) -> None:
    # the [units] policy applies to units loaded from then on (daemon.py's _reload_config), so
    # each step asks about a user manager not loaded before: the default "masked" refuses it
    # with UnitMasked, "noop" starts it
    conf = tmp_path / "scopeshim.toml"
    conf.write_text('[units]\nuser_manager = "masked"\nruntime_dir_helper = ""\n')
    proc = serve(private_bus.address, tmp_path, "--config", str(conf))
    log = LogLines(proc)
    masked = "org.freedesktop.systemd1.UnitMasked"
    try:
        await until(bus, "StartUnit", "ss", ["user@0.service", "replace"], masked)
        conf.write_text('[units]\nuser_manager = "noop"\nruntime_dir_helper = ""\n')
        proc.send_signal(signal.SIGHUP)
        seen = await log.wait_for("SIGHUP: reloaded")
        reply = await call(bus, "StartUnit", "ss", ["user@1.service", "replace"])
        assert reply.message_type is MessageType.METHOD_RETURN, reply.body
        conf.write_text('[units]\nuser_manager = "sometimes"\n')
        proc.send_signal(signal.SIGHUP)
        line = log.lines[await log.wait_for("SIGHUP: keeping the running configuration", seen)]
        assert "units.user_manager" in line
        # still "noop", not the defaults ("masked") nor anything half-read from the bad file
        reply = await call(bus, "StartUnit", "ss", ["user@2.service", "replace"])
        assert reply.message_type is MessageType.METHOD_RETURN, (reply.error_name, reply.body)
        reply = await call(bus, "StartUnit", "ss", ["user@0.service", "replace"])
        assert reply.message_type is MessageType.METHOD_RETURN, (reply.error_name, reply.body)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        text = log.close()
    assert proc.returncode == 0, text


async def test_sigterm_leaves_units_and_processes(
    private_bus: PrivateBus, bus: MessageBus, tmp_path: Path, processes
) -> None:
    sleeper = processes()
    proc = serve(private_bus.address, tmp_path)
    try:
        reply = await until(
            bus, "StartTransientUnit", "ssa(sv)a(sa(sv))",
            ["kept.scope", "fail", [["PIDs", Variant("au", [sleeper.pid])]], []],
            "METHOD_RETURN",
        )  # fmt: skip
        await asyncio.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert sleeper.poll() is None  # not killed: scopeshim is not its parent
    assert (tmp_path / "cg/system.slice/kept.scope").is_dir()
    # and a new daemon takes the unit over
    proc = serve(private_bus.address, tmp_path)
    try:
        reply = await until(bus, "GetUnit", "s", ["kept.scope"], "METHOD_RETURN")
        assert reply.body == ["/org/freedesktop/systemd1/unit/kept_2escope"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)


def test_syslog_target_falls_back_to_stderr_without_dev_log(private_bus, tmp_path) -> None:
    """--log-target syslog writes to /dev/log; where there is none, stderr (with a note)."""
    proc = subprocess.run(
        [sys.executable, "-m", "shim", "serve", "--address", private_bus.address,
         "--backend", "fake", "--state-dir", str(tmp_path), "--exit-on-idle", "0.2",
         "--log-target", "syslog"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0
    if Path("/dev/log").exists():
        assert "idle for 0.2 s" not in proc.stderr  # the log line went to syslog
    else:
        assert "no syslog" in proc.stderr and "idle for 0.2 s" in proc.stderr


async def test_losing_the_bus_logs_it_once_without_a_traceback(tmp_path: Path, processes) -> None:
    """The bus dies while units end and a SIGTERM arrives: one line says so, and what was
    still to be sent is dropped, not tried on the closed connection (a traceback per send)."""
    (tmp_path / "bus").mkdir()
    dbus = start_bus(tmp_path / "bus")
    client = await MessageBus(bus_address=dbus.address).connect()
    sleepers = [processes() for _ in range(20)]
    proc = serve(dbus.address, tmp_path, "--private-socket", str(tmp_path / "private"))
    log = LogLines(proc)
    try:
        for n, sleeper in enumerate(sleepers):
            await until(
                client, "StartTransientUnit", "ssa(sv)a(sa(sv))",
                [f"gone-{n}.scope", "fail", [["PIDs", Variant("au", [sleeper.pid])]], []],
                "METHOD_RETURN",
            )  # fmt: skip
        await call(client, "Subscribe", "", [])
        dbus.process.kill()
        for sleeper in sleepers:  # each unit ends: signals to send on a bus that is gone
            sleeper.kill()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        dbus.process.kill()
        dbus.process.wait()
        client.disconnect()
    text = log.close()
    assert "Traceback" not in text, text
    assert "never retrieved" not in text, text
