"""Inside the sandbox: the cgroup1 backend on the real kernel. Legacy tracking in a FRESH named
v1 hierarchy (argv[1], "scopeshim-test-..."; a new name is a new hierarchy that holds nobody
else's processes), first through the backend, then through scopeshim on the bus; and hybrid
tracking in the sandbox's cgroup2 tree. The kernel creates v1 hierarchies only from the initial
cgroup namespace, so test_cgroup1.py creates it outside and this mounts it by name. Every
sub-cgroup is removed before the unmount (a v1 hierarchy with children lingers in the kernel).
Exit 77 (skip) when the kernel refuses the mount."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dbus_fast import Variant

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from backends.base import BackendError
from backends.cgroup1 import Cgroup1Backend, discover_controllers
from tests.e2e.inside import call, connect, report, stop, subscribe, wait_name

NAME = sys.argv[1]
MOUNT = Path("/run/scopeshim-cgroup1")
RUN = Path(os.environ.get("SCOPESHIM_E2E_RUN", "/tmp"))


def v1_cgroup(pid: int) -> str | None:
    """PID's cgroup in the named hierarchy, from /proc/PID/cgroup (cgroups(7))."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _hier, names, path = line.split(":", 2)
        if names == f"name={NAME}":
            return path
    return None


class Calls:
    """Empty-callback recorder."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, float]] = []

    def __call__(self, path: str) -> None:
        self.seen.append((path, time.monotonic()))

    async def wait(self, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while not self.seen and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        return self.seen[0][1] if self.seen else None


async def until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def pidfd_exit(pid: int) -> float:
    """When PID exits (pidfd_open(2) becomes readable)."""
    loop = asyncio.get_running_loop()
    fd = os.pidfd_open(pid)
    done = loop.create_future()
    loop.add_reader(fd, lambda: done.done() or done.set_result(time.monotonic()))
    try:
        return float(await asyncio.wait_for(done, 10))
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def ignoring_term() -> subprocess.Popen[bytes]:
    """A shell that ignores SIGTERM, returned once its trap is set (it says so); it prints a
    line for each SIGCONT."""
    p = subprocess.Popen(
        ["sh", "-c", "trap '' TERM; trap 'echo cont' CONT; echo ready; "
         "while :; do sleep 1; done"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert p.stdout is not None and p.stdout.readline() == b"ready\n"
    return p


async def sigcont_seen(p: subprocess.Popen[bytes]) -> bool:
    assert p.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(p.stdout.readline), 10)
    return line == b"cont\n"


async def legacy_backend(root: Path) -> None:
    b = Cgroup1Backend(root, {}, poll_interval=30)
    report(
        step="legacy-backend",
        legacy=b.legacy,
        capabilities=sorted(b.capabilities),
        controllers=discover_controllers(root),
    )
    # attach, pids, cgroup_of
    a = "/test.slice/a.scope"
    b.create(a)
    sleeper = subprocess.Popen(["sleep", "600"])
    b.attach(a, [sleeper.pid])
    report(
        step="attach",
        pids_ok=b.pids("/test.slice") == [sleeper.pid],
        non_recursive=b.pids("/test.slice", recursive=False),
        cgroup_of=b.cgroup_of(sleeper.pid),
        proc_line=v1_cgroup(sleeper.pid),
        outside=b.cgroup_of(os.getpid()),  # at the hierarchy root, above our tree
    )
    # SIGTERM, and the pidfd noticing the exit
    calls = Calls()
    b.watch_empty(a, calls)
    count = b.kill(a, signal.SIGTERM)
    rc = sleeper.wait(5)
    fired = await calls.wait(5)
    # seen at all: through the pidfd (the poll comes every 30 s, the wait ends after 5)
    report(step="sigterm", count=count, exit=rc, seen=fired is not None)
    # a forked child outlives the attached parent: adopted when the parent exits
    f = "/test.slice/fork.scope"
    b.create(f)
    parent = subprocess.Popen(["sh", "-c", "read x; sleep 1 & exit 0"], stdin=subprocess.PIPE)
    b.attach(f, [parent.pid])
    calls = Calls()
    b.watch_empty(f, calls)
    assert parent.stdin is not None
    parent.stdin.write(b"go\n")
    parent.stdin.close()
    parent.wait(5)
    await until(lambda: bool(b.pids(f)) and parent.pid not in b.pids(f), 5)
    child = b.pids(f)
    adopted = bool(child) and await until(lambda: child[0] in b._pidfds, 2)
    child_exit = await pidfd_exit(child[0]) if child else None
    fired = await calls.wait(5)
    report(
        step="fork-empty",
        children=len(child),
        adopted=adopted,
        # seen once the child exited, not when its parent did
        seen_after_child=fired is not None and child_exit is not None and fired >= child_exit,
    )
    # SIGKILL: a loop forking children, repeated passes catch them
    k = "/test.slice/kill.scope"
    b.create(k)
    forker = subprocess.Popen(["sh", "-c", "while :; do sleep 30 & sleep 0.01; done"])
    b.attach(k, [forker.pid])
    await until(lambda: len(b.pids(k)) >= 10, 30)  # its children arrive
    before = len(b.pids(k))
    calls = Calls()
    b.watch_empty(k, calls)
    count = b.kill(k, signal.SIGKILL)
    rc = forker.wait(5)
    fired = await calls.wait(5)
    report(
        step="sigkill",
        before=before,
        count=count,
        exit=rc,
        empty=b.pids(k) == [],
        seen=fired is not None,
    )
    # SIGTERM ignored, then SIGKILL
    s = "/test.slice/stubborn.scope"
    b.create(s)
    stubborn = ignoring_term()
    b.attach(s, [stubborn.pid])
    b.kill(s, signal.SIGTERM)
    b.kill(s, signal.SIGCONT)  # delivered after SIGTERM: once it is handled, so was SIGTERM
    alive = await sigcont_seen(stubborn) and stubborn.poll() is None
    b.kill(s, signal.SIGKILL)
    report(step="stubborn", alive_after_term=alive, exit=stubborn.wait(5))
    await until(lambda: not b.pids(s), 5)
    # the poll: a process moved away by someone else, without exiting
    poller = Cgroup1Backend(root, {}, poll_interval=0.5)
    p = "/test.slice/poll.scope"
    poller.create(p)
    mover = subprocess.Popen(["sleep", "600"])
    poller.attach(p, [mover.pid])
    calls = Calls()
    poller.watch_empty(p, calls)
    (MOUNT / "cgroup.procs").write_text(f"{mover.pid}\n")  # the hierarchy root: not ours
    fired = await calls.wait(5)
    # it did not exit, so no pidfd told: a poll (every 0.5 s) saw the cgroup empty
    report(step="poll", seen=fired is not None, still_alive=mover.poll() is None)
    mover.kill()
    mover.wait()
    poller.close()
    # no freezer in a named hierarchy; delegation; removal
    try:
        b.freeze(a)
        frozen: Any = "no error"
    except BackendError as e:
        frozen = e.errno == errno.EOPNOTSUPP
    d = "/test.slice/d.scope"
    b.create(d)
    b.delegate(d, 65534, 65534)
    owners = {n: (root / d.lstrip("/") / n).stat().st_uid for n in ("", "cgroup.procs", "tasks")}
    busy = subprocess.Popen(["sleep", "600"])
    b.attach(d, [busy.pid])
    try:
        b.remove("/test.slice")
        refused: Any = "removed"
    except BackendError as e:
        refused = e.errno == errno.EBUSY
    b.kill(d, signal.SIGKILL)
    busy.wait(5)
    await until(lambda: not b.pids("/test.slice"), 5)
    try:
        b.remove("/")
        root_refused: Any = "removed"
    except BackendError as e:
        root_refused = e.errno == errno.EBUSY
    b.remove("/test.slice")
    report(
        step="remove",
        freeze_refused=frozen,
        delegated=owners,
        populated_refused=refused,
        root_refused=root_refused,
        left=sorted(str(x.relative_to(root)) for x in root.rglob("*") if x.is_dir()),
    )
    b.close()


async def legacy_daemon(root: Path) -> None:
    """scopeshim itself with --backend cgroup1 over the named hierarchy."""
    controllers = discover_controllers(root)
    if controllers:  # the host's v1 hierarchies must stay hidden: never run the daemon on them
        report(step="daemon", refused=f"controllers visible: {controllers}")
        return
    log = open(RUN / "scopeshim-cgroup1.log", "wb")  # noqa: SIM115
    daemon = subprocess.Popen(
        [sys.executable, "-m", "shim", "serve", "--system", "--backend", "cgroup1",
         "--cgroup-root", str(root), "--state-dir", "/run/scopeshim-c1", "--log-level", "debug"],
        cwd=Path(__file__).resolve().parents[2], stdout=log, stderr=log,
    )  # fmt: skip
    bus = await connect()
    try:
        await wait_name(bus, "org.freedesktop.systemd1")
        signals = await subscribe(bus, ("JobRemoved", "UnitRemoved"))

        async def job_result(reply: Any) -> str:
            while (m := await asyncio.wait_for(signals.get(), 10)).body[1:2] != [reply.body[0]]:
                pass
            return str(m.body[3])

        async def removed(unit: str) -> float:
            while (m := await asyncio.wait_for(signals.get(), 10)).member != "UnitRemoved" or (
                m.body[0] != unit
            ):
                pass
            return time.monotonic()

        sleeper = subprocess.Popen(["sleep", "600"])
        reply = await call(
            bus,
            "StartTransientUnit",
            "ssa(sv)a(sa(sv))",
            [
                "c1.scope",
                "fail",
                [
                    ["PIDs", Variant("au", [sleeper.pid])],
                    ["Slice", Variant("s", "user-1000.slice")],
                ],
                [],
            ],
        )
        result = await job_result(reply)
        path = "user.slice/user-1000.slice/c1.scope"
        started = {"result": result, "cgroup": v1_cgroup(sleeper.pid)}
        started["dir"] = (root / path).is_dir()
        sleeper.kill()
        sleeper.wait()
        await removed("c1.scope")  # within its 10 s wait: the daemon's poll is every 30 s
        report(step="daemon-scope", **started, dir_after=(root / path).is_dir())
        stubborn = ignoring_term()
        reply = await call(
            bus,
            "StartTransientUnit",
            "ssa(sv)a(sa(sv))",
            [
                "c1-stop.scope",
                "fail",
                [
                    ["PIDs", Variant("au", [stubborn.pid])],
                    ["TimeoutStopUSec", Variant("t", 500_000)],
                ],
                [],
            ],
        )
        await job_result(reply)
        try:
            await call(bus, "FreezeUnit", "s", ["c1-stop.scope"])
            freeze = "frozen"
        except RuntimeError as e:
            freeze = str(e).split(":")[1].strip()
        reply = await call(bus, "StopUnit", "ss", ["c1-stop.scope", "replace"])
        job = await job_result(reply)
        rc = stubborn.wait(5)
        got = await call(
            bus,
            "Get",
            "ss",
            ["org.freedesktop.systemd1.Scope", "Result"],
            path="/org/freedesktop/systemd1/unit/c1_2dstop_2escope",
            interface="org.freedesktop.DBus.Properties",
        )
        report(
            step="daemon-stop",
            freeze=freeze,
            job=job,
            exit=rc,
            result=got.body[0].value,
            dir_after=(root / "system.slice/c1-stop.scope").is_dir(),
        )
    finally:
        bus.disconnect()
        rc = stop(daemon)
        log.close()
        if rc != 0:
            sys.stderr.write((RUN / "scopeshim-cgroup1.log").read_text()[-4000:])
        report(step="daemon-exit", exit=rc)


async def hybrid_backend() -> None:
    """The same backend with cgroup2 tracking (the sandbox's tree) and no v1 controllers."""
    top = Path("/sys/fs/cgroup/unified")
    b = Cgroup1Backend(top, {})
    h = "/hybrid.slice/h.scope"
    b.create(h)
    sleeper = subprocess.Popen(["sleep", "600"])
    b.attach(h, [sleeper.pid])
    cgroup = b.cgroup_of(sleeper.pid)
    calls = Calls()
    b.watch_empty(h, calls)
    events = top / h.lstrip("/") / "cgroup.events"
    b.freeze(h)
    frozen = await until(lambda: "frozen 1" in events.read_text(), 3)
    b.thaw(h)
    thawed = await until(lambda: "frozen 0" in events.read_text(), 3)
    count = b.kill(h, signal.SIGKILL)
    rc = sleeper.wait(5)
    fired = await calls.wait(5)
    usage = b.usage(h)
    report(
        step="hybrid",
        legacy=b.legacy,
        cgroup_of=cgroup,
        inotify=b._pidfds == {} and b._timer is None,
        frozen=frozen,
        thawed=thawed,
        count=count,
        exit=rc,
        seen=fired is not None,
        cgroup_id=usage.cgroup_id == (top / h.lstrip("/")).stat().st_ino,
    )
    b.remove("/hybrid.slice")
    report(step="hybrid-removed", exists=b.exists("/hybrid.slice"))
    b.close()


def cleanup() -> list[str]:
    """End whatever is left in our sub-cgroups of the named hierarchy, then rmdir them."""
    subdirs = sorted((p for p in MOUNT.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
    for _ in range(50):
        pids = []
        for d in subdirs:
            try:
                pids += [int(x) for x in (d / "cgroup.procs").read_text().split()]
            except OSError:
                continue
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for d in subdirs:
            with contextlib.suppress(OSError):
                d.rmdir()
        if not any(d.is_dir() for d in subdirs):
            break
        time.sleep(0.1)
    return [str(d) for d in subdirs if d.is_dir()]


async def main() -> None:
    MOUNT.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "cgroup", "-o", f"none,name={NAME}", "cgroup", str(MOUNT)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        sys.stderr.write(f"cannot mount the named v1 hierarchy {NAME}: {mounted.stderr.strip()}\n")
        sys.exit(77)
    try:
        backend_root = MOUNT / "scopeshim"
        backend_root.mkdir()
        await legacy_backend(backend_root)
        daemon_root = MOUNT / "scopeshim-daemon"
        daemon_root.mkdir()
        await legacy_daemon(daemon_root)
        await hybrid_backend()
    finally:
        left = cleanup()
        umount = subprocess.run(["umount", str(MOUNT)], capture_output=True, text=True)
        report(step="cleanup", left=left, umount=umount.returncode, error=umount.stderr.strip())


asyncio.run(main())
