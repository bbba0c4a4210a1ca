"""Run the service: connect to the bus, own org.freedesktop.systemd1, serve until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dbus_fast import BusType, MessageType, RequestNameReply
from dbus_fast.aio import MessageBus

from backends.base import CgroupBackend
from shim.bus import session
from shim.bus.escalate import SystemAttach
from shim.bus.peer import PeerServer, PrivateSocketBusyError
from shim.bus.service import BUS_NAME, Service
from shim.bus.transport import flush, patient, to_driver
from shim.core.instance import Instance
from shim.core.manager import Manager
from shim.core.policy import READY, Policy
from shim.core.state import StateStore
from shim.core.unitfiles import UnitFiles

log = logging.getLogger("scopeshim")

DEFAULT_VERSION = "252"
# org.freedesktop.systemd1(5) / systemctl(1): root's tools talk to the system manager here
SYSTEM_PRIVATE_SOCKET = "/run/systemd/private"


class ReloadError(Exception):
    """A configuration that cannot be used on SIGHUP (the running one stays)."""


@dataclass(frozen=True, slots=True)
class Reloaded:
    """What SIGHUP applies: the handled units' policy and the log level."""

    policy: Policy
    log_level: str
    source: str  # the file read


@dataclass(frozen=True, slots=True)
class Options:
    """What `scopeshim serve` was asked to do."""

    address: str | None = None  # None: the system bus
    version: str = DEFAULT_VERSION
    policy: Policy | None = None  # None: shim.core.policy's defaults
    state_dir: str | None = None  # None: nothing kept across restarts (tests)
    # sd_booted(3): programs test this directory to decide whether systemd is PID 1
    booted_marker: str | None = None  # e.g. /run/systemd/system; None: leave it alone
    exit_on_idle: float | None = None  # seconds without units or jobs before exiting
    # SIGHUP reads the configuration again through this (the command line's loader)
    reload: Callable[[], Reloaded] | None = None
    private_socket: str | None = None  # a path to serve peer-to-peer connections on
    private_uids: frozenset[int] = frozenset({0})  # who may connect there
    # s6's readiness protocol (s6-supervise(8) notification-fd): a newline on this descriptor
    # once the name is owned and the private socket listens, then it is closed
    ready_fd: int | None = None
    # None: the system instance; else a user manager (shim/core/instance.py)
    instance: Instance | None = None
    # print READY=1 on standard output once serving (how the system instance's user@UID
    # .service start job learns that the user manager is ready, as Type=notify would)
    notify_ready: bool = False
    system_address: str | None = None  # a user manager's system bus (None: the default)
    # the root of the unit search path (shim/core/unitfiles.py); None: no unit files (tests)
    unit_root: str | None = None


def _machine_id() -> str:
    for p in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            text = Path(p).read_text().strip()
        except OSError:
            continue
        if len(text) == 32:
            return text
    return "0" * 32


class NameTakenError(Exception):
    """Another connection owns org.freedesktop.systemd1."""


async def serve(options: Options, backend: CgroupBackend) -> Service:
    """Connect, own the name and return the running service (the caller awaits `stop`)."""
    loop = asyncio.get_running_loop()
    if options.address is not None:
        bus = MessageBus(bus_address=options.address, negotiate_unix_fd=True)
    else:
        bus = MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=True)
    await bus.connect()
    patient(bus)
    store = None if options.state_dir is None else StateStore(options.state_dir)

    def manager(svc: Service) -> Manager:
        made = Manager(backend, svc.signals, loop, options.policy, store, options.instance)
        if options.unit_root is not None:
            made.unit_files = UnitFiles(options.unit_root)
        return made

    uid = options.instance.uid if options.instance is not None else None
    user = uid is not None
    service = Service(
        bus,
        manager,
        version=options.version,
        machine_id=_machine_id(),
        polkit=not user,  # a user manager trusts its user and root, nobody else
        privileged=frozenset({0, uid} if uid is not None else {0}),
    )
    if user:
        service.manager.environment_hook = service.activation_environment
    saved = None if store is None else store.load()
    if saved is not None:
        service.manager.restore(saved)
    # client departures drop their subscriptions, references and cached credentials
    await bus.call(
        to_driver(
            "AddMatch",
            "s",
            [
                "type='signal',sender='org.freedesktop.DBus',"
                "interface='org.freedesktop.DBus',member='NameOwnerChanged'"
            ],
        )
    )
    await _drop_gone_clients(bus, service.manager)  # issue 15: references of a client gone
    reply = await bus.request_name(BUS_NAME)
    if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
        bus.disconnect()
        raise NameTakenError(f"{BUS_NAME} is already owned on this bus ({reply.name})")
    if saved is not None:
        service.manager.fail_lost_jobs(saved)
    if options.private_socket:
        server = PeerServer(
            options.private_socket, options.private_uids, service.peer_message,
            service.peer_closed,
        )  # fmt: skip
        try:
            server.start()
        except (PrivateSocketBusyError, OSError) as e:
            bus.disconnect()
            raise PrivateSocketBusyError(
                f"cannot listen on {options.private_socket}: {e}"
            ) from None
        service.serve_peers(server)
    log.info(
        "serving %s on %s as %s (backend %s)",
        BUS_NAME,
        options.address or "the system bus",
        bus.unique_name,
        backend.name,
    )
    return service


async def _drop_gone_clients(bus: MessageBus, manager: Manager) -> None:
    """After a restart: clients that left while we were down hold no references any more
    (systemd tracks references per client and drops those of a client that is gone)."""

    async def there(name: str) -> bool:
        reply = await bus.call(to_driver("NameHasOwner", "s", [name]))
        ok = reply is not None and reply.message_type is MessageType.METHOD_RETURN
        return bool(ok and reply is not None and reply.body[0])

    names = sorted(manager.referencing_clients())
    for start in range(0, len(names), 256):  # asked 256 at a time, not one round trip each
        chunk = names[start : start + 256]
        for name, present in zip(chunk, await asyncio.gather(*map(there, chunk)), strict=True):
            if not present:
                manager.bus_name_gone(name)  # gone, or not a bus name (a private connection)


async def run(options: Options, backend: CgroupBackend) -> int:
    """Serve until SIGTERM/SIGINT (exit 0) or until the bus goes away (exit 1)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if options.instance is not None and os.path.isdir(options.instance.runtime_dir or ""):
        # systemd --user's runtime directory; clients look for it to tell that a user
        # manager runs (dbus-update-activation-environment --systemd tests that it exists)
        os.makedirs(os.path.join(str(options.instance.runtime_dir), "systemd"), exist_ok=True)
    started = None
    follower: asyncio.Task[None] | None = None
    if options.instance is not None and options.instance.user and options.address:
        # a user manager serves on the user's session bus, starting it when nobody does
        started = await session.ensure(options.address, backend, options.instance.environment)
    service = await serve(options, backend)
    escalate = None
    if options.instance is not None and options.instance.uid not in (None, 0):
        escalate = SystemAttach(options.instance.uid, options.system_address)
        service.manager.escalate_attach = escalate
    if started is not None:
        service.manager.adopt_service(
            session.UNIT, session.SLICE, session.DESCRIPTION, started.cgroup
        )
        follower = loop.create_task(session.follow(started))
    loop.add_signal_handler(signal.SIGHUP, _reload_config, service, options.reload)
    made_marker = _mark_booted(options.booted_marker)
    if options.ready_fd is not None:
        _notify_ready(options.ready_fd)
    if options.notify_ready:
        print(READY, flush=True)  # after the private socket listens too
    disconnected = loop.create_task(service.bus.wait_for_disconnect())  # type: ignore[no-untyped-call]
    stopped = loop.create_task(stop.wait())
    waits = {disconnected, stopped}
    if options.exit_on_idle is not None:
        waits.add(loop.create_task(_idle(service.manager, options.exit_on_idle)))
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    if follower is not None:
        follower.cancel()
    if escalate is not None:
        escalate.close()
    code = 0
    if disconnected in done:
        reason = disconnected.exception()  # EOFError when the bus went away; retrieved here
        log.error("lost the bus connection (%r); exiting so that the supervisor restarts us",
                  reason)  # fmt: skip
        code = 1
    elif stopped in done:
        log.info("stopping on signal")
    else:
        log.info("idle for %s s: exiting (bus activation starts us again)", options.exit_on_idle)
    service.close()
    if service.manager.forkserver is not None:
        await service.manager.forkserver.aclose()
    service.manager.close()
    if service.bus.connected:
        flush(service.bus)  # what close() sent, before the socket goes
        service.bus.disconnect()
    backend.close()
    if made_marker is not None:
        with contextlib.suppress(OSError):
            made_marker.rmdir()  # only what we created, and only while it is still empty
    return code


def _reload_config(service: Service, reload: Callable[[], Reloaded] | None) -> None:
    """SIGHUP: read the configuration file again; a bad one leaves the running one in place.
    [units] and [power] apply to units loaded from now on, log_level at once; the other
    [serve] keys (bus, backend, cgroup root, state directory) need a restart."""
    if reload is None:
        log.info("SIGHUP: no configuration file to reload")
        return
    try:
        settings = reload()
    except ReloadError as e:
        log.error("SIGHUP: keeping the running configuration: %s", e)
        return
    service.manager.policy = settings.policy
    logging.getLogger().setLevel(settings.log_level.upper())
    log.info("SIGHUP: reloaded %s", settings.source)


async def _idle(manager: Manager, timeout: float) -> None:
    """Return once the manager has had nothing to look after for TIMEOUT seconds."""
    idle_since: float | None = None
    loop = asyncio.get_running_loop()
    while True:
        if manager.idle():
            idle_since = idle_since if idle_since is not None else loop.time()
            if loop.time() - idle_since >= timeout:
                return
        else:
            idle_since = None
        await asyncio.sleep(min(timeout / 4, 5.0))


def _notify_ready(fd: int) -> None:
    try:
        os.write(fd, b"\n")
        os.close(fd)
    except OSError as e:
        log.warning("cannot tell readiness on descriptor %d: %s", fd, e.strerror)


def _mark_booted(marker: str | None) -> Path | None:
    """Create the sd_booted() marker if asked and missing; the path if we made it."""
    if marker is None:
        return None
    path = Path(marker)
    if path.is_dir():
        return None
    path.mkdir(parents=True)
    log.info("created %s: programs now believe systemd is the init system", path)
    return path
