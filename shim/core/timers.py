"""Transient timers (systemd.timer(5)): when they elapse, the service they start, their
states (waiting, running, elapsed, dead) and their re-arming after a restart."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from compat import errors, timerunit
from compat.calendar import parse_calendar
from compat.enums import ActiveState, JobResult, JobType, LoadState, TimerState
from compat.properties import merge_into, parse_assignments
from compat.unitname import UnitType
from shim.core import services
from shim.core.configured import Configured
from shim.core.engine import Property
from shim.core.state import Saved
from shim.core.units import Job, Unit

log = logging.getLogger(__name__)

# OnStartupSec= counts from when the service manager started: here, this process
_STARTUP_MONOTONIC = time.monotonic_ns() // 1000
# systemd.timer(5): OnActiveSec=, OnBootSec=, OnStartupSec= trigger once
_ONE_TIME = ("OnActiveSec", "OnBootSec", "OnStartupSec")
_INACTIVE = (ActiveState.INACTIVE, ActiveState.FAILED)


@dataclass(slots=True)
class Elapses:
    """A timer's computed triggers: (base, value, next) and (base, spec, next), and the
    earliest armed elapse on each clock (0: none)."""

    monotonic: list[tuple[str, int, int]] = field(default_factory=list)
    calendar: list[tuple[str, str, int]] = field(default_factory=list)
    next_monotonic: int = 0
    next_realtime: int = 0
    # OnUnitActiveSec=/OnUnitInactiveSec= keep an elapsed timer around (lab, 252: a timer
    # with only --on-unit-inactive, as podman makes, is "elapsed" until its service runs)
    leave_around: bool = False


def triggered_name(timer_name: str) -> str:
    """systemd.timer(5) Unit=: by default the service with the timer's name (252 refuses
    Unit= on transient timers, observed)."""
    return timer_name.removesuffix(".timer") + ".service"


def triggers(settings: dict[str, object]) -> tuple[list[tuple[str, int]], list[str]]:
    """The monotonic (base, usec) and calendar triggers a timer's settings hold."""
    mono: list[tuple[str, int]] = []
    cal: list[str] = []
    for key in ("TimersMonotonic", *timerunit.MONOTONIC_BASES):
        for base, value in settings.get(key) or []:  # type: ignore[attr-defined]
            mono.append((str(base), int(value)))
    for key in ("TimersCalendar", "OnCalendar"):
        for _base, text in settings.get(key) or []:  # type: ignore[attr-defined]
            cal.append(str(text))
    return mono, cal


def check(name: str, settings: dict[str, object]) -> None:
    """A timer needs a trigger (systemd.timer(5)); 252 refuses one without (observed)."""
    mono, cal = triggers(settings)
    if not mono and not cal:
        raise errors.BadUnitSetting(f"Unit {name} has a bad unit file setting.")


class Timers(Configured):
    """Timer units on top of the engine and the handled services."""

    _elapse_handles: dict[Unit, asyncio.TimerHandle]
    _elapses: dict[Unit, Elapses]

    def _timer_state(self) -> tuple[dict[Unit, asyncio.TimerHandle], dict[Unit, Elapses]]:
        if not hasattr(self, "_elapses"):
            self._elapse_handles, self._elapses = {}, {}
        return self._elapse_handles, self._elapses

    def _check_aux(self, aux: Sequence[tuple[str, Sequence[Property]]]) -> list[Unit]:
        """StartTransientUnit's auxiliary units (systemd-run sends a timer's service there),
        validated completely and built, not registered yet."""
        made: list[Unit] = []
        for name, properties in aux:
            self.check_name(name)
            if not name.endswith(".service"):
                raise errors.InvalidArgs(f"{name}: scopeshim makes only services auxiliary")
            existing = self.units.get(name)
            if existing is not None and not self._pristine(existing):  # type: ignore[attr-defined]
                raise errors.UnitExists(f"Unit {name} was already loaded or has a fragment file.")
            settings: dict[str, object] = {}
            merge_into(settings, parse_assignments(UnitType.SERVICE, properties, transient=True))
            services.check(name, settings)
            slice_name = str(settings.pop("Slice", None) or self.instance.default_slice)
            unit = Unit(name, UnitType.SERVICE, LoadState.LOADED, transient=True,
                        slice=slice_name, settings=settings)  # fmt: skip
            unit.handler = services.handler(name, settings)
            made.append(unit)
        return made

    def _add_aux(self, made: list[Unit], caller: str | None) -> None:
        """Register the auxiliary units: loaded and not started, as systemd makes them."""
        for unit in made:
            existing = self.units.get(unit.name)
            if existing is not None:
                self._unregister(existing)
            self._configure_transient(unit)
            self._register(unit)
            if unit.settings.get("AddRef") and caller:
                unit.refs[caller] = unit.refs.get(caller, 0) + 1

    # -- states -------------------------------------------------------------------------

    def _start_timer(self, job: Job) -> None:
        unit = job.unit
        target = self.load_unit(triggered_name(unit.name))
        if target.load_state is not LoadState.LOADED:
            # systemd.timer(5): "Refusing to start, unit ... to trigger not loaded."
            log.warning("%s: refusing to start, unit %s to trigger not loaded", unit.name,
                        target.name)  # fmt: skip
            self._finish_job(job, JobResult.FAILED)
            return
        self._new_invocation(unit)
        unit.result = "success"
        unit.main.pop("last_rt", None)
        unit.main.pop("last_mono", None)
        # OnActiveSec= counts from this activation (kept across a restart)
        unit.main["active_rt"] = time.time_ns() // 1000
        unit.main["active_mono"] = time.monotonic_ns() // 1000
        unit.main["startup_mono"] = _STARTUP_MONOTONIC  # a restart keeps a pending deadline
        self._timer_waiting(unit, entering=True)
        self._finish_job(job, JobResult.DONE)

    def _stop_timer(self, job: Job) -> None:
        self._disarm(job.unit)
        self._set_state(job.unit, TimerState.DEAD)
        self._finish_job(job, JobResult.DONE)

    def _disarm(self, unit: Unit) -> None:
        handles, elapses = self._timer_state()
        handle = handles.pop(unit, None)
        if handle is not None:
            handle.cancel()
        elapses.pop(unit, None)

    def elapses(self, unit: Unit) -> Elapses:
        """What the Timer properties show (nothing armed for a timer that is not waiting)."""
        return self._timer_state()[1].get(unit) or self._compute(unit, armed=False)

    def _compute(self, unit: Unit, armed: bool = True) -> Elapses:
        now_rt, now_mono = time.time_ns() // 1000, time.monotonic_ns() // 1000
        mono, cal = triggers(unit.settings)
        target = self.units.get(triggered_name(unit.name))
        last_rt, last_mono = unit.main.get("last_rt", 0), unit.main.get("last_mono", 0)
        out = Elapses()
        candidates_m: list[int] = []
        for base, value in mono:
            if base == "OnActiveSec":
                start = unit.main.get("active_mono", now_mono)
            elif base == "OnBootSec":
                start = 0  # systemd.timer(5): "relative to when the machine was booted"
            elif base == "OnStartupSec":
                start = unit.main.get("startup_mono", _STARTUP_MONOTONIC)
            else:
                # systemd.timer(5): relative to when the unit was last activated/deactivated
                # (or to the last trigger, if later)
                out.leave_around = True
                stamp = "InactiveExit" if base == "OnUnitActiveSec" else "InactiveEnter"
                start = max(0 if target is None else target.timestamp(stamp).monotonic, last_mono)
                if not start:
                    out.monotonic.append((timerunit.read_name(base), value, 0))
                    continue
            when = start + value
            out.monotonic.append((timerunit.read_name(base), value, when))
            if last_mono and when < now_mono and base in _ONE_TIME:
                continue  # a one-time trigger that already fired
            candidates_m.append(when)
        candidates_r: list[int] = []
        for text in cal:
            spec = parse_calendar(text)
            # systemd.timer(5): from the last trigger (a missed elapse fires at once)
            since = last_rt or unit.main.get("active_rt", now_rt)
            found = spec.next_after(since) or 0
            out.calendar.append((timerunit.CALENDAR_BASE, spec.normalized(), found))
            if found:
                candidates_r.append(found)
        delay = self._random_delay(unit) if armed else 0
        out.next_monotonic = min(candidates_m) + delay if candidates_m else 0
        out.next_realtime = min(candidates_r) + delay if candidates_r else 0
        return out

    @staticmethod
    def _random_delay(unit: Unit) -> int:
        # systemd.timer(5) RandomizedDelaySec=: "delay the timer by a randomly selected,
        # evenly distributed amount of time between 0 and the specified time value"
        spread = unit.settings.get("RandomizedDelayUSec", 0)
        return random.randint(0, spread) if isinstance(spread, int) and spread > 0 else 0

    def _timer_waiting(self, unit: Unit, entering: bool = False) -> None:
        """Arm the earliest trigger; with none left the timer is elapsed (RemainAfterElapse=
        yes, the default) or done (systemd.timer(5))."""
        handles, elapses = self._timer_state()
        self._disarm(unit)
        computed = self._compute(unit)
        if not computed.next_monotonic and not computed.next_realtime:
            remain = unit.settings.get("RemainAfterElapse", True) or computed.leave_around
            elapses[unit] = computed
            state = TimerState.ELAPSED if remain else TimerState.DEAD
            if state is TimerState.DEAD:
                elapses.pop(unit, None)
            if unit.sub_state != state:
                self._set_state(unit, state)
            else:
                self.listener.unit_changed(unit)
            return
        elapses[unit] = computed
        now_rt, now_mono = time.time_ns() // 1000, time.monotonic_ns() // 1000
        waits = []
        if computed.next_monotonic:
            waits.append(computed.next_monotonic - now_mono)
        if computed.next_realtime:
            waits.append(computed.next_realtime - now_rt)
        # AccuracySec= lets systemd fire up to that much later; scopeshim fires on time
        handles[unit] = self.loop.call_later(max(0, min(waits)) / 1e6, self._timer_elapsed, unit)
        if unit.sub_state != TimerState.WAITING or entering:
            self._set_state(unit, TimerState.WAITING)
        else:
            self.listener.unit_changed(unit)

    def _timer_elapsed(self, unit: Unit) -> None:
        handles, elapses = self._timer_state()
        handles.pop(unit, None)
        if self.units.get(unit.name) is not unit or unit.sub_state != TimerState.WAITING:
            return
        computed = elapses.get(unit)
        now_rt, now_mono = time.time_ns() // 1000, time.monotonic_ns() // 1000
        due = computed is not None and (
            (computed.next_monotonic and computed.next_monotonic <= now_mono)
            or (computed.next_realtime and computed.next_realtime <= now_rt)
        )
        if not due:
            self._timer_waiting(unit)  # the wall clock moved: wait again
            return
        target = self.load_unit(triggered_name(unit.name))
        if target.load_state is not LoadState.LOADED:
            log.warning("%s: unit %s to trigger is gone", unit.name, target.name)
            unit.result = "resources"
            self._set_state(unit, TimerState.FAILED)
            return
        log.info("%s: elapsed, starting %s", unit.name, target.name)
        unit.main["last_rt"], unit.main["last_mono"] = now_rt, now_mono
        if target.job is None or target.job.type is not JobType.START:
            self._enqueue(target, JobType.START)
            self._pull_in(target)  # type: ignore[attr-defined]
        self._set_state(unit, TimerState.RUNNING)

    def _trigger_changed(self, service: Unit) -> None:
        """systemd.timer(5): a timer looks again when the unit it triggers changes state."""
        timer = self.units.get(service.name.removesuffix(".service") + ".timer")
        if timer is None or timer.type is not UnitType.TIMER:
            return
        if timer.sub_state in (TimerState.WAITING, TimerState.ELAPSED) or (
            timer.sub_state == TimerState.RUNNING and service.active_state in _INACTIVE
        ):
            self._timer_waiting(timer)

    # -- engine hooks -----------------------------------------------------------------

    def _set_state(self, unit: Unit, sub_state: str) -> None:
        super()._set_state(unit, sub_state)
        if unit.type is UnitType.SERVICE:
            self._trigger_changed(unit)

    def _collectable(self, unit: Unit) -> bool:
        if unit.type is UnitType.SERVICE:
            timer = self.units.get(unit.name.removesuffix(".service") + ".timer")
            if timer is not None and timer.type is UnitType.TIMER:
                return False  # systemd.unit(5) Triggers=: kept while its timer is loaded
        return super()._collectable(unit)

    def _unregister(self, unit: Unit) -> None:
        super()._unregister(unit)
        if unit.type is UnitType.TIMER:
            self._disarm(unit)
            service = self.units.get(triggered_name(unit.name))
            if service is not None:
                self._queue_gc(service)

    def triggers_of(self, unit: Unit) -> list[str]:
        """Triggers=: a timer's service."""
        return [triggered_name(unit.name)] if unit.type is UnitType.TIMER else []

    def triggered_by(self, unit: Unit) -> list[str]:
        """TriggeredBy=: the loaded timer of a service."""
        if unit.type is not UnitType.SERVICE:
            return []
        timer = self.units.get(unit.name.removesuffix(".service") + ".timer")
        return [timer.name] if timer is not None and timer.type is UnitType.TIMER else []

    def restore(self, saved: Saved) -> None:
        """Pending timers are armed again after a restart (a missed calendar elapse fires at
        once, as after systemd's own re-execution)."""
        super().restore(saved)
        for unit in list(self.units.values()):
            if unit.type is not UnitType.TIMER:
                continue
            if unit.sub_state in (TimerState.WAITING, TimerState.ELAPSED):
                self._timer_waiting(unit)
            elif unit.sub_state == TimerState.RUNNING:
                target = self.units.get(triggered_name(unit.name))
                if target is None or target.active_state in _INACTIVE:
                    self._timer_waiting(unit)

    def _close_timers(self) -> None:
        handles, _ = self._timer_state()
        for handle in handles.values():
            handle.cancel()
        handles.clear()
