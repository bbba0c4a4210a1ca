"""Hierarchy detection and the PID 1 root shift, on mountinfo samples and on this machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.detect import Mode, classify, detect, parse_mountinfo, pid1_shift

HYBRID_HOST = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
UNIFIED = "30 23 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
LEGACY = """\
31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
"""
# the lab sandbox's hybrid view: a private tmpfs holding only unified/, mounted over the host's
SANDBOX = (
    HYBRID_HOST
    + """\
90 23 0:50 / /sys/fs/cgroup rw - tmpfs tmpfs rw
91 90 0:38 /scopeshim-lab-1 /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
"""
)


@pytest.mark.parametrize(
    ("text", "mode", "tracking"),
    [
        (HYBRID_HOST, Mode.HYBRID, "/sys/fs/cgroup/unified"),
        (UNIFIED, Mode.UNIFIED, "/sys/fs/cgroup"),
        (LEGACY, Mode.LEGACY, "/sys/fs/cgroup/systemd"),
        (SANDBOX, Mode.HYBRID, "/sys/fs/cgroup/unified"),
        ("", Mode.NONE, ""),
        ("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n", Mode.NONE, ""),
    ],
)
def test_classify(text, mode, tracking):
    found = classify(parse_mountinfo(text))
    assert (found.mode, found.tracking) == (mode, tracking)
    assert found.reason


def test_mountinfo_escapes():
    (m,) = parse_mountinfo(r"31 23 0:28 / /mnt/with\040space rw - tmpfs tmpfs rw" + "\n")
    assert m.mount_point == "/mnt/with space"


@pytest.mark.parametrize(
    ("cgroup", "mode", "shift"),
    [
        ("0::/init.scope\n", Mode.UNIFIED, ""),
        ("0::/\n", Mode.HYBRID, ""),
        ("0::/docker/abc/init.scope\n", Mode.UNIFIED, "/docker/abc"),
        ("0::/lxc/c1\n", Mode.UNIFIED, "/lxc/c1"),
        ("9:name=systemd:/machine/system.slice\n0::/\n", Mode.LEGACY, "/machine"),
        ("9:name=systemd:/\n8:pids:/x\n0::/y/init.scope\n", Mode.HYBRID, "/y"),
    ],
)
def test_pid1_shift(cgroup, mode, shift):
    assert pid1_shift(cgroup, mode) == shift


def test_this_machine():
    if not Path("/proc/self/mountinfo").exists():
        pytest.skip("no /proc/self/mountinfo")
    found, root = detect()
    print(f"this machine: {found.mode} ({found.reason}), daemon root {root!r}")
    assert found.mode in Mode
    if found.mode is not Mode.NONE:
        assert root.startswith(found.tracking)
