"""What the core tells the outside world about: the Listener the bus layer implements."""

from __future__ import annotations

from typing import Protocol

from shim.core.units import Job, Unit


class Listener(Protocol):
    """Receives state changes in the order systemd announces them."""

    def unit_new(self, unit: Unit) -> None: ...

    def unit_removed(self, unit: Unit) -> None: ...

    def unit_changed(self, unit: Unit) -> None: ...

    def unit_refs_changed(self, unit: Unit) -> None:
        """Refs changed: systemd sends no signal for it, but the state must be kept."""

    def job_new(self, job: Job) -> None: ...

    def job_changed(self, job: Job) -> None: ...

    def job_removed(self, job: Job, result: str) -> None: ...

    def reloading(self, active: bool) -> None: ...

    def request_stop(self, unit: Unit, controller: str) -> None:
        """Ask a scope's Controller (a bus name) to stop it: Scope.RequestStop, to it alone."""


class NullListener:
    """A Listener that ignores everything (used by tests of the core alone)."""

    def unit_new(self, unit: Unit) -> None:
        pass

    def unit_removed(self, unit: Unit) -> None:
        pass

    def unit_changed(self, unit: Unit) -> None:
        pass

    def unit_refs_changed(self, unit: Unit) -> None:
        pass

    def job_new(self, job: Job) -> None:
        pass

    def job_changed(self, job: Job) -> None:
        pass

    def job_removed(self, job: Job, result: str) -> None:
        pass

    def reloading(self, active: bool) -> None:
        pass

    def request_stop(self, unit: Unit, controller: str) -> None:
        pass
