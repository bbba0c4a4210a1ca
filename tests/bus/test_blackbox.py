"""Black-box checks with real clients: busctl and gdbus against the daemon on a private bus."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from tests.conftest import Client, Daemon


async def run(*argv: str, timeout: float = 20) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")


async def busctl(daemon: Daemon, *args: str) -> tuple[int, str, str]:
    need("busctl")
    return await run("busctl", f"--address={daemon.address}", *args)


SD = ("org.freedesktop.systemd1", "/org/freedesktop/systemd1")


async def test_busctl_start_scope_and_read_back(daemon: Daemon, client: Client, processes) -> None:
    p = processes()
    code, out, err = await busctl(
        daemon,
        "call",
        *SD,
        "org.freedesktop.systemd1.Manager",
        "StartTransientUnit",
        "ssa(sv)a(sa(sv))",
        "foo.scope",
        "fail",
        "4",
        "PIDs",
        "au",
        "1",
        str(p.pid),
        "Slice",
        "s",
        "user-1000.slice",
        "Wants",
        "as",
        "1",
        "a.service",
        "Wants",
        "as",
        "1",
        "b.service",
        "0",
    )
    assert code == 0, err
    assert out.startswith('o "/org/freedesktop/systemd1/job/')
    job = out.split('"')[1]
    removed = await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job)
    assert removed.body[3] == "done"
    code, out, _ = await busctl(
        daemon, "call", *SD, "org.freedesktop.systemd1.Manager", "GetUnit", "s", "foo.scope"
    )
    assert out.strip() == 'o "/org/freedesktop/systemd1/unit/foo_2escope"'
    code, out, _ = await busctl(
        daemon,
        "get-property",
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1/unit/foo_2escope",
        "org.freedesktop.systemd1.Unit",
        "Wants",
    )
    assert out.strip() == 'as 2 "a.service" "b.service"'
    code, out, err = await busctl(
        daemon,
        "get-property",
        "org.freedesktop.systemd1",
        job,
        "org.freedesktop.systemd1.Job",
        "State",
    )
    assert code != 0 and "Unknown object" in err
    code, out, err = await busctl(
        daemon,
        "call",
        *SD,
        "org.freedesktop.systemd1.Manager",
        "StartTransientUnit",
        "ssa(sv)a(sa(sv))",
        "foo.scope",
        "fail",
        "1",
        "PIDs",
        "au",
        "1",
        str(p.pid),
        "0",
    )
    assert code != 0 and "already loaded" in err
    code, out, err = await busctl(
        daemon,
        "call",
        *SD,
        "org.freedesktop.systemd1.Manager",
        "StartTransientUnit",
        "ssa(sv)a(sa(sv))",
        "x.scope",
        "fail",
        "2",
        "PIDs",
        "au",
        "1",
        str(p.pid),
        "Bogus",
        "s",
        "x",
        "0",
    )
    assert code != 0 and "Cannot set property Bogus, or unknown property." in err
    code, out, _ = await busctl(
        daemon,
        "call",
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1/unit/foo_2escope",
        "org.freedesktop.systemd1.Scope",
        "Abandon",
    )
    assert code == 0
    code, out, _ = await busctl(
        daemon,
        "get-property",
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1/unit/foo_2escope",
        "org.freedesktop.systemd1.Unit",
        "SubState",
    )
    assert out.strip() == 's "abandoned"'


async def test_busctl_tree_shows_the_whole_tree(daemon: Daemon, client: Client, processes) -> None:
    p = processes()
    code, out, err = await busctl(
        daemon,
        "call",
        *SD,
        "org.freedesktop.systemd1.Manager",
        "StartTransientUnit",
        "ssa(sv)a(sa(sv))",
        "t.scope",
        "fail",
        "1",
        "PIDs",
        "au",
        "1",
        str(p.pid),
        "0",
    )
    assert code == 0, err
    await client.wait_signal(lambda m: m.member == "JobRemoved")
    code, out, err = await busctl(daemon, "tree", "--list", "org.freedesktop.systemd1")
    assert code == 0, err
    paths = set(out.split())
    for expected in (
        "/org/freedesktop/systemd1",
        "/org/freedesktop/systemd1/unit",
        "/org/freedesktop/systemd1/unit/t_2escope",
        "/org/freedesktop/systemd1/unit/_2d_2eslice",
        "/org/freedesktop/systemd1/unit/system_2eslice",
    ):
        assert expected in paths
    code, out, err = await busctl(
        daemon, "introspect", "org.freedesktop.systemd1", "/org/freedesktop/systemd1/unit/t_2escope"
    )
    assert code == 0, err
    assert ".Abandon" in out and ".ControlGroup" in out and ".ActiveState" in out


async def test_busctl_introspect_manager_and_get_all(daemon: Daemon) -> None:
    code, out, err = await busctl(daemon, "introspect", *SD)
    assert code == 0, err
    for member in (".StartTransientUnit", ".JobRemoved", ".Version", ".GetUnitProcesses"):
        assert member in out
    code, out, err = await busctl(
        daemon, "get-property", *SD, "org.freedesktop.systemd1.Manager", "Version"
    )
    assert out.strip() == 's "252"'


async def gdbus_manager(daemon: Daemon, method: str, *args: str) -> tuple[int, str, str]:
    need("gdbus")
    return await run(
        "gdbus",
        "call",
        "--address",
        daemon.address,
        "--dest",
        "org.freedesktop.systemd1",
        "--object-path",
        "/org/freedesktop/systemd1",
        "--method",
        f"org.freedesktop.systemd1.Manager.{method}",
        *args,
    )


async def test_gdbus_call(daemon: Daemon) -> None:
    code, out, err = await gdbus_manager(daemon, "LoadUnit", "gd.slice")
    assert code == 0, err
    assert "/org/freedesktop/systemd1/unit/gd_2eslice" in out
    code, out, err = await gdbus_manager(daemon, "GetUnit", "nope.scope")
    assert code != 0 and "org.freedesktop.systemd1.NoSuchUnit" in err
