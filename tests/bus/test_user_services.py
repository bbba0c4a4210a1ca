"""Transient services on a user manager (fake backend, real processes): KIO's app launch,
the call shape of KIO's SystemdProcessRunner (kio/src/gui/systemd/systemdprocessrunner.cpp,
read from KDE's source; KDE is not installable here), step by step as it makes them."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Variant

from tests.bus.test_services import SH
from tests.bus.test_user_instance import PREFIX, STU_SIG, start_user_daemon, stop_daemon
from tests.conftest import Client, Daemon, PrivateBus

PROPS = "org.freedesktop.DBus.Properties"


@pytest.fixture
async def daemon(private_bus: PrivateBus, tmp_path: Path) -> AsyncIterator[Daemon]:
    d = await start_user_daemon(private_bus.address, tmp_path / "cgroupfs")
    yield d
    await stop_daemon(d)


async def get_all(client: Client, path: str) -> dict[str, Any]:
    # KIO: GetAll("") on the unit's object (every interface's properties)
    (props,) = await client.ok("GetAll", "s", [""], path=path, interface=PROPS)
    return {k: v.value for k, v in props.items()}


async def test_kio_app_launch(daemon: Daemon, client: Client, tmp_path: Path) -> None:
    # KIO: "app-%1@%2.service" with the escaped app id and a UUID's 32 hex digits
    name = f"app-org.kde.kwrite@{uuid.uuid4().hex}.service"
    out, go = tmp_path / "out", tmp_path / "go"
    os.mkfifo(go)  # the app runs until the test has seen it running
    script = f'echo "$1|$GREETING|$(pwd)" > {out}; read _ < {go}; exit 4'
    await client.ok("Subscribe")
    props = [
        ["Type", Variant("s", "simple")],
        ["ExitType", Variant("s", "cgroup")],
        ["Slice", Variant("s", "app.slice")],
        ["Description", Variant("s", "KWrite - Text Editor")],
        ["SourcePath", Variant("s", "/usr/share/applications/org.kde.kwrite.desktop")],
        ["AddRef", Variant("b", True)],
        ["Environment", Variant("as", ["GREETING=hello there", "LANG=C.UTF-8"])],
        ["WorkingDirectory", Variant("s", str(tmp_path))],
        # KIO escapes every "$" of the arguments as "$$" (systemd substitutes variables)
        ["ExecStart", Variant("a(sasb)", [[SH, [SH, "-c", script, "sh", "co$$t"], False]])],
    ]  # fmt: skip
    (job,) = await client.ok("StartTransientUnit", STU_SIG, [name, "fail", props, []])
    new = await client.wait_signal(lambda m: m.member == "UnitNew" and m.body[0] == name)
    path = new.body[1]
    done = await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job)
    assert done.body[3] == "done"
    first = await get_all(client, path)
    assert first["ExecMainPID"] > 0  # KIO takes the PID from here
    assert first["ControlGroup"] == f"{PREFIX}/app.slice/{name}"
    assert first["Slice"] == "app.slice" and first["SourcePath"].endswith("kwrite.desktop")
    await asyncio.to_thread(go.write_text, "quit\n")
    # KIO re-reads everything on each PropertiesChanged until inactive or failed
    for _ in range(500):
        now = await get_all(client, path)
        if now["ActiveState"] in ("inactive", "failed"):
            break
        await asyncio.sleep(0.02)
    assert now["ActiveState"] == "failed" and now["Result"] == "exit-code"
    assert (now["ExecMainCode"], now["ExecMainStatus"]) == (1, 4)  # CLD_EXITED, status 4
    assert out.read_text() == f"co$t|hello there|{tmp_path}\n"
    # then Unref: the caller's reference goes; a failed unit stays until reset (CollectMode)
    await client.ok("Unref", "", [], path=path, interface="org.freedesktop.systemd1.Unit")
    assert await client.get(path, "org.freedesktop.systemd1.Unit", "Refs") == []
    await client.ok("ResetFailedUnit", "s", [name])
    gone = await client.wait_signal(lambda m: m.member == "UnitRemoved" and m.body[0] == name)
    assert gone is not None
    assert not daemon.backend.exists(f"/app.slice/{name}")


def _systemd_run_user(address: str) -> subprocess.CompletedProcess[str]:
    """Debian's systemd-run 252 with --user, as typed, on the session bus of the user manager
    (a mount namespace whose /run/systemd holds only the sd_booted marker)."""
    script = f"""
mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system || exit 99
export DBUS_SESSION_BUS_ADDRESS='{address}'
systemd-run --user --wait -p MemoryMax=50M sh -c 'exit 7'; echo "wait-status=$?"
systemd-run --user --wait --quiet true; echo "true-status=$?"
"""
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.skipif(os.getuid() != 0, reason="a mount namespace for /run/systemd needs root")
@pytest.mark.skipif(shutil.which("systemd-run") is None, reason="systemd-run is not installed")
async def test_systemd_run_user_wait(daemon: Daemon, client: Client) -> None:
    await client.ok("Subscribe")
    done = await asyncio.to_thread(_systemd_run_user, daemon.address)
    out = done.stdout + done.stderr
    assert "wait-status=7" in out, out
    assert "Finished with result: exit-code" in out
    assert "Main processes terminated with: code=exited/status=7" in out
    assert "true-status=0" in out
    # the service ran in the user manager's app.slice
    (units,) = await client.ok("ListUnits")
    (failed,) = [u for u in units if u[0].startswith("run-") and u[3] == "failed"]
    service = "org.freedesktop.systemd1.Service"
    assert await client.get(failed[6], service, "Slice") == "app.slice"
    assert await client.get(failed[6], service, "MemoryMax") == 50 << 20
    assert await client.get(failed[6], service, "ExecMainStatus") == 7
