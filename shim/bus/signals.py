"""The core's Listener on the bus: unit and job events as signals, sent to every connection."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from dbus_fast import Message, MessageFlag, MessageType, Variant

from compat import buspath
from shim.bus.router import Interface, Prop
from shim.bus.units import SCOPE, get_property, interfaces_for
from shim.core.manager import Manager
from shim.core.units import Job, Unit

_PROPERTIES_IFACE = "org.freedesktop.DBus.Properties"
_SIGNALLED: dict[str, tuple[tuple[Prop, ...], list[str]]] = {}


def _signalled(iface: Interface) -> tuple[tuple[Prop, ...], list[str]]:
    """The properties PropertiesChanged carries (EmitsChangedSignal=true) and the names it
    invalidates, per interface, worked out once."""
    found = _SIGNALLED.get(iface.name)
    if found is None:
        emitting = tuple(p for p in iface.properties.values() if p.emits == "true")
        invalidated = [n for n, p in iface.properties.items() if p.emits == "invalidates"]
        found = _SIGNALLED[iface.name] = (emitting, invalidated)
    return found


class SignalEmitter:
    """Turns core events into signals, handed to SEND (which broadcasts them on the bus and
    on every private connection), but RequestStop, which goes to one scope's controller alone
    through SEND_ON_BUS.

    PropertiesChanged is coalesced per unit within one loop iteration, and flushed before
    the JobRemoved or UnitRemoved that follows it, the order systemd uses.
    """

    def __init__(
        self, send: Callable[[Message], None], send_on_bus: Callable[[Message], object]
    ) -> None:
        self._send = send
        self._send_on_bus = send_on_bus
        self.manager: Manager | None = None  # set once the manager exists (it needs us first)
        self._loop = asyncio.get_running_loop()
        self._dirty_units: dict[Unit, None] = {}
        self._dirty_jobs: dict[Job, None] = {}
        self._scheduled = False

    def _manager_signal(self, member: str, sig: str, body: list[Any]) -> None:
        self._send(
            Message.new_signal(
                buspath.MANAGER_PATH, "org.freedesktop.systemd1.Manager", member, sig, body
            )
        )

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def unit_new(self, unit: Unit) -> None:
        self._manager_signal("UnitNew", "so", [unit.name, buspath.unit_path(unit.name)])

    def unit_removed(self, unit: Unit) -> None:
        if unit in self._dirty_units:
            self._flush_unit(unit)
        self._manager_signal("UnitRemoved", "so", [unit.name, buspath.unit_path(unit.name)])

    def unit_changed(self, unit: Unit) -> None:
        self._dirty_units[unit] = None
        self._schedule()

    def unit_refs_changed(self, unit: Unit) -> None:
        pass  # Refs has EmitsChangedSignal=false

    def job_new(self, job: Job) -> None:
        self._manager_signal("JobNew", "uos", [job.id, buspath.job_path(job.id), job.unit.name])

    def job_changed(self, job: Job) -> None:
        self._dirty_jobs[job] = None
        self._schedule()

    def job_removed(self, job: Job, result: str) -> None:
        self._dirty_jobs.pop(job, None)  # a job that ends at once announces no State change
        if job.unit in self._dirty_units:
            self._flush_unit(job.unit)
        self._manager_signal(
            "JobRemoved", "uoss", [job.id, buspath.job_path(job.id), job.unit.name, str(result)]
        )

    def reloading(self, active: bool) -> None:
        self._manager_signal("Reloading", "b", [active])

    def request_stop(self, unit: Unit, controller: str) -> None:
        # org.freedesktop.systemd1(5) Scope.RequestStop: a signal addressed to the
        # Controller alone, from the unit's path (systemd 252 sends it with destination set,
        # flag NO_REPLY_EXPECTED, on the bus only); not broadcast
        self._send_on_bus(
            Message(
                message_type=MessageType.SIGNAL,
                flags=MessageFlag.NO_REPLY_EXPECTED,
                destination=controller,
                path=buspath.unit_path(unit.name),
                interface=SCOPE,
                member="RequestStop",
            )
        )

    def flush(self) -> None:
        self._scheduled = False
        for unit in list(self._dirty_units):
            self._flush_unit(unit)
        for job in list(self._dirty_jobs):
            self._dirty_jobs.pop(job, None)
            if self.manager is not None and self.manager.jobs.get(job.id) is job:
                self._send_job_state(job)

    def _send_job_state(self, job: Job) -> None:
        self._send(
            Message.new_signal(
                buspath.job_path(job.id),
                _PROPERTIES_IFACE,
                "PropertiesChanged",
                "sa{sv}as",
                ["org.freedesktop.systemd1.Job", {"State": Variant("s", str(job.state))}, []],
            )
        )

    def _flush_unit(self, unit: Unit) -> None:
        self._dirty_units.pop(unit, None)
        manager = self.manager
        if manager is None or manager.units.get(unit.name) is not unit:
            return
        path = buspath.unit_path(unit.name)
        for iface in reversed(interfaces_for(unit)):
            emitting, invalidated = _signalled(iface)
            changed = {p.name: Variant(p.sig, get_property(manager, unit, p)) for p in emitting}
            if changed or invalidated:
                self._send(
                    Message.new_signal(
                        path,
                        _PROPERTIES_IFACE,
                        "PropertiesChanged",
                        "sa{sv}as",
                        [iface.name, changed, invalidated],
                    )
                )
