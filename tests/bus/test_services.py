"""Transient services (systemd-run without --scope): started, watched, stopped and refused as
systemd.service(5) and org.freedesktop.systemd1(5) describe them, with real processes."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Variant

from tests.conftest import Client, Daemon, PrivateBus

ROOT = Path(__file__).resolve().parents[2]
STU = "ssa(sv)a(sa(sv))"
UNIT = "org.freedesktop.systemd1.Unit"
SERVICE = "org.freedesktop.systemd1.Service"
PROPS = "org.freedesktop.DBus.Properties"
SH = shutil.which("sh") or "/bin/sh"


def execstart(*argv: str) -> list[Any]:
    return ["ExecStart", Variant("a(sasb)", [[argv[0], list(argv), False]])]


async def start(client: Client, name: str, *props: list[Any]) -> str:
    (job,) = await client.ok("StartTransientUnit", STU, [name, "fail", list(props), []])
    return str(job)


async def job_result(client: Client, job: str) -> str:
    msg = await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job)
    return str(msg.body[3])


async def until_state(client: Client, path: str, states: set[str]) -> str:
    """The unit's ActiveState once it is one of STATES (asking after each change signal)."""
    for _ in range(500):
        state = await client.get(path, UNIT, "ActiveState")
        if state in states:
            return str(state)
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never reached {states} (last: {state})")


async def test_a_service_runs_its_command_and_reports_its_exit(client: Client) -> None:
    job = await start(client, "exit3.service", execstart(SH, "-c", "exit 3"),
                      ["AddRef", Variant("b", True)])  # fmt: skip
    assert await job_result(client, job) == "done"  # Type=simple: done once forked
    (path,) = await client.ok("GetUnit", "s", ["exit3.service"])
    assert await until_state(client, path, {"failed", "inactive"}) == "failed"
    assert await client.get(path, SERVICE, "Result") == "exit-code"
    assert await client.get(path, SERVICE, "ExecMainCode") == 1  # CLD_EXITED
    assert await client.get(path, SERVICE, "ExecMainStatus") == 3
    assert await client.get(path, SERVICE, "ExecMainPID") > 0
    assert await client.get(path, SERVICE, "MainPID") == 0
    assert await client.get(path, SERVICE, "ExecMainExitTimestampMonotonic") >= await client.get(
        path, SERVICE, "ExecMainStartTimestampMonotonic"
    )
    (cmd,) = await client.get(path, SERVICE, "ExecStart")
    assert cmd[0] == SH and cmd[1] == [SH, "-c", "exit 3"] and cmd[9] == 3
    # AddRef=true: the caller holds a reference (systemd lists it in Refs)
    assert await client.get(path, UNIT, "Refs") == [client.bus.unique_name]


@pytest.mark.parametrize(("oom_kill", "result"), [(1, "oom-kill"), (0, "signal")])
async def test_a_sigkill_with_an_oom_kill_in_memory_events_is_result_oom_kill(
    daemon: Daemon, client: Client, oom_kill: int, result: str
) -> None:
    """systemd.service(5) Result=oom-kill: the kernel's OOM killer acted on the unit (its
    cgroup's memory.events counts it, cgroup-v2.rst); a SIGKILL otherwise is "signal". The
    kernel's own kill is in tests/vm/test_services.py; the fake tree's file stands for it."""
    events = daemon.backend.root / "system.slice/oom.service/memory.events"
    # "$$$$": ExecStart= arguments turn "$$" into "$" (systemd.service(5)), the shell's own PID
    script = f'printf "oom {oom_kill}\\noom_kill {oom_kill}\\n" > {events}; kill -9 $$$$'
    job = await start(client, "oom.service", execstart(SH, "-c", script),
                      ["AddRef", Variant("b", True)])  # fmt: skip
    assert await job_result(client, job) == "done"
    (path,) = await client.ok("GetUnit", "s", ["oom.service"])
    assert await until_state(client, path, {"failed"}) == "failed"
    assert await client.get(path, SERVICE, "Result") == result
    assert await client.get(path, SERVICE, "ExecMainCode") == 2  # CLD_KILLED
    assert await client.get(path, SERVICE, "ExecMainStatus") == 9


async def test_a_successful_service_without_references_is_collected(client: Client) -> None:
    job = await start(client, "ok.service", execstart(SH, "-c", "true"))
    await job_result(client, job)
    removed = await client.wait_signal(
        lambda m: m.member == "UnitRemoved" and m.body[0] == "ok.service"
    )
    assert removed is not None
    # the last PropertiesChanged before the removal carried the exit
    changes = [
        m.body[1] for m in client.signals
        if m.member == "PropertiesChanged" and m.path.endswith("/ok_2eservice")
        and m.body[0] == SERVICE
    ]  # fmt: skip
    assert changes and changes[-1]["ExecMainStatus"].value == 0
    assert changes[-1]["ExecMainCode"].value == 1


async def test_settings_reach_the_process(client: Client, tmp_path: Path) -> None:
    here = Path(tempfile.mkdtemp(prefix="scopeshim-test-service-"))  # reachable by nobody
    here.chmod(0o777)
    out = here / "out"
    script = f'echo "$FOO $(pwd) $(id -u) $(umask) $(cut -d" " -f19 /proc/self/stat)" > {out}'
    job = await start(
        client, "env.service", execstart(SH, "-c", script),
        ["Type", Variant("s", "oneshot")],
        ["Environment", Variant("as", ["FOO=bar baz"])],
        ["WorkingDirectory", Variant("s", str(here))],
        ["UMask", Variant("u", 0o027)],
        ["Nice", Variant("i", 7)],
        *([["User", Variant("s", "65534")]] if os.getuid() == 0 else []),
    )  # fmt: skip
    assert await job_result(client, job) == "done"  # oneshot: done when it exited
    uid = 65534 if os.getuid() == 0 else os.getuid()
    written = out.read_text().split()
    shutil.rmtree(here)
    assert written == ["bar", "baz", str(here), str(uid), "0027", "7"]


@pytest.mark.skipif(os.getuid() != 0, reason="lowering the niceness again needs root")
async def test_nice_is_absolute_whatever_the_daemon_runs_at(client: Client, tmp_path: Path) -> None:
    """systemd.exec(5) Nice= is the process's niceness, not an increment: a daemon started
    at niceness 3 (an init's nice, a `nice make test`) still gives Nice=7 a 7."""
    out = tmp_path / "nice"
    before = os.getpriority(os.PRIO_PROCESS, 0)
    os.setpriority(os.PRIO_PROCESS, 0, 3)  # the daemon runs in this process
    try:
        job = await start(
            client, "nice.service", execstart(SH, "-c", f"cut -d' ' -f19 /proc/self/stat > {out}"),
            ["Type", Variant("s", "oneshot")], ["Nice", Variant("i", 7)],
        )  # fmt: skip
        assert await job_result(client, job) == "done"
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, before)
    assert out.read_text().split() == ["7"]


async def test_remain_after_exit_keeps_it_active_then_stop(client: Client) -> None:
    oneshot = ["Type", Variant("s", "oneshot")]
    remain = ["RemainAfterExit", Variant("b", True)]
    job = await start(client, "remain.service", execstart(SH, "-c", "true"), oneshot, remain)
    assert await job_result(client, job) == "done"
    (path,) = await client.ok("GetUnit", "s", ["remain.service"])
    assert await client.get(path, UNIT, "ActiveState") == "active"
    assert await client.get(path, UNIT, "SubState") == "exited"
    (stop,) = await client.ok("StopUnit", "ss", ["remain.service", "fail"])
    assert await job_result(client, str(stop)) == "done"


async def test_stop_ends_a_long_running_service(daemon: Daemon, client: Client) -> None:
    sleep = shutil.which("sleep") or "/bin/sleep"  # exec'd directly: nothing left behind
    limit = ["MemoryMax", Variant("t", 50 << 20)]
    job = await start(client, "long.service", execstart(sleep, "300"),
                      ["AddRef", Variant("b", True)], limit)  # fmt: skip
    await job_result(client, job)
    (path,) = await client.ok("GetUnit", "s", ["long.service"])
    assert await until_state(client, path, {"active"}) == "active"
    # resource settings are written to the service's cgroup (the fake tree's file here)
    cgroup = await client.get(path, SERVICE, "ControlGroup")
    assert cgroup == "/system.slice/long.service"
    assert (daemon.backend.root / cgroup.lstrip("/") / "memory.max").read_text().strip() == str(
        50 << 20
    )
    pid = await client.get(path, SERVICE, "MainPID")
    assert pid > 0 and Path(f"/proc/{pid}").exists()
    (stop,) = await client.ok("StopUnit", "ss", ["long.service", "fail"])
    assert await job_result(client, str(stop)) == "done"
    assert await client.get(path, UNIT, "ActiveState") == "inactive"
    assert await client.get(path, SERVICE, "Result") == "success"
    assert await client.get(path, SERVICE, "ExecMainCode") == 2  # CLD_KILLED by SIGTERM
    assert await client.get(path, SERVICE, "ExecMainStatus") == 15


async def test_a_missing_program_fails_the_service_with_status_203(client: Client) -> None:
    job = await start(client, "missing.service", execstart("/nonexistent/program"),
                      ["AddRef", Variant("b", True)])  # fmt: skip
    assert await job_result(client, job) == "failed"
    (path,) = await client.ok("GetUnit", "s", ["missing.service"])
    assert await client.get(path, UNIT, "ActiveState") == "failed"
    assert await client.get(path, SERVICE, "Result") == "exit-code"
    assert await client.get(path, SERVICE, "ExecMainStatus") == 203


@pytest.mark.parametrize(
    ("props", "error", "message"),
    [
        ([], "org.freedesktop.systemd1.BadUnitSetting",
         "Unit bad.service has a bad unit file setting."),
        ([["ExecStart", Variant("a(sasb)", [["true", ["true"], False]])]],
         "org.freedesktop.DBus.Error.InvalidArgs", "Path true is not absolute."),
        ([execstart(SH), ["Type", Variant("s", "bogus")]],
         "org.freedesktop.DBus.Error.InvalidArgs", "Invalid Type setting: bogus"),
        ([execstart(SH), ["StandardOutput", Variant("s", "tty")]],
         "org.freedesktop.DBus.Error.PropertyReadOnly",
         "Cannot set property StandardOutput, or unknown property."),
        ([execstart(SH), ["Nice", Variant("i", 40)]],
         "org.freedesktop.DBus.Error.InvalidArgs", "Nice value out of range: 40"),
        ([execstart(SH), ["Environment", Variant("as", ["no equals sign"])]],
         "org.freedesktop.DBus.Error.InvalidArgs", "Invalid environment block."),
        ([execstart(SH), ["PIDs", Variant("au", [1])]],
         "org.freedesktop.DBus.Error.PropertyReadOnly",
         "Cannot set property PIDs, or unknown property."),
        ([["ExecStart", Variant("a(sasb)", [[SH, [SH], False], [SH, [SH], False]])]],
         "org.freedesktop.systemd1.BadUnitSetting",
         "Unit bad.service has a bad unit file setting."),
    ],
    ids=["no-execstart", "relative", "bad-type", "tty-output", "nice", "environment", "pids",
         "two-commands-simple"],
)  # fmt: skip
async def test_refused_services_leave_nothing(
    daemon: Daemon, client: Client, props: list[Any], error: str, message: str
) -> None:
    reply = await client.call("StartTransientUnit", STU, ["bad.service", "fail", props, []])
    assert (reply.error_name, reply.body[0]) == (error, message)
    assert "bad.service" not in daemon.manager.units


async def test_execstart_on_a_scope_is_refused(client: Client, processes) -> None:
    p = processes()
    reply = await client.call(
        "StartTransientUnit", STU,
        ["x.scope", "fail", [["PIDs", Variant("au", [p.pid])], execstart(SH)], []],
    )  # fmt: skip
    assert reply.error_name == "org.freedesktop.DBus.Error.PropertyReadOnly"
    assert reply.body[0] == "Cannot set property ExecStart, or unknown property."


async def test_passed_descriptors_are_the_streams_then_closed(
    client: Client, tmp_path: Path
) -> None:
    """systemd.exec(5) StandardInput=/StandardOutput=fd (systemd-run --pipe passes its own):
    the command reads and writes the caller's descriptors; the daemon's copies are closed
    once the service is done, so the caller's reader sees the end of the pipe."""
    to_cmd_r, to_cmd_w = os.pipe()
    from_cmd_r, from_cmd_w = os.pipe()
    os.write(to_cmd_w, b"shout\n")
    os.close(to_cmd_w)
    props = [
        execstart(SH, "-c", "tr a-z A-Z"), ["AddRef", Variant("b", True)],
        ["StandardInputFileDescriptor", Variant("h", 0)],
        ["StandardOutputFileDescriptor", Variant("h", 1)],
        # as another user too: the descriptors themselves are given, not reopened by path
        *([["User", Variant("s", "65534")]] if os.getuid() == 0 else []),
    ]  # fmt: skip
    try:
        (job,) = await client.ok(
            "StartTransientUnit", STU, ["piped.service", "fail", props, []],
            unix_fds=[to_cmd_r, from_cmd_w],
        )  # fmt: skip
    finally:
        os.close(to_cmd_r)
        os.close(from_cmd_w)
    assert await job_result(client, str(job)) == "done"
    (path,) = await client.ok("GetUnit", "s", ["piped.service"])
    assert await client.get(path, SERVICE, "StandardInput") == "fd"
    assert await client.get(path, SERVICE, "StandardOutput") == "fd"
    assert await until_state(client, path, {"inactive", "failed"}) == "inactive"
    # the unit is still loaded (AddRef), yet the pipe ends: no copy of its write end is left
    with os.fdopen(from_cmd_r, "rb") as reader:
        got = await asyncio.to_thread(reader.read)
    assert got == b"SHOUT\n"


async def test_a_refused_start_keeps_no_passed_descriptor(client: Client) -> None:
    """A descriptor passed with a start that is refused is not kept (the reader sees EOF),
    and an index past the message's descriptors is InvalidArgs."""
    r, w = os.pipe()
    bad = ["StandardOutputFileDescriptor", Variant("h", 0)]
    try:
        name, _ = await client.error(
            "StartTransientUnit", STU, ["bad name!.service", "fail", [execstart(SH), bad], []],
            unix_fds=[w],
        )  # fmt: skip
        assert name == "org.freedesktop.DBus.Error.InvalidArgs"
    finally:
        os.close(w)
    assert await asyncio.to_thread(os.read, r, 10) == b""  # every write end is closed
    os.close(r)
    past = ["StandardOutputFileDescriptor", Variant("h", 3)]
    name, message = await client.error(
        "StartTransientUnit", STU, ["past.service", "fail", [execstart(SH), past], []]
    )
    assert (name, message) == ("org.freedesktop.DBus.Error.InvalidArgs",
                                "Invalid file descriptor index")  # fmt: skip


def _systemd_run(address: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    """Debian's systemd-run and systemctl (252) as root, exactly as typed, in a mount
    namespace whose /run/systemd holds only the sd_booted marker (so they use the bus)."""
    script = f"""
mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system || exit 99
export DBUS_SYSTEM_BUS_ADDRESS='{address}'
{sys.executable} -m shim serve --address '{address}' --backend fake --state-dir '{state_dir}' \
  --private-socket "" --log-level debug 2> '{state_dir}/daemon.log' &
daemon=$!
for i in $(seq 100); do busctl --address '{address}' status org.freedesktop.systemd1 \
  >/dev/null 2>&1 && break; sleep 0.1; done
systemd-run --wait -p MemoryMax=50M sh -c 'exit 7'; echo "wait-status=$?"
systemd-run --wait --quiet true; echo "true-status=$?"
systemd-run --wait --quiet -p StandardOutput=append:'{state_dir}/app.log' \
  -p StandardError=truncate:'{state_dir}/err.log' -p StandardInput=file:/etc/hostname \
  sh -c 'cat; echo out; echo err >&2'; echo "files-status=$?"
systemd-run --unit=hello --setenv=GREETING=hi --service-type=oneshot --remain-after-exit \
  sh -c 'echo $GREETING from $(pwd)'; echo "oneshot-status=$?"
systemctl --no-pager show -p ActiveState -p SubState -p Result -p ExecMainStatus hello.service
systemd-run --unit=sleeper sleep 300 >/dev/null; echo "sleeper-status=$?"
systemctl --no-pager status sleeper.service | head -4
systemctl stop sleeper.service; echo "stop-status=$?"
systemctl --no-pager show -p ActiveState -p Result sleeper.service
printf 'line one\\nline two\\n' | systemd-run --pipe --quiet \\
  sh -c 'tr a-z A-Z; echo to-err >&2; exit 4' > '{state_dir}/pipe.out' 2> '{state_dir}/pipe.err'
echo "pipe-status=$?"
systemd-run --pipe --quiet echo piped | cat; echo "cat-status=$?"
(echo typed; sleep 3) | timeout 20 systemd-run --pty --quiet sh -c 'tty; read x; echo "got $x"'
echo "pty-status=$?"
kill $daemon; wait $daemon
"""
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


@pytest.mark.skipif(os.getuid() != 0, reason="a mount namespace for /run/systemd needs root")
@pytest.mark.skipif(shutil.which("systemd-run") is None, reason="systemd-run is not installed")
async def test_systemd_run_without_scope(private_bus: PrivateBus, tmp_path: Path) -> None:
    done = await asyncio.to_thread(_systemd_run, private_bus.address, tmp_path)
    log = (tmp_path / "daemon.log").read_text()
    out = done.stdout
    assert "wait-status=7" in out, out + done.stderr + log
    assert "Finished with result: exit-code" in done.stderr + out
    assert "Main processes terminated with: code=exited/status=7" in done.stderr + out
    assert "true-status=0" in out
    # StandardInput=file:, StandardOutput=append:, StandardError=truncate: (systemd.exec(5))
    assert "files-status=0" in out
    hostname = Path("/etc/hostname").read_text()
    assert (tmp_path / "app.log").read_text() == hostname + "out\n"
    assert (tmp_path / "err.log").read_text() == "err\n"
    assert "oneshot-status=0" in out
    for line in ("ActiveState=active", "SubState=exited", "Result=success", "ExecMainStatus=0"):
        assert line in out.split("sleeper-status")[0], out
    assert "hi from /" in log  # StandardOutput=journal: its lines in scopeshim's log
    assert "sleeper-status=0" in out and "Active: active (running)" in out
    after = out.split("stop-status=0")[1]
    assert "ActiveState=inactive" in after and "Result=success" in after, out
    # --pipe: its standard streams are the command's, the status passes, the pipe ends
    assert "pipe-status=4" in out, out + done.stderr
    assert (tmp_path / "pipe.out").read_text() == "LINE ONE\nLINE TWO\n"
    assert (tmp_path / "pipe.err").read_text() == "to-err\n"
    assert "piped\ncat-status=0" in out
    # --pty: a pseudo-terminal systemd-run made and passed, forwarding its input (kept open
    # by the sleep: when systemd-run's own input ended first, it sometimes hung the terminal
    # up before the command had read its line, 2 of 5 runs here)
    pty = out.split("cat-status=0")[1]
    assert re.search(r"/dev/pts/\d+", pty) and "got typed" in pty and "pty-status=0" in pty, out
    assert "unknown member" not in log
