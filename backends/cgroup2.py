"""The cgroup v2 backend: a unified-hierarchy directory the daemon owns (kernel cgroup-v2.rst).

Paths are cgroup paths relative to `root` ("/" is root itself). Empty cgroups are noticed
through inotify on cgroup.events ("populated 0"), without polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import os
import signal as _signal
import struct
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from backends import bpfdev
from backends.base import (
    BackendError,
    Capability,
    EmptyCallback,
    Usage,
    normalise,
    signal_pids,
)
from backends.resources import Totals, block_device_number, unified_plan

_IN_MODIFY = 0x2
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")
# cgroup-v2.rst "Delegation Containment": the files a delegatee must own, when the kernel
# does not list them in /sys/kernel/cgroup/delegate
_DELEGATE_FILES = ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control")


class _Inotify:
    """The few inotify(7) calls we need, through libc."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fd = self._libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            raise BackendError("inotify_init1 failed", ctypes.get_errno())
        self.fd: int = fd

    def add(self, path: str) -> int:
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), _IN_MODIFY)
        if wd < 0:
            raise BackendError(f"cannot watch {path}", ctypes.get_errno())
        return int(wd)

    def remove(self, wd: int) -> None:
        self._libc.inotify_rm_watch(self.fd, wd)

    def read(self) -> list[int]:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        wds, i = [], 0
        while i + _EVENT.size <= len(data):
            wd, _mask, _cookie, length = _EVENT.unpack_from(data, i)
            wds.append(wd)
            i += _EVENT.size + length
        return wds

    def close(self) -> None:
        os.close(self.fd)


class EventsWatch:
    """inotify(7) on cgroup.events files: ON_CHANGE(path) runs, from the event loop, when
    the file of a watched cgroup changes (kernel cgroup-v2.rst: "populated" flips)."""

    def __init__(self, on_change: Callable[[str], None]) -> None:
        self._on_change = on_change
        self._inotify: _Inotify | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wd: dict[str, int] = {}
        self._path: dict[int, str] = {}

    def add(self, path: str, events_file: Path) -> None:
        if self._inotify is None:
            self._loop = asyncio.get_running_loop()
            self._inotify = _Inotify()
            self._loop.add_reader(self._inotify.fd, self._read)
        self.remove(path)
        wd = self._inotify.add(str(events_file))
        self._wd[path], self._path[wd] = wd, path

    def remove(self, path: str) -> None:
        wd = self._wd.pop(path, None)
        if wd is not None:
            self._path.pop(wd, None)
            if self._inotify is not None:
                self._inotify.remove(wd)

    def _read(self) -> None:
        assert self._inotify is not None
        for wd in set(self._inotify.read()):
            path = self._path.get(wd)
            if path is not None:
                self._on_change(path)

    def close(self) -> None:
        for path in list(self._wd):
            self.remove(path)
        if self._inotify is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._inotify.fd)
            self._inotify.close()
            self._inotify = None


def _mount_root_of(directory: Path) -> str | None:
    """The cgroup path of DIRECTORY as this process sees cgroups (proc(5) mountinfo)."""
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return None
    best: tuple[str, str] | None = None
    target = str(directory.resolve())
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if fields[sep + 1] != "cgroup2":
            continue
        point, root = fields[4], fields[3]
        # the deepest mount wins; at the same point the later one, which is on top (a
        # sandbox's own cgroup2 over the host's, whose root "/.." is outside its namespace)
        if (target == point or target.startswith(point.rstrip("/") + "/")) and (
            best is None or len(point) >= len(best[0])
        ):
            best = (point, root)
    if best is None:
        return None
    point, root = best
    rest = target[len(point) :].strip("/")
    joined = "/".join(p for p in (root.strip("/"), rest) if p)
    return "/" + joined


def _subdirs(top: str) -> list[str]:
    """The cgroups below TOP, parents before their children (one scandir per cgroup; a
    cgroup directory holds interface files and its child cgroups, no symlinks)."""
    out: list[str] = []
    stack = [top]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                found = [e.path for e in it if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        out += found
        stack += found
    return out


class Cgroup2Backend:
    """A CgroupBackend over a cgroup2 directory."""

    name = "cgroup2"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise BackendError(f"{self.root} is not a directory", errno.ENOENT)
        self._root_cgroup = _mount_root_of(self.root)  # None: not a cgroup2 mount
        caps = {Capability.KILL, Capability.LIMITS, Capability.DELEGATE}
        if (self.root / "cgroup.freeze").exists() or self._root_cgroup == "/":
            caps.add(Capability.FREEZE)
        # -- device filters (backends/bpfdev.py): DevicePolicy=/DeviceAllow= are enforced by a
        # BPF program per unit, where the root is a cgroup2 mount and bpf(2) loads them
        self._devices: bpfdev.DeviceFilters | None = None
        if self._root_cgroup is not None:
            kernel, _why = bpfdev.probe()
            if kernel is not None:
                self._devices = bpfdev.DeviceFilters(kernel)
                caps.add(Capability.DEVICES)
        # -- end device filters
        self.capabilities = frozenset(caps)
        self.totals = Totals.of_this_machine()
        self._events = EventsWatch(self._changed)
        self._watches: dict[str, EmptyCallback] = {}
        try:
            listed = Path("/sys/kernel/cgroup/delegate").read_text().split()
        except OSError:
            listed = []
        self.delegate_files = tuple(listed) or _DELEGATE_FILES

    def _dir(self, path: str) -> Path:
        return self.root / normalise(path).lstrip("/")

    def create(self, path: str) -> None:
        try:
            self._dir(path).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BackendError(f"cannot create cgroup {path}: {e.strerror}", e.errno) from None

    def exists(self, path: str) -> bool:
        return self._dir(path).is_dir()

    def remove(self, path: str) -> None:
        d = self._dir(path)
        if normalise(path) == "/":
            raise BackendError("refusing to remove the root cgroup", errno.EBUSY)
        if not d.is_dir():
            return
        if self.pids(path):
            raise BackendError(f"cgroup {path} is populated", errno.EBUSY)
        self.unwatch(path)
        try:
            for sub in [*reversed(_subdirs(str(d))), str(d)]:  # the deepest first
                os.rmdir(sub)  # cgroup-v2.rst: an empty cgroup is removed with rmdir
        except OSError as e:
            raise BackendError(f"cannot remove cgroup {path}: {e.strerror}", e.errno) from None
        finally:
            # -- device filters: rmdir detached the removed cgroups' programs (the kernel's
            # cgroup_bpf_release); close their fds. A cgroup still there keeps its filter.
            if self._devices is not None:
                self._devices.forget(normalise(path), self.exists)

    def attach(self, path: str, pids: Iterable[int]) -> None:
        procs = self._dir(path) / "cgroup.procs"
        if not procs.parent.is_dir():
            raise BackendError(f"cgroup {path} does not exist", errno.ENOENT)
        for pid in pids:
            try:
                # cgroup-v2.rst: writing a PID to cgroup.procs migrates the whole process
                with open(procs, "w") as f:
                    f.write(f"{pid}\n")
            except OSError as e:
                what = "does not exist" if e.errno == errno.ESRCH else e.strerror
                raise BackendError(f"process {pid} {what}", e.errno) from None

    def pids(self, path: str, recursive: bool = True) -> list[int]:
        d = str(self._dir(path))
        dirs = [d, *_subdirs(d)] if recursive else [d]
        out: set[int] = set()
        for sub in dirs:
            try:
                with open(os.path.join(sub, "cgroup.procs"), "rb") as f:
                    out.update(int(x) for x in f.read().split())
            except (OSError, ValueError):
                continue
        out.discard(0)  # cgroup.procs shows 0 for processes outside our PID namespace
        return sorted(out)

    def cgroup_of(self, pid: int) -> str | None:
        if self._root_cgroup is None:
            return None
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                line = next((x.strip() for x in f if x.startswith("0::")), None)
        except OSError:
            return None
        if line is None:
            return None
        path = line[3:] or "/"
        base = self._root_cgroup.rstrip("/")
        if base and path != base and not path.startswith(base + "/"):
            return None
        return path[len(base) :] or "/"

    def set_attribute(self, path: str, attribute: str, value: str) -> None:
        if "/" in attribute or attribute.startswith("."):
            raise BackendError(f"invalid attribute {attribute!r}", errno.EINVAL)
        try:
            with open(self._dir(path) / attribute, "w") as f:
                f.write(value + "\n")
        except OSError as e:
            raise BackendError(f"{path}/{attribute}: {e.strerror}", e.errno) from None

    def get_attribute(self, path: str, attribute: str) -> str | None:
        f = self._dir(path) / attribute
        try:
            return f.read_text().strip()
        except OSError:
            return None

    def _controllers(self, path: str, attribute: str) -> set[str]:
        return {c.lstrip("+") for c in (self.get_attribute(path, attribute) or "").split()}

    def enable_controllers(self, path: str, wanted: Iterable[str]) -> list[str]:
        """Make WANTED available in PATH's cgroup.controllers by enabling them in every
        ancestor's cgroup.subtree_control, top-down (cgroup-v2.rst "Top-down Constraint")."""
        notes: list[str] = []
        missing = set(wanted) - self._controllers("/", "cgroup.controllers")
        for name in sorted(missing):
            notes.append(f"controller {name} is not available on this cgroup2 hierarchy")
        wanted = set(wanted) - missing
        parts = normalise(path).strip("/").split("/")
        ancestors = ["/" + "/".join(parts[:i]) for i in range(len(parts))] if parts[0] else []
        for ancestor in ancestors:
            todo = wanted - self._controllers(ancestor, "cgroup.subtree_control")
            if not todo:
                continue
            value = " ".join(f"+{c}" for c in sorted(todo))
            try:
                self.set_attribute(ancestor, "cgroup.subtree_control", value)
            except BackendError as e:
                # EBUSY: the ancestor holds processes (the no-internal-process rule)
                notes.append(f"cannot enable {value} in {ancestor}: {e}")
                break
        return notes

    def apply_resources(self, path: str, settings: Mapping[str, object]) -> list[str]:
        plan = unified_plan(settings, self.totals, block_device_number)
        wanted = {attribute.split(".")[0] for attribute, _ in plan.writes} - {"cgroup"}
        # systemd-system.conf(5) DefaultMemoryAccounting=yes, DefaultTasksAccounting=yes (what
        # the Manager reports): memory and pids count for every unit from its start, so that
        # a MemoryMax=/TasksMax= set later holds what is already there (memory stays charged
        # where it was allocated, cgroup-v2.rst "Memory Ownership"; seen in tests/vm)
        wanted |= {"memory", "pids"} & self._controllers("/", "cgroup.controllers")
        if settings.get("Delegate"):
            # systemd.resource-control(5) Delegate=: yes enables every supported controller
            delegated = settings.get("DelegateControllers")
            if isinstance(delegated, list) and delegated:
                wanted |= {str(c) for c in delegated}
            else:
                wanted |= self._controllers("/", "cgroup.controllers")
        plan.notes.extend(self.enable_controllers(path, wanted))
        for attribute, value in self._kernel_order(path, plan.writes):
            try:
                self.set_attribute(path, attribute, value)
            except BackendError as e:
                plan.notes.append(f"{attribute}={value} not applied: {e}")
        # -- device filters: DevicePolicy=/DeviceAllow= (backends/bpfdev.py)
        if self._devices is not None:
            plan.notes.extend(self._devices.apply(normalise(path), self._dir(path), settings))
        else:
            plan.notes.extend(bpfdev.not_enforced(settings))
        return plan.notes

    def _kernel_order(self, path: str, writes: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """WRITES with what the kernel's current state of PATH needs besides (seen in the VM
        tier, tests/vm/test_kernel_order.py)."""
        writes = list(writes)
        # kernel/sched/fair.c sched_group_set_shares(): cpu.weight is EINVAL while cpu.idle
        # is 1, so leaving CPUWeight=idle for a weight clears cpu.idle first
        if (
            any(a == "cpu.weight" for a, _ in writes)
            and self.get_attribute(path, "cpu.idle") == "1"
        ):
            writes.insert(0, ("cpu.idle", "0"))
        # systemd.resource-control(5): an empty IO*BandwidthMax=/IO*IOPSMax= assignment resets
        # the list; io.max keeps a device's limits until they are written back to "max"
        planned = {
            (value.split()[0], pair.partition("=")[0])
            for attribute, value in writes
            if attribute == "io.max"
            for pair in value.split()[1:]
        }
        for line in (self.get_attribute(path, "io.max") or "").splitlines():
            device, *pairs = line.split()
            for pair in pairs:
                key, _, value = pair.partition("=")
                if value != "max" and (device, key) not in planned:
                    writes.append(("io.max", f"{device} {key}=max"))
        return writes

    def _number(self, path: str, attribute: str, key: str | None = None) -> int | None:
        text = self.get_attribute(path, attribute)
        if text is None:
            return None
        try:
            if key is None:
                return int(text)
            for line in text.splitlines():
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
        except ValueError:
            return None
        return None

    def _io_stat(self, path: str) -> dict[str, int]:
        # cgroup-v2.rst io.stat: "MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N"
        totals: dict[str, int] = {}
        for line in (self.get_attribute(path, "io.stat") or "").splitlines():
            for pair in line.split()[1:]:
                key, _, value = pair.partition("=")
                if value.isdigit():
                    totals[key] = totals.get(key, 0) + int(value)
        return totals

    def label(self, path: str, invocation_id: str) -> None:
        # trusted.* needs CAP_SYS_ADMIN, user.* a kernel that allows it: best effort
        for name in ("trusted.invocation_id", "user.invocation_id"):
            with contextlib.suppress(OSError):
                os.setxattr(self._dir(path), name, invocation_id.encode())

    def usage(self, path: str) -> Usage:
        d = self._dir(path)
        try:
            inode = d.stat().st_ino
        except OSError:
            return Usage()
        usec = self._number(path, "cpu.stat", "usage_usec")
        io = self._io_stat(path) if (d / "io.stat").exists() else {}
        return Usage(
            memory_bytes=self._number(path, "memory.current"),
            tasks=self._number(path, "pids.current"),
            cpu_nsec=None if usec is None else usec * 1000,
            io_read_bytes=io.get("rbytes"),
            io_write_bytes=io.get("wbytes"),
            io_read_ops=io.get("rios"),
            io_write_ops=io.get("wios"),
            # the cgroup ID the kernel reports (name_to_handle_at) is the kernfs inode number
            cgroup_id=inode if self._root_cgroup is not None else None,
        )

    def delegate(self, path: str, uid: int, gid: int) -> None:
        d = self._dir(path)
        try:
            os.chown(d, uid, gid)
            for name in self.delegate_files:
                if (d / name).exists():
                    os.chown(d / name, uid, gid)
        except OSError as e:
            raise BackendError(f"cannot delegate {path} to {uid}: {e.strerror}", e.errno) from None

    def kill(self, path: str, signal: int, recursive: bool = True) -> int:
        pids = self.pids(path, recursive)
        kill_file = self._dir(path) / "cgroup.kill"
        if signal == _signal.SIGKILL and recursive and kill_file.exists():
            self.set_attribute(path, "cgroup.kill", "1")  # cgroup-v2.rst, Linux 5.14+
            return len(pids)
        return signal_pids(pids, signal)

    def freeze(self, path: str) -> None:
        self.set_attribute(path, "cgroup.freeze", "1")

    def thaw(self, path: str) -> None:
        self.set_attribute(path, "cgroup.freeze", "0")

    def _populated(self, path: str) -> bool:
        events = self.get_attribute(path, "cgroup.events")
        if events is None:
            return bool(self.pids(path))
        return "populated 1" in events.splitlines()

    def watch_empty(self, path: str, callback: EmptyCallback) -> None:
        path = normalise(path)
        self.unwatch(path)
        self._events.add(path, self._dir(path) / "cgroup.events")
        self._watches[path] = callback
        if not self._populated(path):
            asyncio.get_running_loop().call_soon(self._changed, path)

    def _changed(self, path: str) -> None:
        callback = self._watches.get(path)
        if callback is None or self._populated(path):
            return
        self.unwatch(path)
        callback(path)

    def unwatch(self, path: str) -> None:
        path = normalise(path)
        self._watches.pop(path, None)
        self._events.remove(path)

    def close(self) -> None:
        if self._devices is not None:  # -- device filters: fds closed, programs stay attached
            self._devices.close()
        self._watches.clear()
        self._events.close()
