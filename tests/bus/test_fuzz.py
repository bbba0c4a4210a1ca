"""Generated calls against the daemon: every answer is a reply or one of systemd's errors,
never an internal error or a hang; a refused call changes nothing, and one that succeeds
leaves the state it promises (test_sequences: valid scopes with live processes, then calls
on them).

SCOPESHIM_FUZZ_EXAMPLES raises the number of calls per test (default 200, for CI). The cases
differ from run to run; SCOPESHIM_FUZZ_SEED=N fixes them; a failure prints how to reproduce it.
The corpus: the @example sequences below always run first, then every failing case found so
far (hypothesis' example database in .hypothesis/fuzz of the checkout, replayed first and
grown by each new failure), then new ones.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import MessageType, Variant
from hypothesis import HealthCheck, event, example, given, seed, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from compat.errors import ERRORS
from compat.properties import PROPERTIES
from tests.conftest import Client, Daemon

EXAMPLES = int(os.environ.get("SCOPESHIM_FUZZ_EXAMPLES", "200"))
CORPUS = Path(__file__).resolve().parents[2] / ".hypothesis" / "fuzz"
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=DirectoryBasedExampleDatabase(CORPUS),
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_SEED = os.environ.get("SCOPESHIM_FUZZ_SEED")


def seeded(test: Any) -> Any:
    """SCOPESHIM_FUZZ_SEED=N: the cases of that seed (else new ones each run)."""
    return seed(int(_SEED))(test) if _SEED else test


STU = "ssa(sv)a(sa(sv))"

# D-Bus strings cannot hold NUL: the client library refuses to send them
_TEXT = st.characters(exclude_characters="\x00", exclude_categories=("Cs",))


def text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(_TEXT, max_size=max_size)


_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "s": text(30),
    "b": st.booleans(),
    "t": st.one_of(st.integers(0, 20000), st.just(2**64 - 1), st.integers(0, 2**64 - 1)),
    "u": st.integers(0, 2**32 - 1),
    "i": st.integers(-(2**31), 2**31 - 1),
    "as": st.lists(
        st.one_of(st.sampled_from(["a.service", "b.slice", "x@y.service"]), text(12)),
        max_size=3,
    ),
    "au": st.lists(st.integers(0, 2**32 - 1), max_size=3),
    "ay": st.binary(max_size=8),
    "a(ss)": st.lists(
        st.tuples(
            st.sampled_from(["/dev/null", "char-pts", "x"]),
            st.sampled_from(["r", "rw", "rwm", "q", ""]),
        ),
        max_size=2,
    ),
    "a(st)": st.lists(
        st.tuples(st.sampled_from(["/dev/sda", "x"]), st.integers(0, 2**64 - 1)), max_size=2
    ),
}
SIGNATURES = sorted(_VALUES)


@st.composite
def assignment(draw: st.DrawFn, leave_out: frozenset[str] = frozenset()) -> list[Any]:
    name = draw(
        st.one_of(
            st.sampled_from(sorted(set(PROPERTIES) - leave_out)),
            st.sampled_from(["Bogus", "Id"]),
            text(10),
        )
    )
    spec = PROPERTIES.get(name)
    # mostly the right type, sometimes another one
    sig = spec.signature if spec and draw(st.integers(0, 4)) else draw(st.sampled_from(SIGNATURES))
    if sig not in _VALUES:
        sig = "s"
    return [name, Variant(sig, draw(_VALUES[sig]))]


unit_names = st.one_of(
    st.builds(
        lambda p, t: p + t,
        st.sampled_from(["fz", "fz-a", "fz@i", "-", "fz.x", ""]),
        st.sampled_from([".scope", ".slice", ".service", ".target", "", ".bogus"]),
    ),
    text(20),
)
modes = st.sampled_from(["fail", "replace", "isolate", "triggering", "flush", "bogus", ""])


def snapshot(daemon: Daemon) -> tuple[object, ...]:
    m = daemon.manager
    return (
        sorted(m.units),
        {n: (u.sub_state, repr(u.settings), u.control_group) for n, u in m.units.items()},
        sorted(m.jobs),
        m._next_job_id,
        [op for op in daemon.backend.operations if op.op != "watch"],
    )


async def check(
    daemon: Daemon, client: Client, member: str, sig: str, body: list[Any], **kw: Any
) -> None:
    await client.ok("Ping", path="/", interface="org.freedesktop.DBus.Peer")
    before = snapshot(daemon)
    reply = await client.call(member, sig, body, **kw)
    if reply.message_type is MessageType.ERROR:
        assert reply.error_name in ERRORS, (reply.error_name, reply.body, body)
        assert reply.error_name != "org.freedesktop.DBus.Error.Failed", (reply.body, body)
        await client.ok("Ping", path="/", interface="org.freedesktop.DBus.Peer")
        assert snapshot(daemon) == before, (member, body, reply.body)
    else:
        assert reply.message_type is MessageType.METHOD_RETURN


@FUZZ
@given(
    name=unit_names, mode=modes, props=st.lists(assignment(), max_size=5), with_pid=st.booleans()
)
async def test_start_transient_unit(
    daemon: Daemon,
    client: Client,
    fuzz_sleeper: subprocess.Popen[bytes],
    name: str,
    mode: str,
    props: list[Any],
    with_pid: bool,
) -> None:
    if with_pid:
        props = [["PIDs", Variant("au", [fuzz_sleeper.pid])], *props]
    await check(daemon, client, "StartTransientUnit", STU, [name, mode, props, []])


@FUZZ
@given(name=unit_names, props=st.lists(assignment(), max_size=4), runtime=st.booleans())
async def test_set_unit_properties(
    daemon: Daemon, client: Client, name: str, props: list[Any], runtime: bool
) -> None:
    await check(daemon, client, "SetUnitProperties", "sba(sv)", [name, runtime, props])


@FUZZ
@given(
    name=unit_names,
    whom=st.sampled_from(["all", "main", "control", "all-fail", "x", ""]),
    signal=st.sampled_from([0, 65, -1, 2**31 - 1, 18, 28]),
)
async def test_kill_and_other_by_name_calls(
    daemon: Daemon, client: Client, name: str, whom: str, signal: int
) -> None:
    # signals that do not end a process (SIGCONT, SIGWINCH) or are out of range
    await check(daemon, client, "KillUnit", "ssi", [name, whom, signal])
    for member in (
        "GetUnit",
        "LoadUnit",
        "ResetFailedUnit",
        "AbandonScope",
        "FreezeUnit",
        "ThawUnit",
        "GetUnitProcesses",
        "UnrefUnit",
    ):
        await check(daemon, client, member, "s", [name])
    await check(daemon, client, "StopUnit", "ss", [name, "bogus"])


@FUZZ
@given(label=text(40), member=st.sampled_from(["Get", "GetAll", "Introspect"]))
async def test_object_paths(daemon: Daemon, client: Client, label: str, member: str) -> None:
    from compat.buspath import label_escape

    path = "/org/freedesktop/systemd1/unit/" + label_escape(label)
    if member == "Introspect":
        await check(
            daemon,
            client,
            member,
            "",
            [],
            path=path,
            interface="org.freedesktop.DBus.Introspectable",
        )
    elif member == "GetAll":
        await check(
            daemon,
            client,
            member,
            "s",
            [""],
            path=path,
            interface="org.freedesktop.DBus.Properties",
        )
    else:
        await check(
            daemon,
            client,
            member,
            "ss",
            ["org.freedesktop.systemd1.Unit", label],
            path=path,
            interface="org.freedesktop.DBus.Properties",
        )


# ---------------------------------------------------------------- sequences on live scopes

POOL = ["fz-0.scope", "fz-1.scope", "fz-2.scope"]
# properties a scope accepts, with values systemd accepts (systemd.resource-control(5),
# systemd.kill(5), systemd.unit(5)); none that sets a timer or changes how a stop ends, so
# that every stop finishes with the sleepers' exit
_VALID: dict[str, st.SearchStrategy[Any]] = {
    "Description": st.builds(lambda t: Variant("s", t), text(20)),
    "CPUWeight": st.builds(lambda n: Variant("t", n), st.integers(1, 10000)),
    "IOWeight": st.builds(lambda n: Variant("t", n), st.integers(1, 10000)),
    "MemoryMax": st.builds(lambda n: Variant("t", n), st.integers(1 << 20, 1 << 40)),
    "TasksMax": st.builds(lambda n: Variant("t", n), st.integers(1, 100000)),
    "Delegate": st.builds(lambda b: Variant("b", b), st.booleans()),
    "CollectMode": st.builds(
        lambda v: Variant("s", v), st.sampled_from(["inactive", "inactive-or-failed"])
    ),
    "Slice": st.just(Variant("s", "fz.slice")),
}
# what a generated SetUnitProperties may not change (timers, stop signals: see above)
_SLOW = frozenset({"KillSignal", "FinalKillSignal", "RestartKillSignal", "TimeoutStopUSec",
         "RuntimeMaxUSec", "RuntimeRandomizedExtraUSec", "SendSIGKILL", "JobTimeoutUSec",
         "JobRunningTimeoutUSec", "KillMode", "AddRef"})  # fmt: skip


@st.composite
def valid_props(draw: st.DrawFn) -> list[list[Any]]:
    names = draw(st.lists(st.sampled_from(sorted(_VALID)), unique=True, max_size=4))
    return [[n, draw(_VALID[n])] for n in names]


BY_NAME = ["AbandonScope", "FreezeUnit", "ThawUnit", "ResetFailedUnit", "UnrefUnit",
           "GetUnitProcesses", "GetUnit"]  # fmt: skip
units = st.sampled_from([POOL[0]] * 4 + POOL)  # mostly the one each sequence starts
OPS = st.one_of(
    st.tuples(st.just("start"), units, valid_props()),
    st.tuples(st.just("start-any"), units, st.lists(assignment(), max_size=3)),
    st.tuples(
        st.just("set"),
        units,
        st.lists(assignment(_SLOW), max_size=3),
        st.booleans(),
    ),
    st.tuples(
        st.just("kill"),
        units,
        st.sampled_from(["all", "main", "x"]),
        st.sampled_from([0, 18, 28, 65]),  # signals that end nothing (SIGCONT, SIGWINCH)
    ),
    st.tuples(st.just("stop"), units, st.sampled_from(["replace", "fail", "bogus"])),
    st.tuples(st.just("attach"), units, st.sampled_from(["/", "/sub", "rel"])),
    st.tuples(st.sampled_from(BY_NAME), units),
)


async def settle(daemon: Daemon, client: Client) -> None:
    """Until no job runs and no unit waits for collection (process exits are noticed through
    pidfds, so a stop ends on its own); the signals sent meanwhile have arrived."""
    m = daemon.manager
    while m.jobs or m._gc_queue:
        await asyncio.sleep(0.005)
    await client.ok("Ping", path="/", interface="org.freedesktop.DBus.Peer")


Live = dict[int, subprocess.Popen[bytes]]


async def consistent(daemon: Daemon, client: Client, live: Live) -> None:
    """What the bus says is what the manager holds, and an active scope holds live processes."""
    for name, unit in daemon.manager.units.items():
        (path,) = await client.ok("GetUnit", "s", [name])
        (state,) = await client.ok(
            "Get", "ss", ["org.freedesktop.systemd1.Unit", "ActiveState"],
            path=path, interface="org.freedesktop.DBus.Properties",
        )  # fmt: skip
        assert state.value == unit.active_state.value, name
        if unit.type.value == "scope" and state.value == "active":
            pids = daemon.backend.pids(unit.control_group)
            assert pids, f"{name} is active and empty"
            assert all(live[p].poll() is None for p in pids if p in live), name


@pytest.fixture
def sleepers() -> Iterator[dict[int, subprocess.Popen[bytes]]]:
    """`sleep` processes by PID, started by the sequences; all killed at teardown."""
    started: dict[int, subprocess.Popen[bytes]] = {}
    yield started
    for p in started.values():
        p.kill()
        p.wait()


async def run_op(
    daemon: Daemon, client: Client, op: tuple[Any, ...], live: dict[int, subprocess.Popen[bytes]]
) -> None:
    kind, name = op[0], op[1]
    proc = subprocess.Popen(["sleep", "600"]) if kind in ("start", "start-any", "attach") else None
    if proc is not None:
        live[proc.pid] = proc
    pids = ["PIDs", Variant("au", [proc.pid])] if proc else None
    if kind in ("start", "start-any"):
        member, sig, body = "StartTransientUnit", STU, [name, "fail", [pids, *op[2]], []]
    elif kind == "set":
        member, sig, body = "SetUnitProperties", "sba(sv)", [name, op[3], op[2]]
    elif kind == "kill":
        member, sig, body = "KillUnit", "ssi", [name, op[2], op[3]]
    elif kind == "stop":
        member, sig, body = "StopUnit", "ss", [name, op[2]]
    elif kind == "attach":
        member, sig, body = "AttachProcessesToUnit", "ssau", [name, op[2], [proc.pid]]
    else:
        member, sig, body = kind, "s", [name]
    before = snapshot(daemon)
    was = daemon.manager.units.get(name)
    reply = await client.call(member, sig, body)
    event(f"{kind}: {reply.error_name or 'ok'}")
    if reply.message_type is MessageType.ERROR:
        assert reply.error_name in ERRORS, (reply.error_name, reply.body, op)
        assert reply.error_name != "org.freedesktop.DBus.Error.Failed", (reply.body, op)
        await client.ok("Ping", path="/", interface="org.freedesktop.DBus.Peer")
        assert snapshot(daemon) == before, (op, reply.error_name, reply.body)
        await settle(daemon, client)
        return
    await settle(daemon, client)
    unit = daemon.manager.units.get(name)
    if kind in ("start", "start-any"):
        # a new scope with the process in it, found by it
        assert unit is not None and unit.active_state.value == "active", (op, unit)
        assert daemon.backend.cgroup_of(proc.pid) == unit.control_group, op
        (path,) = await client.ok("GetUnitByPID", "u", [proc.pid])
        assert path == (await client.ok("GetUnit", "s", [name]))[0]
        settings = {k: v.value for k, v in op[2]}
        if "Description" in settings:
            assert unit.description == (settings["Description"] or name)
    elif kind == "stop":
        # its processes ended and the unit is gone or inactive
        assert was is not None
        assert unit is None or unit.active_state.value in ("inactive", "failed"), (op, unit)
        assert not [p for p in daemon.backend.pids(was.control_group or "/-") if p in live]
    elif kind == "kill":
        # signals that end nothing: every process still there
        assert unit is not None and all(
            live[p].poll() is None for p in daemon.backend.pids(unit.control_group) if p in live
        ), op
    elif kind == "attach":
        assert unit is not None and daemon.backend.cgroup_of(proc.pid).startswith(
            unit.control_group
        ), op
    elif kind == "AbandonScope":
        assert unit is not None and unit.sub_state == "abandoned", op
    elif kind == "set" and op[2]:
        descriptions = [v.value for k, v in op[2] if k == "Description"]
        if descriptions and unit is not None:
            assert unit.description == (descriptions[-1] or name), op
    await consistent(daemon, client, live)


async def end_sequence(daemon: Daemon, client: Client, live: Live) -> None:
    """Every process of the sequence killed: its scopes empty and go (the next case starts
    from a daemon without them)."""
    for p in list(live.values()):
        p.kill()
        p.wait()
    live.clear()
    m = daemon.manager
    while m.jobs or m._gc_queue or any(n.startswith("fz-") for n in m.units):
        for n in [n for n in m.units if n.startswith("fz-")]:
            if m.units[n].active_state.value == "failed":
                await client.call("ResetFailedUnit", "s", [n])
        await asyncio.sleep(0.005)


@pytest.mark.filterwarnings("ignore:Generating overly large repr")
@FUZZ
@seeded
@given(
    ops=st.builds(
        lambda first, rest: [first, *rest],
        st.tuples(st.just("start"), st.just(POOL[0]), valid_props()),
        st.lists(OPS, max_size=8),
    )
)
# the seed corpus: each succeeds at least once, so that later calls meet a live scope
@example(ops=[("start", "fz-0.scope", [])])
@example(ops=[("start", "fz-0.scope", []), ("stop", "fz-0.scope", "replace")])
@example(ops=[("start", "fz-1.scope", [["Delegate", Variant("b", True)]]),
              ("attach", "fz-1.scope", "/"), ("attach", "fz-1.scope", "/sub"),
              ("AbandonScope", "fz-1.scope"), ("stop", "fz-1.scope", "fail")])  # fmt: skip
@example(ops=[("start", "fz-2.scope", [["Description", Variant("s", "d")]]),
              ("set", "fz-2.scope", [["Description", Variant("s", "e")]], True),
              ("kill", "fz-2.scope", "all", 18), ("FreezeUnit", "fz-2.scope"),
              ("ThawUnit", "fz-2.scope"), ("start", "fz-2.scope", [])])  # fmt: skip
async def test_sequences(
    daemon: Daemon,
    client: Client,
    sleepers: dict[int, subprocess.Popen[bytes]],
    ops: list[tuple[Any, ...]],
) -> None:
    try:
        for op in ops:
            await run_op(daemon, client, op, sleepers)
    finally:
        await end_sequence(daemon, client, sleepers)
