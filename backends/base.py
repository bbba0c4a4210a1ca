"""The CgroupBackend Protocol: what the daemon asks of a cgroup hierarchy, and nothing more."""

from __future__ import annotations

import enum
import errno
import os
import signal as _signal
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class BackendError(Exception):
    """A cgroup operation failed; `errno` is set when the kernel said why."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class Capability(enum.StrEnum):
    """Optional features a backend may offer; the daemon asks before relying on them."""

    KILL = "kill"  # whole-cgroup kill (cgroup.kill or per-process signalling)
    FREEZE = "freeze"  # cgroup.freeze or the v1 freezer
    LIMITS = "limits"  # resource attribute files
    DELEGATE = "delegate"  # sub-cgroups below a unit's cgroup
    PIDFD = "pidfd"  # exits noticed through pidfds
    # DevicePolicy=/DeviceAllow= can be enforced (v1 devices controller, or a cgroup2
    # BPF_PROG_TYPE_CGROUP_DEVICE program: backends/bpfdev.py)
    DEVICES = "devices"


def signal_pids(pids: Iterable[int], signal: int) -> int:
    """Signal each process through a pidfd (no PID reuse race); how many were signalled."""
    count = 0
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue  # gone already
        try:
            _signal.pidfd_send_signal(fd, signal)
            count += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return count


def normalise(path: str) -> str:
    """A cgroup path as backends take it: absolute, no "." or ".." parts, no doubled "/"."""
    if not path.startswith("/"):
        raise BackendError(f"cgroup path {path!r} is not absolute", errno.EINVAL)
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise BackendError(f"cgroup path {path!r} is not normalised", errno.EINVAL)
    return "/" + "/".join(parts)


@dataclass(frozen=True, slots=True)
class Operation:
    """One recorded backend call (the fake backend keeps a list of these)."""

    op: str
    path: str
    args: tuple[object, ...] = ()


EmptyCallback = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Usage:
    """Counters read back from a cgroup's files; None where the hierarchy has no such file."""

    memory_bytes: int | None = None  # memory.current (v2), memory.usage_in_bytes (v1)
    tasks: int | None = None  # pids.current
    cpu_nsec: int | None = None  # cpu.stat usage_usec * 1000 (v2), cpuacct.usage (v1)
    io_read_bytes: int | None = None  # io.stat rbytes (v2), blkio.throttle.io_service_bytes
    io_write_bytes: int | None = None
    io_read_ops: int | None = None  # io.stat rios (v2), blkio.throttle.io_serviced
    io_write_ops: int | None = None
    cgroup_id: int | None = None  # the cgroup directory's inode number on cgroup2


@runtime_checkable
class CgroupBackend(Protocol):
    """A cgroup hierarchy. Paths are absolute cgroup paths such as "/user.slice/foo.scope",
    relative to the root the backend was given; "/" is that root."""

    name: str
    capabilities: frozenset[Capability]

    def create(self, path: str) -> None:
        """Create the cgroup and its missing parents (no error if it exists)."""

    def remove(self, path: str) -> None:
        """Remove the cgroup and its empty sub-cgroups; BackendError if populated."""

    def exists(self, path: str) -> bool:
        """Whether the cgroup exists."""

    def attach(self, path: str, pids: Iterable[int]) -> None:
        """Move whole processes into the cgroup; BackendError (errno ESRCH) for a dead PID."""

    def pids(self, path: str, recursive: bool = True) -> list[int]:
        """PIDs in the cgroup (and its sub-cgroups when recursive), sorted."""

    def cgroup_of(self, pid: int) -> str | None:
        """The cgroup path of a process in this hierarchy, None if unknown or dead."""

    def set_attribute(self, path: str, attribute: str, value: str) -> None:
        """Write a cgroup attribute file (e.g. "memory.max", "max")."""

    def get_attribute(self, path: str, attribute: str) -> str | None:
        """Read a cgroup attribute file; None if the file does not exist."""

    def apply_resources(self, path: str, settings: Mapping[str, object]) -> list[str]:
        """Write the attribute files a unit's resource settings imply (backends/resources.py);
        returns a note for each setting this hierarchy cannot honour."""

    def label(self, path: str, invocation_id: str) -> None:
        """Mark the cgroup with its unit's invocation ID (32 hex digits), as systemd does with
        the xattrs trusted.invocation_id and user.invocation_id; best effort."""

    def usage(self, path: str) -> Usage:
        """The cgroup's resource counters (read-back properties such as MemoryCurrent)."""

    def delegate(self, path: str, uid: int, gid: int) -> None:
        """Hand the cgroup to a user (systemd.resource-control(5) Delegate=): chown its
        directory and the files listed in /sys/kernel/cgroup/delegate."""

    def kill(self, path: str, signal: int, recursive: bool = True) -> int:
        """Send a signal to every process of the cgroup; returns how many were signalled."""

    def freeze(self, path: str) -> None:
        """Freeze every process of the cgroup."""

    def thaw(self, path: str) -> None:
        """Thaw the cgroup."""

    def watch_empty(self, path: str, callback: EmptyCallback) -> None:
        """Call callback(path) once, from the event loop, when the cgroup has no process left.

        Watching is re-armed by calling again; unwatch() cancels it."""

    def unwatch(self, path: str) -> None:
        """Stop watching the cgroup."""

    def close(self) -> None:
        """Release watches and file descriptors."""
