"""What a method handler gets besides its arguments: the caller and the object called."""

from __future__ import annotations

from dataclasses import dataclass, field

from shim.core.manager import Manager
from shim.core.units import Job, Unit


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the bus driver (or a private socket's SO_PEERCRED) vouches for about a caller."""

    uid: int | None
    pid: int | None


@dataclass(slots=True)
class Call:
    """One method call: the manager, the caller, the object path and what it resolved to."""

    manager: Manager
    version: str  # the Manager's Version property
    sender: str  # the caller's unique bus name, or a private connection's name
    pid: int | None
    path: str
    target: Unit | Job | None
    fds: list[int] = field(default_factory=list)  # file descriptors passed with the call
    uid: int | None = None  # the caller's uid, when the call needed it

    @property
    def unit(self) -> Unit:
        assert isinstance(self.target, Unit)
        return self.target

    @property
    def job(self) -> Job:
        assert isinstance(self.target, Job)
        return self.target
