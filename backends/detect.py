"""Which cgroup hierarchy this machine has, and where the daemon's tree starts.

The rules are the ones systemd's cg_pid_get_path() and logind apply (api-surface §1.8):
/sys/fs/cgroup being cgroup2 is unified; a tmpfs there with cgroup2 at .../unified is hybrid;
a tmpfs with a named "systemd" v1 hierarchy is legacy; anything else has no usable tracking
hierarchy. Parsing is pure; `detect()` reads /proc only when asked.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

CGROUP_MOUNT = "/sys/fs/cgroup"


class Mode(enum.StrEnum):
    UNIFIED = "unified"
    HYBRID = "hybrid"
    LEGACY = "legacy"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Mount:
    """One line of /proc/self/mountinfo (proc(5)): where, what of the source it shows, type."""

    mount_point: str
    root: str
    fstype: str
    super_options: str


@dataclass(frozen=True, slots=True)
class Detection:
    mode: Mode
    tracking: str  # the directory of the tracking hierarchy ("" for NONE)
    reason: str


def _unescape(field: str) -> str:
    # proc(5): spaces, tabs, newlines and backslashes in paths are octal escapes
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if sep < 5 or len(fields) < sep + 3:
            continue
        super_options = fields[sep + 3] if len(fields) > sep + 3 else ""
        mounts.append(
            Mount(_unescape(fields[4]), _unescape(fields[3]), fields[sep + 1], super_options)
        )
    return mounts


def _visible(mounts: list[Mount], point: str) -> Mount | None:
    """The mount that is on top at a mount point (the last one listed wins)."""
    found = None
    for m in mounts:
        if m.mount_point == point:
            found = m
    return found


def classify(mounts: list[Mount], base: str = CGROUP_MOUNT) -> Detection:
    top = _visible(mounts, base)
    if top is None:
        return Detection(Mode.NONE, "", f"nothing is mounted at {base}")
    if top.fstype == "cgroup2":
        return Detection(Mode.UNIFIED, base, f"{base} is cgroup2")
    if top.fstype != "tmpfs":
        return Detection(Mode.NONE, "", f"{base} is {top.fstype}, neither cgroup2 nor tmpfs")
    unified = _visible(mounts, f"{base}/unified")
    if unified is not None and unified.fstype == "cgroup2":
        return Detection(
            Mode.HYBRID, f"{base}/unified", f"{base} is tmpfs and {base}/unified is cgroup2"
        )
    named = _visible(mounts, f"{base}/systemd")
    if named is not None and named.fstype == "cgroup" and "name=systemd" in named.super_options:
        return Detection(
            Mode.LEGACY,
            f"{base}/systemd",
            f"{base} is tmpfs with the name=systemd hierarchy at {base}/systemd",
        )
    return Detection(Mode.NONE, "", f"{base} is tmpfs without unified/ or systemd/ hierarchies")


def pid1_shift(proc_1_cgroup: str, mode: Mode) -> str:
    """The cgroup path that PID 1 marks as the top, with /init.scope (or /system.slice,
    /system) stripped, as systemd's cg_get_root_path() does; "" means the hierarchy root."""
    wanted = None
    for line in proc_1_cgroup.splitlines():
        hier, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        unified_line = hier == "0" and controllers == ""
        named_line = "name=systemd" in controllers.split(",")
        if named_line if mode is Mode.LEGACY else unified_line:
            wanted = path
    if not wanted or wanted == "/":
        return ""
    for suffix in ("/init.scope", "/system.slice", "/system"):
        if wanted.endswith(suffix):
            wanted = wanted[: -len(suffix)]
            break
    return wanted.rstrip("/")


def detect(proc: str = "/proc") -> tuple[Detection, str]:
    """This machine's hierarchy and the directory where the daemon's cgroup tree starts."""
    mounts = parse_mountinfo(Path(proc, "self/mountinfo").read_text())
    found = classify(mounts)
    if found.mode is Mode.NONE:
        return found, ""
    try:
        shift = pid1_shift(Path(proc, "1/cgroup").read_text(), found.mode)
    except OSError:
        shift = ""
    return found, found.tracking + shift
