"""cgroup backends behind one Protocol (backends.base.CgroupBackend); `make_backend` picks one."""

from __future__ import annotations

import os

from backends.base import BackendError, CgroupBackend

BACKENDS = ("auto", "cgroup2", "cgroup1", "fake")


def make_backend(name: str, root: str | os.PathLike[str] | None) -> CgroupBackend:
    """The backend called `name`, over `root` (fake: a directory; real: a cgroupfs mount)."""
    if name == "auto":
        name = "fake"  # the real backends land with their own issue; fake is always safe
    if name == "fake":
        from backends.fake import FakeBackend

        if root is None:
            raise BackendError("the fake backend needs --cgroup-root DIR (any directory)")
        return FakeBackend(root)
    if name in ("cgroup2", "cgroup1"):
        raise BackendError(
            f"the {name} backend is not available in this version; use --backend fake"
        )
    raise BackendError(f"unknown backend {name!r}")
