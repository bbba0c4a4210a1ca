"""Manager and Unit members that systemd 254+ clients call and systemd 252 did not have:
GetUnitByPIDFD (systemctl 257+ status PID, whoami) and QueueSignalUnit / Unit.QueueSignal
(systemctl kill --kill-value=). Every answer, the errors included, is what the real systemd
262.1 answered to the same call (fixtures/oracle/systemd262-queue-signal.json); a refused
call changes nothing, and a queued signal reaches nobody (scopes have no main or control
process, the only ones sigqueue(3) is sent to).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.bus.test_auth import bus_address, gdbus, open_dir, shim  # noqa: F401 (fixtures)
from tests.bus.test_bad_input import assert_refused, snapshot
from tests.bus.test_lifecycle import start_scope
from tests.conftest import Client, Daemon

ROOT = Path(__file__).resolve().parents[2]
ORACLE = json.loads((ROOT / "fixtures/oracle/systemd262-queue-signal.json").read_text())["answers"]
UNIT = "org.freedesktop.systemd1.Unit"
SCOPE_PATH = "/org/freedesktop/systemd1/unit/q_2escope"
Sleeper = Callable[..., subprocess.Popen[bytes]]


def oracle(label: str) -> tuple[str, str]:
    """The real systemd 262's error for LABEL: (name, message)."""
    name, message = ORACLE[label]
    assert name != "ok", label
    return name, message


async def scope_with(client: Client, processes: Sleeper) -> subprocess.Popen[bytes]:
    proc = processes()
    await start_scope(client, "q.scope", [proc.pid])
    return proc


# -- GetUnitByPIDFD ---------------------------------------------------------------------------


async def test_get_unit_by_pidfd_answers_path_name_and_invocation_id(
    daemon: Daemon, client: Client, processes: Sleeper
) -> None:
    proc = await scope_with(client, processes)
    fd = os.pidfd_open(proc.pid)
    try:
        got = await client.ok("GetUnitByPIDFD", "h", [0], unix_fds=[fd])
    finally:
        os.close(fd)
    invocation = await client.get(SCOPE_PATH, UNIT, "InvocationID")
    assert got == [SCOPE_PATH, "q.scope", invocation]
    assert len(got[2]) == 16
    # the shape of systemd 262's reply: (o, s, ay), the invocation ID as 16 bytes
    _, name, real_id = ORACLE["pidfd_valid"][1]
    assert name.endswith(".scope") and len(bytes.fromhex(real_id)) == 16


@pytest.mark.parametrize("kind", ["devnull", "pipe"])
async def test_get_unit_by_pidfd_refuses_an_fd_that_is_no_pidfd(
    daemon: Daemon, client: Client, kind: str
) -> None:
    fds = [os.open("/dev/null", os.O_RDONLY)] if kind == "devnull" else list(os.pipe())
    try:
        name, message = oracle(f"pidfd_{kind}")
        await assert_refused(
            daemon, client, "GetUnitByPIDFD", "h", [0], name, message, unix_fds=fds[:1]
        )
    finally:
        for fd in fds:
            os.close(fd)


async def test_get_unit_by_pidfd_of_a_reaped_process(daemon: Daemon, client: Client) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    fd = os.pidfd_open(proc.pid)
    proc.wait()
    try:
        name, message = oracle("pidfd_exited_reaped")
        await assert_refused(daemon, client, "GetUnitByPIDFD", "h", [0], name, message,
                             unix_fds=[fd])  # fmt: skip
    finally:
        os.close(fd)


async def test_get_unit_by_pidfd_of_a_process_in_no_unit(daemon: Daemon, client: Client) -> None:
    fd = os.pidfd_open(os.getpid())
    try:
        name, _ = oracle("pidfd_self")
        await assert_refused(daemon, client, "GetUnitByPIDFD", "h", [0], name,
                             f"PID {os.getpid()} does not belong to any loaded unit.",
                             unix_fds=[fd])  # fmt: skip
    finally:
        os.close(fd)


async def test_get_unit_by_pidfd_with_an_index_past_the_fds(
    daemon: Daemon, client: Client, processes: Sleeper
) -> None:
    proc = processes()
    fd = os.pidfd_open(proc.pid)
    try:
        name, message = oracle("pidfd_index_out_of_range")
        await assert_refused(
            daemon, client, "GetUnitByPIDFD", "h", [3], name, message, unix_fds=[fd]
        )
    finally:
        os.close(fd)


async def test_get_unit_by_pidfd_with_the_wrong_signature(daemon: Daemon, client: Client) -> None:
    await assert_refused(
        daemon, client, "GetUnitByPIDFD", "u", [os.getpid()],
        "org.freedesktop.DBus.Error.InvalidArgs",
    )  # fmt: skip


# -- QueueSignalUnit / Unit.QueueSignal -------------------------------------------------------

# (label in the oracle file, whom, signal, value): each answered "ok" by systemd 262
ACCEPTED = [
    ("qsu_all_rtmin", "all", 34, 7),
    ("qsu_cgroup_rtmin", "cgroup", 34, 7),
    ("qsu__rtmin", "", 34, 7),
    ("qsu_all_sig64", "all", 64, 7),
    ("qsu_negvalue", "all", 35, -5),
]
# ... and each refused (error name and message from the oracle)
REFUSED = [
    ("qsu_main_rtmin", "main", 34, 7),
    ("qsu_control_rtmin", "control", 34, 7),
    ("qsu_main-fail_rtmin", "main-fail", 34, 7),
    ("qsu_all-fail_rtmin", "all-fail", 34, 7),
    ("qsu_cgroup-fail_rtmin", "cgroup-fail", 34, 7),
    ("qsu_bogus_rtmin", "bogus", 34, 7),
    ("qsu_kernel_rtmin", "kernel", 34, 7),
    ("qsu_all_sig0", "all", 0, 7),
    ("qsu_all_sig15", "all", 15, 7),
    ("qsu_all_sig65", "all", 65, 7),
    ("qsu_all_sig-1", "all", -1, 7),
    ("qsu_all_sig99", "all", 99, 7),
]


@pytest.mark.parametrize(
    ("label", "whom", "signo", "value"), ACCEPTED, ids=[c[0] for c in ACCEPTED]
)
@pytest.mark.parametrize("member", ["QueueSignalUnit", "Unit.QueueSignal"])
async def test_queue_signal_accepted_reaches_no_process(
    daemon: Daemon,
    client: Client,
    processes: Sleeper,
    member: str,
    label: str,
    whom: str,
    signo: int,
    value: int,
) -> None:
    assert ORACLE[label] == ["ok", []]
    proc = await scope_with(client, processes)
    before = snapshot(daemon)
    if member == "QueueSignalUnit":
        got = await client.ok(member, "ssii", ["q.scope", whom, signo, value])
    else:
        got = await client.ok(
            "QueueSignal", "sii", [whom, signo, value], path=SCOPE_PATH, interface=UNIT
        )
    assert got == []
    # a realtime signal's default action ends a process: this one was never sent
    assert proc.poll() is None
    assert snapshot(daemon) == before


@pytest.mark.parametrize(("label", "whom", "signo", "value"), REFUSED, ids=[c[0] for c in REFUSED])
@pytest.mark.parametrize("member", ["QueueSignalUnit", "Unit.QueueSignal"])
async def test_queue_signal_refused_as_systemd_262(
    daemon: Daemon,
    client: Client,
    processes: Sleeper,
    member: str,
    label: str,
    whom: str,
    signo: int,
    value: int,
) -> None:
    proc = await scope_with(client, processes)
    name, message = oracle(label)
    if member == "QueueSignalUnit":
        await assert_refused(daemon, client, member, "ssii", ["q.scope", whom, signo, value],
                             name, message)  # fmt: skip
    else:
        await assert_refused(daemon, client, "QueueSignal", "sii", [whom, signo, value], name,
                             message, path=SCOPE_PATH, interface=UNIT)  # fmt: skip
    assert proc.poll() is None


@pytest.mark.parametrize("unit", ["missing.scope", "no such/name"])
async def test_queue_signal_unit_of_no_loaded_unit(
    daemon: Daemon, client: Client, unit: str
) -> None:
    label = "qsu_missing" if unit == "missing.scope" else "qsu_badname"
    name, message = oracle(label)
    await assert_refused(
        daemon, client, "QueueSignalUnit", "ssii", [unit, "all", 34, 7], name, message
    )


async def test_queue_signal_on_a_slice_and_a_target(daemon: Daemon, client: Client) -> None:
    assert ORACLE["qsu_slice"] == ["ok", []]
    assert await client.ok("QueueSignalUnit", "ssii", ["-.slice", "all", 34, 1]) == []
    # a target has no processes to kill (systemd 262: NotSupported)
    await client.ok("RefUnit", "s", ["poweroff.target"])  # loaded while referenced
    name, message = oracle("qsu_inactive_loaded")
    await assert_refused(daemon, client, "QueueSignalUnit", "ssii",
                         ["poweroff.target", "all", 34, 1], name, message)  # fmt: skip


@pytest.mark.parametrize(
    ("sig", "body"),
    [("ssi", ["q.scope", "all", 34]), ("ssiu", ["q.scope", "all", 34, 7]), ("", [])],
)
async def test_queue_signal_unit_with_the_wrong_signature(
    daemon: Daemon, client: Client, sig: str, body: list[object]
) -> None:
    await assert_refused(
        daemon, client, "QueueSignalUnit", sig, body, "org.freedesktop.DBus.Error.InvalidArgs"
    )


async def test_kill_unit_still_signals_after_queue_signal(
    daemon: Daemon, client: Client, processes: Sleeper
) -> None:
    """QueueSignalUnit left the scope as it was: KillUnit still ends its process."""
    proc = await scope_with(client, processes)
    await client.ok("QueueSignalUnit", "ssii", ["q.scope", "all", 40, 1])
    await client.ok("KillUnit", "ssi", ["q.scope", "all", signal.SIGTERM])
    assert proc.wait(10) == -signal.SIGTERM


def test_the_oracle_file_covers_every_case() -> None:
    labels = {c[0] for c in ACCEPTED + REFUSED}
    labels |= {"qsu_missing", "qsu_badname", "qsu_slice", "qsu_inactive_loaded"}
    assert labels <= set(ORACLE)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to uid nobody needs root")
async def test_queue_signal_unit_needs_manage_units(
    shim: object,  # noqa: F811
    bus_address: str,  # noqa: F811
) -> None:
    """A mutating call (shim/bus/auth.py: manage-units): refused to a non-root caller when
    no polkit is on the bus, allowed to root."""
    method = "org.freedesktop.systemd1.Manager.QueueSignalUnit"
    status, out = await gdbus(bus_address, method, "'-.slice'", "all", "34", "1")
    assert status != 0
    assert "org.freedesktop.DBus.Error.AccessDenied: Permission denied" in out
    status, out = await gdbus(bus_address, method, "'-.slice'", "all", "34", "1", uid=0)
    assert status == 0, out


# -- introspection ----------------------------------------------------------------------------

REAL_262 = ROOT / "fixtures/dbus-logs/real-systemd-262"
SINCE_252 = {
    "org.freedesktop.systemd1.Manager": ("GetUnitByPIDFD", "QueueSignalUnit"),
    UNIT: ("QueueSignal",),
}


def method_args(xml: str, interface: str, member: str) -> list[tuple[str, str, str]]:
    """(type, name, direction) of each argument of MEMBER in an Introspect document."""
    root = ET.fromstring(xml)
    iface = next(i for i in root.iter("interface") if i.get("name") == interface)
    method = next(m for m in iface.iter("method") if m.get("name") == member)
    return [(a.get("type", ""), a.get("name", ""), a.get("direction", "in")) for a in method]


@pytest.mark.parametrize(
    ("interface", "member"), [(i, m) for i, ms in SINCE_252.items() for m in ms]
)
async def test_introspection_matches_systemd_262(
    daemon: Daemon, client: Client, processes: Sleeper, interface: str, member: str
) -> None:
    await scope_with(client, processes)
    path = SCOPE_PATH if interface == UNIT else "/org/freedesktop/systemd1"
    real = (REAL_262 / f"introspect-{'scope' if interface == UNIT else 'manager'}.xml").read_text()
    (ours,) = await client.ok(
        "Introspect", path=path, interface="org.freedesktop.DBus.Introspectable"
    )
    assert method_args(ours, interface, member) == method_args(real, interface, member)
