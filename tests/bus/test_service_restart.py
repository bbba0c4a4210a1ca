"""Transient services' Restart=, RestartUSec=, SuccessExitStatus= and NRestarts, with real
processes, as systemd.service(5) describes them; a running service across kill -9."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Variant

from tests.bus.test_restart import Daemon as RealDaemon
from tests.bus.test_restart import bus_client, shim, wait_owner  # noqa: F401 (fixtures)
from tests.bus.test_services import SERVICE, SH, UNIT, execstart, job_result, start, until_state
from tests.conftest import Client, Daemon

REF = ["AddRef", Variant("b", True)]
QUICK = ["RestartUSec", Variant("t", 10_000)]  # 10ms between restarts


def restart(policy: str) -> list[Any]:
    return ["Restart", Variant("s", policy)]


def statuses(name: str, codes: list[int], signals: list[int]) -> list[Any]:
    return [name, Variant("(aiai)", [codes, signals])]


async def path_of(client: Client, name: str) -> str:
    (path,) = await client.ok("GetUnit", "s", [name])
    return str(path)


async def test_on_failure_restarts_until_the_start_limit(client: Client) -> None:
    job = await start(client, "fails.service", execstart(SH, "-c", "exit 3"),
                      restart("on-failure"), QUICK, REF)  # fmt: skip
    assert await job_result(client, job) == "done"
    path = await path_of(client, "fails.service")
    assert await until_state(client, path, {"failed"}) == "failed"
    # systemd.unit(5): StartLimitBurst=5 in StartLimitIntervalSec=10s; the last exit's
    # Result stays (systemd 252 in the lab: failed, exit-code, NRestarts=5)
    assert await client.get(path, SERVICE, "Result") == "exit-code"
    assert await client.get(path, SERVICE, "NRestarts") >= 5
    assert await client.get(path, SERVICE, "ExecMainStatus") == 3
    assert await client.get(path, SERVICE, "Restart") == "on-failure"
    assert await client.get(path, SERVICE, "RestartUSec") == 10_000
    # each restart was a start job of its own
    starts = [m for m in client.signals
              if m.member == "JobRemoved" and m.body[2] == "fails.service"]  # fmt: skip
    assert len(starts) >= 6


async def test_a_restart_that_then_succeeds(client: Client, tmp_path: Path) -> None:
    mark = tmp_path / "tried"
    script = f"test -e {mark} && exit 0; touch {mark}; exit 1"
    job = await start(client, "second.service", execstart(SH, "-c", script),
                      restart("on-failure"), QUICK, REF)  # fmt: skip
    await job_result(client, job)
    path = await path_of(client, "second.service")
    assert await until_state(client, path, {"inactive", "failed"}) == "inactive"
    assert await client.get(path, SERVICE, "NRestarts") == 1
    assert await client.get(path, SERVICE, "Result") == "success"
    assert await client.get(path, SERVICE, "ExecMainStatus") == 0


async def test_no_restart_by_default_and_on_a_clean_exit(client: Client) -> None:
    for name, props in (("plain.service", []), ("clean.service", [restart("on-failure")])):
        command = "exit 3" if name == "plain.service" else "exit 0"
        job = await start(client, name, execstart(SH, "-c", command), REF, *props)
        await job_result(client, job)
        path = await path_of(client, name)
        final = "failed" if name == "plain.service" else "inactive"
        assert await until_state(client, path, {"inactive", "failed"}) == final
        assert await client.get(path, SERVICE, "NRestarts") == 0
    assert await client.get(await path_of(client, "plain.service"), SERVICE, "Restart") == "no"


async def test_success_exit_status_makes_an_exit_clean(client: Client) -> None:
    success = statuses("SuccessExitStatus", [3], [])
    job = await start(client, "three.service", execstart(SH, "-c", "exit 3"), REF,
                      success, restart("on-failure"), QUICK)  # fmt: skip
    await job_result(client, job)
    path = await path_of(client, "three.service")
    assert await until_state(client, path, {"inactive", "failed"}) == "inactive"
    assert await client.get(path, SERVICE, "Result") == "success"
    assert await client.get(path, SERVICE, "ExecMainStatus") == 3
    assert await client.get(path, SERVICE, "NRestarts") == 0
    assert list(await client.get(path, SERVICE, "SuccessExitStatus")) == [[3], []]


async def test_success_exit_status_for_a_oneshot(client: Client) -> None:
    oneshot = ["Type", Variant("s", "oneshot")]
    success = statuses("SuccessExitStatus", [42], [])
    job = await start(client, "one42.service", execstart(SH, "-c", "exit 42"), oneshot, success)
    assert await job_result(client, job) == "done"
    # Type=oneshot: SIGTERM is not clean unless listed (systemd.service(5))
    term = execstart(SH, "-c", "kill -TERM $$$$")  # $$ is a literal $: the shell's PID
    job = await start(client, "oneterm.service", term, oneshot, REF)
    assert await job_result(client, job) == "failed"
    path = await path_of(client, "oneterm.service")
    assert await client.get(path, SERVICE, "Result") == "signal"


async def test_prevent_exit_status_stops_the_restarts(client: Client) -> None:
    prevent = statuses("RestartPreventExitStatus", [4], [])
    job = await start(client, "prevent.service", execstart(SH, "-c", "exit 4"), REF,
                      prevent, restart("always"), QUICK)  # fmt: skip
    await job_result(client, job)
    path = await path_of(client, "prevent.service")
    assert await until_state(client, path, {"inactive", "failed"}) == "failed"
    assert (
        await client.get(path, SERVICE, "Result"),
        await client.get(path, SERVICE, "NRestarts"),
    ) == ("exit-code", 0)


async def test_on_abnormal_restarts_after_sigkill_not_sigterm(client: Client) -> None:
    sleep = shutil.which("sleep") or "/bin/sleep"
    job = await start(client, "abn.service", execstart(sleep, "300"), REF,
                      restart("on-abnormal"), QUICK)  # fmt: skip
    await job_result(client, job)
    path = await path_of(client, "abn.service")
    first = await client.get(path, SERVICE, "MainPID")
    assert first > 0
    await client.ok("KillUnit", "ssi", ["abn.service", "main", 9])
    for _ in range(500):
        pid = await client.get(path, SERVICE, "MainPID")
        if pid not in (0, first) and await client.get(path, UNIT, "SubState") == "running":
            break
        await _tick()
    assert await client.get(path, SERVICE, "NRestarts") == 1
    second = await client.get(path, SERVICE, "MainPID")
    assert second not in (0, first)
    # SIGTERM is a clean exit (systemd.service(5)): Result=success, no restart
    await client.ok("KillUnit", "ssi", ["abn.service", "main", 15])
    assert await until_state(client, path, {"inactive", "failed"}) == "inactive"
    assert await client.get(path, SERVICE, "Result") == "success"
    assert await client.get(path, SERVICE, "NRestarts") == 1


async def test_stop_while_a_restart_is_pending(client: Client) -> None:
    hour = ["RestartUSec", Variant("t", 3600 * 10**6)]
    job = await start(client, "later.service", execstart(SH, "-c", "exit 3"), REF,
                      restart("always"), hour)  # fmt: skip
    await job_result(client, job)
    path = await path_of(client, "later.service")
    assert await until_state(client, path, {"activating"}) == "activating"
    assert await client.get(path, UNIT, "SubState") == "auto-restart"
    assert await client.get(path, SERVICE, "Result") == "exit-code"
    (stop,) = await client.ok("StopUnit", "ss", ["later.service", "fail"])
    assert await job_result(client, str(stop)) == "done"
    assert await client.get(path, UNIT, "ActiveState") == "inactive"
    assert await client.get(path, SERVICE, "NRestarts") == 0


async def _tick() -> None:
    await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("prop", "message"),
    [
        (statuses("SuccessExitStatus", [256], []), "Invalid status code in SuccessExitStatus: 256"),
        (
            statuses("RestartForceExitStatus", [-1], []),
            "Invalid status code in RestartForceExitStatus: -1",
        ),
        (restart("sometimes"), "Invalid Restart setting: sometimes"),
    ],
    ids=["status", "negative", "policy"],
)
async def test_bad_restart_settings_are_refused(
    daemon: Daemon, client: Client, prop: list[Any], message: str
) -> None:
    reply = await client.call(
        "StartTransientUnit", "ssa(sv)a(sa(sv))", ["bad.service", "fail", [execstart(SH), prop], []]
    )
    assert (reply.error_name, reply.body[0]) == ("org.freedesktop.DBus.Error.InvalidArgs", message)
    assert "bad.service" not in daemon.manager.units


async def test_restart_settings_are_for_services_only(client: Client, processes: Any) -> None:
    p = processes()
    reply = await client.call(
        "StartTransientUnit", "ssa(sv)a(sa(sv))",
        ["x.scope", "fail", [["PIDs", Variant("au", [p.pid])], restart("always")], []],
    )  # fmt: skip
    assert reply.error_name == "org.freedesktop.DBus.Error.PropertyReadOnly"
    assert reply.body[0] == "Cannot set property Restart, or unknown property."


# -- kill -9 of scopeshim: a running service is taken back --------------------------------


async def test_a_running_service_survives_kill_9(
    shim: RealDaemon,  # noqa: F811 (the fixture)
    bus_client: Client,  # noqa: F811
) -> None:
    c = bus_client
    shim.start()
    await wait_owner(c)
    sleep = shutil.which("sleep") or "/bin/sleep"
    job = await start(c, "kept.service", execstart(sleep, "300"), REF, restart("on-failure"))
    await job_result(c, job)
    path = await path_of(c, "kept.service")
    pid = await c.get(path, SERVICE, "MainPID")
    invocation = await c.get(path, UNIT, "InvocationID")
    await asyncio.sleep(0.3)  # let the state reach the disk (written once per iteration)

    shim.kill()
    await wait_owner(c, present=False)
    assert Path(f"/proc/{pid}").exists()  # the main process lives on in its cgroup
    shim.start()
    await wait_owner(c)

    assert await c.get(path, UNIT, "ActiveState") == "active"
    assert await c.get(path, UNIT, "InvocationID") == invocation
    assert await c.get(path, SERVICE, "MainPID") == pid
    assert await c.get(path, SERVICE, "ExecMainPID") == pid
    procs = await c.ok("GetUnitProcesses", "s", ["kept.service"])
    assert [p[1] for p in procs[0]] == [pid]
    # its end is still seen; stop works on it
    (stop,) = await c.ok("StopUnit", "ss", ["kept.service", "replace"])
    assert await job_result(c, str(stop)) == "done"
    assert await c.get(path, UNIT, "ActiveState") == "inactive"
    assert await c.get(path, SERVICE, "MainPID") == 0
    assert await c.get(path, SERVICE, "ExecMainPID") == pid
    assert await c.get(path, SERVICE, "ExecMainExitTimestamp") > 0
    # no longer our child: how it ended is not known here (docs/differences.md)
    assert await c.get(path, SERVICE, "ExecMainCode") == 0
    assert not Path(f"/proc/{pid}").exists() or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except OSError:
        return True
