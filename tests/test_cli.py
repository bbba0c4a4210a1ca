"""The CLI contract: `scopeshim serve` / `python -m shim serve` own the name, exit 0 on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from tests.conftest import idle_witness

ROOT = Path(__file__).resolve().parent.parent


def _owner(address: str) -> bool:
    r = subprocess.run(
        ["busctl", f"--address={address}", "status", "org.freedesktop.systemd1"],
        capture_output=True,
        timeout=10,
    )
    return r.returncode == 0


def _wait_owner(address: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _owner(address):
            return
        time.sleep(0.05)
    raise AssertionError("scopeshim did not own org.freedesktop.systemd1 in time")


def serve_args(address: str, tmp_path: Path) -> list[str]:
    return [
        "serve",
        "--address",
        address,
        "--backend",
        "fake",
        "--cgroup-root",
        str(tmp_path / "cg"),
        "--state-dir",
        str(tmp_path / "state"),
    ]


@pytest.fixture
def busctl() -> None:
    if shutil.which("busctl") is None:
        pytest.skip("busctl is not installed (apt-get install systemd)")


@pytest.mark.parametrize("argv0", [[sys.executable, "-m", "shim"], ["scopeshim"]])
def test_serve_owns_the_name_and_exits_0_on_sigterm(private_bus, tmp_path, busctl, argv0):
    if argv0 == ["scopeshim"]:
        exe = Path(sys.executable).parent / "scopeshim"
        if not exe.exists():
            pytest.skip("the scopeshim entry point is not installed (make venv)")
        argv0 = [str(exe)]
    proc = subprocess.Popen(
        [*argv0, *serve_args(private_bus.address, tmp_path)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_owner(private_bus.address)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert not _owner(private_bus.address)
    assert "Traceback" not in err


def test_second_instance_refuses_with_a_clear_message(private_bus, tmp_path, busctl):
    args = [sys.executable, "-m", "shim", *serve_args(private_bus.address, tmp_path)]
    first = subprocess.Popen(args, cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        _wait_owner(private_bus.address)
        second = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=20)
        assert second.returncode == 1
        assert "already owned" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=10) == 0


def test_bad_config_names_the_key(tmp_path):
    conf = tmp_path / "scopeshim.toml"
    conf.write_text('[serve]\nbackend = "cgroup9"\n')
    r = subprocess.run(
        [sys.executable, "-m", "shim", "serve", "--config", str(conf)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert r.returncode == 2
    assert "serve.backend" in r.stderr and "Traceback" not in r.stderr
    conf.write_text("[serve\n")
    r = subprocess.run(
        [sys.executable, "-m", "shim", "serve", "--config", str(conf)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert r.returncode == 2 and "line 1" in r.stderr


def test_unreachable_bus_is_a_clear_error(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "shim",
            "serve",
            "--address",
            f"unix:path={tmp_path}/nobus",
            "--backend",
            "fake",
            "--cgroup-root",
            str(tmp_path / "cg"),
            "--state-dir",
            str(tmp_path / "s"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert r.returncode == 1
    assert "cannot connect to the bus" in r.stderr and "Traceback" not in r.stderr


def test_daemon_start_up_does_not_import_pydantic():
    code = (
        "import sys, shim.cli, shim.bus.daemon, shim.bus.service, backends.fake\n"
        "print('pydantic' in sys.modules)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=20,
    )
    assert r.stdout.strip() == "False", r.stderr


async def test_mark_booted_creates_and_removes_only_its_marker(private_bus, tmp_path) -> None:
    """sd_booted(3) looks at /run/systemd/system; --mark-booted (here a temporary path)
    creates it while serving and removes it at exit, but never one it did not create."""
    import asyncio
    import os
    import signal

    from backends.fake import FakeBackend
    from shim.bus.daemon import Options, run

    marker = tmp_path / "run/systemd/system"
    options = Options(address=private_bus.address, booted_marker=str(marker))
    task = asyncio.ensure_future(run(options, FakeBackend(tmp_path / "cg")))
    for _ in range(200):
        if marker.is_dir():
            break
        await asyncio.sleep(0.02)
    assert marker.is_dir()
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(task, 10) == 0
    assert not marker.exists()
    # an existing marker is left alone
    marker.mkdir(parents=True)
    task = asyncio.ensure_future(run(options, FakeBackend(tmp_path / "cg")))
    await asyncio.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(task, 10) == 0
    assert marker.is_dir()


def test_exit_on_idle(private_bus, tmp_path):
    """With --exit-on-idle the daemon leaves once nothing is loaded and no job runs (bus
    activation brings it back); exit status 0."""
    proc = subprocess.run(
        [sys.executable, "-m", "shim", "serve", "--address", private_bus.address,
         "--backend", "fake", "--state-dir", str(tmp_path), "--exit-on-idle", "0.5"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "idle for 0.5 s: exiting" in proc.stderr


def test_ready_fd_says_ready_once_the_name_is_owned(private_bus, tmp_path, busctl):
    """s6's notification-fd protocol: one newline, then the descriptor is closed; by then the
    name is owned and the private socket listens."""
    read_end, write_end = os.pipe()
    socket_path = tmp_path / "private"
    args = [sys.executable, "-m", "shim", *serve_args(private_bus.address, tmp_path),
            "--ready-fd", str(write_end), "--private-socket", str(socket_path)]  # fmt: skip
    proc = subprocess.Popen(args, cwd=ROOT, stderr=subprocess.DEVNULL, pass_fds=[write_end])
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as ready:
            assert ready.read() == b"\n"  # EOF follows the newline: the descriptor was closed
        assert _owner(private_bus.address)
        assert socket_path.is_socket()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    assert not socket_path.exists()  # ours, removed at exit


def test_a_private_socket_another_process_serves_is_left_alone(private_bus, tmp_path):
    import socket

    path = tmp_path / "busy"
    other = socket.socket(socket.AF_UNIX)
    other.bind(str(path))
    other.listen()
    try:
        args = [sys.executable, "-m", "shim", *serve_args(private_bus.address, tmp_path),
                "--private-socket", str(path)]  # fmt: skip
        done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert done.returncode == 1
        assert "served by another process" in done.stderr and "Traceback" not in done.stderr
        assert path.is_socket()
        assert not _owner(private_bus.address)  # gave the name back
    finally:
        other.close()


async def test_a_live_unit_keeps_an_idle_exiting_daemon(private_bus, tmp_path, processes):
    """A scope with a live process keeps a daemon with --exit-on-idle running past its idle
    period (a daemon with nothing, the witness, leaves twice meanwhile); once its process
    exits and the scope is gone, the daemon leaves by itself."""
    sleeper = processes()
    err = tmp_path / "stderr"
    with open(err, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shim", "serve", "--address", private_bus.address,
             "--backend", "fake", "--cgroup-root", str(tmp_path / "cg"),
             "--state-dir", str(tmp_path / "state"), "--exit-on-idle", "0.5"],
            cwd=ROOT, stderr=f,
        )  # fmt: skip
    bus = await MessageBus(bus_address=private_bus.address).connect()
    try:
        body = ["kept.scope", "fail", [["PIDs", Variant("au", [sleeper.pid])]], []]
        while True:  # until the daemon owns the name
            reply = await bus.call(
                Message(destination="org.freedesktop.systemd1", path="/org/freedesktop/systemd1",
                        interface="org.freedesktop.systemd1.Manager",
                        member="StartTransientUnit", signature="ssa(sv)a(sa(sv))", body=body)
            )  # fmt: skip
            assert reply is not None
            if reply.error_name != "org.freedesktop.DBus.Error.ServiceUnknown":
                break
            await asyncio.sleep(0.05)
        assert reply.message_type is MessageType.METHOD_RETURN, (reply.error_name, reply.body)
        await asyncio.to_thread(idle_witness, tmp_path / "witness", "0.5")
        assert proc.poll() is None, err.read_text()  # still there: it has a live unit
        sleeper.kill()
        sleeper.wait()
        assert await asyncio.to_thread(proc.wait, 30) == 0, err.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        bus.disconnect()
        await bus.wait_for_disconnect()
    assert "idle for 0.5 s: exiting" in err.read_text()
