"""A scope's whole life over a private bus: start, read, abandon, empty, removal; slices."""

from __future__ import annotations

import asyncio
import errno
import signal

from dbus_fast import Message, Variant

from backends.base import BackendError
from tests.conftest import MANAGER_IFACE, MANAGER_PATH, Client, Daemon

UNIT = "org.freedesktop.systemd1.Unit"
SCOPE = "org.freedesktop.systemd1.Scope"
JOB = "org.freedesktop.systemd1.Job"
FOO = "/org/freedesktop/systemd1/unit/foo_2escope"


def is_signal(member: str, *args: object) -> object:
    def pred(m: Message) -> bool:
        return m.member == member and list(m.body[: len(args)]) == list(args)

    return pred


def job_removed_for(job_path: str) -> object:
    return lambda m: m.member == "JobRemoved" and m.body[1] == job_path


def sub_state(path: str, state: str) -> object:
    """The PropertiesChanged signal announcing that the unit at PATH reached sub-state STATE."""

    def pred(m: Message) -> bool:
        if m.member != "PropertiesChanged" or m.path != path or m.body[0] != UNIT:
            return False
        return "SubState" in m.body[1] and m.body[1]["SubState"].value == state

    return pred


async def start_scope(
    client: Client, name: str, pids: list[int], *extra: list[object], mode: str = "fail"
) -> str:
    props = [["PIDs", Variant("au", pids)], *extra]
    (job,) = await client.ok("StartTransientUnit", "ssa(sv)a(sa(sv))", [name, mode, props, []])
    await client.wait_signal(job_removed_for(job))
    return str(job)


async def test_done_when_scenario(daemon: Daemon, client: Client, processes) -> None:
    proc = processes()
    props = [
        ["PIDs", Variant("au", [proc.pid])],
        ["Slice", Variant("s", "user-1000.slice")],
        ["Wants", Variant("as", ["a.service"])],
        ["Wants", Variant("as", ["b.service"])],
        ["Description", Variant("s", "first")],
        ["Description", Variant("s", "second")],
    ]
    (job,) = await client.ok(
        "StartTransientUnit", "ssa(sv)a(sa(sv))", ["foo.scope", "fail", props, []]
    )
    assert job.startswith("/org/freedesktop/systemd1/job/")
    removed = await client.wait_signal(job_removed_for(job))
    assert removed.body[2:] == ["foo.scope", "done"]
    assert removed.path == MANAGER_PATH and removed.interface == MANAGER_IFACE

    assert await client.ok("GetUnit", "s", ["foo.scope"]) == [FOO]
    assert await client.get(FOO, UNIT, "Wants") == ["a.service", "b.service"]  # appended
    assert await client.get(FOO, UNIT, "Description") == "second"  # scalar: last wins
    assert await client.get(FOO, UNIT, "ActiveState") == "active"
    assert await client.get(FOO, UNIT, "SubState") == "running"
    assert await client.get(FOO, SCOPE, "ControlGroup") == "/user.slice/user-1000.slice/foo.scope"
    assert len(await client.get(FOO, UNIT, "InvocationID")) == 16

    # the process really is in the scope's cgroup (fake backend), implicit slices exist
    assert daemon.backend.cgroup_of(proc.pid) == "/user.slice/user-1000.slice/foo.scope"
    assert (
        daemon.backend.root / "user.slice/user-1000.slice/foo.scope/cgroup.procs"
    ).read_text() == f"{proc.pid}\n"
    for slice_name in ("user.slice", "user-1000.slice"):
        path = "/org/freedesktop/systemd1/unit/" + slice_name.replace("-", "_2d").replace(
            ".", "_2e"
        )
        assert await client.get(path, UNIT, "ActiveState") == "active"

    # a finished job's object is gone with exactly UnknownObject
    name, message = await client.error(
        "Get", "ss", [JOB, "State"], path=job, interface="org.freedesktop.DBus.Properties"
    )
    assert name == "org.freedesktop.DBus.Error.UnknownObject"
    assert message == f"Unknown object '{job}'."

    # never-loaded units answer inactive
    never = "/org/freedesktop/systemd1/unit/never_2dloaded_2escope"
    assert await client.get(never, UNIT, "ActiveState") == "inactive"
    assert await client.get(never, UNIT, "LoadState") == "not-found"

    # a duplicate start is UnitExists and changes nothing
    ops_before = list(daemon.backend.operations)
    name, message = await client.error(
        "StartTransientUnit",
        "ssa(sv)a(sa(sv))",
        ["foo.scope", "fail", [["PIDs", Variant("au", [proc.pid])]], []],
    )
    assert name == "org.freedesktop.systemd1.UnitExists"
    assert message == "Unit foo.scope was already loaded or has a fragment file."
    assert list(daemon.backend.operations) == ops_before

    # Abandon -> SubState abandoned, still active
    await client.ok("Abandon", path=FOO, interface=SCOPE)
    assert await client.get(FOO, UNIT, "SubState") == "abandoned"
    assert await client.get(FOO, UNIT, "ActiveState") == "active"

    # the last process exits -> inactive, then UnitRemoved
    client.signals.clear()
    proc.kill()
    removed = await client.wait_signal(is_signal("UnitRemoved", "foo.scope"))
    states = [
        m.body[1]["ActiveState"].value
        for m in client.signals
        if m.member == "PropertiesChanged" and m.path == FOO and m.body[0] == UNIT
    ]
    assert states and states[-1] == "inactive"
    assert client.signals.index(removed) > max(
        i for i, m in enumerate(client.signals) if m.member == "PropertiesChanged" and m.path == FOO
    )
    assert not (daemon.backend.root / "user.slice/user-1000.slice/foo.scope").exists()
    # user-1000.slice was there only for the scope: it goes too (StopWhenUnneeded=)
    await client.wait_signal(is_signal("UnitRemoved", "user-1000.slice"))
    assert not (daemon.backend.root / "user.slice/user-1000.slice").exists()
    assert (daemon.backend.root / "user.slice").is_dir()
    name, _ = await client.error("GetUnit", "s", ["foo.scope"])
    assert name == "org.freedesktop.systemd1.NoSuchUnit"


async def test_signal_order_of_a_start(daemon: Daemon, client: Client, processes) -> None:
    """UnitNew, JobNew, the reply, the unit's PropertiesChanged, then JobRemoved, then the
    Job property cleared: systemd 252's order in
    fixtures/dbus-logs/real-systemd-252/real-logind-open-session.log (serials 64-111).
    The daemon's message serials give the order in which it sent them."""
    proc = processes()
    reply = await client.call(
        "StartTransientUnit",
        "ssa(sv)a(sa(sv))",
        ["bar.scope", "fail", [["PIDs", Variant("au", [proc.pid])]], []],
    )
    job = reply.body[0]
    await client.wait_signal(job_removed_for(job))
    await client.wait_signal(
        lambda m: (
            m.member == "PropertiesChanged"
            and m.body[0] == UNIT
            and m.path.endswith("bar_2escope")
            and m.body[1]["Job"].value[0] == 0
        )
    )
    events = [(reply.serial, "reply")]
    for m in client.signals:
        if m.member in ("UnitNew", "JobNew", "JobRemoved") and "bar.scope" in m.body:
            events.append((m.serial, m.member))
        elif m.member == "PropertiesChanged" and m.path.endswith("bar_2escope"):
            job_id = m.body[1]["Job"].value[0] if "Job" in m.body[1] else None
            events.append((m.serial, f"{m.body[0].rsplit('.', 1)[1]}:{job_id}"))
    order = [name for _, name in sorted(events)]
    job_id = int(job.rsplit("/", 1)[1])
    # first the queued job (SubState dead), then running, JobRemoved, then Job cleared
    assert order == [
        "UnitNew",
        "JobNew",
        "reply",
        "Scope:None",
        f"Unit:{job_id}",
        "Scope:None",
        f"Unit:{job_id}",
        "JobRemoved",
        "Scope:None",
        "Unit:0",
    ]
    states = [
        m.body[1]["SubState"].value
        for m in client.signals
        if m.member == "PropertiesChanged" and m.path.endswith("bar_2escope") and m.body[0] == UNIT
    ]
    assert states == ["dead", "running", "running"]


async def test_stop_sends_sigterm_and_finishes_when_empty(
    daemon: Daemon, client: Client, processes
) -> None:
    proc = processes()
    await start_scope(client, "stop-me.scope", [proc.pid], ["SendSIGHUP", Variant("b", True)])
    (job,) = await client.ok("StopUnit", "ss", ["stop-me.scope", "replace"])
    removed = await client.wait_signal(job_removed_for(job))
    assert removed.body[3] == "done"
    assert proc.wait(timeout=5) == -signal.SIGTERM
    kills = [op.args[0] for op in daemon.backend.operations if op.op == "kill"]
    assert kills[:2] == [signal.SIGTERM, signal.SIGHUP]


async def test_stop_escalates_to_sigkill_after_timeout(
    daemon: Daemon, client: Client, processes
) -> None:
    """systemd 252: stop-sigterm, then stop-sigkill after TimeoutStopUSec, then failed with
    Result=timeout; the stop job is still "done" and the failed unit stays loaded
    (fixtures/oracle/report.md, Q6)."""
    proc = processes(ignore_term=True)
    await start_scope(
        client, "stubborn.scope", [proc.pid], ["TimeoutStopUSec", Variant("t", 300_000)]
    )
    path = "/org/freedesktop/systemd1/unit/stubborn_2escope"
    (job,) = await client.ok("StopUnit", "ss", ["stubborn.scope", "replace"])
    # the states in order, each announced; the job ends after the last
    await client.wait_signal(sub_state(path, "stop-sigterm"))
    await client.wait_signal(sub_state(path, "stop-sigkill"))
    removed = await client.wait_signal(job_removed_for(job))
    assert removed.body[3] == "done"
    assert proc.wait(timeout=5) == -signal.SIGKILL
    assert await client.get(path, UNIT, "ActiveState") == "failed"
    assert await client.get(path, SCOPE, "Result") == "timeout"
    assert "stubborn.scope" in daemon.manager.units
    await client.ok("ResetFailedUnit", "s", ["stubborn.scope"])
    await client.wait_signal(is_signal("UnitRemoved", "stubborn.scope"))


async def test_pid_moved_to_another_scope_empties_the_first(
    daemon: Daemon, client: Client, processes
) -> None:
    """systemd 252 moves a PID that already is in a scope; the old scope empties and goes."""
    proc = processes()
    await start_scope(client, "owner-a.scope", [proc.pid])
    await start_scope(client, "owner-b.scope", [proc.pid])
    await client.wait_signal(is_signal("UnitRemoved", "owner-a.scope"))
    assert daemon.backend.cgroup_of(proc.pid) == "/system.slice/owner-b.scope"
    assert daemon.manager.units["owner-b.scope"].sub_state == "running"


async def test_kill_unit(daemon: Daemon, client: Client, processes) -> None:
    proc = processes()
    await start_scope(client, "k.scope", [proc.pid])
    name, message = await client.error("KillUnit", "ssi", ["k.scope", "main", 15])
    assert (name, message) == (
        "org.freedesktop.systemd1.NoSuchProcess",
        "scope units have no main processes",
    )
    await client.ok("KillUnit", "ssi", ["k.scope", "all", signal.SIGUSR1])
    assert proc.wait(timeout=5) == -signal.SIGUSR1
    await client.wait_signal(is_signal("UnitRemoved", "k.scope"))


async def test_transient_slice_and_implicit_parents(daemon: Daemon, client: Client) -> None:
    (job,) = await client.ok(
        "StartTransientUnit",
        "ssa(sv)a(sa(sv))",
        ["app-web-front.slice", "fail", [["MemoryMax", Variant("t", 1 << 30)]], []],
    )
    await client.wait_signal(job_removed_for(job))
    for name, cgroup in (
        ("app.slice", "/app.slice"),
        ("app-web.slice", "/app.slice/app-web.slice"),
        ("app-web-front.slice", "/app.slice/app-web.slice/app-web-front.slice"),
    ):
        (path,) = await client.ok("GetUnit", "s", [name])
        assert await client.get(path, UNIT, "ActiveState") == "active"
        assert await client.get(path, "org.freedesktop.systemd1.Slice", "ControlGroup") == cgroup
        assert daemon.backend.exists(cgroup)
    (path,) = await client.ok("GetUnit", "s", ["app-web-front.slice"])
    assert await client.get(path, "org.freedesktop.systemd1.Slice", "MemoryMax") == 1 << 30
    # stopping the top slice stops what is inside, and removes the cgroups
    (job,) = await client.ok("StopUnit", "ss", ["app.slice", "replace"])
    await client.wait_signal(job_removed_for(job))
    await client.wait_signal(sub_state(path, "dead"))
    assert not daemon.backend.exists("/app.slice/app-web.slice/app-web-front.slice")


async def test_root_slice_is_perpetual(daemon: Daemon, client: Client) -> None:
    path = "/org/freedesktop/systemd1/unit/_2d_2eslice"
    assert await client.ok("GetUnit", "s", ["-.slice"]) == [path]
    assert await client.get(path, UNIT, "Perpetual") is True
    assert await client.get(path, "org.freedesktop.systemd1.Slice", "ControlGroup") == "/"
    name, _ = await client.error("StopUnit", "ss", ["-.slice", "replace"])
    assert name == "org.freedesktop.systemd1.JobTypeNotApplicable"


SELF_CLIENT = """
import asyncio, json, os, sys
from dbus_fast import Message, Variant
from dbus_fast.aio import MessageBus

async def main():
    bus = await MessageBus(bus_address=sys.argv[1]).connect()
    def call(path, iface, member, sig="", body=()):
        return bus.call(Message(destination="org.freedesktop.systemd1", path=path,
                                interface=iface, member=member, signature=sig, body=list(body)))
    m = "/org/freedesktop/systemd1"
    r = await call(m, "org.freedesktop.systemd1.Manager", "StartTransientUnit",
                   "ssa(sv)a(sa(sv))", ["me.scope", "fail", [["PIDs", Variant("au", [0])]], []])
    while (await call(m, "org.freedesktop.systemd1.Manager", "GetUnitByPID", "u", [0])).error_name:
        await asyncio.sleep(0.01)  # until this process is in its scope
    s = await call(m + "/unit/self", "org.freedesktop.DBus.Properties", "Get", "ss",
                   ["org.freedesktop.systemd1.Unit", "InvocationID"])
    p = await call(m, "org.freedesktop.systemd1.Manager", "GetUnitByPID", "u", [0])
    z = await call(m, "org.freedesktop.systemd1.Manager", "GetUnitByInvocationID", "ay",
                   [bytes(16)])
    print(json.dumps({"pid": os.getpid(), "job": r.body, "self": list(s.body[0].value),
                      "by_pid": p.body, "null_id": z.body}))

asyncio.run(main())
"""


async def test_unit_self_and_the_caller(daemon: Daemon, client: Client) -> None:
    """systemd-run --scope's sequence from another process: PIDs [0] is the caller, unit/self
    and GetUnitByPID(0) resolve its unit, InvocationID has 16 bytes."""
    import json
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SELF_CLIENT, daemon.address, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    result = json.loads(out)
    assert result["job"][0].startswith("/org/freedesktop/systemd1/job/")
    assert len(result["self"]) == 16
    assert result["by_pid"] == ["/org/freedesktop/systemd1/unit/me_2escope"]
    assert result["null_id"][0].endswith(bytes(result["self"]).hex()[1:])
    # the client has exited: its scope empties and goes away
    await client.wait_signal(is_signal("UnitRemoved", "me.scope"))
    assert daemon.backend.cgroup_of(result["pid"]) is None


async def test_lookups_by_pid_cgroup_and_invocation(
    daemon: Daemon, client: Client, processes
) -> None:
    proc = processes()
    await start_scope(client, "look.scope", [proc.pid])
    path = "/org/freedesktop/systemd1/unit/look_2escope"
    invocation = await client.get(path, UNIT, "InvocationID")
    assert await client.ok("GetUnitByPID", "u", [proc.pid]) == [path]
    (by_id,) = await client.ok("GetUnitByInvocationID", "ay", [invocation])
    assert by_id == "/org/freedesktop/systemd1/unit/" + (
        "_3" + invocation.hex() if invocation.hex()[0].isdigit() else invocation.hex()
    )
    assert await client.get(by_id, UNIT, "Id") == "look.scope"
    assert await client.ok("GetUnitByControlGroup", "s", ["/system.slice/look.scope"]) == [path]
    assert await client.ok("GetUnitByControlGroup", "s", ["/system.slice/look.scope/x/y"]) == [path]


async def test_lists_and_processes(daemon: Daemon, client: Client, processes) -> None:
    proc = processes()
    await start_scope(client, "list-me.scope", [proc.pid], ["Description", Variant("s", "Hi")])
    (units,) = await client.ok("ListUnitsByPatterns", "asas", [["active"], ["list-*"]])
    assert [list(u) for u in units] == [
        [
            "list-me.scope",
            "Hi",
            "loaded",
            "active",
            "running",
            "",
            "/org/freedesktop/systemd1/unit/list_2dme_2escope",
            0,
            "",
            "/",
        ]
    ]
    (units,) = await client.ok("ListUnits")
    assert {"-.slice", "system.slice", "list-me.scope"} <= {u[0] for u in units}
    (units,) = await client.ok("ListUnitsFiltered", "as", [["running"]])
    assert [u[0] for u in units] == ["list-me.scope"]
    (procs,) = await client.ok("GetUnitProcesses", "s", ["list-me.scope"])
    assert len(procs) == 1
    cgroup, pid, cmdline = procs[0]
    assert (cgroup, pid) == ("/system.slice/list-me.scope", proc.pid)
    assert "time.sleep" in cmdline
    assert await client.ok("ListJobs") == [[]]


async def test_reset_failed_and_subscribe(daemon: Daemon, client: Client) -> None:
    await client.ok("Subscribe")
    name, message = await client.error("Subscribe")
    assert (name, message) == (
        "org.freedesktop.systemd1.AlreadySubscribed",
        "Client is already subscribed.",
    )
    await client.ok("Unsubscribe")
    name, _ = await client.error("Unsubscribe")
    assert name == "org.freedesktop.systemd1.NotSubscribed"
    await client.ok("ResetFailed")
    client.signals.clear()
    await client.ok("Reload")
    await client.wait_signal(is_signal("Reloading", False))
    assert [m.body for m in client.signals if m.member == "Reloading"] == [[True], [False]]


async def test_freeze_thaw_and_attach(daemon: Daemon, client: Client, processes) -> None:
    p1, p2 = processes(), processes()
    await start_scope(client, "fz.scope", [p1.pid], ["Delegate", Variant("b", True)])
    path = "/org/freedesktop/systemd1/unit/fz_2escope"
    await client.ok("FreezeUnit", "s", ["fz.scope"])
    assert await client.get(path, UNIT, "FreezerState") == "frozen"
    await client.ok("ThawUnit", "s", ["fz.scope"])
    assert await client.get(path, UNIT, "FreezerState") == "running"
    assert [op.op for op in daemon.backend.operations if op.op in ("freeze", "thaw")] == [
        "freeze",
        "thaw",
    ]
    name, _ = await client.error(
        "AttachProcessesToUnit", "ssau", ["fz.scope", "/payload", [p2.pid]]
    )
    assert name == "org.freedesktop.DBus.Error.FileNotFound"  # systemd creates no sub-cgroup
    daemon.backend.create("/system.slice/fz.scope/payload")  # the delegate's mkdir
    await client.ok("AttachProcessesToUnit", "ssau", ["fz.scope", "/payload", [p2.pid]])
    assert daemon.backend.cgroup_of(p2.pid) == "/system.slice/fz.scope/payload"


async def test_not_found_units_are_collected(daemon: Daemon, client: Client) -> None:
    """systemd 252 loads a polled unit and drops it again: UnitNew, then UnitRemoved
    (real-logind-close-session.log, serials 149-153)."""
    path = "/org/freedesktop/systemd1/unit/gone_2dsoon_2escope"
    assert await client.get(path, UNIT, "ActiveState") == "inactive"
    await client.wait_signal(is_signal("UnitRemoved", "gone-soon.scope"))
    new = [m for m in client.signals if m.member == "UnitNew" and m.body[0] == "gone-soon.scope"]
    assert len(new) == 1
    assert "gone-soon.scope" not in daemon.manager.units
    name, _ = await client.error("GetUnit", "s", ["gone-soon.scope"])
    assert name == "org.freedesktop.systemd1.NoSuchUnit"


async def test_job_modes_fail_and_replace(daemon: Daemon, client: Client, processes) -> None:
    """A queued stop job: start in mode fail is refused, in mode replace cancels it."""
    proc = processes(ignore_term=True)
    await start_scope(
        client,
        "inner.scope",
        [proc.pid],
        ["Slice", Variant("s", "outer.slice")],
        ["TimeoutStopUSec", Variant("t", 30_000_000)],
    )
    (stop_job,) = await client.ok("StopUnit", "ss", ["outer.slice", "replace"])
    # the job is queued once the call has answered (its path is the answer)
    assert await client.get(stop_job, JOB, "JobType") == "stop"
    name, message = await client.error("StartUnit", "ss", ["outer.slice", "fail"])
    assert name == "org.freedesktop.systemd1.TransactionIsDestructive"
    assert "outer.slice has 'stop' job queued" in message
    # the same job type merges into the queued job
    assert await client.ok("StopUnit", "ss", ["outer.slice", "fail"]) == [stop_job]
    (start_job,) = await client.ok("StartUnit", "ss", ["outer.slice", "replace"])
    canceled = await client.wait_signal(job_removed_for(stop_job))
    assert canceled.body[3] == "canceled"
    done = await client.wait_signal(job_removed_for(start_job))
    assert done.body[3] == "done"
    proc.kill()
    await client.wait_signal(is_signal("UnitRemoved", "inner.scope"))


async def test_cancel_job(daemon: Daemon, client: Client, processes) -> None:
    proc = processes(ignore_term=True)
    await start_scope(client, "c.scope", [proc.pid], ["TimeoutStopUSec", Variant("t", 30_000_000)])
    (job,) = await client.ok("StopUnit", "ss", ["c.scope", "replace"])
    # running once the unit announces stop-sigterm (it stays there: SIGTERM is ignored)
    await client.wait_signal(sub_state("/org/freedesktop/systemd1/unit/c_2escope", "stop-sigterm"))
    assert await client.get(job, JOB, "State") == "running"
    # a second stop merges into the running job
    assert await client.ok("StopUnit", "ss", ["c.scope", "replace"]) == [job]
    (jobs,) = await client.ok("ListJobs")
    assert [list(j)[:4] for j in jobs] == [
        [int(job.rsplit("/", 1)[1]), "c.scope", "stop", "running"]
    ]
    await client.ok("Cancel", path=job, interface=JOB)
    removed = await client.wait_signal(job_removed_for(job))
    assert removed.body[3] == "canceled"
    name, _ = await client.error(
        "Get", "ss", [JOB, "State"], path=job, interface="org.freedesktop.DBus.Properties"
    )
    assert name == "org.freedesktop.DBus.Error.UnknownObject"


async def test_resource_settings_reach_the_cgroup_files(
    daemon: Daemon, client: Client, processes
) -> None:
    """systemd-run -p MemoryMax=... -p CPUWeight=... lands in the kernel files (fake tree)."""
    proc = processes()
    await start_scope(
        client,
        "lim.scope",
        [proc.pid],
        ["MemoryMax", Variant("t", 100 << 20)],
        ["CPUWeight", Variant("t", 50)],
        ["CPUQuotaPerSecUSec", Variant("t", 250_000)],
        ["TasksMax", Variant("t", 64)],
    )
    files = daemon.backend.root / "system.slice/lim.scope"
    assert (files / "memory.max").read_text() == f"{100 << 20}\n"
    assert (files / "cpu.weight").read_text() == "50\n"
    assert (files / "cpu.max").read_text() == "25000 100000\n"
    assert (files / "pids.max").read_text() == "64\n"
    await client.ok(
        "SetUnitProperties",
        "sba(sv)",
        ["lim.scope", True, [["MemoryMax", Variant("t", 2**64 - 1)]]],
    )
    assert (files / "memory.max").read_text() == "max\n"


async def test_delegate_hands_the_cgroup_to_the_user(
    daemon: Daemon, client: Client, processes
) -> None:
    """systemd.resource-control(5) Delegate=: the scope's cgroup is chowned to User=."""
    proc = processes()
    await start_scope(
        client,
        "dl.scope",
        [proc.pid],
        ["Delegate", Variant("b", True)],
        ["User", Variant("s", "nobody")],
    )
    assert daemon.backend.delegated == {"/system.slice/dl.scope": (65534, 65534)}
    assert await client.get("/org/freedesktop/systemd1/unit/dl_2escope", SCOPE, "Delegate")


async def test_delegate_to_an_unknown_user_fails_and_leaves_nothing(
    daemon: Daemon, client: Client, processes
) -> None:
    proc = processes()
    props = [
        ["PIDs", Variant("au", [proc.pid])],
        ["Delegate", Variant("b", True)],
        ["User", Variant("s", "no-such-user-here")],
    ]
    (job,) = await client.ok(
        "StartTransientUnit", "ssa(sv)a(sa(sv))", ["du.scope", "fail", props, []]
    )
    removed = await client.wait_signal(job_removed_for(job))
    assert removed.body[3] == "failed"
    assert not daemon.backend.exists("/system.slice/du.scope")
    assert daemon.backend.cgroup_of(proc.pid) is None  # the process was never moved
    path = "/org/freedesktop/systemd1/unit/du_2escope"
    assert await client.get(path, UNIT, "ActiveState") == "failed"
    assert await client.get(path, SCOPE, "Result") == "resources"


async def test_counters_follow_the_accounting_settings(
    daemon: Daemon, client: Client, processes
) -> None:
    proc = processes()
    await start_scope(client, "acct.scope", [proc.pid], ["TasksAccounting", Variant("b", False)])
    path = "/org/freedesktop/systemd1/unit/acct_2escope"
    assert await client.get(path, SCOPE, "TasksCurrent") == 2**64 - 1  # accounting off
    await client.ok(
        "SetUnitProperties",
        "sba(sv)",
        ["acct.scope", True, [["TasksAccounting", Variant("b", True)]]],
    )
    assert await client.get(path, SCOPE, "TasksCurrent") == 1
    # the fake tree has no memory.current
    assert await client.get(path, SCOPE, "MemoryCurrent") == 2**64 - 1
    assert await client.get(path, SCOPE, "ControlGroupId") > 0


async def test_cgroupfs_errors_keep_their_errno_name(
    daemon: Daemon, client: Client, processes, monkeypatch
) -> None:
    """sd_bus_error_set_errnof(): EACCES answers AccessDenied, EBUSY System.Error.EBUSY;
    nothing changes and the daemon stays up."""
    p1, p2 = processes(), processes()
    await start_scope(client, "ea.scope", [p1.pid], ["Delegate", Variant("b", True)])

    def refuse(code: int):
        def fail(*args: object) -> None:
            raise BackendError("refused by the kernel", code)

        return fail

    monkeypatch.setattr(daemon.backend, "attach", refuse(errno.EACCES))
    name, text = await client.error("AttachProcessesToUnit", "ssau", ["ea.scope", "", [p2.pid]])
    assert name == "org.freedesktop.DBus.Error.AccessDenied"
    assert text == "Failed to attach processes to control group: Permission denied"
    monkeypatch.setattr(daemon.backend, "freeze", refuse(errno.EBUSY))
    name, text = await client.error("FreezeUnit", "s", ["ea.scope"])
    assert (name, text) == ("System.Error.EBUSY", "Failed to freeze unit: Device or resource busy")
    path = "/org/freedesktop/systemd1/unit/ea_2escope"
    assert await client.get(path, UNIT, "FreezerState") == "running"
    assert await client.get(path, UNIT, "ActiveState") == "active"


async def test_a_refused_cgroup_fails_the_job_and_leaves_nothing(
    daemon: Daemon, client: Client, processes, monkeypatch
) -> None:
    """ENOSPC from mkdir (cgroup.max.descendants reached): the start job fails, the scope
    is failed with Result=resources, its process stays where it was, the daemon stays up."""
    proc = processes()

    create = daemon.backend.create

    def full(path: str) -> None:
        if not path.endswith(".scope"):
            return create(path)
        raise BackendError(f"cannot create cgroup {path}: No space left on device", errno.ENOSPC)

    monkeypatch.setattr(daemon.backend, "create", full)
    props = [["PIDs", Variant("au", [proc.pid])], ["Slice", Variant("s", "sys.slice")]]
    (job,) = await client.ok(
        "StartTransientUnit", "ssa(sv)a(sa(sv))", ["full.scope", "fail", props, []]
    )
    removed = await client.wait_signal(job_removed_for(job))
    assert removed.body[3] == "failed"
    path = "/org/freedesktop/systemd1/unit/full_2escope"
    assert await client.get(path, SCOPE, "Result") == "resources"
    assert await client.get(path, UNIT, "ActiveState") == "failed"
    assert daemon.backend.cgroup_of(proc.pid) is None
    monkeypatch.undo()
    await start_scope(client, "fine.scope", [proc.pid])  # and the daemon still works
    assert daemon.backend.cgroup_of(proc.pid) == "/system.slice/fine.scope"


async def test_cgroup_carries_the_invocation_id(daemon: Daemon, client: Client, processes) -> None:
    """systemd labels a unit's cgroup with trusted.invocation_id (systemd-cgls shows it)."""
    proc = processes()
    await start_scope(client, "lab.scope", [proc.pid])
    invocation = await client.get(
        "/org/freedesktop/systemd1/unit/lab_2escope", UNIT, "InvocationID"
    )
    assert daemon.backend.labels["/system.slice/lab.scope"] == bytes(invocation).hex()
