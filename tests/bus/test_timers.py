"""Transient timers (systemd-run --on-active/--on-calendar): created with their service as
systemd-run 252 sends them (StartTransientUnit with the service in the aux list), elapsing,
starting the service, shown and refused as the real systemd 252 does (lab, docs/timers.md)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Variant

from compat.calendar import parse_calendar
from tests.bus.test_restart import Daemon as Shim
from tests.bus.test_restart import bus_client, restart, shim, wait_owner  # noqa: F401
from tests.conftest import ROOT, Client, Daemon, PrivateBus

STU = "ssa(sv)a(sa(sv))"
UNIT = "org.freedesktop.systemd1.Unit"
TIMER = "org.freedesktop.systemd1.Timer"
SH = shutil.which("sh") or "/bin/sh"


def mono(*entries: tuple[str, int]) -> list[Any]:
    return ["TimersMonotonic", Variant("a(st)", [list(e) for e in entries])]


def service_aux(name: str, *argv: str) -> list[Any]:
    return [name, [["ExecStart", Variant("a(sasb)", [[argv[0], list(argv), False]])]]]


async def start_timer(client: Client, name: str, props: list[Any], aux: list[Any]) -> str:
    (job,) = await client.ok("StartTransientUnit", STU, [name, "fail", props, aux])
    msg = await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job)
    assert msg.body[3] == "done"
    (path,) = await client.ok("GetUnit", "s", [name])
    return str(path)


async def until(client: Client, path: str, iface: str, prop: str, want: object) -> None:
    for _ in range(500):
        if await client.get(path, iface, prop) == want:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} {prop} never became {want!r}")


async def wait_file(path: Path) -> None:
    for _ in range(500):
        if path.exists():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


async def test_on_active_starts_the_service_then_both_go(client: Client, tmp_path: Path) -> None:
    mark = tmp_path / "ran"
    path = await start_timer(
        client, "t1.timer",
        [["Description", Variant("s", "tick")], mono(("OnActiveSec", 300_000)),
         ["RemainAfterElapse", Variant("b", False)]],
        [service_aux("t1.service", SH, "-c", f"touch {mark}")],
    )  # fmt: skip
    assert await client.get(path, UNIT, "SubState") in ("waiting", "running", "dead")
    await wait_file(mark)
    # RemainAfterElapse=no: once its service is done the timer is dead and collected
    await client.wait_signal(lambda m: m.member == "UnitRemoved" and m.body[0] == "t1.timer")
    await client.wait_signal(lambda m: m.member == "UnitRemoved" and m.body[0] == "t1.service")


async def test_a_waiting_timer_shows_what_systemd_shows(client: Client) -> None:
    before = time.monotonic_ns() // 1000
    path = await start_timer(
        client, "t2.timer",
        [mono(("OnActiveSec", 3600 * 10**6)), mono(("OnUnitActiveSec", 60 * 10**6)),
         ["TimersCalendar", Variant("a(ss)", [["OnCalendar", "*:0/15"]])],
         ["AccuracyUSec", Variant("t", 10**6)]],
        [service_aux("t2.service", SH, "-c", "true")],
    )  # fmt: skip
    assert await client.get(path, UNIT, "ActiveState") == "active"
    assert await client.get(path, UNIT, "SubState") == "waiting"
    assert await client.get(path, UNIT, "Triggers") == ["t2.service"]
    # the dependencies 252 showed for a transient timer (lab)
    assert await client.get(path, UNIT, "Requires") == ["sysinit.target"]
    assert await client.get(path, UNIT, "After") == ["sysinit.target"]
    assert await client.get(path, UNIT, "Before") == ["shutdown.target", "t2.service",
                                                      "timers.target"]  # fmt: skip
    assert await client.get(path, UNIT, "Conflicts") == ["shutdown.target"]
    assert await client.get(path, UNIT, "CanStart") is True
    assert await client.get(path, TIMER, "Unit") == "t2.service"
    monotonic = await client.get(path, TIMER, "TimersMonotonic")
    # the bases read with "USec" (observed); OnUnitActiveSec waits for the service: 0
    assert [m[0] for m in monotonic] == ["OnActiveUSec", "OnUnitActiveUSec"]
    assert monotonic[0][1] == 3600 * 10**6 and monotonic[0][2] >= before + 3600 * 10**6
    assert monotonic[1][2] == 0
    ((base, spec, nxt),) = await client.get(path, TIMER, "TimersCalendar")
    assert (base, spec) == ("OnCalendar", "*-*-* *:00/15:00")
    assert nxt == parse_calendar("*:0/15").next_after(nxt - 15 * 60 * 10**6)
    assert await client.get(path, TIMER, "NextElapseUSecRealtime") == nxt
    assert await client.get(path, TIMER, "NextElapseUSecMonotonic") == monotonic[0][2]
    assert await client.get(path, TIMER, "LastTriggerUSec") == 0
    assert await client.get(path, TIMER, "AccuracyUSec") == 10**6
    assert await client.get(path, TIMER, "RemainAfterElapse") is True
    assert await client.get(path, TIMER, "Result") == "success"
    (spath,) = await client.ok("GetUnit", "s", ["t2.service"])
    assert await client.get(spath, UNIT, "ActiveState") == "inactive"  # made, not started
    assert await client.get(spath, UNIT, "TriggeredBy") == ["t2.timer"]
    # systemctl stop of the timer: dead, collected, its service with it
    (job,) = await client.ok("StopUnit", "ss", ["t2.timer", "fail"])
    msg = await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job)
    assert msg.body[3] == "done"
    await client.wait_signal(lambda m: m.member == "UnitRemoved" and m.body[0] == "t2.service")


async def test_remain_after_elapse_and_unit_active_rearm(client: Client, tmp_path: Path) -> None:
    log = tmp_path / "log"
    path = await start_timer(
        client, "t3.timer",
        [mono(("OnActiveSec", 100_000)), mono(("OnUnitActiveSec", 300_000))],
        [service_aux("t3.service", SH, "-c", f"echo x >> {log}")],
    )  # fmt: skip
    for _ in range(500):  # OnUnitActiveSec= fires again after each run
        if log.exists() and len(log.read_text().split()) >= 3:
            break
        await asyncio.sleep(0.02)
    assert len(log.read_text().split()) >= 3
    assert await client.get(path, TIMER, "LastTriggerUSec") > 0
    last = await client.get(path, TIMER, "LastTriggerUSecMonotonic")
    assert 0 < last <= time.monotonic_ns() // 1000
    (job,) = await client.ok("StopUnit", "ss", ["t3.timer", "fail"])
    await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job)


async def test_one_time_trigger_leaves_it_elapsed(client: Client, tmp_path: Path) -> None:
    mark = tmp_path / "ran"
    path = await start_timer(
        client, "t4.timer", [mono(("OnActiveSec", 1))],
        [service_aux("t4.service", SH, "-c", f"touch {mark}")],
    )  # fmt: skip
    await wait_file(mark)
    # RemainAfterElapse= defaults to yes (systemd.timer(5)): elapsed, still active
    await until(client, path, UNIT, "SubState", "elapsed")
    assert await client.get(path, UNIT, "ActiveState") == "active"
    assert await client.get(path, TIMER, "NextElapseUSecMonotonic") == 2**64 - 1  # observed


async def test_podman_healthcheck_shape(client: Client, tmp_path: Path) -> None:
    """podman 4.3's healthcheck: `systemd-run --unit ID --on-unit-inactive=INTERVAL
    --timer-property=AccuracySec=1s podman healthcheck run ID`, then RestartUnit(ID.service,
    "fail") (seen from Debian's podman 4.3.1), later StopUnit(ID.timer). The timer is
    elapsed until the service first ran, then fires INTERVAL after each run (as systemd 252
    did in the lab)."""
    log = tmp_path / "checks"
    path = await start_timer(
        client, "hc.timer",
        [mono(("OnUnitInactiveSec", 200_000)), ["AccuracyUSec", Variant("t", 10**6)],
         ["RemainAfterElapse", Variant("b", False)]],
        [service_aux("hc.service", SH, "-c", f"echo x >> {log}")],
    )  # fmt: skip
    assert await client.get(path, UNIT, "SubState") == "elapsed"
    (entry,) = await client.get(path, TIMER, "TimersMonotonic")
    assert list(entry) == ["OnUnitInactiveUSec", 200_000, 0]  # waits for the service
    (job,) = await client.ok("RestartUnit", "ss", ["hc.service", "fail"])
    await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job)
    for _ in range(500):
        if log.exists() and len(log.read_text().split()) >= 3:
            break
        await asyncio.sleep(0.02)
    assert len(log.read_text().split()) >= 3
    assert await client.get(path, UNIT, "SubState") in ("waiting", "running")
    (job,) = await client.ok("StopUnit", "ss", ["hc.timer", "fail"])
    await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job)
    await client.wait_signal(lambda m: m.member == "UnitRemoved" and m.body[0] == "hc.timer")


@pytest.mark.parametrize(
    "props, error, message",
    [
        ([["Description", Variant("s", "x")]], "org.freedesktop.systemd1.BadUnitSetting",
         "Unit bad.timer has a bad unit file setting."),
        ([mono(("OnFoo", 5))], "org.freedesktop.DBus.Error.InvalidArgs",
         "Invalid timer base: OnFoo"),
        ([mono(("OnActiveUSec", 5))], "org.freedesktop.DBus.Error.InvalidArgs",
         "Invalid timer base: OnActiveUSec"),
        ([["TimersCalendar", Variant("a(ss)", [["OnCalendar", "foo"]])]],
         "org.freedesktop.DBus.Error.InvalidArgs", "Invalid calendar spec"),
        ([["TimersCalendar", Variant("a(ss)", [["OnCalendar", "*-*-* 24:00"]])]],
         "org.freedesktop.DBus.Error.InvalidArgs", "Invalid calendar spec"),
        ([["TimersCalendar", Variant("a(ss)", [["OnActive", "daily"]])]],
         "org.freedesktop.DBus.Error.InvalidArgs", "Invalid timer base: OnActive"),
        ([["Unit", Variant("s", "x.service")], mono(("OnActiveSec", 5))],
         "org.freedesktop.DBus.Error.PropertyReadOnly",
         "Cannot set property Unit, or unknown property."),
        ([["MemoryMax", Variant("t", 5)]], "org.freedesktop.DBus.Error.PropertyReadOnly",
         "Cannot set property MemoryMax, or unknown property."),
        ([["ExecStart", Variant("a(sasb)", [["/bin/true", ["/bin/true"], False]])]],
         "org.freedesktop.DBus.Error.PropertyReadOnly",
         "Cannot set property ExecStart, or unknown property."),
        ([["Slice", Variant("s", "foo.slice")]], "org.freedesktop.DBus.Error.InvalidArgs",
         "The slice property is only available for units with control groups."),
        ([["AccuracySec", Variant("t", 5)]], "org.freedesktop.systemd1.BadUnitSetting",
         "Unit bad.timer has a bad unit file setting."),
    ],
    ids=["no-trigger", "bad-base", "usec-base", "bad-calendar", "hour-24", "calendar-base",
         "unit", "memory-max", "exec-start", "slice", "accuracy-only"],
)  # fmt: skip
async def test_refused_timers_leave_nothing(
    daemon: Daemon, client: Client, props: list[Any], error: str, message: str
) -> None:
    """Each answer as systemd 252 gave it in the lab (docs/timers.md)."""
    reply = await client.call("StartTransientUnit", STU, ["bad.timer", "fail", props, []])
    assert (reply.error_name, reply.body[0]) == (error, message)
    assert "bad.timer" not in daemon.manager.units


async def test_a_bad_aux_service_refuses_the_timer(daemon: Daemon, client: Client) -> None:
    aux = [["bad.service", [["Description", Variant("s", "no ExecStart")]]]]
    reply = await client.call(
        "StartTransientUnit", STU, ["bad.timer", "fail", [mono(("OnActiveSec", 5))], aux]
    )
    assert reply.error_name == "org.freedesktop.systemd1.BadUnitSetting"
    assert "bad.timer" not in daemon.manager.units
    assert "bad.service" not in daemon.manager.units


async def test_a_timer_without_its_service_fails_to_start(client: Client) -> None:
    # systemd.timer(5): "Refusing to start, unit ... to trigger not loaded" (252: the unit
    # stays dead and goes, observed)
    (job,) = await client.ok(
        "StartTransientUnit", STU, ["lone.timer", "fail", [mono(("OnActiveSec", 5))], []]
    )
    msg = await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job)
    assert msg.body[3] == "failed"


async def test_pending_timer_rearmed_after_kill_9(
    shim: Shim,  # noqa: F811
    bus_client: Client,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A waiting timer survives SIGKILL of scopeshim and still fires at its time."""
    c, mark = bus_client, tmp_path / "ran"
    shim.start()
    await wait_owner(c)
    path = await start_timer(
        c, "late.timer", [mono(("OnActiveSec", 1_500_000))],
        [service_aux("late.service", SH, "-c", f"touch {mark}")],
    )  # fmt: skip
    due = await c.get(path, TIMER, "NextElapseUSecMonotonic")
    boot = await start_timer(c, "startup.timer", [mono(("OnStartupSec", 3600 * 10**6))],
                             [service_aux("startup.service", SH, "-c", "true")])  # fmt: skip
    startup_due = await c.get(boot, TIMER, "NextElapseUSecMonotonic")
    await restart(shim, c)
    # OnStartupSec= of a pending timer counts from the start it was armed in (differences.md)
    assert await c.get(boot, TIMER, "NextElapseUSecMonotonic") == startup_due
    assert not mark.exists()
    assert await c.get(path, UNIT, "SubState") == "waiting"
    assert await c.get(path, TIMER, "NextElapseUSecMonotonic") == due
    await wait_file(mark)
    assert time.monotonic_ns() // 1000 >= due
    await until(c, path, UNIT, "SubState", "elapsed")


def _systemd_run(
    address: str, state_dir: Path, mark: Path, bindir: str
) -> subprocess.CompletedProcess[str]:
    """Debian's systemd-run and systemctl exactly as typed (as in test_services.py); root's
    257+ talk only to /run/systemd/private, 252 tries it first."""
    script = f"""
mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system || exit 99
export DBUS_SYSTEM_BUS_ADDRESS='{address}' PATH='{bindir}':$PATH
{sys.executable} -m shim serve --address '{address}' --backend fake --state-dir '{state_dir}' \
  --private-socket /run/systemd/private --log-level debug 2> '{state_dir}/daemon.log' &
daemon=$!
for i in $(seq 100); do busctl --address '{address}' status org.freedesktop.systemd1 \
  >/dev/null 2>&1 && break; sleep 0.1; done
systemd-run --version | head -1
systemd-run --on-active=1 --unit=X touch {mark}; echo "run-status=$?"
systemd-run --on-calendar='*:0/15' --on-boot=7d --unit=cal true; echo "cal-status=$?"
systemctl --no-pager list-timers --all
systemctl --no-pager show -p SubState -p TimersCalendar -p Triggers cal.timer
for i in $(seq 100); do test -e {mark} && break; sleep 0.1; done
sleep 0.5
systemctl --no-pager show -p LoadState -p SubState X.timer
systemctl stop cal.timer; echo "stop-status=$?"
systemctl --no-pager show -p LoadState cal.timer cal.service
kill $daemon; wait $daemon
"""
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TZ": "UTC"},
    )  # fmt: skip


def _clients(version: str) -> str:
    """The directory of systemd-run/systemctl VERSION (252: Debian 12's, installed; 257 and
    262: tests/e2e/get-logind.sh's, skipped with its reason when it cannot fetch them)."""
    if version == "252":
        if shutil.which("systemd-run") is None:
            pytest.skip("systemd-run is not installed")
        return "/usr/bin"
    from tests.e2e.test_logind import fetch_logind

    logind, why = fetch_logind(version)
    if logind is None:
        pytest.skip(why)
    return str(Path(logind).parent / "bin")


@pytest.mark.skipif(os.getuid() != 0, reason="a mount namespace for /run/systemd needs root")
@pytest.mark.parametrize("version", ["252", "257", "262"])
async def test_systemd_run_on_active_and_list_timers(
    private_bus: PrivateBus, tmp_path: Path, version: str
) -> None:
    mark, bindir = tmp_path / "ran", _clients(version)
    done = await asyncio.to_thread(_systemd_run, private_bus.address, tmp_path, mark, bindir)
    out, log = done.stdout, (tmp_path / "daemon.log").read_text()
    assert out.startswith(f"systemd {version} "), out + done.stderr
    assert "run-status=0" in out and "cal-status=0" in out, out + done.stderr + log
    assert "Running timer as unit: X.timer" in done.stderr + out
    assert "Will run service as unit: X.service" in done.stderr + out
    assert mark.exists(), out + log
    # systemctl list-timers (252) lists both with their service
    listing = out.split("cal-status=0")[1]
    assert "X.timer" in listing and "X.service" in listing, out
    assert "cal.timer" in listing and "cal.service" in listing, out
    assert "timers listed." in listing
    assert "TimersCalendar={ OnCalendar=*-*-* *:00/15:00 ; next_elapse=" in out
    assert "Triggers=cal.service" in out and "SubState=waiting" in out
    after = out.split("Triggers=cal.service")[1]
    # RemainAfterElapse=no (systemd-run sends it): X.timer went once its service was done
    assert "LoadState=not-found" in after.split("stop-status")[0], out
    assert "stop-status=0" in out
    assert after.split("stop-status=0")[1].count("LoadState=not-found") == 2, out
    assert "Traceback" not in log




async def test_settings_accepted_and_shown_not_acted_on(client: Client) -> None:
    """docs/differences.md: Persistent=, WakeSystem=, OnClockChange=, OnTimezoneChange=,
    FixedRandomDelay= are kept and shown; RandomizedDelaySec= delays the elapse."""
    flags = ["Persistent", "WakeSystem", "OnClockChange", "OnTimezoneChange", "FixedRandomDelay"]
    path = await start_timer(
        client, "flags.timer",
        [mono(("OnActiveSec", 3600 * 10**6)), ["RandomizedDelayUSec", Variant("t", 10**6)],
         *[[f, Variant("b", True)] for f in flags]],
        [service_aux("flags.service", SH, "-c", "true")],
    )  # fmt: skip
    for flag in flags:
        assert await client.get(path, TIMER, flag) is True, flag
    assert await client.get(path, TIMER, "RandomizedDelayUSec") == 10**6
    ((_base, _value, plain),) = await client.get(path, TIMER, "TimersMonotonic")
    delayed = await client.get(path, TIMER, "NextElapseUSecMonotonic")
    assert plain <= delayed <= plain + 10**6


async def test_aux_units_are_services_only(daemon: Daemon, client: Client) -> None:
    """docs/differences.md: the auxiliary units may only be services here."""
    aux = [["x.slice", [["Description", Variant("s", "x")]]]]
    reply = await client.call(
        "StartTransientUnit", STU, ["aux.timer", "fail", [mono(("OnActiveSec", 5))], aux]
    )
    assert reply.error_name == "org.freedesktop.DBus.Error.InvalidArgs"
    assert "aux.timer" not in daemon.manager.units


async def test_user_manager_timer(private_bus: PrivateBus, tmp_path: Path) -> None:
    """The user manager runs timers with the same engine (systemd-run --user --on-active)."""
    from tests.bus.test_user_instance import start_user_daemon, stop_daemon

    d = await start_user_daemon(private_bus.address, tmp_path / "cgroupfs", os.getuid())
    try:
        from dbus_fast.aio import MessageBus

        bus = await MessageBus(bus_address=private_bus.address).connect()
        c = Client(bus)
        bus.add_message_handler(c._on_message)
        await c.ok("AddMatch", "s", ["type='signal',sender='org.freedesktop.systemd1'"],
                   path="/org/freedesktop/DBus", interface="org.freedesktop.DBus",
                   destination="org.freedesktop.DBus")  # fmt: skip
        mark = tmp_path / "ran"
        path = await start_timer(
            c, "u.timer", [mono(("OnActiveSec", 1))],
            [service_aux("u.service", SH, "-c", f"touch {mark}")],
        )  # fmt: skip
        await wait_file(mark)
        await until(c, path, UNIT, "SubState", "elapsed")
        bus.disconnect()
    finally:
        await stop_daemon(d)


async def test_restart_unit(daemon: Daemon, client: Client, tmp_path: Path) -> None:
    """RestartUnit starts an inactive service, stops and starts a running one (one job)."""
    log = tmp_path / "starts"
    (job,) = await client.ok("StartTransientUnit", STU, [
        "rs.service", "fail",
        [["ExecStart", Variant("a(sasb)", [[SH, [SH, "-c", f"echo x >> {log}; exec sleep 300"],
                                             False]])]], []])  # fmt: skip
    await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job)
    (path,) = await client.ok("GetUnit", "s", ["rs.service"])
    first = await client.get(path, "org.freedesktop.systemd1.Service", "MainPID")
    (job,) = await client.ok("RestartUnit", "ss", ["rs.service", "replace"])
    msg = await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job)
    assert msg.body[3] == "done"
    assert await client.get(path, UNIT, "ActiveState") == "active"
    second = await client.get(path, "org.freedesktop.systemd1.Service", "MainPID")
    assert first and second and first != second
    for _ in range(500):
        if log.exists() and len(log.read_text().split()) == 2:
            break
        await asyncio.sleep(0.02)
    assert len(log.read_text().split()) == 2
    (job,) = await client.ok("StopUnit", "ss", ["rs.service", "replace"])
    await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job)


async def test_restart_of_a_scope_is_not_applicable(client: Client, processes) -> None:
    p = processes()
    props = [["PIDs", Variant("au", [p.pid])]]
    (job,) = await client.ok("StartTransientUnit", STU, ["rx.scope", "fail", props, []])
    await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job)
    reply = await client.call("RestartUnit", "ss", ["rx.scope", "replace"])
    assert reply.error_name == "org.freedesktop.systemd1.JobTypeNotApplicable"
    assert reply.body[0] == "Job type restart is not applicable for unit rx.scope."


async def test_a_calendar_timer_fires(client: Client, tmp_path: Path) -> None:
    log = tmp_path / "log"
    path = await start_timer(
        client, "cal.timer", [["OnCalendar", Variant("s", "*:*:*")]],
        [service_aux("cal.service", SH, "-c", f"echo x >> {log}")],
    )  # fmt: skip
    for _ in range(500):  # every second (systemd.time(7): "*:*:*")
        if log.exists() and len(log.read_text().split()) >= 2:
            break
        await asyncio.sleep(0.02)
    assert len(log.read_text().split()) >= 2
    last = await client.get(path, TIMER, "LastTriggerUSec")
    assert last > 0
    await until(client, path, UNIT, "SubState", "waiting")
    assert await client.get(path, TIMER, "NextElapseUSecRealtime") > last


async def test_calendar_elapse_missed_while_down_fires_after_restart(
    shim: Shim,  # noqa: F811
    bus_client: Client,  # noqa: F811
    tmp_path: Path,
) -> None:
    """docs/differences.md: a calendar elapse that passed while scopeshim was killed fires
    as soon as it is back (the timer's activation and last trigger are on disk)."""
    c, mark = bus_client, tmp_path / "ran"
    shim.start()
    await wait_owner(c)
    when = time.time() + 2
    spec = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))
    path = await start_timer(
        c, "miss.timer", [["OnCalendar", Variant("s", spec)]],
        [service_aux("miss.service", SH, "-c", f"touch {mark}")],
    )  # fmt: skip
    shim.kill()
    await wait_owner(c, present=False)
    while time.time() < when + 0.5:
        await asyncio.sleep(0.1)
    assert not mark.exists()
    c.signals.clear()
    shim.start()
    await wait_owner(c)
    await wait_file(mark)
    await until(c, path, UNIT, "SubState", "elapsed")  # nothing after: RemainAfterElapse=yes
