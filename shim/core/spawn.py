"""Starting a handled unit's command inside the unit's cgroup, as its user, without blocking.

The child waits on a pipe until the daemon has moved it into the cgroup, so neither it nor
anything it forks ever runs outside (systemd forks into the cgroup the same way).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
from collections.abc import Sequence

from backends.base import BackendError, CgroupBackend

# sh waits for one line on stdin (the go-ahead), then becomes the command
_GATE = 'read -r _ || exit 1; exec "$@" </dev/null'


class SpawnError(Exception):
    """The command could not be started (missing program, unknown user, cgroup refused)."""


def _credentials(user: str | None) -> dict[str, object]:
    if user is None or user in ("root", "0"):
        return {}
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, ValueError):
        raise SpawnError(f"user {user} does not exist") from None
    return {
        "user": entry.pw_uid,
        "group": entry.pw_gid,
        "extra_groups": os.getgrouplist(entry.pw_name, entry.pw_gid),
    }


def ids_of(user: str) -> tuple[int, int]:
    """(uid, primary gid) of a user name or number."""
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, ValueError):
        raise SpawnError(f"user {user} does not exist") from None
    return entry.pw_uid, entry.pw_gid


def _environment(user: str | None) -> dict[str, str]:
    """A clean environment: PATH and LANG, the system bus if it is not the default, and for a
    user what systemd.exec(5) User= sets (HOME, USER, LOGNAME, SHELL) and XDG_RUNTIME_DIR."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
    for name in ("DBUS_SYSTEM_BUS_ADDRESS",):
        if name in os.environ:
            env[name] = os.environ[name]
    if user is not None and user not in ("root", "0"):
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        env.update(
            HOME=entry.pw_dir,
            USER=entry.pw_name,
            LOGNAME=entry.pw_name,
            SHELL=entry.pw_shell or "/bin/sh",
            XDG_RUNTIME_DIR=f"/run/user/{entry.pw_uid}",
        )
    return env


def fork_request(argv: Sequence[str], user: str) -> dict[str, object]:
    """What the zygote needs to become USER and run `scopeshim ARGV` (shim/zygote.py): the
    same credentials and clean environment as start() gives a command."""
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, ValueError):
        raise SpawnError(f"user {user} does not exist") from None
    return {
        "argv": list(argv),
        "env": _environment(user),
        "uid": entry.pw_uid,
        "gid": entry.pw_gid,
        "groups": os.getgrouplist(entry.pw_name, entry.pw_gid) if entry.pw_uid else [],
        "cwd": "/",
    }


async def start(
    argv: Sequence[str],
    backend: CgroupBackend,
    cgroup: str,
    *,
    user: str | None = None,
    capture: bool = True,
    env: dict[str, str] | None = None,
) -> asyncio.subprocess.Process:
    """Start ARGV in CGROUP; with capture, stdout and stderr come back through a pipe. ENV
    replaces the clean environment made for USER."""
    if not argv:
        raise SpawnError("no command configured")
    if shutil.which(argv[0]) is None:
        raise SpawnError(f"cannot run {argv[0]}: not an executable file")
    credentials = _credentials(user)
    output = asyncio.subprocess.PIPE if capture else asyncio.subprocess.DEVNULL
    try:
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", _GATE, "scopeshim-exec", *argv,
            stdin=asyncio.subprocess.PIPE, stdout=output, stderr=asyncio.subprocess.STDOUT,
            env=_environment(user) if env is None else env, start_new_session=True, **credentials,  # type: ignore[arg-type]
        )  # fmt: skip
    except OSError as e:
        raise SpawnError(f"cannot run {argv[0]}: {e.strerror}") from None
    assert proc.stdin is not None
    try:
        backend.attach(cgroup, [proc.pid])
    except BackendError as e:
        proc.kill()
        await proc.wait()
        raise SpawnError(f"cannot move {argv[0]} into {cgroup}: {e}") from None
    proc.stdin.write(b"go\n")
    await proc.stdin.drain()
    proc.stdin.close()
    return proc


async def run(
    argv: Sequence[str],
    backend: CgroupBackend,
    cgroup: str,
    *,
    user: str | None = None,
    timeout: float = 90.0,
) -> tuple[int, str]:
    """Run ARGV to completion in CGROUP: (exit status, its output). A command that outlives
    TIMEOUT is killed and reported as status -9, as TimeoutStartSec= would end it."""
    proc = await start(argv, backend, cgroup, user=user)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        return -9, out.decode(errors="replace")
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")
