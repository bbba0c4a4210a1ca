"""The cgroup v1 backend: tracking in cgroup2 (hybrid) or a named v1 hierarchy (legacy), v1 limits.

Kernel documents: admin-guide/cgroup-v1/*.rst for the v1 hierarchies and their files,
admin-guide/cgroup-v2.rst for hybrid tracking; rules follow systemd 252 (cgroup.c).

Design. One *tracking* hierarchy says which process belongs to which unit: `pids()`,
`cgroup_of()`, `exists()`, emptiness and kill all read it. It is cgroup2 on hybrid hosts and the
named `name=systemd` v1 hierarchy on legacy ones; which one `tracking` is follows from its files
(every v1 cgroup has a "tasks" file, cgroup2 never has). Each v1 controller hierarchy
(`controllers`: name -> directory, co-mounted ones such as "cpu,cpuacct" share a directory)
holds a unit's cgroup only when the unit needs that controller: a limit `legacy_plan()` writes,
an *Accounting= setting, DevicePolicy=/DeviceAllow= (systemd's cgroup_context_get_mask()).
The record of that is the directory itself: a path is realised in a hierarchy when its
directory exists there, which the kernel keeps across daemon restarts. `attach()` moves a whole
process (cgroup.procs) into the tracking cgroup, then in each controller hierarchy into the
deepest existing cgroup on its path (the unit's, else the slice's that was realised for a
sibling), as systemd's cg_attach_fallback() does; where none exists the process is left where
it is, unless it sits in a cgroup of ours, which it then leaves for our root (it no longer
belongs to that unit). Realising a controller for a populated unit migrates its processes.
The v1 freezer, when it is the freeze mechanism, is realised for every unit at create(), since
moving processes there at freeze time would miss those forked meanwhile.

Empty cgroups. Hybrid: inotify on the cgroup2 cgroup.events ("populated 0"), as cgroup2.py.
Legacy v1 has no such event. release_agent cannot serve: it is one per hierarchy (the host's
name=systemd one belongs to the host), only settable with CAP_SYS_ADMIN in the initial user
namespace (Linux 5.17+), and the kernel runs it as a usermode helper in the initial namespaces,
where a namespaced daemon's program path means nothing. So: pidfds. For every watched cgroup
the backend holds pidfds on up to _ADOPT_PER_WATCH of its processes; an exit makes the loop
re-read the tracking cgroup.procs (recursively), which fires the callback when empty or adopts
further processes otherwise. Forks need no polling: a process forked after a check descends
from one present at that check, whose exit triggers the next check, so the last exit is always
seen at once (a few pidfds per cgroup suffice, which bounds descriptors). What pidfds cannot
see is a process leaving without exiting (moved out by someone else) or a pidfd that could not
be opened; a poll every `poll_interval` seconds, armed only while such watches exist, catches
those (latency up to the interval; no busy loop, no per-process threads).

Kill: v1 has no cgroup.kill, so every process gets pidfd_send_signal(), repeated over the
tracking cgroup until a pass finds no process not yet signalled (bounded, as systemd's
cg_kill() loops), which catches forks; hybrid uses cgroup2's cgroup.kill for SIGKILL when the
kernel has it. Freeze: cgroup2's cgroup.freeze on hybrid when present, else the v1 freezer.
Delegate=: only the tracking cgroup is handed over; v1 controller hierarchies are not delegated
(systemd does the same: on v1, delegating controllers to unprivileged code is not safe).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import select
import signal as _signal
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from backends.base import (
    BackendError,
    Capability,
    EmptyCallback,
    Usage,
    normalise,
    signal_pids,
)
from backends.cgroup2 import _DELEGATE_FILES, EventsWatch
from backends.detect import CGROUP_MOUNT, Mount, parse_mountinfo
from backends.resources import LEGACY_CONTROLLERS, Totals, legacy_plan

log = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL = 5.0  # seconds; only for processes that leave a v1 cgroup unseen
_ADOPT_PER_WATCH = 4  # pidfds held per watched legacy cgroup (any number >= 1 is correct)
_KILL_PASSES = 10  # systemd's cg_kill() repeats until a pass finds nobody new; we bound it
# cgroup-v1/cgroups.rst: the files a v1 cgroup's owner needs (systemd cg_set_access())
_LEGACY_DELEGATE_FILES = ("cgroup.procs", "tasks", "cgroup.clone_children")
# block/bfq-cgroup.c: with BFQ (the only proportional v1 scheduler left) the weights are these
_BLKIO_ALIASES = {
    "blkio.weight": "blkio.bfq.weight",
    "blkio.weight_device": "blkio.bfq.weight_device",
}


def _within(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root + "/")


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def _ancestors(path: str) -> Iterator[str]:
    """PATH, then each of its ancestors up to (not including) "/"."""
    while path != "/":
        yield path
        path = _parent(path)


def _read_mountinfo() -> str:
    try:
        return Path("/proc/self/mountinfo").read_text()
    except OSError:
        return ""


@dataclass(frozen=True, slots=True)
class _Hierarchy:
    """One cgroup hierarchy as the backend uses it."""

    name: str  # "cpu,cpuacct", "memory", or "tracking"
    dir: Path  # where our tree starts in it ("/" of the backend's paths)
    controllers: frozenset[str]
    v2: bool
    options: frozenset[str]  # its mount's super options: find its /proc/PID/cgroup line
    base: str | None  # the cgroup path of `dir`; None when dir is on no cgroup mount

    def at(self, path: str) -> Path:
        return self.dir / path.lstrip("/")


def _locate(directory: Path, mounts: list[Mount], v2: bool) -> tuple[frozenset[str], str | None]:
    """(super options, cgroup path) of DIRECTORY from mountinfo (proc(5)); the deepest mount
    of the right type containing it wins."""
    target = os.path.realpath(directory)
    best: Mount | None = None
    for m in mounts:
        if m.fstype != ("cgroup2" if v2 else "cgroup"):
            continue
        point = m.mount_point.rstrip("/") or "/"
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best.mount_point)):
            best = m
    if best is None:
        return frozenset(), None
    rest = target[len(best.mount_point.rstrip("/")) :].strip("/")
    joined = "/".join(p for p in (best.root.strip("/"), rest) if p)
    return frozenset(best.super_options.split(",")), "/" + joined


def _visible_v1_mounts(mounts: list[Mount]) -> list[Mount]:
    """v1 mounts not hidden by a later mount on or above their mount point (a sandbox's tmpfs
    over /sys/fs/cgroup hides the host's hierarchies, which mountinfo still lists)."""
    out = []
    for i, m in enumerate(mounts):
        if m.fstype != "cgroup":
            continue
        point = m.mount_point.rstrip("/")
        hidden = any(
            later.mount_point == m.mount_point
            or point.startswith(later.mount_point.rstrip("/") + "/")
            for later in mounts[i + 1 :]
        )
        if not hidden:
            out.append(m)
    return out


def discover_controllers(
    tracking: str | os.PathLike[str], mountinfo: str | None = None
) -> dict[str, str]:
    """The v1 controller hierarchies this process sees, as `Cgroup1Backend(controllers=)`:
    controller -> directory. Each directory is the controller's mount plus the cgroup path of
    TRACKING, so our tree sits at the same path in every hierarchy (as systemd keeps it);
    mounts under /sys/fs/cgroup are preferred, and hierarchies that do not contain that path
    are left out."""
    mounts = parse_mountinfo(_read_mountinfo() if mountinfo is None else mountinfo)
    tracking_dir = Path(tracking)
    v2 = not (tracking_dir / "tasks").exists()
    _options, shift = _locate(tracking_dir, mounts, v2)
    visible = _visible_v1_mounts(mounts)
    visible.sort(key=lambda m: not m.mount_point.startswith(CGROUP_MOUNT + "/"))
    found: dict[str, str] = {}
    for m in visible:
        names = [c for c in m.super_options.split(",") if c in LEGACY_CONTROLLERS]
        if not names or not os.path.exists(os.path.join(m.mount_point, "tasks")):
            continue
        root = m.root.rstrip("/")
        wanted = shift or "/"
        if wanted != "/" and not (wanted == root or wanted.startswith(root + "/")):
            log.debug("%s (%s) does not hold %s, not used", m.mount_point, m.root, wanted)
            continue
        rest = wanted[len(root) :].strip("/") if wanted != "/" else ""
        directory = os.path.join(m.mount_point, rest) if rest else m.mount_point
        for name in names:
            found.setdefault(name, directory)
    return found


class Cgroup1Backend:
    """A CgroupBackend over a tracking hierarchy plus v1 controller hierarchies."""

    name = "cgroup1"

    def __init__(
        self,
        tracking: str | os.PathLike[str],
        controllers: Mapping[str, str | os.PathLike[str]] | None = None,
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        mountinfo: str | None = None,
    ) -> None:
        self.root = Path(os.path.abspath(tracking))
        if not self.root.is_dir():
            raise BackendError(f"{self.root} is not a directory", errno.ENOENT)
        if poll_interval <= 0:
            raise BackendError("poll_interval must be positive", errno.EINVAL)
        self.poll_interval = poll_interval
        mounts = parse_mountinfo(_read_mountinfo() if mountinfo is None else mountinfo)
        # cgroup-v1/cgroups.rst: every v1 cgroup has "tasks"; cgroup-v2.rst has no such file
        self.legacy = (self.root / "tasks").exists()
        options, base = _locate(self.root, mounts, v2=not self.legacy)
        self.tracking = _Hierarchy(
            "tracking", self.root, frozenset(), not self.legacy, options, base
        )
        grouped: dict[Path, set[str]] = {}
        for controller, directory in (controllers or {}).items():
            if controller not in LEGACY_CONTROLLERS:
                raise BackendError(f"unknown cgroup v1 controller {controller!r}", errno.EINVAL)
            grouped.setdefault(Path(os.path.abspath(directory)), set()).add(controller)
        self.hierarchies: list[_Hierarchy] = []
        for directory, names in grouped.items():
            if directory == self.root:
                raise BackendError(f"{directory} is the tracking hierarchy", errno.EINVAL)
            options, base = _locate(directory, mounts, v2=False)
            if base is not None and not names <= options:
                have = ",".join(sorted(options & set(LEGACY_CONTROLLERS))) or "none"
                raise BackendError(
                    f"{directory} is not the {','.join(sorted(names))} hierarchy (it has {have})",
                    errno.EINVAL,
                )
            label = ",".join(sorted(names))
            self.hierarchies.append(
                _Hierarchy(label, directory, frozenset(names), False, options, base)
            )
        self._by_controller = {c: h for h in self.hierarchies for c in h.controllers}
        # cgroup-v2.rst cgroup.freeze (Linux 5.2+): absent in a root cgroup, so a mount root
        # is taken to have it
        self._v2_freeze = self.tracking.v2 and (
            (self.root / "cgroup.freeze").exists() or self.tracking.base == "/"
        )
        self._freezer = None if self._v2_freeze else self._by_controller.get("freezer")
        caps = {Capability.KILL, Capability.DELEGATE}
        if self.hierarchies:
            caps.add(Capability.LIMITS)
        if self._v2_freeze or self._freezer is not None:
            caps.add(Capability.FREEZE)
        if self.legacy:
            caps.add(Capability.PIDFD)
        if "devices" in self._by_controller:
            caps.add(Capability.DEVICES)
        self.capabilities = frozenset(caps)
        self.totals = Totals.of_this_machine()
        if self.legacy:
            self.delegate_files: tuple[str, ...] = _LEGACY_DELEGATE_FILES
        else:
            try:
                listed = Path("/sys/kernel/cgroup/delegate").read_text().split()
            except OSError:
                listed = []
            self.delegate_files = tuple(listed) or _DELEGATE_FILES
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events = EventsWatch(self._fire)
        # path -> (watched through cgroup.events, else pidfds and the poll; callback)
        self._watches: dict[str, tuple[bool, EmptyCallback]] = {}
        self._pidfds: dict[int, tuple[int, str]] = {}  # pid -> (pidfd, cgroup seen in)
        self._timer: asyncio.TimerHandle | None = None

    def describe(self) -> str:
        """One line for the log: which hierarchies this backend uses."""
        kind = "cgroup2 (hybrid)" if self.tracking.v2 else "a named v1 hierarchy (legacy)"
        used = ", ".join(f"{h.name} at {h.dir}" for h in self.hierarchies) or "none"
        return f"tracking in {self.root}, {kind}; v1 controllers: {used}"

    # -- helpers ---------------------------------------------------------------------------
    def _hierarchy_for(self, attribute: str) -> _Hierarchy:
        """The hierarchy holding an attribute file: its controller's, else the tracking one."""
        if "/" in attribute or attribute.startswith(".") or not attribute:
            raise BackendError(f"invalid attribute {attribute!r}", errno.EINVAL)
        return self._by_controller.get(attribute.split(".", 1)[0], self.tracking)

    def _write(self, h: _Hierarchy, path: str, attribute: str, value: str) -> None:
        d = h.at(path)
        if not d.is_dir():
            where = "" if h is self.tracking else f" in the {h.name} hierarchy"
            raise BackendError(f"cgroup {path} does not exist{where}", errno.ENOENT)
        target = d / attribute
        alias = _BLKIO_ALIASES.get(attribute)
        if alias is not None and not target.exists() and (d / alias).exists():
            target = d / alias
        try:
            with open(target, "w") as f:
                f.write(value + "\n")
        except OSError as e:
            raise BackendError(f"{path}/{target.name}: {e.strerror}", e.errno) from None

    def _read(self, h: _Hierarchy, path: str, attribute: str) -> str | None:
        try:
            return (h.at(path) / attribute).read_text().strip()
        except OSError:
            return None

    def _procs(self, h: _Hierarchy, path: str, recursive: bool = True) -> dict[str, list[int]]:
        """cgroup path -> PIDs listed in its cgroup.procs (cgroup-v1: unsorted, may repeat)."""
        d = h.at(path)
        found: dict[str, list[int]] = {}
        dirs = [d]
        if recursive and d.is_dir():
            dirs += [p for p in d.rglob("*") if p.is_dir()]
        for sub in dirs:
            try:
                pids = [int(x) for x in (sub / "cgroup.procs").read_text().split()]
            except (OSError, ValueError):
                continue
            rel = sub.relative_to(h.dir).as_posix()
            found["/" if rel == "." else "/" + rel] = [p for p in pids if p > 0]
        return found

    def _proc_cgroup(self, pid: int, h: _Hierarchy) -> str | None:
        """PID's cgroup in H, relative to H's directory; None if unknown, dead or outside."""
        if h.base is None:
            return None
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                lines = f.read().splitlines()
        except OSError:
            return None
        for line in lines:
            # cgroups(7): "hierarchy-ID:controller-list:cgroup-path"; "0::" is cgroup2
            hier, _, rest = line.partition(":")
            names, _, path = rest.partition(":")
            if h.v2:
                match = hier == "0" and names == ""
            else:
                match = bool(names) and set(names.split(",")) <= h.options
            if not match:
                continue
            base = h.base.rstrip("/")
            path = path or "/"
            if base and path != base and not path.startswith(base + "/"):
                return None
            return path[len(base) :] or "/"
        return None

    def _nearest(self, path: str, h: _Hierarchy) -> str | None:
        """The deepest cgroup on PATH (itself included, "/" not) that exists in H."""
        return next((p for p in _ancestors(path) if h.at(p).is_dir()), None)

    def _move(self, h: _Hierarchy, path: str, pid: int) -> None:
        # cgroup-v1/cgroups.rst: writing a PID to cgroup.procs moves the whole thread group
        try:
            with open(h.at(path) / "cgroup.procs", "w") as f:
                f.write(f"{pid}\n")
        except OSError as e:
            what = "does not exist" if e.errno == errno.ESRCH else e.strerror
            raise BackendError(f"process {pid} not moved to {path}: {what}", e.errno) from None

    def _attach_controllers(self, path: str, pid: int) -> None:
        for h in self.hierarchies:
            target = self._nearest(path, h)
            if target is None:
                current = self._proc_cgroup(pid, h)
                # ours only if it is a cgroup we made for a unit: leave foreign ones alone
                if current is None or current == "/" or not self.tracking.at(current).is_dir():
                    continue
                target = "/"
            try:
                self._move(h, target, pid)
            except BackendError as e:
                if e.errno != errno.ESRCH:  # systemd cg_attach_everywhere() goes on as well
                    log.warning("%s hierarchy: %s", h.name, e)

    def _mkdirs(self, h: _Hierarchy, path: str) -> list[str]:
        """Create PATH in H with its missing parents; the cgroup paths created, top-down."""
        missing: list[Path] = []
        d = h.at(path)
        while not d.is_dir() and d != d.parent:
            missing.append(d)
            d = d.parent
        created: list[str] = []
        for new in reversed(missing):
            try:
                new.mkdir()
            except FileExistsError:
                continue
            except OSError as e:
                raise BackendError(
                    f"cannot create cgroup {path} in the {h.name} hierarchy: {e.strerror}", e.errno
                ) from None
            if "cpuset" in h.controllers:
                self._cpuset_inherit(new)
            if new.is_relative_to(h.dir) and new != h.dir:
                created.append("/" + new.relative_to(h.dir).as_posix())
        return created

    def _cpuset_inherit(self, d: Path) -> None:
        # cgroup-v1/cpusets.rst: a new cpuset starts with empty cpus and mems (unless
        # cgroup.clone_children), and a task cannot join an empty cpuset: copy the parent's
        for name in ("cpuset.cpus", "cpuset.mems"):
            try:
                if (d / name).exists() and (d / name).read_text().strip():
                    continue
                value = (d.parent / name).read_text().strip()
                if value:
                    (d / name).write_text(value + "\n")
            except OSError as e:
                log.warning("%s: cannot copy %s from the parent: %s", d, name, e.strerror)

    def _realise(self, path: str, h: _Hierarchy) -> None:
        """Give PATH (and its parents) a cgroup in H; processes of the tracking tree whose
        nearest cgroup in H is a new one move there (systemd cg_migrate_v1_controllers())."""
        if path == "/":
            return
        created = self._mkdirs(h, path)
        if not created:
            return
        for where, pids in self._procs(self.tracking, created[0]).items():
            target = self._nearest(where, h)
            if target not in created:
                continue
            for pid in pids:
                try:
                    self._move(h, target, pid)
                except BackendError as e:
                    if e.errno != errno.ESRCH:
                        log.warning("%s hierarchy: %s", h.name, e)

    def _rmtree(self, h: _Hierarchy, path: str) -> None:
        d = h.at(path)
        subdirs = sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        try:
            for sub in [*subdirs, d]:
                sub.rmdir()  # cgroup-v1/cgroups.rst: a cgroup without tasks is removed by rmdir
        except OSError as e:
            where = "" if h is self.tracking else f" in the {h.name} hierarchy"
            raise BackendError(
                f"cannot remove cgroup {path}{where}: {e.strerror}", e.errno
            ) from None

    # -- the Protocol ----------------------------------------------------------------------
    def create(self, path: str) -> None:
        path = normalise(path)
        try:
            self.tracking.at(path).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BackendError(f"cannot create cgroup {path}: {e.strerror}", e.errno) from None
        if self._freezer is not None:
            self._realise(path, self._freezer)

    def exists(self, path: str) -> bool:
        return self.tracking.at(normalise(path)).is_dir()

    def remove(self, path: str) -> None:
        path = normalise(path)
        if path == "/":
            raise BackendError("refusing to remove the root cgroup", errno.EBUSY)
        if self.pids(path):
            raise BackendError(f"cgroup {path} is populated", errno.EBUSY)
        self.unwatch(path)
        for h in self.hierarchies:
            if not h.at(path).is_dir():
                continue
            # processes left here (moved away in the tracking hierarchy by someone else) go
            # to the parent, as they would have if they had been moved through us
            for pid in (p for pids in self._procs(h, path).values() for p in pids):
                try:
                    self._move(h, _parent(path), pid)
                except BackendError as e:
                    log.warning("%s hierarchy: %s", h.name, e)
            self._rmtree(h, path)
        if self.tracking.at(path).is_dir():
            self._rmtree(self.tracking, path)

    def attach(self, path: str, pids: Iterable[int]) -> None:
        path = normalise(path)
        if not self.tracking.at(path).is_dir():
            raise BackendError(f"cgroup {path} does not exist", errno.ENOENT)
        moved: list[int] = []
        for pid in pids:
            self._move(self.tracking, path, pid)
            self._attach_controllers(path, pid)
            moved.append(pid)
        self._after_attach(path, moved)

    def pids(self, path: str, recursive: bool = True) -> list[int]:
        found = self._procs(self.tracking, normalise(path), recursive)
        # cgroup.procs shows 0 for processes outside our PID namespace
        return sorted({pid for pids in found.values() for pid in pids} - {0})

    def cgroup_of(self, pid: int) -> str | None:
        return self._proc_cgroup(pid, self.tracking)

    def set_attribute(self, path: str, attribute: str, value: str) -> None:
        path = normalise(path)
        self._write(self._hierarchy_for(attribute), path, attribute, value)

    def get_attribute(self, path: str, attribute: str) -> str | None:
        return self._read(self._hierarchy_for(attribute), normalise(path), attribute)

    def apply_resources(self, path: str, settings: Mapping[str, object]) -> list[str]:
        path = normalise(path)
        notes: list[str] = []
        for controller, plan in legacy_plan(settings, self.totals).items():
            notes.extend(plan.notes)
            h = self._by_controller.get(controller)
            if h is None:
                what = ", ".join(a for a, _ in plan.writes) or f"{controller} accounting"
                notes.append(f"no cgroup v1 {controller} hierarchy here: {what} not applied")
                continue
            try:
                self._realise(path, h)
            except BackendError as e:
                notes.append(str(e))
                continue
            writes = list(plan.writes)
            if controller == "cpuset" and path != "/":
                # cgroup-v1/cpusets.rst: unset AllowedCPUs=/AllowedMemoryNodes= mean the parent's
                for name in ("cpuset.cpus", "cpuset.mems"):
                    inherited = self._read(h, _parent(path), name)
                    if inherited and all(a != name for a, _ in writes):
                        writes.insert(0, (name, inherited))
            for attribute, value in writes:
                try:
                    self._write(h, path, attribute, value)
                except BackendError as e:
                    notes.append(f"{attribute}={value} not applied: {e}")
        return notes

    def _number(self, controller: str, path: str, attribute: str) -> int | None:
        h = self._by_controller.get(controller)
        text = None if h is None else self._read(h, path, attribute)
        try:
            return None if text is None else int(text)
        except ValueError:
            return None

    def _blkio(self, path: str, attribute: str) -> dict[str, int]:
        # cgroup-v1/blkio-controller.rst: "MAJ:MIN Read N" ... and a final "Total N"; the
        # _recursive file includes sub-cgroups (slices)
        h = self._by_controller.get("blkio")
        if h is None:
            return {}
        text = self._read(h, path, attribute + "_recursive")
        if text is None:
            text = self._read(h, path, attribute)
        if text is None:
            return {}
        totals: dict[str, int] = {}
        for line in text.splitlines():
            fields = line.split()
            if len(fields) == 3 and fields[2].isdigit():
                totals[fields[1]] = totals.get(fields[1], 0) + int(fields[2])
        return totals

    def label(self, path: str, invocation_id: str) -> None:
        """xattrs on the tracking cgroup (cgroup2 or v1 cgroupfs both take trusted.*)."""
        # trusted.* needs CAP_SYS_ADMIN, user.* a kernel that allows it: best effort
        for name in ("trusted.invocation_id", "user.invocation_id"):
            with contextlib.suppress(OSError):
                os.setxattr(self.tracking.at(normalise(path)), name, invocation_id.encode())

    def usage(self, path: str) -> Usage:
        path = normalise(path)
        try:
            inode = self.tracking.at(path).stat().st_ino
        except OSError:
            return Usage()
        io_bytes = self._blkio(path, "blkio.throttle.io_service_bytes")
        io_ops = self._blkio(path, "blkio.throttle.io_serviced")
        return Usage(
            memory_bytes=self._number("memory", path, "memory.usage_in_bytes"),
            tasks=self._number("pids", path, "pids.current"),
            cpu_nsec=self._number("cpuacct", path, "cpuacct.usage"),
            io_read_bytes=io_bytes.get("Read"),
            io_write_bytes=io_bytes.get("Write"),
            io_read_ops=io_ops.get("Read"),
            io_write_ops=io_ops.get("Write"),
            # the cgroup ID is the cgroup2 directory's inode; v1 cgroups have none
            cgroup_id=inode if self.tracking.v2 and self.tracking.base is not None else None,
        )

    def delegate(self, path: str, uid: int, gid: int) -> None:
        path = normalise(path)
        d = self.tracking.at(path)
        try:
            os.chown(d, uid, gid)
            for name in self.delegate_files:
                if (d / name).exists():
                    os.chown(d / name, uid, gid)
        except OSError as e:
            raise BackendError(f"cannot delegate {path} to {uid}: {e.strerror}", e.errno) from None

    def kill(self, path: str, signal: int, recursive: bool = True) -> int:
        path = normalise(path)
        if (
            self.tracking.v2
            and signal == _signal.SIGKILL
            and recursive
            and (self.tracking.at(path) / "cgroup.kill").exists()
        ):
            count = len(self.pids(path))
            self._write(self.tracking, path, "cgroup.kill", "1")  # cgroup-v2.rst, Linux 5.14+
            return count
        signalled: set[int] = {os.getpid()}
        count = 0
        for _ in range(_KILL_PASSES):
            todo = [p for p in self.pids(path, recursive) if p not in signalled]
            if not todo:
                break
            signalled.update(todo)
            count += signal_pids(todo, signal)
        # cgroup-v1/freezer-subsystem.rst: frozen tasks only die once thawed
        frozen = self._freezer and self._read(self._freezer, path, "freezer.state")
        if signal == _signal.SIGKILL and self._freezer and frozen in ("FROZEN", "FREEZING"):
            self._write(self._freezer, path, "freezer.state", "THAWED")
        return count

    def _freeze(self, path: str, frozen: bool) -> None:
        path = normalise(path)
        if self._v2_freeze:
            self._write(self.tracking, path, "cgroup.freeze", "1" if frozen else "0")
        elif self._freezer is not None:
            # cgroup-v1/freezer-subsystem.rst: freezer.state FROZEN / THAWED
            self._write(self._freezer, path, "freezer.state", "FROZEN" if frozen else "THAWED")
        else:
            raise BackendError(
                f"cannot freeze {path}: no cgroup.freeze and no v1 freezer hierarchy",
                errno.EOPNOTSUPP,
            )

    def freeze(self, path: str) -> None:
        self._freeze(path, True)

    def thaw(self, path: str) -> None:
        self._freeze(path, False)

    # -- empty cgroups ---------------------------------------------------------------------
    def _uses_inotify(self, path: str) -> bool:
        return self.tracking.v2 and (self.tracking.at(path) / "cgroup.events").exists()

    def _populated(self, path: str) -> bool:
        if self._uses_inotify(path):
            events = self._read(self.tracking, path, "cgroup.events") or ""
            return "populated 1" in events.splitlines()
        return bool(self.pids(path))

    def watch_empty(self, path: str, callback: EmptyCallback) -> None:
        path = normalise(path)
        loop = self._loop = self._loop or asyncio.get_running_loop()
        self.unwatch(path)
        if self._uses_inotify(path):
            self._events.add(path, self.tracking.at(path) / "cgroup.events")
            self._watches[path] = (True, callback)
        else:
            self._watches[path] = (False, callback)
            self._adopt(path)
            self._arm_poll()
        if not self._populated(path):
            loop.call_soon(self._fire, path)

    def _adopt(self, path: str) -> None:
        """Hold pidfds on up to _ADOPT_PER_WATCH processes of the watched PATH."""
        if self._loop is None:
            return
        held = sum(1 for _fd, seen in self._pidfds.values() if _within(seen, path))
        for where, pids in self._procs(self.tracking, path).items():
            for pid in pids:
                if held >= _ADOPT_PER_WATCH:
                    return
                if pid in self._pidfds:
                    continue
                try:
                    fd = os.pidfd_open(pid)
                except OSError:
                    continue  # gone already, or out of descriptors: the poll covers it
                if select.select([fd], [], [], 0)[0]:
                    os.close(fd)  # pidfd_open(2): readable once it exited; nothing to wait for
                    continue
                self._pidfds[pid] = (fd, where)
                self._loop.add_reader(fd, self._on_exit, pid)
                held += 1

    def _drop_pidfd(self, pid: int) -> str | None:
        entry = self._pidfds.pop(pid, None)
        if entry is None:
            return None
        if self._loop is not None:
            self._loop.remove_reader(entry[0])
        os.close(entry[0])
        return entry[1]

    def _on_exit(self, pid: int) -> None:
        seen = self._drop_pidfd(pid)
        if seen is not None:
            self._recheck(lambda w: _within(seen, w))

    def _recheck(self, which: Callable[[str], bool]) -> None:
        for path, (inotify, _cb) in list(self._watches.items()):
            if not inotify and which(path) and path in self._watches:
                if self._populated(path):
                    self._adopt(path)
                else:
                    self._fire(path)

    def _after_attach(self, path: str, pids: list[int]) -> None:
        """Processes moved by attach(): the cgroups they left may be empty now, and the
        watched cgroup they joined should hold pidfds on them."""
        if self._loop is None:
            return
        left = {seen for pid in pids if (seen := self._drop_pidfd(pid)) is not None}
        if left:
            self._loop.call_soon(self._recheck, lambda w: any(_within(s, w) for s in left))
        for watched, (inotify, _cb) in list(self._watches.items()):
            if not inotify and _within(path, watched):
                self._adopt(watched)

    def _arm_poll(self) -> None:
        legacy_watches = any(not inotify for inotify, _cb in self._watches.values())
        if self._timer is None and self._loop is not None and legacy_watches:
            self._timer = self._loop.call_later(self.poll_interval, self._poll)

    def _poll(self) -> None:
        self._timer = None
        self._recheck(lambda w: True)
        self._arm_poll()

    def _fire(self, path: str) -> None:
        entry = self._watches.get(path)
        if entry is None or self._populated(path):
            return
        self.unwatch(path)
        entry[1](path)

    def unwatch(self, path: str) -> None:
        entry = self._watches.pop(normalise(path), None)
        if entry is None:
            return
        if entry[0]:
            self._events.remove(normalise(path))
        legacy = [w for w, (inotify, _cb) in self._watches.items() if not inotify]
        for pid, (_fd, seen) in list(self._pidfds.items()):
            if not any(_within(seen, w) for w in legacy):
                self._drop_pidfd(pid)
        if not legacy and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        for path in list(self._watches):
            self.unwatch(path)
        for pid in list(self._pidfds):
            self._drop_pidfd(pid)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._events.close()
