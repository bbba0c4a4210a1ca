"""Scope Controller=: RequestStop to the controller alone on stop, SIGKILL when it does not
act before TimeoutStopUSec, and a controller that leaves the bus is forgotten.

Reference: systemd 252 as PID 1 in the lab (real-systemd.sh), a controller owning a scope
with TimeoutStopUSec=1.5 s: StopUnit's reply, then `signal sender=:1.0 -> destination=<the
controller> path=/org/freedesktop/systemd1/unit/<scope>; interface=org.freedesktop.systemd1.
Scope; member=RequestStop` (no body), the scope in deactivating/stop-sigterm with its
processes untouched; the controller killing them -> inactive/dead; doing nothing -> SIGKILL
(no SIGTERM) at the timeout, failed/failed, Result=timeout; the controller's
NameOwnerChanged -> PropertiesChanged Controller="" and a later stop sends SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator

import pytest
from dbus_fast import Message, MessageFlag, MessageType, Variant
from dbus_fast.aio import MessageBus

from tests.bus.test_lifecycle import is_signal, job_removed_for, start_scope
from tests.bus.test_restart import Daemon as ShimProcess
from tests.bus.test_restart import bus_client, shim, wait_owner
from tests.conftest import Client, Daemon, PrivateBus

UNIT = "org.freedesktop.systemd1.Unit"
SCOPE = "org.freedesktop.systemd1.Scope"
JOB = "org.freedesktop.systemd1.Job"


def unit_path(name: str) -> str:
    return "/org/freedesktop/systemd1/unit/" + name.replace("-", "_2d").replace(".", "_2e")


@pytest.fixture
async def controller(daemon: Daemon) -> AsyncIterator[Client]:
    """A second connection that adds no match rule: it gets only what is addressed to it."""
    bus = await MessageBus(bus_address=daemon.address, negotiate_unix_fd=True).connect()
    c = Client(bus)
    bus.add_message_handler(c._on_message)
    yield c
    if bus.connected:
        bus.disconnect()
        await bus.wait_for_disconnect()


@pytest.fixture
async def controller_on_bus(private_bus: PrivateBus) -> AsyncIterator[Client]:
    """A controller connection for the tests that run scopeshim as a process."""
    bus = await MessageBus(bus_address=private_bus.address).connect()
    c = Client(bus)
    bus.add_message_handler(c._on_message)
    yield c
    bus.disconnect()
    await bus.wait_for_disconnect()


__all__ = ["bus_client", "shim"]  # test_restart.py's fixtures, used by the crash test


def request_stop(m: Message) -> bool:
    return m.member == "RequestStop"


def kills(daemon: Daemon) -> list[int]:
    return [op.args[0] for op in daemon.backend.operations if op.op == "kill"]


async def test_stop_asks_the_controller_and_ends_when_it_empties_the_scope(
    daemon: Daemon, client: Client, controller: Client, processes
) -> None:
    proc = processes()
    name = controller.bus.unique_name
    assert name is not None
    await start_scope(
        client,
        "machine-a.scope",
        [proc.pid],
        ["Controller", Variant("s", name)],
        ["TimeoutStopUSec", Variant("t", 60_000_000)],
    )
    path = unit_path("machine-a.scope")
    assert await client.get(path, SCOPE, "Controller") == name
    (job,) = await client.ok("StopUnit", "ss", ["machine-a.scope", "replace"])

    msg = await controller.wait_signal(request_stop)
    # the header fields systemd 252 sends (lab capture): to the controller, from the unit
    assert msg.message_type is MessageType.SIGNAL
    assert msg.sender == daemon.service.bus.unique_name
    assert msg.destination == name
    assert (msg.path, msg.interface, msg.signature, msg.body) == (path, SCOPE, "", [])
    assert msg.flags == MessageFlag.NO_REPLY_EXPECTED  # as sd-bus marks its signals (pcap)

    # no signal to the processes: the scope waits in stop-sigterm with its job running
    await client.wait_signal(
        lambda m: (
            m.path == path
            and m.body[0] == UNIT
            and "SubState" in m.body[1]
            and m.body[1]["SubState"].value == "stop-sigterm"
        )
    )
    assert await client.get(path, UNIT, "ActiveState") == "deactivating"
    assert await client.get(job, JOB, "State") == "running"
    assert proc.poll() is None
    assert kills(daemon) == []

    # the controller stops its processes; the empty cgroup ends the scope and the job
    proc.kill()
    removed = await client.wait_signal(job_removed_for(job))
    assert removed.body[2:] == ["machine-a.scope", "done"]
    await client.wait_signal(is_signal("UnitRemoved", "machine-a.scope"))
    assert kills(daemon) == []
    # a directed signal: the subscribed client never saw it
    assert not [m for m in client.signals if m.member == "RequestStop"]


async def test_a_controller_that_does_nothing_gets_sigkill_at_the_timeout(
    daemon: Daemon, client: Client, controller: Client, processes
) -> None:
    proc = processes()  # would die of SIGTERM: it must get SIGKILL only
    name = controller.bus.unique_name
    await start_scope(
        client,
        "machine-b.scope",
        [proc.pid],
        ["Controller", Variant("s", name)],
        ["TimeoutStopUSec", Variant("t", 200_000)],
    )
    path = unit_path("machine-b.scope")
    (job,) = await client.ok("StopUnit", "ss", ["machine-b.scope", "replace"])
    await controller.wait_signal(request_stop)
    removed = await client.wait_signal(job_removed_for(job))
    assert removed.body[3] == "done"
    assert proc.wait(timeout=5) == -signal.SIGKILL
    assert kills(daemon) == [signal.SIGKILL]
    assert await client.get(path, UNIT, "ActiveState") == "failed"
    assert await client.get(path, UNIT, "SubState") == "failed"
    assert await client.get(path, SCOPE, "Result") == "timeout"


async def test_a_controller_that_left_the_bus_is_forgotten(
    daemon: Daemon, client: Client, controller: Client, processes
) -> None:
    proc = processes()
    name = controller.bus.unique_name
    await start_scope(client, "machine-c.scope", [proc.pid], ["Controller", Variant("s", name)])
    path = unit_path("machine-c.scope")
    controller.bus.disconnect()
    await controller.bus.wait_for_disconnect()
    changed = await client.wait_signal(
        lambda m: (
            m.path == path
            and m.body[0] == SCOPE
            and "Controller" in m.body[1]
            and m.body[1]["Controller"].value == ""
        )
    )
    assert changed.member == "PropertiesChanged"
    assert await client.get(path, SCOPE, "Controller") == ""
    (job,) = await client.ok("StopUnit", "ss", ["machine-c.scope", "replace"])
    await client.wait_signal(job_removed_for(job))
    assert proc.wait(timeout=5) == -signal.SIGTERM
    assert kills(daemon)[0] == signal.SIGTERM


async def test_an_abandoned_scope_has_no_controller_to_ask(
    daemon: Daemon, client: Client, controller: Client, processes
) -> None:
    """Abandon() drops the Controller (org.freedesktop.systemd1(5)); stop is SIGTERM again."""
    proc = processes()
    await start_scope(
        client,
        "machine-d.scope",
        [proc.pid],
        ["Controller", Variant("s", controller.bus.unique_name)],
    )
    path = unit_path("machine-d.scope")
    await controller.ok("Abandon", path=path, interface=SCOPE)
    assert await client.get(path, SCOPE, "Controller") == ""
    (job,) = await client.ok("StopUnit", "ss", ["machine-d.scope", "replace"])
    await client.wait_signal(job_removed_for(job))
    assert proc.wait(timeout=5) == -signal.SIGTERM
    assert not [m for m in controller.signals if m.member == "RequestStop"]


async def test_a_controller_name_without_owner_gets_nothing_and_sigkill_follows(
    daemon: Daemon, client: Client, processes
) -> None:
    """A Controller= that names nobody: the signal goes nowhere (the bus drops it), the
    timeout still ends the stop with SIGKILL; the daemon and the bus carry on."""
    proc = processes()
    await start_scope(
        client,
        "machine-e.scope",
        [proc.pid],
        ["Controller", Variant("s", ":1.99999")],
        ["TimeoutStopUSec", Variant("t", 200_000)],
    )
    (job,) = await client.ok("StopUnit", "ss", ["machine-e.scope", "replace"])
    await client.wait_signal(job_removed_for(job))
    assert proc.wait(timeout=5) == -signal.SIGKILL
    assert await client.ok("GetUnit", "s", ["machine-e.scope"])


async def test_a_well_known_controller_name_that_loses_its_owner_is_forgotten(
    daemon: Daemon, client: Client, controller: Client, processes
) -> None:
    """systemd 252 (lab): Controller=org.example.Ctl gets RequestStop while owned; once the
    name is released Controller reads "" and a stop sends SIGTERM."""
    await controller.bus.request_name("org.example.Ctl")
    proc = processes()
    await start_scope(
        client,
        "machine-f.scope",
        [proc.pid],
        ["Controller", Variant("s", "org.example.Ctl")],
        ["TimeoutStopUSec", Variant("t", 60_000_000)],
    )
    path = unit_path("machine-f.scope")
    assert await client.get(path, SCOPE, "Controller") == "org.example.Ctl"
    await controller.bus.release_name("org.example.Ctl")
    await client.wait_signal(
        lambda m: (
            m.path == path
            and m.body[0] == SCOPE
            and m.body[1].get("Controller", Variant("s", "?")).value == ""
        )
    )
    (job,) = await client.ok("StopUnit", "ss", ["machine-f.scope", "replace"])
    await client.wait_signal(job_removed_for(job))
    assert proc.wait(timeout=5) == -signal.SIGTERM
    assert not [m for m in controller.signals if m.member == "RequestStop"]


async def test_a_well_known_controller_name_gets_request_stop(
    daemon: Daemon, client: Client, controller: Client, processes
) -> None:
    """The signal's destination is the name as set (systemd 252: destination=org.example.Ctl);
    the bus delivers it to the owner."""
    await controller.bus.request_name("org.example.Ctl")
    proc = processes()
    await start_scope(
        client,
        "machine-g.scope",
        [proc.pid],
        ["Controller", Variant("s", "org.example.Ctl")],
        ["TimeoutStopUSec", Variant("t", 60_000_000)],
    )
    (job,) = await client.ok("StopUnit", "ss", ["machine-g.scope", "replace"])
    msg = await controller.wait_signal(request_stop)
    assert msg.destination == "org.example.Ctl"
    assert proc.poll() is None
    proc.kill()
    await client.wait_signal(job_removed_for(job))


async def test_controller_cannot_be_set_at_runtime(
    daemon: Daemon, client: Client, processes
) -> None:
    """systemd 252 (lab): SetUnitProperties(Controller=) is PropertyReadOnly."""
    proc = processes()
    await start_scope(client, "machine-h.scope", [proc.pid])
    name, message = await client.error(
        "SetUnitProperties",
        "sba(sv)",
        ["machine-h.scope", True, [["Controller", Variant("s", ":1.5")]]],
    )
    assert (name, message) == (
        "org.freedesktop.DBus.Error.PropertyReadOnly",
        "Cannot set property Controller, or unknown property.",
    )
    assert await client.get(unit_path("machine-h.scope"), SCOPE, "Controller") == ""


async def test_a_stop_in_flight_at_a_crash_waits_for_the_controller(
    shim: ShimProcess, bus_client: Client, controller_on_bus: Client, processes
) -> None:
    """kill -9 while the controller has been asked: after the restart the scope is still in
    stop-sigterm with its Controller, nobody is asked again or signalled (systemd 252 after
    Reexecute() in the lab: no second RequestStop, SubState stop-sigterm, the process alive),
    and its processes ending finish the scope."""
    c = bus_client
    shim.start()
    await wait_owner(c)
    proc = processes()
    props = [
        ["PIDs", Variant("au", [proc.pid])],
        ["Controller", Variant("s", controller_on_bus.bus.unique_name)],
        ["TimeoutStopUSec", Variant("t", 600 * 10**6)],
    ]
    (job,) = await c.ok("StartTransientUnit", "ssa(sv)a(sa(sv))", ["m.scope", "fail", props, []])
    await c.wait_signal(job_removed_for(job))
    await c.ok("StopUnit", "ss", ["m.scope", "replace"])
    await controller_on_bus.wait_signal(request_stop)
    await asyncio.sleep(0.3)  # let the state reach the disk (written once per iteration)

    shim.kill()
    await wait_owner(c, present=False)
    controller_on_bus.signals.clear()
    shim.start()
    await wait_owner(c)

    path = unit_path("m.scope")
    assert await c.get(path, UNIT, "SubState") == "stop-sigterm"
    assert await c.get(path, SCOPE, "Controller") == controller_on_bus.bus.unique_name
    await c.ok("GetUnit", "s", ["m.scope"])  # a round trip after the restore
    assert proc.poll() is None
    assert not [m for m in controller_on_bus.signals if m.member == "RequestStop"]
    proc.kill()
    await c.wait_signal(is_signal("UnitRemoved", "m.scope"))


async def test_a_resumed_stop_past_the_timeout_goes_on_with_sigkill(
    daemon: Daemon, client: Client, controller: Client, processes
) -> None:
    """The restore path (shim/core/restore.py) for a controller's scope that was already in
    stop-sigkill: SIGKILL again, no RequestStop; in stop-sigterm: wait, no signal at all."""
    waiting, killed = processes(), processes()
    name = controller.bus.unique_name
    for unit, proc in (("machine-r1.scope", waiting), ("machine-r2.scope", killed)):
        await start_scope(
            client,
            unit,
            [proc.pid],
            ["Controller", Variant("s", name)],
            ["TimeoutStopUSec", Variant("t", 60_000_000)],
        )
    m = daemon.manager
    r1, r2 = m.units["machine-r1.scope"], m.units["machine-r2.scope"]
    m._set_state(r1, "stop-sigterm")  # as a restored unit reads
    m._set_state(r2, "stop-sigkill")
    m._resume_stop(r1)
    m._resume_stop(r2)
    assert killed.wait(timeout=5) == -signal.SIGKILL
    await client.wait_signal(is_signal("UnitRemoved", "machine-r2.scope"))
    assert kills(daemon) == [signal.SIGKILL]
    assert waiting.poll() is None and r1.sub_state == "stop-sigterm"
    assert not [msg for msg in controller.signals if msg.member == "RequestStop"]
