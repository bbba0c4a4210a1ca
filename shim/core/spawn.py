"""Starting a handled unit's command inside the unit's cgroup, as its user, without blocking.

The child waits on a pipe until the daemon has moved it into the cgroup, so neither it nor
anything it forks ever runs outside (systemd forks into the cgroup the same way).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import shlex
import shutil
from collections.abc import Callable, Sequence

from backends.base import BackendError, CgroupBackend
from compat import execline
from shim.core.policy import ExecContext

# sh waits for one line on stdin (the go-ahead), then becomes the command
_GATE = 'read -r _ || exit 1; exec "$@" </dev/null'


class SpawnError(Exception):
    """The command could not be started (missing program, unknown user, cgroup refused)."""

    # systemd.exec(5) "Process exit codes": 203 EXIT_EXEC unless a stream failed
    status = 203


class OutputError(SpawnError):
    """StandardOutput=/StandardError= could not be opened."""

    status = 209  # systemd.exec(5): 209 EXIT_STDOUT, failed to set up standard output


# systemd.exec(5): 208 EXIT_STDIN, failed to set up standard input
EXIT_STDIN = 208


def _credentials(user: str | None, group: str | None = None) -> dict[str, object]:
    out: dict[str, object] = {}
    if group is not None:
        # systemd.exec(5) Group=: a name or a GID
        try:
            out["group"] = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise SpawnError(f"group {group} does not exist") from None
    if user is None or user in ("root", "0"):
        return out
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, ValueError):
        raise SpawnError(f"user {user} does not exist") from None
    gid = int(str(out.get("group", entry.pw_gid)))
    return {"user": entry.pw_uid, "group": gid,
            "extra_groups": os.getgrouplist(entry.pw_name, gid)}  # fmt: skip


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


def _directory(context: ExecContext | None, env: dict[str, str]) -> str | None:
    """systemd.exec(5) WorkingDirectory=: "~" is the user's home; "-": may be missing."""
    if context is None or context.working_directory is None:
        return None
    wanted = context.working_directory
    optional = wanted.startswith("-")
    path = env.get("HOME", "/root") if wanted.lstrip("-") == "~" else wanted.lstrip("-")
    if not os.path.isdir(path):
        if optional:
            return None
        raise SpawnError(f"changing to the requested working directory failed: {path}")
    return path


def _shell(context: ExecContext | None) -> str:
    """The gate's shell: sh, or bash (Essential in Debian) to redirect a passed descriptor."""
    return "/bin/bash" if context is not None and context.input_fd is not None else "/bin/sh"


def _gate(context: ExecContext | None) -> str:
    """The gate, with systemd.exec(5) UMask=, Nice= and StandardInput= applied before the
    command (Nice= is the absolute niceness; nice(1) adds to the daemon's own, not always 0)."""
    if context is None:
        return _GATE
    nice = ""
    if context.nice is not None:
        nice = f"nice -n {context.nice - os.getpriority(os.PRIO_PROCESS, 0)} "
    # StandardInput=file:PATH (opened by the command's user here; systemd opens it as root);
    # StandardInput=fd: the passed descriptor itself, made standard input once the gate has
    # read its go (bash runs that gate: dash redirects no descriptor above 9)
    if context.input_fd is not None:
        source = f"&{context.input_fd}"
    else:
        source = shlex.quote(context.input_file) if context.input_file else "/dev/null"
    check = f"true <{source} 2>/dev/null || exit {EXIT_STDIN}; " if context.input_file else ""
    return f'read -r _ || exit 1; umask {context.umask:04o}; {check}exec {nice}"$@" <{source}'


# systemd.exec(5) StandardOutput=file: writes from the start without truncating; append:
# appends; truncate: truncates
_FILE_FLAGS = {
    "file": os.O_WRONLY | os.O_CREAT,
    "append": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    "truncate": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
}


def _open_output(target: tuple[str, str], umask: int) -> int:
    mode, path = target
    try:
        return os.open(path, _FILE_FLAGS[mode] | os.O_CLOEXEC | os.O_NOCTTY, 0o666 & ~umask)
    except OSError as e:
        raise OutputError(f"cannot open {path} for output: {e.strerror}") from None


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
    context: ExecContext | None = None,
    env: dict[str, str] | None = None,
) -> asyncio.subprocess.Process:
    """Start ARGV in CGROUP; with capture, stdout and stderr come back through a pipe. ENV
    replaces the clean environment made for USER."""
    if not argv:
        raise SpawnError("no command configured")
    if shutil.which(argv[0]) is None:
        raise SpawnError(f"cannot run {argv[0]}: not an executable file")
    credentials = _credentials(user, context.group if context else None)
    output = asyncio.subprocess.PIPE if capture else asyncio.subprocess.DEVNULL
    env = _environment(user) if env is None else env
    extra: dict[str, object] = {}
    errors: int = asyncio.subprocess.STDOUT
    opened: list[int] = []
    if context is not None:
        env.update(e.split("=", 1) for e in context.environment)  # type: ignore[misc]
        # systemd.service(5) "Command lines": $FOO, ${FOO} and $$ in the arguments
        argv = (argv[0], *execline.expand(argv[1:], env))
        extra["cwd"] = _directory(context, env)
        if context.output == "inherit":
            output = None  # type: ignore[assignment]
        if context.output_file is not None:
            output = _open_output(context.output_file, context.umask)
            opened.append(output)
        if context.error_file is not None:
            try:
                errors = _open_output(context.error_file, context.umask)
            except SpawnError:
                for fd in opened:
                    os.close(fd)
                raise
            opened.append(errors)
        # systemd.exec(5) StandardOutput=/StandardError=fd: the passed descriptors (kept by
        # the unit until it is done: a restart gets them again); stderr follows stdout
        if context.output_fd is not None:
            output = context.output_fd
        if context.error_fd is not None:
            errors = context.error_fd
        if context.input_fd is not None:
            extra["pass_fds"] = (context.input_fd,)
    try:
        proc = await asyncio.create_subprocess_exec(
            _shell(context), "-c", _gate(context), "scopeshim-exec", *argv,
            stdin=asyncio.subprocess.PIPE, stdout=output, stderr=errors,
            env=env, start_new_session=True, **credentials, **extra,  # type: ignore[arg-type]
        )  # fmt: skip
    except OSError as e:
        raise SpawnError(f"cannot run {argv[0]}: {e.strerror}") from None
    finally:
        for fd in opened:  # the child has its copies
            os.close(fd)
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
    context: ExecContext | None = None,
    started: Callable[[int], None] | None = None,
) -> tuple[int, str]:
    """Run ARGV to completion in CGROUP: (exit status, its output). A command that outlives
    TIMEOUT is killed and reported as status -9, as TimeoutStartSec= would end it. STARTED
    hears the PID once the command runs."""
    proc = await start(argv, backend, cgroup, user=user, context=context)
    if started is not None:
        started(proc.pid)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        return -9, (out or b"").decode(errors="replace")
    assert proc.returncode is not None
    return proc.returncode, (out or b"").decode(errors="replace")


async def wait(proc: asyncio.subprocess.Process) -> int:
    """The exit status as soon as the process ends. asyncio's Process.wait() also waits until
    every pipe is closed, which a child left behind (`sleep 300 &`) keeps open: here the
    process's pidfd says when it ended, then asyncio's child watcher reaps it."""
    if proc.returncode is not None:
        return proc.returncode
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(proc.pid)
    except OSError:
        fd = -1  # reaped already: the watcher is about to report it
    if fd >= 0:
        ended: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not ended.done():
                ended.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await ended
            # waitid(2) with WNOWAIT: the status from the kernel, the child left for asyncio's
            # watcher to reap (whose report may come late, or as 255 if it lost the child)
            with contextlib.suppress(OSError):
                found = os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOWAIT)
                if found is not None:
                    if found.si_code == os.CLD_EXITED:
                        return int(found.si_status)
                    return -int(found.si_status)  # killed: minus the signal, as asyncio says
        finally:
            loop.remove_reader(fd)
            os.close(fd)
    while proc.returncode is None:
        await asyncio.sleep(0.001)  # the child watcher's report is one loop turn away
    return proc.returncode
