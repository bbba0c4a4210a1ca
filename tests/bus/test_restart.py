"""kill -9 and a restart lose nothing: units, their processes and settings come back from the
state directory; a job in flight at the crash is answered as failed; job ids never go back."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from dbus_fast import Message, Variant
from dbus_fast.aio import MessageBus

from tests.conftest import ROOT, Client, PrivateBus

UNIT = "org.freedesktop.systemd1.Unit"
A = "/org/freedesktop/systemd1/unit/a_2escope"


class Daemon:
    """scopeshim as a real process (so that it can be killed), fake backend, state on disk."""

    def __init__(self, address: str, tmp: Path) -> None:
        self.command = [
            sys.executable, "-m", "shim", "serve", "--address", address, "--backend", "fake",
            "--cgroup-root", str(tmp / "cgroupfs"), "--state-dir", str(tmp / "state"),
        ]  # fmt: skip
        self.log = tmp / "scopeshim.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.prefix: list[str] = []  # e.g. nsenter into a mount namespace (test_faults.py)

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, *self.command], cwd=ROOT, stdout=log, stderr=log
            )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(10)


@pytest.fixture
def shim(private_bus: PrivateBus, tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(private_bus.address, tmp_path)
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.kill(signal.SIGTERM)


@pytest.fixture
async def bus_client(private_bus: PrivateBus) -> AsyncIterator[Client]:
    bus = await MessageBus(bus_address=private_bus.address).connect()
    c = Client(bus)
    bus.add_message_handler(c._on_message)
    await c.ok(
        "AddMatch",
        "s",
        ["type='signal',sender='org.freedesktop.systemd1'"],
        path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus",
        destination="org.freedesktop.DBus",
    )
    yield c
    bus.disconnect()
    await bus.wait_for_disconnect()


async def wait_owner(client: Client, present: bool = True) -> None:
    for _ in range(300):
        (has,) = await client.ok(
            "NameHasOwner",
            "s",
            ["org.freedesktop.systemd1"],
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            destination="org.freedesktop.DBus",
        )
        if has is present:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError("org.freedesktop.systemd1 did not come (or go)")


def job_removed(path: str) -> object:
    return lambda m: isinstance(m, Message) and m.member == "JobRemoved" and m.body[1] == path


async def test_kill_9_and_restart_lose_nothing(shim: Daemon, bus_client: Client, processes) -> None:
    c = bus_client
    shim.start()
    await wait_owner(c)
    sleeper, stubborn = processes(), processes(ignore_term=True)
    props = [
        ["PIDs", Variant("au", [sleeper.pid])],
        ["Slice", Variant("s", "user-1000.slice")],
        ["Description", Variant("s", "kept across the crash")],
        ["MemoryMax", Variant("t", 1 << 30)],
    ]
    (job,) = await c.ok("StartTransientUnit", "ssa(sv)a(sa(sv))", ["a.scope", "fail", props, []])
    await c.wait_signal(job_removed(job))
    invocation = await c.get(A, UNIT, "InvocationID")
    props = [
        ["PIDs", Variant("au", [stubborn.pid])],
        ["TimeoutStopUSec", Variant("t", 600 * 10**6)],
    ]
    (job,) = await c.ok("StartTransientUnit", "ssa(sv)a(sa(sv))", ["b.scope", "fail", props, []])
    await c.wait_signal(job_removed(job))
    (stop_job,) = await c.ok("StopUnit", "ss", ["b.scope", "replace"])  # waits for SIGKILL
    await asyncio.sleep(0.3)  # let the state reach the disk (written once per iteration)

    shim.kill()
    await wait_owner(c, present=False)
    c.signals.clear()
    shim.start()
    await wait_owner(c)

    # the job in flight is answered, as failed
    lost = await c.wait_signal(job_removed(stop_job))
    assert lost.body[3] == "failed"
    # the scope is back as it was, with its process and settings
    assert await c.get(A, UNIT, "ActiveState") == "active"
    assert await c.get(A, UNIT, "Description") == "kept across the crash"
    assert await c.get(A, UNIT, "InvocationID") == invocation
    assert await c.get(A, "org.freedesktop.systemd1.Scope", "MemoryMax") == 1 << 30
    procs = await c.ok("GetUnitProcesses", "s", ["a.scope"])
    assert [p[1] for p in procs[0]] == [sleeper.pid]
    # job ids never go back
    (job,) = await c.ok("StopUnit", "ss", ["a.scope", "replace"])
    assert int(job.rsplit("/", 1)[1]) > int(stop_job.rsplit("/", 1)[1])
    await c.wait_signal(job_removed(job))
    # and the empty scope is still noticed after the restart
    await c.ok("KillUnit", "ssi", ["b.scope", "all", signal.SIGKILL])
    await c.wait_signal(lambda m: m.member == "UnitRemoved" and m.body[0] == "b.scope")
    assert stubborn.wait(5) == -signal.SIGKILL
    assert sleeper.wait(5) == -signal.SIGTERM


# -- durability: an answer means the state is on disk ------------------------------------------


def sleep_processes(n: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen(["sleep", "300"]) for _ in range(n)]


def reap(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def stu(name: str, pid: int) -> Message:
    return Message(
        destination="org.freedesktop.systemd1",
        path="/org/freedesktop/systemd1",
        interface="org.freedesktop.systemd1.Manager",
        member="StartTransientUnit",
        signature="ssa(sv)a(sa(sv))",
        body=[name, "fail", [["PIDs", Variant("au", [pid])]], []],
    )


async def burst_then_kill(
    c: Client, shim: Daemon, calls: list[Message], kill_after: int
) -> dict[str, str]:
    """Send CALLS pipelined, SIGKILL the daemon right after the KILL_AFTER-th reply; the
    answered calls: unit name -> job path."""
    tasks = {asyncio.ensure_future(c.bus.call(m)): m.body[0] for m in calls}
    answered: dict[str, str] = {}
    pending = set(tasks)
    while pending and len(answered) < kill_after:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            reply = t.result()
            if reply is not None and reply.message_type.name == "METHOD_RETURN":
                answered[tasks[t]] = reply.body[0]
    shim.kill()  # at once: no loop turn of ours runs between the reply and the kill
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return answered


async def unowned_cgroups(c: Client, root: Path) -> list[str]:
    """Cgroups of the fake tree holding live processes that no loaded unit owns."""
    owned = set()
    (units,) = await c.ok("ListUnits")
    for u in units:
        owned.add(await c.get(u[6], UNIT.replace("Unit", "Scope"), "ControlGroup")
                  if u[0].endswith(".scope") else None)  # fmt: skip
    out = []
    for procs in root.rglob("cgroup.procs"):
        pids = [int(w) for w in procs.read_text().split()]
        if any(Path(f"/proc/{p}").exists() for p in pids):
            path = "/" + "/".join(procs.parent.relative_to(root).parts)
            if path not in owned:
                out.append(path)
    return sorted(out)


async def test_answered_means_on_disk(shim: Daemon, bus_client: Client, tmp_path: Path) -> None:
    """SIGKILL right after the 30th reply of 60 pipelined StartTransientUnit calls: every
    answered unit is back after the restart, every answered job ends with JobRemoved, and
    no process is left in a cgroup no unit owns (issue 15, finding 1)."""
    c = bus_client
    shim.start()
    await wait_owner(c)
    procs = sleep_processes(60)
    try:
        calls = [stu(f"burst-{i}.scope", p.pid) for i, p in enumerate(procs)]
        answered = await burst_then_kill(c, shim, calls, kill_after=30)
        assert len(answered) >= 30
        await wait_owner(c, present=False)
        finished = {m.body[1] for m in c.signals if m.member == "JobRemoved"}
        shim.start()
        await wait_owner(c)
        lost = []
        for name in answered:
            reply = await c.call("GetUnit", "s", [name])
            if reply.message_type.name != "METHOD_RETURN":
                lost.append(name)
        assert lost == [], f"{len(lost)} of {len(answered)} answered units lost: {lost[:5]}"
        for job in answered.values():
            if job not in finished:
                await c.wait_signal(job_removed(job))
        assert await unowned_cgroups(c, tmp_path / "cgroupfs") == []
    finally:
        reap(procs)


async def restart(shim: Daemon, c: Client, sig: int = signal.SIGKILL) -> None:
    shim.kill(sig)
    await wait_owner(c, present=False)
    c.signals.clear()
    shim.start()
    await wait_owner(c)


async def test_long_unit_name_survives(shim: Daemon, bus_client: Client) -> None:
    """A valid 240-character scope name is answered and kept across a restart (issue 15,
    finding 2: a state file named after the unit went over NAME_MAX)."""
    c = bus_client
    shim.start()
    await wait_owner(c)
    name = "x" * 234 + ".scope"
    [proc] = sleep_processes(1)
    try:
        reply = await c.bus.call(stu(name, proc.pid))
        assert reply is not None and reply.message_type.name == "METHOD_RETURN", reply.body
        await c.wait_signal(job_removed(reply.body[0]))
        await restart(shim, c)
        (path,) = await c.ok("GetUnit", "s", [name])
        assert await c.get(path, UNIT, "ActiveState") == "active"
        (procs,) = await c.ok("GetUnitProcesses", "s", [name])
        assert [p[1] for p in procs] == [proc.pid]
    finally:
        reap([proc])


GOOD = "good.slice"
DAMAGE = {
    "null": ("units/d.json", "null"),
    "list": ("units/d.json", "[]"),
    "format only": ("units/d.json", '{"format": 1}'),
    "bad settings": ("units/d.json", None),  # a real record with "settings": 5
    "bad name": ("units/d.json", None),  # a real record with "name": "../../x"
    "name not a string": ("units/d.json", None),  # a real record with "name": 7
    "jobs [1]": ("jobs.json", "[1]"),
    "bad job id": ("jobs.json", '[{"id": "x", "unit": "good.slice", "type": "start"}]'),
    "job id past 2^32": ("jobs.json", '[{"id": 8589934592, "unit": "good.slice", "type": "stop"}]'),
    "manager null": ("manager.json", "null"),
    "truncated": ("units/d.json", '{"format": 1, "na'),
    "not UTF-8": ("units/d.json", b"\xff\xfe\x00garbage"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
async def test_damaged_state_is_set_aside(
    kind: str, shim: Daemon, bus_client: Client, tmp_path: Path
) -> None:
    """Each kind of damaged state file is moved to STATE/corrupt/ with one log line, and the
    daemon starts with every good unit (issue 15, finding 3)."""
    c = bus_client
    shim.start()
    await wait_owner(c)
    (job,) = await c.ok("StartTransientUnit", "ssa(sv)a(sa(sv))", [GOOD, "fail", [], []])
    await c.wait_signal(job_removed(job))
    shim.kill(signal.SIGTERM)
    await wait_owner(c, present=False)
    state = tmp_path / "state"
    where, text = DAMAGE[kind]
    if text is None:
        import json

        [good] = [f for f in (state / "units").iterdir() if GOOD in f.read_text()]
        record = json.loads(good.read_text())
        record["name"] = "bad.slice"
        if kind == "bad settings":
            record["settings"] = 5
        elif kind == "bad name":
            record["name"] = "../../x"
        else:
            record["name"] = 7
        text = json.dumps(record)
    target = state / where
    if isinstance(text, bytes):
        target.write_bytes(text)
    else:
        target.write_text(text)
    shim.start()
    await wait_owner(c)
    (path,) = await c.ok("GetUnit", "s", [GOOD])
    assert await c.get(path, UNIT, "ActiveState") == "active"
    aside = list((state / "corrupt").iterdir())
    assert len(aside) == 1 and aside[0].name.startswith(target.name), aside
    lines = [line for line in shim.log.read_text().splitlines() if "moved to" in line]
    assert len(lines) == 1, lines
    # job ids still work after a damaged manager.json or jobs.json
    (job,) = await c.ok("StopUnit", "ss", [GOOD, "replace"])
    await c.wait_signal(job_removed(job))


async def test_job_ids_wrap_across_restarts(
    shim: Daemon, bus_client: Client, tmp_path: Path
) -> None:
    """Job ids wrap from 2^32-1 to 1 and stay below 2^32 across a restart (issue 15,
    finding 7: the saved next id went past 2^32 after the wrap)."""
    c = bus_client
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "manager.json").write_text('{"reserved_job_id": 4294967290}')
    shim.start()
    await wait_owner(c)
    ids = []
    for i in range(8):
        (job,) = await c.ok(
            "StartTransientUnit", "ssa(sv)a(sa(sv))", [f"w{i}.slice", "fail", [], []]
        )
        await c.wait_signal(job_removed(job))
        ids.append(int(job.rsplit("/", 1)[1]))
    assert 4294967295 in ids and 1 in ids, ids
    await restart(shim, c)
    (job,) = await c.ok("StartTransientUnit", "ssa(sv)a(sa(sv))", ["after.slice", "fail", [], []])
    assert 0 < int(job.rsplit("/", 1)[1]) < 2**32
    await c.ok("ListJobs")
    await c.wait_signal(job_removed(job))


async def test_references_counted_per_client(
    shim: Daemon, bus_client: Client, private_bus: PrivateBus, tmp_path: Path
) -> None:
    """RefUnit is counted per client (the state does not grow with the calls), and a client
    that left while the daemon was down holds nothing after the restart (finding 5)."""
    c = bus_client
    shim.start()
    await wait_owner(c)
    (job,) = await c.ok("StartTransientUnit", "ssa(sv)a(sa(sv))", ["r.slice", "fail", [], []])
    await c.wait_signal(job_removed(job))
    other = Client(await MessageBus(bus_address=private_bus.address).connect())
    await other.ok("RefUnit", "s", ["r.slice"])
    await c.ok("RefUnit", "s", ["r.slice"])
    await asyncio.sleep(0.1)
    [state_file] = [
        f for f in (tmp_path / "state" / "units").iterdir() if "r.slice" in f.read_text()
    ]
    size = state_file.stat().st_size
    for _ in range(200):
        await other.ok("RefUnit", "s", ["r.slice"])
    assert state_file.stat().st_size - size < 16  # a count, not one entry per call
    for _ in range(200):
        await other.ok("UnrefUnit", "s", ["r.slice"])
    (path,) = await c.ok("GetUnit", "s", ["r.slice"])
    assert sorted(await c.get(path, UNIT, "Refs")) == sorted(
        [c.bus.unique_name, other.bus.unique_name]
    )
    shim.kill()
    await wait_owner(c, present=False)
    other.bus.disconnect()
    await other.bus.wait_for_disconnect()
    shim.start()
    await wait_owner(c)
    assert await c.get(path, UNIT, "Refs") == [c.bus.unique_name]


async def test_the_environment_block_survives_kill_9(shim: Daemon, bus_client: Client) -> None:
    """SetEnvironment/UnsetEnvironment answered means kept: after kill -9 and a restart the
    Environment property is what the last answered call left (systemd keeps the block across
    its re-execution; a user manager restarted after a crash must not lose what
    `dbus-update-activation-environment --systemd` gave it)."""
    c = bus_client
    manager = "/org/freedesktop/systemd1"
    shim.start()
    await wait_owner(c)
    await c.ok("SetEnvironment", "as", [["KEPT=yes", "GONE=soon"]])
    await c.ok("UnsetEnvironment", "as", [["GONE"]])
    await restart(shim, c)
    env = await c.get(manager, "org.freedesktop.systemd1.Manager", "Environment")
    assert "KEPT=yes" in env and not any(e.startswith("GONE=") for e in env), env
