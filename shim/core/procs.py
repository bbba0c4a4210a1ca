"""Facts about processes from /proc (proc(5)): existence, owner, command line, kernel threads."""

from __future__ import annotations

import os

PF_KTHREAD = 0x00200000  # include/linux/sched.h: the flag of kernel threads


def is_kernel_thread(pid: int) -> bool:
    """proc(5) /proc/PID/stat field 9 (flags) has PF_KTHREAD for kernel threads."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) "
    return len(fields) > 6 and bool(int(fields[6]) & PF_KTHREAD)


def owner(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return ""
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
