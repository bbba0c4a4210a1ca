"""The fake backend: a cgroup tree of plain directories that records every operation.

Processes are real: attaching opens a pidfd, exits are noticed through it (no polling),
and kill() really signals the attached processes. Nothing touches cgroupfs, so it is
safe anywhere; children forked later by an attached process are not tracked.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal as _signal
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path

from backends.base import BackendError, Capability, EmptyCallback, Operation, Usage, normalise
from backends.resources import Totals, unified_plan


def _within(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root + "/")


def _ancestors(path: str) -> list[str]:
    """PATH and every cgroup above it, the root first."""
    parts = [p for p in path.split("/") if p]
    return ["/"] + ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


OPERATIONS_KEPT = 1_000


class FakeBackend:
    """A CgroupBackend over a directory tree; `operations` lists every call made."""

    name = "fake"
    capabilities = frozenset(
        {
            Capability.KILL,
            Capability.FREEZE,
            Capability.LIMITS,
            Capability.DELEGATE,
            Capability.PIDFD,
            Capability.DEVICES,
        }
    )

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # the most recent calls (bounded: a long-running fake daemon must not grow with them)
        self.operations: deque[Operation] = deque(maxlen=OPERATIONS_KEPT)
        self.n_operations = 0  # every call ever recorded
        self._members: dict[int, str] = {}  # pid -> cgroup path
        # indexes of _members (no scan of every process per call): path -> its pids, and
        # path -> the pids in it and below it
        self._procs: dict[str, set[int]] = {}
        self._subtree: dict[str, set[int]] = {}
        self._pidfds: dict[int, int] = {}  # pid -> pidfd
        self._watches: dict[str, EmptyCallback] = {}
        self.delegated: dict[str, tuple[int, int]] = {}  # path -> (uid, gid)
        self.labels: dict[str, str] = {}  # path -> invocation ID
        self._loop: asyncio.AbstractEventLoop | None = None
        # fixed totals, so that *Scale settings give the same files on every machine
        self.totals = Totals(memory=8 << 30, tasks=4194304)
        self._unwatched: set[int] = set()  # adopted pids whose pidfd has no reader yet
        self._adopt()

    def _adopt(self) -> None:
        """Processes a previous run left in the tree (cgroup.procs files) are members again,
        as the kernel's tree would still hold them after a daemon restart."""
        for procs in self.root.rglob("cgroup.procs"):
            path = "/" + "/".join(procs.parent.relative_to(self.root).parts)
            for word in procs.read_text().split():
                try:
                    pid = int(word)
                    fd = os.pidfd_open(pid)
                except (ValueError, OSError):
                    continue
                self._pidfds[pid] = fd
                self._set_member(pid, path)
                self._unwatched.add(pid)
            self._write_procs(path)

    def _watch_adopted(self) -> None:
        if not self._unwatched or self._loop is None:
            return
        for pid in self._unwatched:
            self._loop.add_reader(self._pidfds[pid], self._on_exit, pid)
        self._unwatched.clear()

    # -- helpers ---------------------------------------------------------------------------
    def _dir(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def _record(self, op: str, path: str, *args: object) -> None:
        self.operations.append(Operation(op, path, args))
        self.n_operations += 1

    def _set_member(self, pid: int, path: str | None) -> str | None:
        """Move PID to the cgroup PATH (None: forget it); its old cgroup."""
        old = self._members.pop(pid, None)
        if old is not None:
            self._procs[old].discard(pid)
            if not self._procs[old]:
                del self._procs[old]
            for a in _ancestors(old):
                self._subtree[a].discard(pid)
                if not self._subtree[a]:
                    del self._subtree[a]
        if path is not None:
            self._members[pid] = path
            self._procs.setdefault(path, set()).add(pid)
            for a in _ancestors(path):
                self._subtree.setdefault(a, set()).add(pid)
        return old

    def _write_procs(self, path: str) -> None:
        d = self._dir(path)
        if d.is_dir():
            pids = sorted(self._procs.get(path, ()))
            (d / "cgroup.procs").write_text("".join(f"{p}\n" for p in pids))

    def _forget(self, pid: int) -> None:
        self._unwatched.discard(pid)
        fd = self._pidfds.pop(pid, None)
        if fd is not None:
            if self._loop is not None:
                self._loop.remove_reader(fd)
            os.close(fd)
        old = self._set_member(pid, None)
        if old is not None:
            self._write_procs(old)

    def _on_exit(self, pid: int) -> None:
        path = self._members.get(pid)
        self._forget(pid)
        if path is not None:
            self._check_watches(path)

    def _check_watches(self, path: str) -> None:
        # the watched cgroups at or above PATH (a lookup per ancestor, not a scan of every
        # watch), in the order they were watched
        hits = [a for a in _ancestors(path) if a in self._watches]
        if len(hits) > 1:
            order = {w: i for i, w in enumerate(self._watches)}
            hits.sort(key=order.__getitem__)
        for watched in hits:
            if watched in self._watches and not self.pids(watched):
                callback = self._watches.pop(watched)
                callback(watched)

    # -- the Protocol ----------------------------------------------------------------------
    def create(self, path: str) -> None:
        path = normalise(path)
        self._record("create", path)
        d = self._dir(path)
        d.mkdir(parents=True, exist_ok=True)
        procs = d / "cgroup.procs"
        if not procs.exists():
            procs.write_text("")

    def exists(self, path: str) -> bool:
        return self._dir(normalise(path)).is_dir()

    def remove(self, path: str) -> None:
        path = normalise(path)
        self._record("remove", path)
        if path == "/":
            raise BackendError("refusing to remove the root cgroup", errno.EBUSY)
        if self.pids(path):
            raise BackendError(f"cgroup {path} is populated", errno.EBUSY)
        d = self._dir(path)
        below = path + "/"  # _within(p, path), inline: this runs over every cgroup labelled
        for gone in [
            p for p in (*self.labels, *self.delegated) if p == path or p.startswith(below)
        ]:
            # what the kernel forgets with the directory (a long-running fake daemon would
            # otherwise keep one entry per cgroup it ever made)
            self.labels.pop(gone, None)
            self.delegated.pop(gone, None)
        if not d.is_dir():
            return
        for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            for f in sub.iterdir():
                f.unlink()
            sub.rmdir()
        for f in d.iterdir():
            f.unlink()
        d.rmdir()
        self._watches.pop(path, None)

    def attach(self, path: str, pids: Iterable[int]) -> None:
        path = normalise(path)
        pids = list(pids)
        self._record("attach", path, *pids)
        if not self._dir(path).is_dir():
            raise BackendError(f"cgroup {path} does not exist", errno.ENOENT)
        opened: dict[int, int] = {}
        try:
            for pid in pids:
                if pid in self._pidfds or pid in opened:
                    continue
                try:
                    opened[pid] = os.pidfd_open(pid)
                except OSError as e:
                    raise BackendError(f"process {pid} does not exist", e.errno) from e
        except BackendError:
            for fd in opened.values():
                os.close(fd)
            raise
        try:
            self._loop = self._loop or asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        for pid, fd in opened.items():
            self._pidfds[pid] = fd
            if self._loop is not None:
                self._loop.add_reader(fd, self._on_exit, pid)
        self._watch_adopted()
        touched = {path}
        for pid in pids:
            old = self._members.get(pid)
            if old is not None:
                touched.add(old)
            self._set_member(pid, path)
        for p in touched:
            self._write_procs(p)
        for p in touched - {path}:
            self._check_watches(p)

    def pids(self, path: str, recursive: bool = True) -> list[int]:
        path = normalise(path)
        if recursive:
            return sorted(self._subtree.get(path, ()))
        return sorted(self._procs.get(path, ()))

    def cgroup_of(self, pid: int) -> str | None:
        return self._members.get(pid)

    def set_attribute(self, path: str, attribute: str, value: str) -> None:
        path = normalise(path)
        self._record("set", path, attribute, value)
        d = self._dir(path)
        if not d.is_dir():
            raise BackendError(f"cgroup {path} does not exist", errno.ENOENT)
        if "/" in attribute or attribute.startswith("."):
            raise BackendError(f"invalid attribute {attribute!r}", errno.EINVAL)
        (d / attribute).write_text(value + "\n")

    def get_attribute(self, path: str, attribute: str) -> str | None:
        f = self._dir(normalise(path)) / attribute
        return f.read_text().strip() if f.is_file() else None

    def apply_resources(self, path: str, settings: Mapping[str, object]) -> list[str]:
        """The cgroup v2 files a real unified hierarchy would get, written into the tree."""
        plan = unified_plan(
            settings, self.totals, lambda dev: (8, 0) if dev.startswith("/dev/") else None
        )
        for attribute, value in plan.writes:
            self.set_attribute(path, attribute, value)
        return plan.notes

    def label(self, path: str, invocation_id: str) -> None:
        path = normalise(path)
        self._record("label", path, invocation_id)
        self.labels[path] = invocation_id

    def usage(self, path: str) -> Usage:
        """Tasks are the attached processes; a fake tree has no memory, CPU or IO counters."""
        d = self._dir(normalise(path))
        if not d.is_dir():
            return Usage()
        return Usage(tasks=len(self.pids(path)), cgroup_id=d.stat().st_ino)

    def delegate(self, path: str, uid: int, gid: int) -> None:
        path = normalise(path)
        self._record("delegate", path, uid, gid)
        self.delegated[path] = (uid, gid)

    def kill(self, path: str, signal: int, recursive: bool = True) -> int:
        path = normalise(path)
        self._record("kill", path, signal, recursive)
        count = 0
        for pid in self.pids(path, recursive):
            try:
                _signal.pidfd_send_signal(self._pidfds[pid], signal)
                count += 1
            except (OSError, KeyError):
                continue
        return count

    def freeze(self, path: str) -> None:
        self._record("freeze", normalise(path))
        self.set_attribute(path, "cgroup.freeze", "1")

    def thaw(self, path: str) -> None:
        self._record("thaw", normalise(path))
        self.set_attribute(path, "cgroup.freeze", "0")

    def watch_empty(self, path: str, callback: EmptyCallback) -> None:
        path = normalise(path)
        self._record("watch", path)
        self._loop = self._loop or asyncio.get_running_loop()
        self._watch_adopted()
        if not self.pids(path):
            loop = self._loop or asyncio.get_running_loop()
            loop.call_soon(callback, path)
            return
        self._watches[path] = callback

    def unwatch(self, path: str) -> None:
        self._watches.pop(normalise(path), None)

    def close(self) -> None:
        """Let go of the pidfds; the tree keeps its members, as the kernel's would when the
        daemon stops (a restarted daemon adopts them again)."""
        for pid, fd in list(self._pidfds.items()):
            if self._loop is not None and pid not in self._unwatched:
                self._loop.remove_reader(fd)
            os.close(fd)
        self._pidfds.clear()
        self._unwatched.clear()
        self._watches.clear()
