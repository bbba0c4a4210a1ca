"""The systemd1 service: object resolution and dispatch of calls from the bus connection and
from private connections (shim/bus/peer.py), and signals sent to all of them.

Paths: /org/freedesktop/systemd1 is the Manager; .../unit/<label> is any valid unit (loaded
on demand), "self" (the caller's unit) or a 32-hex-digit invocation ID; .../job/<id> is a
queued job, and anything else is UnknownObject, as sd-bus answers.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from compat import buspath, errors, unitname
from shim.bus import auth
from shim.bus import jobs as job_iface
from shim.bus import manager as manager_iface
from shim.bus import units as unit_iface
from shim.bus.call import Call, Credentials
from shim.bus.peer import PeerConnection, PeerServer
from shim.bus.router import (
    INTROSPECTABLE,
    PEER,
    PROPERTIES,
    Interface,
    XmlCache,
    bad_arguments,
    split_signature,
    unknown_interface,
    unknown_method,
    unknown_object,
    unknown_property,
)
from shim.bus.signals import SignalEmitter
from shim.bus.transport import to_driver
from shim.core.manager import Manager
from shim.core.units import Job, Unit

log = logging.getLogger(__name__)

BUS_NAME = "org.freedesktop.systemd1"
MANAGER_PATH = buspath.MANAGER_PATH
UNIT_NODE = MANAGER_PATH + "/unit"
JOB_NODE = MANAGER_PATH + "/job"
# Intermediate nodes so that `busctl tree` finds the whole tree from "/"
_NODES = {"/": ["org"], "/org": ["freedesktop"], "/org/freedesktop": ["systemd1"]}


@dataclass(frozen=True, slots=True)
class _Later:
    """A handler's answer still being worked out (an awaitable), and its signature."""

    work: Awaitable[Any]
    sig: str


def _body(sig: str, result: Any) -> list[Any]:
    """A handler's result as a message body for the out signature SIG."""
    if not sig:
        return []
    return [result] if len(split_signature(sig)) == 1 else list(result)


def _refused(
    msg: Message, sender: str, creds: Credentials, e: errors.SystemdError
) -> Message | bool:
    """The answer to a call refused before dispatch: logged, its passed descriptors closed,
    E as the error reply (True: none wanted, NO_REPLY_EXPECTED)."""
    log.info("%s.%s from %s (uid %s) refused: %s", msg.interface, msg.member, sender,
             creds.uid, e.message)  # fmt: skip
    for fd in msg.unix_fds:
        os.close(fd)
    return True if msg.flags & 0x1 else Message.new_error(msg, e.error_name, e.message)


class Service:
    """Serves org.freedesktop.systemd1 for one Manager on one bus connection and on the
    private connections of its PeerServers."""

    def __init__(
        self,
        bus: MessageBus,
        manager_factory: Callable[[Service], Manager],
        *,
        version: str,
        machine_id: str,
        polkit: bool = True,
        privileged: frozenset[int] = frozenset({0}),
    ) -> None:
        self.bus = bus
        self.version = version
        self.machine_id = machine_id
        self.peer_servers: list[PeerServer] = []
        self.signals = SignalEmitter(self.emit, bus.send)
        self.manager = manager_factory(self)
        self.signals.manager = self.manager
        self._xml = XmlCache()
        self.polkit = polkit  # ask polkit about non-root callers (else refuse them)
        # uids whose calls need no polkit check (org.freedesktop.systemd1(5): root)
        self.privileged = privileged
        self._creds: dict[str, Credentials] = {}
        self._pending: set[asyncio.Task[None]] = set()
        bus.add_message_handler(self._on_message)

    def emit(self, msg: Message) -> None:
        """Send a signal on the bus (first: it assigns the serial the bus sees) and on every
        private connection (systemd sends its signals to direct connections unconditionally)."""
        self.bus.send(msg)
        for server in self.peer_servers:
            server.broadcast(msg)

    def serve_peers(self, server: PeerServer) -> None:
        """Answer the calls of SERVER's connections (it calls back peer_message/peer_closed)."""
        self.peer_servers.append(server)

    # -- objects ---------------------------------------------------------------------------

    def _resolve(self, path: str, pid: int | None) -> tuple[list[Interface], Unit | Job | None]:
        if path == MANAGER_PATH:
            return [manager_iface.MANAGER], None
        if path.startswith(buspath.UNIT_PATH_PREFIX):
            unit = self._unit_for_path(path, pid)
            return unit_iface.interfaces_for(unit), unit
        if path.startswith(buspath.JOB_PATH_PREFIX):
            job_id = buspath.job_id_from_path(path)
            job = self.manager.jobs.get(job_id) if job_id is not None else None
            if job is None:
                raise unknown_object(path)
            return [job_iface.JOB], job
        if path in _NODES or path in (UNIT_NODE, JOB_NODE):
            return [], None
        raise unknown_object(path)

    def _unit_for_path(self, path: str, pid: int | None) -> Unit:
        label = path[len(buspath.UNIT_PATH_PREFIX) :]
        if "/" in label:
            raise unknown_object(path)
        if label == "self":
            if pid is None:
                raise unknown_object(path)
            return self.manager.unit_by_pid(pid)
        name = buspath.unit_name_from_path(path) or ""
        if len(name) == 32 and all(c in "0123456789abcdef" for c in name):
            return self.manager.unit_by_invocation_id(bytes.fromhex(name))
        if not unitname.is_valid(name, template=False):
            # systemd 252's answer for a label that names nothing (observed)
            raise errors.InvalidArgs(
                f"Unit name {name} is neither a valid invocation ID nor unit name."
            )
        return self.manager.load_unit(name)

    def _children(self, path: str) -> list[str]:
        if path in _NODES:
            return _NODES[path]
        if path == MANAGER_PATH:
            return ["unit", "job"]
        if path == UNIT_NODE:
            return sorted(buspath.label_escape(n) for n in self.manager.units)
        if path == JOB_NODE:
            return [str(i) for i in sorted(self.manager.jobs)]
        return []

    # -- dispatch --------------------------------------------------------------------------

    def _on_message(self, msg: Message) -> Message | bool | None:
        if msg.message_type is not MessageType.METHOD_CALL:
            if (
                msg.message_type is MessageType.SIGNAL
                and msg.member == "NameOwnerChanged"
                and msg.sender == "org.freedesktop.DBus"
                and msg.body
                and not msg.body[2]  # unique names leave; well-known ones lose their owner
            ):
                self._creds.pop(msg.body[0], None)
                self.manager.bus_name_gone(msg.body[0])
            return None
        sender = msg.sender or ""
        creds = self._creds.get(sender)
        action = auth.action_for(msg.interface, msg.member or "")
        if (creds is None and (action is not None or self._needs_pid(msg))) or (
            creds is not None and action is not None and creds.uid not in self.privileged
        ):
            task = asyncio.get_running_loop().create_task(self._dispatch_later(msg, action))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            return True
        return self._reply(msg, sender, creds, self.bus.send)

    def peer_message(self, conn: PeerConnection, msg: Message) -> None:
        """A message from a private connection: its credentials are the socket's, and only
        admitted uids got this far."""
        if msg.message_type is not MessageType.METHOD_CALL:
            return
        creds = Credentials(conn.creds.uid, conn.creds.pid)
        action = auth.action_for(msg.interface, msg.member or "")
        if action is not None and creds.uid not in self.privileged:
            reply = _refused(msg, conn.name, creds, errors.AccessDenied("Permission denied"))
        else:
            reply = self._reply(msg, conn.name, creds, conn.send)
        if isinstance(reply, Message):
            conn.send(reply)

    def peer_closed(self, conn: PeerConnection) -> None:
        """A private connection went: as for a bus client leaving (subscription, references)."""
        self.manager.bus_name_gone(conn.name)

    def _needs_pid(self, msg: Message) -> bool:
        if msg.path == buspath.UNIT_PATH_PREFIX + "self":
            return True
        if msg.path != MANAGER_PATH:
            return msg.member == "AttachProcesses"
        if msg.member == "GetUnit":
            return msg.body == [""]  # "" means the caller's unit
        return msg.member in manager_iface.NEEDS_CALLER

    async def _dispatch_later(self, msg: Message, action: str | None) -> None:
        sender = msg.sender or ""
        creds = await self.credentials(sender)
        reply: Message | bool
        try:
            if (
                action is not None
                and creds.uid not in self.privileged
                and not self._owner_may_attach(msg, creds.uid)
            ):
                if not self.polkit:
                    raise errors.AccessDenied("Permission denied")
                # ALLOW_INTERACTIVE_AUTHORIZATION (0x4) lets polkit ask the user
                await auth.check_polkit(self.bus, sender, action, bool(msg.flags & 0x4))
        except errors.SystemdError as e:
            reply = _refused(msg, sender, creds, e)
        else:
            reply = self._reply(msg, sender, creds, self.bus.send)
        if isinstance(reply, Message):
            self.bus.send(reply)

    def _owner_may_attach(self, msg: Message, uid: int | None) -> bool:
        """AttachProcessesToUnit/AttachProcesses on a unit that runs as the caller (its
        User=, e.g. user@UID.service) need no polkit, as on systemd; the manager still
        checks that the caller owns every process (auth.ATTACH_MEMBERS)."""
        if uid is None or msg.member not in auth.ATTACH_MEMBERS:
            return False
        if msg.member == "AttachProcessesToUnit":
            name = msg.body[0] if msg.signature == "ssau" else None
        else:
            name = buspath.unit_name_from_path(msg.path or "")
        unit = self.manager.units.get(name) if isinstance(name, str) else None
        return unit is not None and self.manager.ref_uid(unit) == uid

    def activation_environment(self, assignments: list[str]) -> None:
        """A user manager keeps the session bus's activation environment in step with its
        own (dbus-daemon(1) UpdateActivationEnvironment; variables cannot be unset there)."""
        if not self.manager.instance.user or not assignments:
            return
        env = dict(a.split("=", 1) for a in assignments)
        self.bus.send(to_driver("UpdateActivationEnvironment", "a{ss}", [env], reply=False))

    async def credentials(self, sender: str) -> Credentials:
        """The caller's uid and PID from the bus driver, cached per unique name."""
        cached = self._creds.get(sender)
        if cached is not None:
            return cached
        reply = await self.bus.call(to_driver("GetConnectionCredentials", "s", [sender]))
        if reply is None or reply.message_type is not MessageType.METHOD_RETURN:
            return Credentials(None, None)  # gone already: nothing is allowed, nothing cached
        found: dict[str, Variant] = reply.body[0]
        uid, pid = found.get("UnixUserID"), found.get("ProcessID")
        creds = Credentials(
            None if uid is None else int(uid.value), None if pid is None else int(pid.value)
        )
        self._creds[sender] = creds
        return creds

    def _reply(
        self,
        msg: Message,
        sender: str,
        creds: Credentials | None,
        send: Callable[[Message], object],
    ) -> Message | bool:
        """The reply to MSG, or True when there is none to return now: a call that changed
        state is answered through SEND once what it changed is on disk (Manager.after_commit;
        a failed write turns the answer into the errno's error)."""
        mark = self.manager.commit_mark()
        answered = self._answer(msg, sender, creds)
        if isinstance(answered, _Later):
            self._finish_later(msg, answered, send)
            return True
        reply = answered
        if not self.manager.commit_pending():
            return reply

        def deliver(failure: errors.SystemdError | None) -> None:
            if failure is not None and isinstance(reply, Message) and not reply.error_name:
                send(Message.new_error(msg, failure.error_name, failure.message))
            elif isinstance(reply, Message):
                send(reply)

        self.manager.after_commit(deliver, since=mark)
        return True

    def _finish_later(self, msg: Message, later: _Later, send: Callable[[Message], object]) -> None:
        """A handler that works in steps (a coroutine that yields to the loop between them, so
        that other callers are served meanwhile): its reply is sent once it is done."""

        async def finish() -> None:
            try:
                result = await later.work
                reply = Message.new_method_return(msg, later.sig, _body(later.sig, result))
            except errors.SystemdError as e:
                reply = Message.new_error(msg, e.error_name, e.message)
            except Exception:
                log.exception("internal error handling %s.%s", msg.interface, msg.member)
                reply = Message.new_error(
                    msg, errors.Failed.error_name, "Internal error, see the scopeshim log."
                )
            if not msg.flags & 0x1:
                send(reply)

        task = asyncio.get_running_loop().create_task(finish())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _answer(
        self, msg: Message, sender: str, creds: Credentials | None
    ) -> Message | bool | _Later:
        no_reply = bool(msg.flags & 0x1)
        try:
            try:
                answered = self._call(msg, sender, creds or Credentials(None, None))
                if isinstance(answered, _Later):
                    return answered
                signature, body = answered
            finally:
                for fd in msg.unix_fds:  # ours once received; the handler has used them
                    os.close(fd)
        except errors.SystemdError as e:
            if isinstance(e, errors.UnknownMethod | errors.UnknownProperty):
                # what a client asked for that we lack: the first thing to read in a debug log
                log.debug(
                    "unknown member: %s.%s on %s from %s (%s)",
                    msg.interface,
                    msg.member,
                    msg.path,
                    sender,
                    e.message,
                )
            if no_reply:
                return True
            return Message.new_error(msg, e.error_name, e.message)
        except Exception:
            log.exception(
                "internal error handling %s.%s on %s", msg.interface, msg.member, msg.path
            )
            if no_reply:
                return True
            return Message.new_error(
                msg, errors.Failed.error_name, "Internal error, see the scopeshim log."
            )
        if no_reply:
            return True
        return Message.new_method_return(msg, signature, body)

    def _call(
        self, msg: Message, sender: str, creds: Credentials
    ) -> tuple[str, list[Any]] | _Later:
        pid = creds.pid
        path = msg.path or "/"
        interface, member = msg.interface, msg.member or ""
        if interface == PEER or (interface is None and member in ("Ping", "GetMachineId")):
            # sd-bus answers Peer on every path, existing or not
            if member == "Ping":
                self._check(msg, PEER, member, "")
                return "", []
            if member == "GetMachineId":
                self._check(msg, PEER, member, "")
                return "s", [self.machine_id]
            raise unknown_method(interface, member)
        interfaces, target = self._resolve(path, pid)
        call = Call(
            self.manager, self.version, sender, pid, path, target, list(msg.unix_fds), creds.uid
        )
        if interface == PROPERTIES or (interface is None and member in ("Get", "GetAll", "Set")):
            return self._properties(msg, call, interfaces)
        if interface == INTROSPECTABLE or (interface is None and member == "Introspect"):
            self._check(msg, INTROSPECTABLE, "Introspect", "")
            return "s", [self._xml.document(interfaces, self._children(path))]
        for iface in interfaces:
            if interface is not None and iface.name != interface:
                continue
            method = iface.methods.get(member)
            if method is None:
                continue
            self._check(msg, iface.name, member, method.in_sig)
            result = method.handler(call, *msg.body)
            if inspect.isawaitable(result):
                return _Later(result, method.out_sig)
            return method.out_sig, _body(method.out_sig, result)
        raise unknown_method(interface, member)

    @staticmethod
    def _check(msg: Message, interface: str, member: str, expected: str) -> None:
        if msg.signature != expected:
            raise bad_arguments(msg.signature, interface, member, expected)

    def _properties(
        self, msg: Message, call: Call, interfaces: list[Interface]
    ) -> tuple[str, list[Any]]:
        member = msg.member
        if member == "Get":
            self._check(msg, PROPERTIES, "Get", "ss")
            iface_name, prop = msg.body
            iface = self._find_iface(interfaces, iface_name, prop)
            if prop not in iface.properties:
                raise unknown_property(iface_name, prop)
            sig = iface.properties[prop].sig
            return "v", [Variant(sig, self.property_value(call, iface, prop))]
        if member == "GetAll":
            self._check(msg, PROPERTIES, "GetAll", "s")
            (iface_name,) = msg.body
            # sd-bus walks the object's vtables most specific first: .Scope/.Slice/... before
            # .Unit (systemctl show --all prints in that order, observed on 252)
            selected = (
                list(reversed(interfaces))
                if iface_name == ""
                else [self._find_iface(interfaces, iface_name, None)]
            )
            out: dict[str, Variant] = {}
            for iface in selected:
                for name, p in iface.properties.items():
                    out[name] = Variant(p.sig, self.property_value(call, iface, name))
            return "a{sv}", [out]
        if member == "Set":
            self._check(msg, PROPERTIES, "Set", "ssv")
            iface_name, prop, _value = msg.body
            iface = self._find_iface(interfaces, iface_name, prop)
            if prop not in iface.properties:
                raise unknown_property(iface_name, prop)
            raise errors.PropertyReadOnly(f"Property '{prop}' is not writable.")
        raise unknown_method(PROPERTIES, member or "")

    @staticmethod
    def _find_iface(interfaces: list[Interface], name: str, prop: str | None) -> Interface:
        for iface in interfaces:
            if iface.name == name:
                return iface
        if prop is not None:
            raise unknown_property(name, prop)
        raise unknown_interface(name)

    def property_value(self, call: Call, interface: Interface, name: str) -> object:
        if interface is manager_iface.MANAGER:
            return manager_iface.get_property(self.manager, self.version, name)
        if interface is job_iface.JOB:
            return job_iface.get_property(call.job, name)
        return unit_iface.get_property(self.manager, call.unit, interface.properties[name])

    def close(self) -> None:
        for task in self._pending:
            task.cancel()
        for server in self.peer_servers:
            server.close()
        self.peer_servers.clear()
