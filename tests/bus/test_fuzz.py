"""Generated calls against the daemon: every answer is a reply or one of systemd's errors,
never an internal error or a hang, and a refused call changes nothing.

SCOPESHIM_FUZZ_EXAMPLES raises the number of calls per test (default 200, for CI).
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

from dbus_fast import MessageType, Variant
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compat.errors import ERRORS
from compat.properties import PROPERTIES
from tests.conftest import Client, Daemon

EXAMPLES = int(os.environ.get("SCOPESHIM_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
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
def assignment(draw: st.DrawFn) -> list[Any]:
    name = draw(
        st.one_of(
            st.sampled_from(sorted(PROPERTIES)),
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
