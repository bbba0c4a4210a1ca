"""Units without unit files that logind uses: user-runtime-dir@, user@ (masked, noop, exec),
power targets; Wants=/Requires=/After= between them and session scopes; StopWhenUnneeded=."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
from pathlib import Path

import pytest
from dbus_fast import Variant

from shim.core.policy import POWER_TARGETS, RECORD, Policy, UserManager
from tests.conftest import Client, Daemon

UNIT = "org.freedesktop.systemd1.Unit"
RUNTIME = "user-runtime-dir@1000.service"
RUNTIME_PATH = "/org/freedesktop/systemd1/unit/user_2druntime_2ddir_401000_2eservice"
USER = "user@1000.service"
USER_PATH = "/org/freedesktop/systemd1/unit/user_401000_2eservice"


def removed(name: str) -> object:
    return lambda m: m.member == "UnitRemoved" and m.body[0] == name


@pytest.fixture
def helper(tmp_path: Path) -> Path:
    """A stand-in for systemd-user-runtime-dir: logs its arguments and its cgroup; exits
    with the status in the file `status` (0 when absent)."""
    script = tmp_path / "runtime-dir-helper"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {tmp_path}/helper.log\n'
        f'[ -f {tmp_path}/status ] && exit "$(cat {tmp_path}/status)"\n'
        "exit 0\n"
    )
    script.chmod(0o755)
    return script


@pytest.fixture
def policy(tmp_path: Path, helper: Path) -> Policy:
    return Policy(
        user_manager=UserManager.MASKED,
        runtime_dir_helper=str(helper),
        power_actions=dict.fromkeys(POWER_TARGETS, RECORD),
        record_file=str(tmp_path / "actions.log"),
    )


def helper_calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "helper.log"
    return log.read_text().splitlines() if log.exists() else []


def session_props(pid: int) -> list[list[object]]:
    """What logind 252 sends for a session scope (api-surface §1.3)."""
    return [
        ["Slice", Variant("s", "user-1000.slice")],
        ["Description", Variant("s", "Session 1 of User u")],
        ["Wants", Variant("as", [RUNTIME])],
        ["Wants", Variant("as", [USER])],
        ["After", Variant("as", ["systemd-logind.service"])],
        ["After", Variant("as", [RUNTIME])],
        ["After", Variant("as", [USER])],
        ["SendSIGHUP", Variant("b", True)],
        ["PIDs", Variant("au", [pid])],
        ["TasksMax", Variant("t", 2**64 - 1)],
    ]


async def start_session(client: Client, pid: int, name: str = "session-1.scope") -> str:
    (job,) = await client.ok(
        "StartTransientUnit", "ssa(sv)a(sa(sv))", [name, "fail", session_props(pid), []]
    )
    return str(job)


async def test_user_manager_masked(daemon: Daemon, client: Client) -> None:
    name, text = await client.error("StartUnit", "ss", [USER, "replace"])
    assert (name, text) == ("org.freedesktop.systemd1.UnitMasked", f"Unit {USER} is masked.")
    assert await client.get(USER_PATH, UNIT, "LoadState") == "masked"
    assert await client.get(USER_PATH, UNIT, "ActiveState") == "inactive"
    # logind 252 stops user@ at user stop: a masked, inactive unit stops at once
    (job,) = await client.ok("StopUnit", "ss", [USER, "fail"])
    done = await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job)
    assert done.body[3] == "done"


async def test_session_scope_waits_for_the_runtime_dir_then_all_goes_away(
    daemon: Daemon, client: Client, processes, tmp_path: Path
) -> None:
    proc = processes()
    job = await start_session(client, proc.pid)
    scope_done = await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job)
    assert scope_done.body[3] == "done"
    # the runtime directory was set up before the scope's job finished (After=)
    order = [m.body[2] for m in client.signals if m.member == "JobRemoved"]
    assert order.index(RUNTIME) < order.index("session-1.scope")
    assert helper_calls(tmp_path) == ["start 1000"]
    helper_cgroup = "/user.slice/user-1000.slice/user-runtime-dir@1000.service"
    assert any(op.op == "attach" and op.path == helper_cgroup for op in daemon.backend.operations)
    assert await client.get(RUNTIME_PATH, UNIT, "ActiveState") == "active"
    assert await client.get(RUNTIME_PATH, UNIT, "SubState") == "exited"
    assert daemon.manager.units[RUNTIME].control_group is None  # pruned after the exit

    # the session ends: the runtime dir is unneeded (StopWhenUnneeded=), then the slice
    proc.kill()
    await client.wait_signal(removed("session-1.scope"))
    await client.wait_signal(removed("user-1000.slice"))
    assert helper_calls(tmp_path) == ["start 1000", "stop 1000"]
    assert RUNTIME not in daemon.manager.units
    assert not (daemon.backend.root / "user.slice/user-1000.slice").exists()


async def test_a_second_session_keeps_the_runtime_dir(
    daemon: Daemon, client: Client, processes, tmp_path: Path
) -> None:
    p1, p2 = processes(), processes()
    job1 = await start_session(client, p1.pid, "session-1.scope")
    await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job1)
    job2 = await start_session(client, p2.pid, "session-2.scope")
    await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job2)
    p1.kill()
    await client.wait_signal(removed("session-1.scope"))
    assert await client.get(RUNTIME_PATH, UNIT, "ActiveState") == "active"
    assert helper_calls(tmp_path) == ["start 1000"]  # started once, still needed
    p2.kill()
    await client.wait_signal(removed("user-1000.slice"))
    assert helper_calls(tmp_path) == ["start 1000", "stop 1000"]


async def test_explicit_start_keeps_the_runtime_dir_until_stopped(
    daemon: Daemon, client: Client, tmp_path: Path
) -> None:
    """logind 256+ starts and stops user-runtime-dir@ itself (api-surface §1.11)."""
    (job,) = await client.ok("StartUnit", "ss", [RUNTIME, "replace"])
    done = await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job)
    assert done.body[3] == "done"
    assert await client.get(RUNTIME_PATH, UNIT, "ActiveState") == "active"
    (job,) = await client.ok("StopUnit", "ss", [RUNTIME, "replace"])
    done = await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job)
    assert done.body[3] == "done"
    assert helper_calls(tmp_path) == ["start 1000", "stop 1000"]
    await client.wait_signal(removed("user-1000.slice"))


async def test_failing_runtime_dir_fails_a_scope_that_requires_it(
    daemon: Daemon, client: Client, processes, tmp_path: Path
) -> None:
    """logind 256+: Requires=user-runtime-dir@ (systemd.unit(5): a failed requirement
    fails the job with result "dependency"); 252's Wants= does not."""
    (tmp_path / "status").write_text("1")
    proc = processes()
    props = [
        ["Slice", Variant("s", "user-1000.slice")],
        ["Requires", Variant("as", [RUNTIME])],
        ["After", Variant("as", [RUNTIME])],
        ["PIDs", Variant("au", [proc.pid])],
    ]
    (job,) = await client.ok(
        "StartTransientUnit", "ssa(sv)a(sa(sv))", ["session-3.scope", "fail", props, []]
    )
    done = await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job)
    assert done.body[3] == "dependency"
    assert daemon.backend.cgroup_of(proc.pid) is None  # never moved
    assert await client.get(RUNTIME_PATH, UNIT, "ActiveState") == "failed"
    # with Wants= (logind 252) the session starts anyway
    job = await start_session(client, proc.pid, "session-4.scope")
    done = await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job)
    assert done.body[3] == "done"


@pytest.mark.parametrize(
    ("requires", "error", "text"),
    [
        ("nothing-here.service", "NoSuchUnit", "Unit nothing-here.service not found."),
        (USER, "UnitMasked", f"Unit {USER} is masked."),
    ],
)
async def test_requiring_what_cannot_start_is_refused_before_anything_exists(
    daemon: Daemon, client: Client, processes, requires: str, error: str, text: str
) -> None:
    proc = processes()
    props = [["Requires", Variant("as", [requires])], ["PIDs", Variant("au", [proc.pid])]]
    name, message = await client.error(
        "StartTransientUnit", "ssa(sv)a(sa(sv))", ["req.scope", "fail", props, []]
    )
    assert (name, message) == (f"org.freedesktop.systemd1.{error}", text)
    assert "req.scope" not in daemon.manager.units
    assert daemon.backend.cgroup_of(proc.pid) is None


async def test_power_target_runs_the_recorded_action(
    daemon: Daemon, client: Client, tmp_path: Path
) -> None:
    (job,) = await client.ok("StartUnit", "ss", ["suspend.target", "replace-irreversibly"])
    done = await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job)
    assert done.body[2:] == ["suspend.target", "done"]
    (line,) = (tmp_path / "actions.log").read_text().splitlines()
    assert json.loads(line)["unit"] == "suspend.target"
    name, _ = await client.error("StartUnit", "ss", ["autovt@tty2.service", "fail"])
    assert name == "org.freedesktop.systemd1.NoSuchUnit"  # not configured: not found


class TestUserManagerPolicies:
    @pytest.fixture
    def policy(self, tmp_path: Path) -> Policy:
        return Policy(
            runtime_dir_helper="",
            user_manager=UserManager.EXEC,
            user_manager_command=("/bin/sleep", "300"),
            record_file=str(tmp_path / "actions.log"),
        )

    async def test_exec_runs_the_command_as_the_user_in_its_cgroup(
        self, daemon: Daemon, client: Client
    ) -> None:
        uid = pwd.getpwnam("nobody").pw_uid
        unit, path = f"user@{uid}.service", f"/org/freedesktop/systemd1/unit/user_40{uid}_2eservice"
        (job,) = await client.ok("StartUnit", "ss", [unit, "replace"])
        done = await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job)
        assert done.body[3] == "done"
        order = [m.body[2] for m in client.signals if m.member == "JobRemoved"]
        assert f"user-runtime-dir@{uid}.service" in order  # Requires= pulled it in
        assert await client.get(path, UNIT, "SubState") == "running"
        cgroup = f"/user.slice/user-{uid}.slice/user@{uid}.service"
        (pid,) = daemon.backend.pids(cgroup)
        assert os.stat(f"/proc/{pid}").st_uid == uid
        # Type=simple: active once forked; the gate then execs the command
        for _ in range(100):
            if Path(f"/proc/{pid}/cmdline").read_text().startswith("/bin/sleep"):
                break
            await asyncio.sleep(0.02)
        assert Path(f"/proc/{pid}/cmdline").read_text().startswith("/bin/sleep")
        (job,) = await client.ok("StopUnit", "ss", [unit, "replace"])
        await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job)
        assert not daemon.backend.pids(cgroup)
        await client.wait_signal(removed(f"user-{uid}.slice"))

    async def test_exec_without_the_program_fails_the_job(
        self, daemon: Daemon, client: Client
    ) -> None:
        daemon.manager.policy = Policy(
            runtime_dir_helper="",
            user_manager=UserManager.EXEC,
            user_manager_command=("/nonexistent/manager",),
        )
        (job,) = await client.ok("StartUnit", "ss", ["user@0.service", "replace"])
        done = await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job)
        assert done.body[3] == "failed"
        path = "/org/freedesktop/systemd1/unit/user_400_2eservice"
        assert await client.get(path, UNIT, "ActiveState") == "failed"
        assert not daemon.backend.exists("/user.slice/user-0.slice/user@0.service")


async def test_pidfds_stand_for_pids(daemon: Daemon, client: Client, processes) -> None:
    """logind 255+ sends the leader as PIDFDs (ah, one pidfd) instead of PIDs."""
    proc = processes()
    fd = os.pidfd_open(proc.pid)
    try:
        props = [["PIDFDs", Variant("ah", [0])], ["Slice", Variant("s", "user-1000.slice")]]
        reply = await client.call(
            "StartTransientUnit",
            "ssa(sv)a(sa(sv))",
            ["pidfd.scope", "fail", props, []],
            unix_fds=[fd],
        )
        assert reply.error_name is None, reply.body
        await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == reply.body[0])
        assert daemon.backend.cgroup_of(proc.pid) == "/user.slice/user-1000.slice/pidfd.scope"
        bad = [["PIDFDs", Variant("ah", [3])]]
        reply = await client.call(
            "StartTransientUnit", "ssa(sv)a(sa(sv))", ["bad.scope", "fail", bad, []], unix_fds=[fd]
        )
        assert reply.error_name == "org.freedesktop.DBus.Error.InvalidArgs"
        assert "bad.scope" not in daemon.manager.units
    finally:
        os.close(fd)
