"""The one client driver of `make bench`: the same calls, in the same order, for every peer.

It talks to whatever owns org.freedesktop.systemd1 on the bus at ADDRESS (one private bus per
peer; never the host's), with dbus-fast, as one connection, and writes every figure as JSON.

  driver.py --address ADDR|env --kind KIND [--spawn CMD] [--mode systemd1|logind]
            [--levels 100,1000,10000] [--quick] --out FILE

--spawn CMD: the driver starts the peer itself (CMD is one shell-split string; "{run}" is
replaced by a fresh directory per start), timing start -> NameOwnerChanged; the last start
serves the measurements. Without it the peer is already there (the real systemd as PID 1).
--kind dbusmock: units are made with the template's AddMockUnit (its StartTransientUnit
creates none), untimed, before StopUnit/GetUnit need them.
--start-logind: once the peer is up, start the installed systemd-logind (debug log, as the
lab runs the packaged unit) on the same bus; --mode logind times CreateSession round trips.

Timing: time.perf_counter() before the call is sent and when the reply or the awaited
signal is handed to the connection's message handler. Signals are matched by unit name
(JobRemoved's third argument, UnitRemoved's first), so a reply that arrives after its
JobRemoved is still paired correctly. Children to put into scopes are forked beforehand
by bench/spawner.py (outside every timed section).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

import extras  # bench/ is on sys.path: this script's directory
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

HERE = Path(__file__).resolve().parent
SYSTEMD1 = "org.freedesktop.systemd1"
LOGIN1 = "org.freedesktop.login1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
DBUS = ("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus")
WAIT = 60.0  # bound of every single wait (s)
INFLIGHT = 64
RETRIES = 2  # a phase in which the peer died is tried again after a restart, this often
LOGIND_CONF = """[Login]
NAutoVTs=0
ReserveVT=0
KillUserProcesses=no
HandlePowerKey=ignore
HandleSuspendKey=ignore
HandleHibernateKey=ignore
HandleLidSwitch=ignore
IdleAction=ignore
UserStopDelaySec=0
"""


class OpError(Exception):
    """A call answered with an error, or a job that did not end "done"."""


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))
    return s[k]


def summary(seconds: list[float]) -> dict[str, Any]:
    if not seconds:
        return {"n": 0}
    ms = [v * 1e3 for v in seconds]
    return {
        "n": len(ms),
        "p50_ms": pct(ms, 50),
        "p90_ms": pct(ms, 90),
        "p99_ms": pct(ms, 99),
        "min_ms": min(ms),
        "max_ms": max(ms),
        "mean_ms": sum(ms) / len(ms),
    }


def log(*parts: object) -> None:
    print("bench:", *parts, file=sys.stderr, flush=True)


# -- processes to put into scopes --------------------------------------------------------------


class Children:
    """The spawner's children, each held by a pidfd: a signal never reaches a reused PID."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "spawner.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.fds: dict[int, int] = {}

    @property
    def alive(self) -> list[int]:
        return list(self.fds)

    def take(self, n: int) -> list[int]:
        if n <= 0:
            return []
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        pids = [int(p) for p in self.proc.stdout.readline().split()]
        if len(pids) != n:
            raise RuntimeError(f"spawner gave {len(pids)} of {n} processes")
        for pid in pids:
            self.fds[pid] = os.pidfd_open(pid)  # alive: nothing has signalled it yet
        return pids

    def kill(self, pid: int, sig: int = signal.SIGKILL) -> None:
        fd = self.fds.pop(pid, None)
        if fd is None:
            return
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(fd, sig)
        os.close(fd)

    def close(self) -> None:
        for pid in list(self.fds):
            self.kill(pid)
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # EOF: the spawner kills its group and exits
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- the connection ----------------------------------------------------------------------------


class Client:
    """One dbus-fast connection; futures for the signals the measurements wait for."""

    KEYED: ClassVar[dict[str, int]] = {
        "JobRemoved": 2,
        "UnitRemoved": 0,
        "NameOwnerChanged": 0,
        "SessionRemoved": 0,
        "UserRemoved": 0,
    }

    def __init__(self, bus: MessageBus, kind: str) -> None:
        self.bus = bus
        self.kind = kind
        self.waiters: dict[tuple[str, str], asyncio.Future[tuple[float, list[Any]]]] = {}
        self.address = ""  # the bus's, for second connections (bench/extras.py)
        bus.add_message_handler(self._on_message)

    def _on_message(self, msg: Message) -> None:
        if msg.message_type is not MessageType.SIGNAL:
            return
        index = self.KEYED.get(msg.member or "")
        if index is None or len(msg.body) <= index:
            return
        if msg.member == "NameOwnerChanged" and not msg.body[2]:
            return  # only acquisitions
        fut = self.waiters.pop((msg.member or "", str(msg.body[index])), None)
        if fut is not None and not fut.done():
            fut.set_result((time.perf_counter(), list(msg.body)))

    def expect(self, member: str, key: str) -> asyncio.Future[tuple[float, list[Any]]]:
        fut: asyncio.Future[tuple[float, list[Any]]] = asyncio.get_running_loop().create_future()
        self.waiters[(member, key)] = fut
        return fut

    def forget(self, member: str, key: str) -> None:
        self.waiters.pop((member, key), None)

    async def call(
        self,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
        *,
        destination: str = SYSTEMD1,
        path: str = MANAGER_PATH,
        interface: str | None = MANAGER,
    ) -> Message:
        reply = await self.bus.call(
            Message(
                destination=destination,
                path=path,
                interface=interface,
                member=member,
                signature=signature,
                body=body or [],
            )
        )
        assert reply is not None
        return reply

    async def ok(self, member: str, signature: str = "", body: list[Any] | None = None,
                 **kw: Any) -> list[Any]:  # fmt: skip
        reply = await self.call(member, signature, body, **kw)
        if reply.message_type is MessageType.ERROR:
            text = str(reply.body[0]).strip().splitlines()[-1] if reply.body else ""
            raise OpError(f"{member}: {reply.error_name}: {text}")
        return list(reply.body)

    async def dbus(self, member: str, signature: str = "", body: list[Any] | None = None) -> Any:
        dest, path, iface = DBUS
        out = await self.ok(member, signature, body, destination=dest, path=path, interface=iface)
        return out[0] if out else None

    async def add_match(self, rule: str) -> None:
        await self.dbus("AddMatch", "s", [rule])

    async def wait(
        self, fut: Awaitable[tuple[float, list[Any]]], what: str, timeout: float = WAIT
    ) -> tuple[float, list[Any]]:
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise OpError(f"no {what} within {timeout:.0f} s") from None

    # -- the operations measured -------------------------------------------------------------

    async def add_mock(self, name: str) -> None:
        await self.ok("AddMockUnit", "s", [name], interface="org.freedesktop.DBus.Mock")

    async def start_scope(self, name: str, pid: int) -> tuple[float, float]:
        """StartTransientUnit of a scope holding PID: (reply, JobRemoved) latency in s."""
        done = self.expect("JobRemoved", name)
        t0 = time.perf_counter()
        reply = await self.call(
            "StartTransientUnit",
            "ssa(sv)a(sa(sv))",
            [
                name,
                "fail",
                [["PIDs", Variant("au", [pid])], ["Description", Variant("s", f"bench {name}")]],
                [],
            ],
        )
        t1 = time.perf_counter()
        if reply.message_type is MessageType.ERROR:
            self.forget("JobRemoved", name)
            raise OpError(f"StartTransientUnit {name}: {reply.error_name}: {reply.body}")
        t2, body = await self.wait(done, f"JobRemoved for {name}")
        if body[3] != "done":
            raise OpError(f"start job of {name} ended {body[3]}")
        return t1 - t0, t2 - t0

    async def stop_unit(self, name: str) -> tuple[float, float]:
        if self.kind == "dbusmock":
            await self.add_mock(name)  # the template's StopUnit needs a mock unit
        done = self.expect("JobRemoved", name)
        t0 = time.perf_counter()
        reply = await self.call("StopUnit", "ss", [name, "fail"])
        t1 = time.perf_counter()
        if reply.message_type is MessageType.ERROR:
            self.forget("JobRemoved", name)
            raise OpError(f"StopUnit {name}: {reply.error_name}: {reply.body}")
        t2, body = await self.wait(done, f"JobRemoved (stop) for {name}")
        if body[3] != "done":
            raise OpError(f"stop job of {name} ended {body[3]}")
        return t1 - t0, t2 - t0

    async def timed(self, coro: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
        t0 = time.perf_counter()
        out = await coro()
        return time.perf_counter() - t0, out

    async def peer_pid(self) -> int:
        return int(await self.dbus("GetConnectionUnixProcessID", "s", [SYSTEMD1]))


def memory(pid: int) -> dict[str, int]:
    """VmRSS and (where readable) Pss of PID, in KiB."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0].lower() + "_kib"] = int(line.split()[1])
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                out["pss_kib"] = int(line.split()[1])
    return out


# -- the peer, when the driver starts it -------------------------------------------------------


class Spawned:
    def __init__(self, command: str, address: str, run_dir: str | None, logdir: Path) -> None:
        self.command = command
        # bytecode as an installed daemon has it (packaging/install.sh runs compileall), even
        # where PYTHONDONTWRITEBYTECODE is set or the sources are read-only: the warm-up start
        # of measure_ready() fills this cache, the measured starts use it
        self.env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": address,
                    "PYTHONPYCACHEPREFIX": str(HERE / "results" / "pycache")}  # fmt: skip
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.address = address
        self.run_dir = run_dir
        self.logdir = logdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs: list[Path] = []

    def start(self) -> None:
        run = Path(tempfile.mkdtemp(prefix="scopeshim-bench-", dir=self.run_dir))
        self.runs.append(run)
        argv = [
            a.replace("{run}", str(run)).replace("{address}", self.address)
            for a in shlex.split(self.command)
        ]
        with open(self.logdir / f"peer-{len(self.runs)}.log", "wb") as log_file:
            self.proc = subprocess.Popen(argv, env=self.env, stdout=log_file, stderr=log_file)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def cleanup(self) -> None:
        for run in self.runs:
            shutil.rmtree(run, ignore_errors=True)


async def measure_ready(c: Client, spawned: Spawned, reps: int) -> dict[str, Any]:
    """Start -> NameOwnerChanged(org.freedesktop.systemd1, new owner), after one warm-up."""
    await c.add_match(
        f"type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',arg0='{SYSTEMD1}'"
    )
    times = []
    for i in range(reps + 1):
        acquired = c.expect("NameOwnerChanged", SYSTEMD1)
        t0 = time.perf_counter()
        spawned.start()
        t1, _ = await c.wait(acquired, "name acquisition")
        if i > 0:
            times.append(t1 - t0)
        if i < reps:
            spawned.stop()
            for _ in range(200):  # the name is released with the connection
                if not await c.dbus("NameHasOwner", "s", [SYSTEMD1]):
                    break
                await asyncio.sleep(0.01)
    return {"start_to_name_acquired": summary(times), "warmup": 1}


async def restart(c: Client, spawned: Spawned) -> list[str]:
    """Start the peer again after it went away; return the last lines of its log."""
    spawned.stop()
    log_file = spawned.logdir / f"peer-{len(spawned.runs)}.log"
    tail = log_file.read_text(errors="replace").splitlines()[-12:] if log_file.exists() else []
    acquired = c.expect("NameOwnerChanged", SYSTEMD1)
    spawned.start()
    await c.wait(acquired, "name acquisition after a restart")
    with contextlib.suppress(OpError):
        await c.ok("Subscribe")
    return tail


async def systemd_ready(c: Client) -> dict[str, Any]:
    """For PID 1: its own clock. UserspaceTimestampMonotonic (exec of systemd) to the time
    dbus.service became active: PID 1 connects and requests its name only after that, so
    this is a lower bound of start -> name acquired (it includes starting the bus)."""

    async def prop(path: str, iface: str, name: str) -> int:
        (v,) = await c.ok(
            "Get", "ss", [iface, name], path=path, interface="org.freedesktop.DBus.Properties"
        )
        return int(v.value)

    userspace = await prop(MANAGER_PATH, MANAGER, "UserspaceTimestampMonotonic")
    finish = await prop(MANAGER_PATH, MANAGER, "FinishTimestampMonotonic")
    (dbus_path,) = await c.ok("GetUnit", "s", ["dbus.service"])
    dbus_active = await prop(dbus_path, "org.freedesktop.systemd1.Unit",
                             "ActiveEnterTimestampMonotonic")  # fmt: skip
    return {
        "start_to_name_acquired": {"n": 1, "p50_ms": (dbus_active - userspace) / 1e3},
        "lower_bound": True,
        "startup_finished_ms": (finish - userspace) / 1e3,
        "how": "PID 1 exec (UserspaceTimestampMonotonic) to dbus.service ActiveEnter; PID 1 "
        "acquires its name right after (lower bound)",
    }


# -- py-spy, per phase (bench/profile.py) ------------------------------------------------------


class Profiler:
    """py-spy record attached to the peer during one phase at a time (raw collapsed stacks)."""

    def __init__(self, prefix: str | None) -> None:
        self.prefix = prefix
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, pid: int, phase: str) -> None:
        if not self.prefix:
            return
        pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        out = f"{self.prefix}-{phase}.txt"
        with open(f"{self.prefix}-{phase}.log", "wb") as log_file:
            self.proc = subprocess.Popen(
                [pyspy, "record", "--pid", str(pid), "--format", "raw", "--rate", "500",
                 "--nonblocking", "--output", out],
                stdout=log_file, stderr=log_file,
            )  # fmt: skip
        time.sleep(0.5)  # attached

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


# -- the systemd1 measurements -----------------------------------------------------------------


class Bench:
    def __init__(self, c: Client, kids: Children, args: argparse.Namespace) -> None:
        self.c = c
        self.kids = kids
        self.args = args
        self.seq = 0
        self.live: list[tuple[str, int]] = []  # the population (unit, pid)
        self.pid = 0
        self.out: dict[str, Any] = {}
        self.profiler = Profiler(args.profile)
        self.restart: Callable[[], Awaitable[list[str]]] | None = None
        self.inflight_n = INFLIGHT

    async def phase(self, name: str, work: Awaitable[Any]) -> Any:
        log(name)
        self.profiler.start(self.pid, name)
        try:
            return await work
        finally:
            self.profiler.stop()

    def name(self, tag: str) -> str:
        self.seq += 1
        return f"bench-{tag}-{self.seq}.scope"

    def rss(self) -> dict[str, int]:
        return memory(self.pid)

    async def settle(self, limit: float = 15.0) -> float:
        """Wait until the peer's CPU time stops growing (3 polls of 100 ms in a row), so that
        work deferred from the previous phase (GC, signals, state writes) is not measured."""

        def cpu() -> int:
            try:
                fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                return 0
            return int(fields[11]) + int(fields[12])  # utime + stime, in ticks

        t0 = time.perf_counter()
        quiet, last = 0, cpu()
        while quiet < 3 and time.perf_counter() - t0 < limit:
            await asyncio.sleep(0.1)
            now = cpu()
            quiet = quiet + 1 if now == last else 0
            last = now
        return time.perf_counter() - t0

    async def cycle(self, tag: str) -> tuple[float, float, float, float]:
        """Start a scope, then stop it: (start reply, start done, stop reply, stop done)."""
        (pid,) = self.kids.take(1)
        name = self.name(tag)
        r1, d1 = await self.c.start_scope(name, pid)
        r2, d2 = await self.c.stop_unit(name)
        self.kids.kill(pid)  # already gone, except where the peer does not stop processes
        return r1, d1, r2, d2

    async def sequential(self, n: int, warmup: int) -> None:
        for _ in range(warmup):
            await self.cycle("warm")
        pids = self.kids.take(n)
        names = [self.name("seq") for _ in pids]
        start_reply, start_done, stop_reply, stop_done = [], [], [], []
        for name, pid in zip(names, pids, strict=True):
            r, d = await self.c.start_scope(name, pid)
            start_reply.append(r)
            start_done.append(d)
        for name in names:
            r, d = await self.c.stop_unit(name)
            stop_reply.append(r)
            stop_done.append(d)
        for pid in pids:
            self.kids.kill(pid)
        self.out["start_seq"] = {"reply": summary(start_reply), "job_removed": summary(start_done)}
        self.out["stop_seq"] = {"reply": summary(stop_reply), "job_removed": summary(stop_done)}

    async def pooled(
        self, items: list[Any], op: Callable[[Any], Awaitable[Any]]
    ) -> tuple[list[Any], float]:
        """Run op over items, inflight_n (INFLIGHT) calls outstanding at any time: (results, s)."""
        results: list[Any] = [None] * len(items)
        it = iter(enumerate(items))

        async def worker() -> None:
            for i, item in it:
                results[i] = await op(item)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(min(self.inflight_n, len(items)))))
        return results, time.perf_counter() - t0

    async def inflight(self, n: int) -> None:
        """n starts with INFLIGHT outstanding, then their n stops the same way."""
        pids = self.kids.take(n)
        pairs = [(self.name("par"), pid) for pid in pids]
        try:
            started, wall = await self.pooled(pairs, lambda p: self.c.start_scope(*p))
            self.out["start_64"] = {
                "reply": summary([r for r, _ in started]),
                "job_removed": summary([d for _, d in started]),
                "per_s": n / wall,
            }
            stopped, wall = await self.pooled([p[0] for p in pairs], self.c.stop_unit)
            self.out["stop_64"] = {
                "reply": summary([r for r, _ in stopped]),
                "job_removed": summary([d for _, d in stopped]),
                "per_s": n / wall,
            }
        finally:
            for pid in pids:
                self.kids.kill(pid)

    async def lifecycle_one(self, pid: int, timeout: float = WAIT) -> float:
        name = self.name("life")
        t0 = time.perf_counter()
        await self.c.start_scope(name, pid)
        removed = self.c.expect("UnitRemoved", name)
        self.kids.kill(pid)
        what = f"UnitRemoved of {name} after its process exited"
        t1, _ = await self.c.wait(removed, what, timeout)
        return t1 - t0

    async def lifecycle(self, n: int) -> None:
        (probe,) = self.kids.take(1)
        try:
            await self.lifecycle_one(probe, 5.0)
        except OpError as e:
            self.out["lifecycle"] = {"skipped": str(e)}
            return
        pids = self.kids.take(n)
        t0 = time.perf_counter()
        times = [await self.lifecycle_one(pid) for pid in pids]
        wall = time.perf_counter() - t0
        pids = self.kids.take(n)
        par, wall_par = await self.pooled(pids, self.lifecycle_one)
        self.out["lifecycle"] = {
            "seq": {"per_s": n / wall, "cycle": summary(times)},
            "inflight_64": {"per_s": n / wall_par, "cycle": summary(par)},
        }

    async def grow(self, target: int) -> dict[str, Any]:
        need = target - len(self.live)
        if need <= 0:
            return {}
        pids = self.kids.take(need)
        names = [self.name("pop") for _ in pids]
        if self.c.kind == "dbusmock":
            _, wall = await self.pooled(names, self.c.add_mock)
        else:
            _, wall = await self.pooled(
                list(zip(names, pids, strict=True)), lambda p: self.c.start_scope(*p)
            )
        self.live.extend(zip(names, pids, strict=True))
        return {"added": need, "per_s": need / wall}

    async def at_level(self, level: int, reps: int, list_reps: int) -> dict[str, Any]:
        built = await self.grow(level)
        out: dict[str, Any] = {"live_units": len(self.live), "build": built}
        out["settled_s"] = await self.settle()
        starts, starts_reply, stops = [], [], []
        for _ in range(reps):
            r1, d1, _r2, d2 = await self.cycle("probe")
            starts_reply.append(r1)
            starts.append(d1)
            stops.append(d2)
        out["start"] = summary(starts)
        out["start_reply"] = summary(starts_reply)
        out["stop"] = summary(stops)
        rng = random.Random(level)
        sample = [rng.choice(self.live)[0] for _ in range(reps)]
        get_unit, get_prop = [], []
        for name in sample:
            t, (path,) = await self.c.timed(lambda n=name: self.c.ok("GetUnit", "s", [n]))
            get_unit.append(t)
            t, _ = await self.c.timed(
                lambda p=path: self.c.ok(
                    "Get",
                    "ss",
                    ["org.freedesktop.systemd1.Unit", "ActiveState"],
                    path=p,
                    interface="org.freedesktop.DBus.Properties",
                )
            )
            get_prop.append(t)
        out["get_unit"] = summary(get_unit)
        out["get_active_state"] = summary(get_prop)
        listed = []
        try:
            for _ in range(list_reps):
                t, (rows,) = await self.c.timed(lambda: self.c.ok("ListUnits"))
                listed.append(t)
            out["list_units"] = summary(listed)
            out["list_units_rows"] = len(rows)
        except OpError as e:
            out["list_units"] = {"skipped": str(e)}
        out["memory"] = self.rss()
        return out

    async def guarded(self, name: str, make: Callable[[], Awaitable[Any]]) -> Any:
        """One phase. When the peer dies in it, the error is recorded (with the peer's last log
        lines), the peer is restarted (when the driver started it; fresh, no units) and the
        phase is tried again, up to RETRIES times; figures come only from a complete try."""
        for _attempt in range(RETRIES + 1):
            try:
                return await self.phase(name, make())
            except OpError as e:
                alive = await self.c.dbus("NameHasOwner", "s", [SYSTEMD1])
                crashed = not alive or (await self.c.peer_pid()) != self.pid
                log(f"{name}: {e}" + (" (the peer went away)" if crashed else ""))
                error: dict[str, Any] = {"phase": name, "error": str(e), "peer_went_away": crashed}
                self.out.setdefault("errors", []).append(error)
                if not crashed or self.restart is None:
                    return None
                for pid in self.kids.alive:
                    self.kids.kill(pid)
                self.live = []
                error["peer_log"] = await self.restart()  # for the next try or phase
                self.pid = await self.c.peer_pid()
                await self.settle()
        return None

    def want(self, phase: str) -> bool:
        return not self.args.phases or phase in self.args.phases

    async def run(self) -> dict[str, Any]:
        a = self.args
        self.pid = await self.c.peer_pid()
        self.out["peer_pid"] = self.pid
        await self.settle()
        self.out["memory_idle"] = self.rss()
        for phase, make in (
            ("sequential", lambda: self.sequential(a.seq, a.warmup)),
            ("inflight", lambda: self.inflight(a.par)),
            ("lifecycle", lambda: self.lifecycle(a.life)),
        ):
            if self.want(phase):
                await self.guarded(phase, make)
                await self.settle()
        for phase, key, fn in (
            ("kube", "kube_burst", extras.kube_burst),
            ("bytes", "bus_bytes", extras.bus_bytes),
            ("service", "services", extras.services),
        ):
            if self.want(phase) and self.c.kind not in ("dbusmock", "floor"):
                got = await self.guarded(phase, lambda f=fn: f(self))  # type: ignore[misc]
                if got is not None:
                    self.out[key] = got
                await self.settle()
        self.out["levels"] = {}
        respond = a.respond_levels if self.want("respond") and self.c.kind != "floor" else []
        levels = a.levels if self.want("levels") else []
        for level in sorted(set(levels) | set(respond)):
            if level in levels:
                got = await self.guarded(
                    f"level-{level}", lambda lv=level: self.at_level(lv, a.reps, a.list_reps)
                )
                if got is not None:
                    self.out["levels"][str(level)] = got
                    self.out["memory_at_" + str(level)] = got["memory"]
            if level in respond:
                await self.guarded(f"grow-{level}", lambda lv=level: self.grow(lv))
                await self.settle()
                got = await self.guarded(f"respond-{level}", lambda: extras.responsiveness(self))
                if got is not None:
                    self.out.setdefault("respond", {})[str(level)] = got
        return self.out


# -- logind ------------------------------------------------------------------------------------


def start_logind(logdir: Path) -> subprocess.Popen[bytes]:
    conf = Path("/run/systemd/logind.conf.d")
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "bench.conf").write_text(LOGIND_CONF)
    with open(logdir / "logind.log", "wb") as f:
        return subprocess.Popen(
            ["/lib/systemd/systemd-logind"],
            stdout=f,
            stderr=f,
            env={**os.environ, "SYSTEMD_LOG_LEVEL": "debug", "SYSTEMD_LOG_TIME": "1",
                 "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_LOG_TARGET": "console"},
        )  # fmt: skip


async def wait_name(c: Client, name: str) -> None:
    for _ in range(int(WAIT / 0.05)):
        if await c.dbus("NameHasOwner", "s", [name]):
            return
        await asyncio.sleep(0.05)
    raise OpError(f"{name} did not appear on the bus")


async def logind_round_trips(c: Client, kids: Children, reps: int, warmup: int) -> dict:
    """CreateSession (as pam_systemd calls it, for uid 0 with a fresh leader) -> its reply;
    then its FIFO closed (as pam_systemd's close does; ReleaseSession is only for callers
    inside the session), the leader killed, and the session, the user and the user's slice
    gone
    (UserStopDelaySec=0) before the next one: every round trip is a first login."""
    await wait_name(c, LOGIN1)
    await c.add_match(f"type='signal',sender='{LOGIN1}',member='SessionRemoved'")
    await c.add_match(f"type='signal',sender='{LOGIN1}',member='UserRemoved'")
    login1 = {"destination": LOGIN1, "path": "/org/freedesktop/login1",
              "interface": "org.freedesktop.login1.Manager"}  # fmt: skip
    times = []
    for i in range(reps + warmup):
        (leader,) = kids.take(1)
        t0 = time.perf_counter()
        reply = await c.call(
            "CreateSession",
            "uusssssussbssa(sv)",
            [0, leader, "scopeshim-bench", "tty", "user", "", "", 0, "", "", False, "", "", []],
            **login1,
        )
        t1 = time.perf_counter()
        if reply.message_type is MessageType.ERROR:
            raise OpError(f"CreateSession: {reply.error_name}: {reply.body}")
        if i >= warmup:
            times.append(t1 - t0)
        session_id = reply.body[0]
        session_gone = c.expect("SessionRemoved", session_id)
        user_gone = c.expect("UserRemoved", "0")
        slice_gone = c.expect("UnitRemoved", "user-0.slice")
        for fd in reply.unix_fds:  # the session's FIFO: closing it ends the session
            os.close(fd)
        kids.kill(leader)
        await c.wait(session_gone, f"SessionRemoved {session_id}")
        await c.wait(user_gone, "UserRemoved 0")
        # systemd1 stops and collects the user's slice after logind let go of the user:
        # the next login would otherwise meet its stop job
        await c.wait(slice_gone, "UnitRemoved user-0.slice")
    return {"create_session": summary(times), "warmup": warmup}


# -- main --------------------------------------------------------------------------------------


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    address = os.environ["DBUS_SYSTEM_BUS_ADDRESS"] if args.address == "env" else args.address
    logdir = Path(args.out).with_suffix(".logs")
    logdir.mkdir(parents=True, exist_ok=True)
    bus = await MessageBus(bus_address=address, negotiate_unix_fd=True).connect()
    c = Client(bus, args.kind)
    c.address = address
    kids = Children()
    spawned = None
    logind = None
    result: dict[str, Any] = {
        "kind": args.kind,
        "mode": args.mode,
        "uname": os.uname().release,
        "cpus": os.cpu_count(),
    }
    try:
        if args.spawn:
            spawned = Spawned(args.spawn, address, args.run_dir, logdir)
            result["ready"] = await measure_ready(c, spawned, args.ready_reps)
        elif args.kind == "systemd":
            result["ready"] = await systemd_ready(c)
        await wait_name(c, SYSTEMD1)
        for member in ("JobRemoved", "UnitRemoved"):
            await c.add_match(f"type='signal',sender='{SYSTEMD1}',member='{member}'")
        with contextlib.suppress(OpError):
            await c.ok("Subscribe")  # systemd sends unit and job signals to subscribers only
        if args.mode == "logind":
            if args.start_logind:
                logind = start_logind(logdir)
            result["logind"] = await logind_round_trips(c, kids, args.logind_reps, 2)
        else:
            bench = Bench(c, kids, args)
            if spawned is not None:
                bench.restart = lambda: restart(c, spawned)
            result.update(await bench.run())
    except OpError as e:
        result["error"] = str(e)
        log("error:", e)
    finally:
        if logind is not None and logind.poll() is None:
            logind.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                logind.wait(10)
        kids.close()
        if spawned is not None:
            result["peer_exit"] = spawned.stop()
            spawned.cleanup()
        bus.disconnect()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--address", required=True, help='bus address, or "env"')
    p.add_argument("--kind", required=True, choices=["floor", "dbusmock", "scopeshim", "systemd"])
    p.add_argument("--label", default="")
    p.add_argument("--spawn", default="", help='peer command ("{run}", "{address}" filled in)')
    p.add_argument("--run-dir", default=None, help="where the peer's run directories go")
    p.add_argument("--mode", choices=["systemd1", "logind"], default="systemd1")
    p.add_argument("--start-logind", action="store_true")
    p.add_argument("--levels", default="100,1000,10000")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--phases", default="", help="a subset: sequential,inflight,lifecycle,"
                   "kube,bytes,service,levels,respond (default: all)")  # fmt: skip
    p.add_argument("--profile", default=None, help="py-spy output prefix (one file per phase)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    args.levels = [int(v) for v in args.levels.split(",") if v]
    args.phases = [v for v in args.phases.split(",") if v]
    args.respond_levels = [3000] if args.quick else [3000, 10000]
    q = args.quick
    args.ready_reps = 3 if q else 5
    args.warmup = 10 if q else 30
    args.seq = 100 if q else 300
    args.par = 256 if q else 1024
    args.life = 100 if q else 300
    args.reps = 30 if q else 100
    args.list_reps = 3 if q else 5
    args.logind_reps = 5 if q else 20
    # room for the children, the peer's pidfds and our own sockets
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    t0 = time.time()
    result = asyncio.run(amain(args))
    result["label"] = args.label or args.kind
    result["params"] = {
        k: getattr(args, k)
        for k in ("levels", "quick", "ready_reps", "warmup", "seq", "par", "life", "reps",
                  "list_reps", "logind_reps", "phases", "respond_levels")
    }  # fmt: skip
    result["params"]["inflight"] = INFLIGHT
    result["wall_s"] = time.time() - t0
    Path(args.out).write_text(json.dumps(result, indent=1))
    log(f"wrote {args.out} ({result['wall_s']:.0f} s)")
    sys.exit(1 if "error" in result else 0)


if __name__ == "__main__":
    main()
