"""cgroup backends behind one Protocol (backends.base.CgroupBackend); `make_backend` picks one."""

from __future__ import annotations

import logging
import os

from backends.base import BackendError, CgroupBackend

BACKENDS = ("auto", "cgroup2", "cgroup1", "fake")
log = logging.getLogger(__name__)


def make_backend(name: str, root: str | os.PathLike[str] | None) -> CgroupBackend:
    """The backend called `name`, over `root` (fake: a directory; real: a cgroupfs directory,
    by default the one detected from /proc/self/mountinfo and PID 1's cgroup)."""
    if name == "fake":
        from backends.fake import FakeBackend

        if root is None:
            raise BackendError("the fake backend needs --cgroup-root DIR (any directory)")
        return FakeBackend(root)
    if name not in ("auto", "cgroup2", "cgroup1"):
        raise BackendError(f"unknown backend {name!r}")
    from backends.detect import Mode, detect

    found, detected_root = detect()
    if name == "auto":
        if found.mode is Mode.NONE:
            raise BackendError(f"no cgroup hierarchy to manage: {found.reason}; use --backend fake")
        name = "cgroup2" if found.mode is Mode.UNIFIED else "cgroup1"
        log.info("backend auto: %s, because %s", name, found.reason)
    root = root if root is not None else detected_root
    if name == "cgroup2":
        try:
            from backends.cgroup2 import Cgroup2Backend
        except ImportError:
            raise BackendError("the cgroup2 backend is not part of this build") from None
        return Cgroup2Backend(root)
    from backends.cgroup1 import Cgroup1Backend, discover_controllers

    if not root:
        raise BackendError(f"no cgroup hierarchy to manage: {found.reason}; use --cgroup-root")
    # v1 controllers sit at the same cgroup path as the tracking root, in every hierarchy
    backend = Cgroup1Backend(root, discover_controllers(root))
    log.info("backend cgroup1: %s", backend.describe())
    return backend
