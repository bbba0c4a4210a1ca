"""Variant <-> plain value conversion at the edge of the bus layer."""

from __future__ import annotations

import contextlib
import os
from typing import Any

from dbus_fast import Variant

from compat.errors import InvalidArgs, UnixProcessIdUnknown
from compat.properties import PASSED_FDS


def unwrap_properties(raw: list[Any]) -> list[tuple[str, str, object]]:
    """An a(sv) body value as (name, signature, plain value) triples, in wire order."""
    out: list[tuple[str, str, object]] = []
    for name, variant in raw:
        if not isinstance(variant, Variant):
            raise InvalidArgs("Invalid property assignment")
        out.append((name, variant.signature, _plain(variant.value)))
    return out


def _plain(value: Any) -> object:
    if isinstance(value, Variant):
        return _plain(value.value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def wrap(signature: str, value: object) -> Variant:
    """A Variant for an outgoing property value."""
    return Variant(signature, value)


def pid_of_pidfd(fd: int) -> int | None:
    """The PID a pidfd refers to (proc(5) fdinfo "Pid:"; -1 once the process is gone), None
    for a descriptor that is no pidfd."""
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            return next((int(x.split()[1]) for x in f if x.startswith("Pid:")), None)
    except (OSError, ValueError):
        return None


def pidfds_to_pids(
    properties: list[tuple[str, str, object]], fds: list[int]
) -> list[tuple[str, str, object]]:
    """PIDFDs= (ah, logind 255+) as the PIDs= it stands for (org.freedesktop.systemd1(5))."""
    out: list[tuple[str, str, object]] = []
    for name, sig, value in properties:
        if name == "PIDFDs" and sig == "ah" and isinstance(value, list):
            pids = []
            for index in value:
                if not isinstance(index, int) or not 0 <= index < len(fds):
                    raise InvalidArgs("Invalid file descriptor index")
                pid = pid_of_pidfd(fds[index])
                if pid is None:
                    raise InvalidArgs("File descriptor is not a process file descriptor")
                if pid <= 0:
                    raise UnixProcessIdUnknown("Process referenced by PIDFD has exited")
                pids.append(pid)
            out.append(("PIDs", "au", pids))
        else:
            out.append((name, sig, value))
    return out


def dup_passed_fds(
    properties: list[tuple[str, str, object]], fds: list[int]
) -> list[tuple[str, str, object]]:
    """Standard*FileDescriptor (h: an index into the message's descriptors) as the daemon's
    own copy of that descriptor: the message's are closed once the call is answered."""
    out: list[tuple[str, str, object]] = []
    try:
        for name, sig, value in properties:
            if name in PASSED_FDS and sig == "h":
                if not isinstance(value, int) or not 0 <= value < len(fds):
                    raise InvalidArgs("Invalid file descriptor index")
                value = os.dup(fds[value])  # close-on-exec until a service's exec is given it
            out.append((name, sig, value))
    except BaseException:
        close_passed_fds(out)
        raise
    return out


def close_passed_fds(properties: list[tuple[str, str, object]]) -> None:
    """Close the copies dup_passed_fds() made (a call that was refused keeps none)."""
    for name, sig, value in properties:
        if name in PASSED_FDS and sig == "h" and isinstance(value, int):
            with contextlib.suppress(OSError):
                os.close(value)
