"""Operating the daemon: SIGHUP reloads the configuration (a bad file keeps the running one),
SIGTERM leaves units and processes alone (a manager, not their parent), syslog logging."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from tests.conftest import ROOT, PrivateBus


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


async def test_sighup_reloads_and_a_bad_file_keeps_the_running_config(
    private_bus: PrivateBus, bus: MessageBus, tmp_path: Path
) -> None:
    conf = tmp_path / "scopeshim.toml"
    conf.write_text('[units]\nuser_manager = "masked"\nruntime_dir_helper = ""\n')
    proc = serve(private_bus.address, tmp_path, "--config", str(conf))
    try:
        masked = "org.freedesktop.systemd1.UnitMasked"
        await until(bus, "StartUnit", "ss", ["user@0.service", "replace"], masked)
        conf.write_text('[units]\nuser_manager = "noop"\nruntime_dir_helper = ""\n')
        proc.send_signal(signal.SIGHUP)
        await until(bus, "StartUnit", "ss", ["user@0.service", "replace"], "METHOD_RETURN")
        conf.write_text('[units]\nuser_manager = "sometimes"\n')
        proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.3)
        reply = await call(bus, "StopUnit", "ss", ["user@0.service", "replace"])
        assert reply.message_type is MessageType.METHOD_RETURN  # still up, still noop
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    log = err.decode()
    assert proc.returncode == 0
    assert "SIGHUP: reloaded" in log
    assert "SIGHUP: keeping the running configuration" in log and "units.user_manager" in log


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
