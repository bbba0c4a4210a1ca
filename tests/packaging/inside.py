"""Helpers for the packaging scenarios that run as root inside tests/e2e/sandbox.sh: the
staged `make install` tree mounted at its real paths in the sandbox's private mount
namespace (the host's /etc and /usr/local are never written), and small D-Bus probes."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

SYSTEMD1 = "org.freedesktop.systemd1"
WORK = Path("/run/scopeshim-pkg")  # on the sandbox's private /run
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def report(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def run(*argv: str, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


def result(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    return {"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def stage(destdir: Path) -> None:
    """DESTDIR/usr/local over /usr/local; an overlay of DESTDIR/etc over /etc with a writable
    upper layer on the private /run (scenarios may change files under /etc; the staged tree
    and the host's /etc stay as they are)."""
    # only ever inside the sandbox: PID 1 is its init, the mount namespace is private
    if "sandbox-init.sh" not in Path("/proc/1/cmdline").read_text() or not os.environ.get(
        "SCOPESHIM_E2E_RUN"
    ):
        raise SystemExit("stage(): not inside tests/e2e/sandbox.sh; refusing to mount")
    for d in ("etc-upper", "etc-work"):
        (WORK / d).mkdir(parents=True)
    mount("--bind", str(destdir / "usr" / "local"), "/usr/local")
    mount(
        "-t", "overlay", "scopeshim-etc", "-o",
        f"lowerdir={destdir}/etc:/etc,upperdir={WORK}/etc-upper,workdir={WORK}/etc-work", "/etc",
    )  # fmt: skip


def name_owner_pid() -> int | None:
    """The PID owning org.freedesktop.systemd1 (asking the bus driver: no activation)."""
    r = run(
        "busctl", "--system", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
        "org.freedesktop.DBus", "GetConnectionUnixProcessID", "s", SYSTEMD1,
    )  # fmt: skip
    return int(r.stdout.split()[1]) if r.returncode == 0 else None


def wait_for(predicate: Any, timeout: float = 20, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    except FileNotFoundError:
        return []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in status_state(pid)


def status_state(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line.split()[1]
    except FileNotFoundError:
        return "gone"
    return ""


def gdbus(*call: str, as_nobody: bool = False) -> subprocess.CompletedProcess[str]:
    """`gdbus call --system --dest org.freedesktop.systemd1 ...` as root or as nobody (it
    prints the error's name and message)."""
    return run(*(NOBODY if as_nobody else []), "gdbus", "call", "--system", "--dest", SYSTEMD1,
               *call)  # fmt: skip
