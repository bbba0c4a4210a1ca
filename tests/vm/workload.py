"""Inside the VM: a process that waits to be put in a scope, then does one thing the kernel limits.

Usage: workload.py ACTION [ARGS...]. It prints "ready" once started, reads a line on stdin
before acting (so that it is in its cgroup by then and its own start-up is not what the limits
hold), prints one JSON line with what happened, then waits for stdin to close.
Standard library only: it runs as uid 65534 under the host's /usr/bin/python3 -S.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import sys
import time

MIB = 1 << 20


def alloc(mib: str) -> dict[str, object]:
    data = b"x" * (int(mib) * MIB)  # bytes filled in: every page is touched
    return {"allocated_mib": len(data) // MIB}


HELD: list[bytes] = []


def hold(mib: str) -> dict[str, object]:
    """Allocate and keep it until stdin closes (a limit lowered under it must act)."""
    HELD.append(b"x" * (int(mib) * MIB))
    return {"holding_mib": len(HELD[0]) // MIB}


def forks(count: str) -> dict[str, object]:
    made, error = 0, None
    for _ in range(int(count)):
        try:
            pid = os.fork()
        except OSError as e:
            error = errno.errorcode[e.errno]
            break
        if pid == 0:  # the child waits for the scope to be stopped
            time.sleep(3600)
            os._exit(0)
        made += 1
    return {"forked": made, "error": error}


def burn(seconds: str) -> dict[str, object]:
    cpu, started = time.process_time(), time.monotonic()
    end = started + float(seconds)
    n = 0
    while time.monotonic() < end:
        n += 1
    return {"cpu_seconds": time.process_time() - cpu, "started": started, "ended": end}


def affinity() -> dict[str, object]:
    return {"cpus": sorted(os.sched_getaffinity(0))}


def cached_read(device: str, mib: str) -> dict[str, object]:
    """Buffered reads: page cache charged to the cgroup (cgroup-v2.rst "Memory Ownership")."""
    fd = os.open(device, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    total = 0
    while total < int(mib) * MIB and (chunk := os.read(fd, MIB)):
        total += len(chunk)
    os.close(fd)
    return {"read_mib": total // MIB}


def direct(op: str, device: str, count: str, kib: str = "1024") -> dict[str, object]:
    """COUNT O_DIRECT reads or writes of KIB KiB each (bypassing the page cache, so io.max
    applies)."""
    size = int(kib) * 1024
    buf = mmap.mmap(-1, size)  # page aligned, as O_DIRECT wants
    fd = os.open(device, (os.O_RDONLY if op == "read" else os.O_WRONLY) | os.O_DIRECT)
    started = time.monotonic()
    done = 0
    for i in range(int(count)):
        n = os.preadv(fd, [buf], i * size) if op == "read" else os.pwritev(fd, [buf], i * size)
        done += n
    seconds = time.monotonic() - started
    os.close(fd)
    return {"bytes": done, "seconds": seconds}


def opens(*probes: str) -> dict[str, object]:
    """Each probe "r PATH" or "w PATH": opened, or the errno's name (EPERM: the device
    filter refused it)."""
    out: dict[str, object] = {}
    for probe in probes:
        mode, path = probe.split(" ", 1)
        try:
            os.close(os.open(path, os.O_RDONLY if mode == "r" else os.O_WRONLY))
            out[probe] = "ok"
        except OSError as e:
            out[probe] = errno.errorcode[e.errno]
    return out


ACTIONS = {
    "open": opens,
    "alloc": alloc,
    "hold": hold,
    "fork": forks,
    "burn": burn,
    "affinity": affinity,
    "cached_read": cached_read,
    "direct": direct,
}


def main() -> None:
    action, *args = sys.argv[1:]
    print("ready", flush=True)
    sys.stdin.readline()
    out = ACTIONS[action](*args)
    print(json.dumps(out), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
