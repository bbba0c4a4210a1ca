"""Inside the VM (root, the kernel's own cgroup2 with every controller): scopeshim's limits at work.

A private system bus (the host's dbus-daemon), scopeshim's cgroup2 backend on /sys/fs/cgroup,
then every check in CHECKS in turn. A check sets limits through scopeshim's D-Bus API, lets a
workload (tests/vm/workload.py) run into them, and records what the kernel did; the host's
pytest (tests/vm/test_*.py) judges. One JSON line per check in $SCOPESHIM_VM_OUT/results.jsonl.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUT = Path(os.environ.get("SCOPESHIM_VM_OUT", "/run/vm-out"))
CGROOT = Path("/sys/fs/cgroup")
SLICE = CGROOT / "system.slice"
SOCKET = "/run/dbus/system_bus_socket"
PY = "/usr/bin/python3"  # the workloads: readable by uid 65534, standard library only
IO_DEVICE = "/dev/vda"
SWAP_DEVICE = "/dev/vdb"
MIB = 1 << 20
BUS_CONFIG = f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={SOCKET}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""
SITE = next((ROOT / ".venv/lib").glob("python3*/site-packages"), ROOT)
# the user manager (issue 16): Debian's python3 with the venv's packages (the venv's own
# interpreter lives under /root, mode 700, out of the user's reach), as tests/e2e does
USER_MANAGER = ["/usr/bin/env", f"PYTHONPATH={ROOT}:{SITE}", "/usr/bin/python3", "-m", "shim",
                "serve", "--user", "--notify-ready", "--log-level", "debug"]  # fmt: skip
CONFIG = f"""[units]
user_manager = "scopeshim"
user_manager_command = {json.dumps(USER_MANAGER)}
"""

Check = Callable[["Shim"], Awaitable[dict[str, Any]]]
CHECKS: dict[str, Check] = {}


def check(fn: Check) -> Check:
    CHECKS[fn.__name__] = fn
    return fn


def read(unit: str, name: str, parent: Path = SLICE) -> str | None:
    try:
        return (parent / unit / name).read_text().strip()
    except OSError:
        return None


def keyed(unit: str, name: str) -> dict[str, int]:
    """A flat-keyed cgroup file (memory.events, cpu.stat, pids.events) as a dict."""
    out: dict[str, int] = {}
    for line in (read(unit, name) or "").splitlines():
        key, _, value = line.partition(" ")
        if value.isdigit():
            out[key] = int(value)
    return out


class Worker:
    """workload.py ACTION ARGS, waiting on stdin to go."""

    def __init__(self, action: str, *args: str, user: int | None = None) -> None:
        self.proc = subprocess.Popen(
            [PY, "-S", str(HERE / "workload.py"), action, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            user=user,
            group=user,
            extra_groups=[] if user is not None else None,
            cwd="/",
        )
        self.pid = self.proc.pid
        self.is_ready = False

    async def ready(self) -> None:
        """Wait until it has started (python's start-up is slow under TCG)."""
        assert self.proc.stdout is not None
        if not self.is_ready:
            line = await asyncio.to_thread(self.proc.stdout.readline)
            assert line == "ready\n", line
            self.is_ready = True

    async def go(self) -> dict[str, Any]:
        """Let it act; its JSON line, or its exit status when the kernel killed it."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        await self.ready()
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        line = await asyncio.to_thread(self.proc.stdout.readline)
        if line:
            return {"ok": True, **json.loads(line)}
        code = await asyncio.to_thread(self.proc.wait)
        return {
            "ok": False,
            "exit": code,
            "signal": signal.Signals(-code).name if code < 0 else None,
        }

    def end(self) -> None:
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Shim:
    """A client of scopeshim on the VM's system bus."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.jobs: dict[str, asyncio.Future[str]] = {}
        # JobRemoved results that came before their job was waited for: the reply and the
        # signal can arrive in one read, and dbus-fast hands the signal over before the
        # coroutine that awaited the reply runs again
        self.ended: dict[str, str] = {}
        self.restarter: Callable[[], Awaitable[None]] | None = None
        bus.add_message_handler(self._signal)

    def _signal(self, m: Message) -> None:
        if m.member != "JobRemoved":
            return
        fut = self.jobs.pop(m.body[1], None)
        if fut is None:
            self.ended[m.body[1]] = m.body[3]
        elif not fut.done():
            fut.set_result(m.body[3])

    async def call(self, member: str, signature: str, body: list[Any], **kw: str) -> Message:
        reply = await self.bus.call(
            Message(
                destination=kw.get("destination", "org.freedesktop.systemd1"),
                path=kw.get("path", "/org/freedesktop/systemd1"),
                interface=kw.get("interface", "org.freedesktop.systemd1.Manager"),
                member=member,
                signature=signature,
                body=body,
            )
        )
        assert reply is not None
        if reply.message_type is MessageType.ERROR:
            raise RuntimeError(f"{member}: {reply.error_name}: {reply.body}")
        return reply

    async def _job(self, member: str, signature: str, body: list[Any]) -> str:
        loop = asyncio.get_running_loop()
        reply = await self.call(member, signature, body)
        if reply.body[0] in self.ended:
            return self.ended.pop(reply.body[0])
        fut: asyncio.Future[str] = loop.create_future()
        self.jobs[reply.body[0]] = fut
        return await asyncio.wait_for(fut, 60)

    async def start(self, unit: str, pids: list[int] | None, **props: Variant) -> str:
        """StartTransientUnit of a scope with PIDS (none for a slice) and PROPS; the job's
        result."""
        properties = [[k, v] for k, v in props.items()]
        if pids is not None:
            properties.insert(0, ["PIDs", Variant("au", pids)])
        return await self._job(
            "StartTransientUnit", "ssa(sv)a(sa(sv))", [unit, "fail", properties, []]
        )

    async def start_service(self, unit: str, argv: list[str], **props: Variant) -> str:
        """StartTransientUnit of a service running ARGV (ExecStart=, as systemd-run sends it)."""
        properties = [["ExecStart", Variant("a(sasb)", [[argv[0], argv, False]])]]
        properties += [[k, v] for k, v in props.items()]
        return await self._job(
            "StartTransientUnit", "ssa(sv)a(sa(sv))", [unit, "fail", properties, []]
        )

    async def restart(self) -> None:
        """Stop scopeshim (SIGTERM) and serve again from its state directory."""
        assert self.restarter is not None
        await self.restarter()

    async def set(self, unit: str, **props: Variant) -> None:
        """SetUnitProperties(runtime=true) on a running unit."""
        await self.call(
            "SetUnitProperties", "sba(sv)", [unit, True, [[k, v] for k, v in props.items()]]
        )

    async def stop(self, unit: str) -> str:
        return await self._job("StopUnit", "ss", [unit, "replace"])


def t(value: int) -> Variant:
    return Variant("t", value)


def cpus(*numbers: int) -> Variant:
    """AllowedCPUs= as systemd sends it: a little-endian CPU bitmask (ay)."""
    mask = sum(1 << n for n in numbers)
    return Variant("ay", mask.to_bytes((max(numbers) // 8) + 1, "little"))


async def scoped(
    shim: Shim,
    unit: str,
    worker: Worker,
    files: tuple[str, ...],
    parent: Path = SLICE,
    **props: Variant,
) -> dict[str, Any]:
    """A scope (in PARENT's cgroup) holding WORKER and a sleeper (so that it outlives a
    kill), PROPS given at start; the worker's outcome and the FILES read before and after it,
    then the scope stopped."""
    sleeper = subprocess.Popen(["sleep", "3600"])
    try:
        out: dict[str, Any] = {"job": await shim.start(unit, [sleeper.pid, worker.pid], **props)}
        out["before"] = {f: read(unit, f, parent) for f in files}
        out["worker"] = await worker.go()
        out["after"] = {f: read(unit, f, parent) for f in files}
        return out
    finally:
        worker.end()
        await shim.stop(unit)
        sleeper.wait(10)


# ---- the checks ------------------------------------------------------------------------------

MEM_FILES = ("memory.max", "memory.high", "memory.swap.max", "memory.events")


@check
async def memory_max_start(shim: Shim) -> dict[str, Any]:
    return await scoped(
        shim, "mmax.scope", Worker("alloc", "200"), MEM_FILES, MemoryMax=t(64 * MIB)
    )


@check
async def memory_max_set(shim: Shim) -> dict[str, Any]:
    sleeper, worker = subprocess.Popen(["sleep", "3600"]), Worker("alloc", "200")
    unit = "mmaxset.scope"
    try:
        out: dict[str, Any] = {"job": await shim.start(unit, [sleeper.pid, worker.pid])}
        out["before"] = {f: read(unit, f) for f in MEM_FILES}
        await shim.set(unit, MemoryMax=t(64 * MIB))
        out["set"] = {f: read(unit, f) for f in MEM_FILES}
        out["worker"] = await worker.go()
        out["after"] = {f: read(unit, f) for f in MEM_FILES}
        return out
    finally:
        worker.end()
        await shim.stop(unit)
        sleeper.wait(10)


@check
async def memory_max_lowered_under_usage(shim: Shim) -> dict[str, Any]:
    # SetUnitProperties lowers MemoryMax under what the scope already holds: the kernel
    # reclaims, cannot (no swap), and OOM-kills (cgroup-v2.rst memory.max)
    sleeper, worker = subprocess.Popen(["sleep", "3600"]), Worker("hold", "100")
    unit = "mlower.scope"
    assert worker.proc.stdout is not None
    # the sleeper is never the OOM killer's choice (proc(5) oom_score_adj -1000): the scope
    # keeps a process, so its files can still be read once the holder is gone
    Path(f"/proc/{sleeper.pid}/oom_score_adj").write_text("-1000")
    try:
        out: dict[str, Any] = {"job": await shim.start(unit, [sleeper.pid, worker.pid])}
        out["worker"] = await worker.go()
        out["held"] = int(read(unit, "memory.current") or 0)
        await shim.set(unit, MemoryMax=t(32 * MIB))
        out["set"] = {f: read(unit, f) for f in MEM_FILES}
        out["exit"] = await asyncio.to_thread(worker.proc.wait, 60)
        out["sleeper"] = sleeper.poll()
        out["after"] = {f: read(unit, f) for f in MEM_FILES}
        out["events"] = read(unit, "cgroup.events")
        return out
    finally:
        worker.end()
        with contextlib.suppress(RuntimeError):
            await shim.stop(unit)
        sleeper.wait(10)


@check
async def memory_high(shim: Shim) -> dict[str, Any]:
    # page cache over memory.high is reclaimed, not killed (cgroup-v2.rst memory.high)
    worker = Worker("cached_read", IO_DEVICE, "48")
    return await scoped(shim, "mhigh.scope", worker, MEM_FILES, MemoryHigh=t(16 * MIB))


@check
async def memory_swap_max(shim: Shim) -> dict[str, Any]:
    files = (*MEM_FILES, "memory.swap.current", "memory.swap.events")
    swap = subprocess.run(
        f"mkswap {SWAP_DEVICE} && swapon {SWAP_DEVICE}", shell=True, capture_output=True, text=True
    )
    out: dict[str, Any] = {"swapon": swap.returncode, "swapon_err": swap.stderr[-500:]}
    out["swaps"] = Path("/proc/swaps").read_text()
    try:
        # the same 64 MiB in 24 MiB of memory: killed with no swap allowed, alive with it
        out["none"] = await scoped(
            shim,
            "noswap.scope",
            Worker("alloc", "64"),
            files,
            MemoryMax=t(24 * MIB),
            MemorySwapMax=t(0),
        )
        out["some"] = await scoped(
            shim,
            "swap.scope",
            Worker("alloc", "64"),
            files,
            MemoryMax=t(24 * MIB),
            MemorySwapMax=t(128 * MIB),
        )
    finally:
        subprocess.run(["swapoff", SWAP_DEVICE], capture_output=True)
    return out


PIDS_FILES = ("pids.max", "pids.current", "pids.events")


@check
async def tasks_max_start(shim: Shim) -> dict[str, Any]:
    # the sleeper and the worker count: 3 more fit under TasksMax=5
    return await scoped(shim, "tasks.scope", Worker("fork", "10"), PIDS_FILES, TasksMax=t(5))


@check
async def tasks_max_set(shim: Shim) -> dict[str, Any]:
    sleeper, worker = subprocess.Popen(["sleep", "3600"]), Worker("fork", "10")
    unit = "tasksset.scope"
    try:
        out: dict[str, Any] = {"job": await shim.start(unit, [sleeper.pid, worker.pid])}
        await shim.set(unit, TasksMax=t(4))
        out["set"] = {f: read(unit, f) for f in PIDS_FILES}
        out["worker"] = await worker.go()
        out["after"] = {f: read(unit, f) for f in PIDS_FILES}
        return out
    finally:
        worker.end()
        await shim.stop(unit)
        sleeper.wait(10)


CPU_FILES = ("cpu.max", "cpu.weight", "cpu.stat")


@check
async def cpu_quota_start(shim: Shim) -> dict[str, Any]:
    worker = Worker("burn", "2")
    return await scoped(shim, "quota.scope", worker, CPU_FILES, CPUQuotaPerSecUSec=t(200_000))


@check
async def cpu_quota_set(shim: Shim) -> dict[str, Any]:
    sleeper, worker = subprocess.Popen(["sleep", "3600"]), Worker("burn", "2")
    unit = "quotaset.scope"
    try:
        out: dict[str, Any] = {"job": await shim.start(unit, [sleeper.pid, worker.pid])}
        await worker.ready()  # its start-up done: nothing in the scope runs until "go"
        out["before"] = {f: read(unit, f) for f in CPU_FILES}
        await shim.set(unit, CPUQuotaPerSecUSec=t(200_000))
        out["set"] = {f: read(unit, f) for f in CPU_FILES}
        out["worker"] = await worker.go()
        out["after"] = {f: read(unit, f) for f in CPU_FILES}
        return out
    finally:
        worker.end()
        await shim.stop(unit)
        sleeper.wait(10)


@check
async def cpu_weight(shim: Shim) -> dict[str, Any]:
    # two busy scopes on the same CPU share it by weight (cgroup-v2.rst "Weights")
    light, heavy = Worker("burn", "3"), Worker("burn", "3")
    out: dict[str, Any] = {}
    try:
        out["jobs"] = [
            await shim.start("light.scope", [light.pid], CPUWeight=t(100), AllowedCPUs=cpus(1)),
            await shim.start("heavy.scope", [heavy.pid], CPUWeight=t(900), AllowedCPUs=cpus(1)),
        ]
        out["weights"] = [read("light.scope", "cpu.weight"), read("heavy.scope", "cpu.weight")]
        out["cpus"] = [read(u, "cpuset.cpus.effective") for u in ("light.scope", "heavy.scope")]
        out["affinity"] = [sorted(os.sched_getaffinity(w.pid)) for w in (light, heavy)]
        # both started before either burns: a start-up on the contended CPU would wait
        await asyncio.gather(light.ready(), heavy.ready())
        results = await asyncio.gather(light.go(), heavy.go())
        out["workers"] = list(results)
        out["usage_usec"] = [
            keyed("light.scope", "cpu.stat").get("usage_usec"),
            keyed("heavy.scope", "cpu.stat").get("usage_usec"),
        ]
        return out
    finally:
        light.end()
        heavy.end()
        for unit in ("light.scope", "heavy.scope"):
            with contextlib.suppress(Exception):
                await shim.stop(unit)


CPUSET_FILES = ("cpuset.cpus", "cpuset.cpus.effective")


@check
async def allowed_cpus_start(shim: Shim) -> dict[str, Any]:
    worker = Worker("affinity")
    return await scoped(shim, "cpus.scope", worker, CPUSET_FILES, AllowedCPUs=cpus(1))


@check
async def allowed_cpus_set(shim: Shim) -> dict[str, Any]:
    sleeper, worker = subprocess.Popen(["sleep", "3600"]), Worker("affinity")
    unit = "cpusset.scope"
    try:
        out: dict[str, Any] = {"job": await shim.start(unit, [sleeper.pid, worker.pid])}
        out["before_affinity"] = sorted(os.sched_getaffinity(worker.pid))
        await shim.set(unit, AllowedCPUs=cpus(0))
        out["set"] = {f: read(unit, f) for f in CPUSET_FILES}
        out["worker"] = await worker.go()
        return out
    finally:
        worker.end()
        await shim.stop(unit)
        sleeper.wait(10)


@check
async def slice_memory_max(shim: Shim) -> dict[str, Any]:
    # a slice's MemoryMax= holds every scope below it (the shape of logind's user-UID.slice,
    # under another name: Debian's user-.slice.d/10-defaults.conf, which the VM's /usr has and
    # scopeshim reads, makes user slices StopWhenUnneeded=yes, gone with their last scope)
    parent, slice_ = CGROOT / "limits.slice", "limits-4242.slice"
    out: dict[str, Any] = {"slice_job": await shim.start(slice_, None, MemoryMax=t(64 * MIB))}
    try:
        out["slice_max"] = read(slice_, "memory.max", parent)
        out["scope"] = await scoped(
            shim,
            "sess.scope",
            Worker("alloc", "200"),
            MEM_FILES,
            parent / slice_,
            Slice=Variant("s", slice_),
        )
        out["slice_events"] = read(slice_, "memory.events", parent)
        return out
    finally:
        out["slice_stop"] = await shim.stop(slice_)


IO_FILES = ("io.max", "io.stat")


def bandwidth(device: str, rate: int) -> Variant:
    return Variant("a(st)", [[device, rate]])


@check
async def io_write_bandwidth(shim: Shim) -> dict[str, Any]:
    # 4 MiB at 1 MiB/s: blk-throttle lets a slice's worth through at once, then holds the rest
    out = {"device": os.stat(IO_DEVICE).st_rdev}
    out["free"] = await scoped(shim, "iofree.scope", Worker("direct", "write", IO_DEVICE, "4"), ())
    out["limited"] = await scoped(
        shim,
        "iow.scope",
        Worker("direct", "write", IO_DEVICE, "4"),
        IO_FILES,
        IOWriteBandwidthMax=bandwidth(IO_DEVICE, MIB),
    )
    return out


@check
async def io_read_bandwidth(shim: Shim) -> dict[str, Any]:
    out = {"device": os.stat(IO_DEVICE).st_rdev}
    out["free"] = await scoped(shim, "iofree.scope", Worker("direct", "read", IO_DEVICE, "4"), ())
    out["limited"] = await scoped(
        shim,
        "ior.scope",
        Worker("direct", "read", IO_DEVICE, "4"),
        IO_FILES,
        IOReadBandwidthMax=bandwidth(IO_DEVICE, MIB),
    )
    return out


@check
async def io_write_iops(shim: Shim) -> dict[str, Any]:
    # 30 writes of 4 KiB at 10 IOPS: the limit alone makes it last about 3 s
    out: dict[str, Any] = {"device": os.stat(IO_DEVICE).st_rdev}
    out["limited"] = await scoped(
        shim,
        "iops.scope",
        Worker("direct", "write", IO_DEVICE, "30", "4"),
        IO_FILES,
        IOWriteIOPSMax=bandwidth(IO_DEVICE, 10),
    )
    return out


@check
async def io_write_bandwidth_set(shim: Shim) -> dict[str, Any]:
    sleeper, worker = subprocess.Popen(["sleep", "3600"]), Worker("direct", "write", IO_DEVICE, "4")
    unit = "iowset.scope"
    try:
        out: dict[str, Any] = {"job": await shim.start(unit, [sleeper.pid, worker.pid])}
        await shim.set(unit, IOWriteBandwidthMax=bandwidth(IO_DEVICE, MIB))
        out["set"] = {f: read(unit, f) for f in IO_FILES}
        out["worker"] = await worker.go()
        return out
    finally:
        worker.end()
        await shim.stop(unit)
        sleeper.wait(10)


@check
async def freeze_thaw(shim: Shim) -> dict[str, Any]:
    # FreezeUnit/ThawUnit: cgroup.freeze (cgroup-v2.rst "Core Interface Files")
    sleeper, worker, unit = subprocess.Popen(["sleep", "3600"]), Worker("burn", "1"), "frz.scope"
    assert worker.proc.stdin is not None and worker.proc.stdout is not None
    try:
        out: dict[str, Any] = {"job": await shim.start(unit, [sleeper.pid, worker.pid])}
        await worker.ready()
        await shim.call("FreezeUnit", "s", [unit])
        # the kernel freezes asynchronously: "frozen 1" once every task has stopped
        for _ in range(100):
            out["frozen_events"] = read(unit, "cgroup.events")
            if "frozen 1" in (out["frozen_events"] or ""):
                break
            await asyncio.sleep(0.1)
        out["frozen_usage"] = [keyed(unit, "cpu.stat").get("usage_usec")]
        worker.proc.stdin.write("go\n")  # it cannot act while frozen
        worker.proc.stdin.flush()
        await asyncio.sleep(1)
        out["frozen_usage"].append(keyed(unit, "cpu.stat").get("usage_usec"))
        await shim.call("ThawUnit", "s", [unit])
        line = await asyncio.to_thread(worker.proc.stdout.readline)
        out["worker"] = json.loads(line) if line else None
        out["thawed_events"] = read(unit, "cgroup.events")
        return out
    finally:
        worker.end()
        await shim.stop(unit)
        sleeper.wait(10)


# -- DevicePolicy=/DeviceAllow=: backends/bpfdev.py's program on Debian 12's kernel

DEVICE_PROBES = ("r /dev/null", "w /dev/null", "r /dev/zero", f"r {IO_DEVICE}", f"w {SWAP_DEVICE}")


@check
async def devices(shim: Shim) -> dict[str, Any]:
    out: dict[str, Any] = {}
    allow = Variant("a(ss)", [["/dev/null", "rw"]])
    for policy in ("closed", "strict"):
        out[policy] = await scoped(
            shim,
            f"dev{policy}.scope",
            Worker("open", *DEVICE_PROBES),
            (),
            DevicePolicy=Variant("s", policy),
            DeviceAllow=allow,
        )
    return out


# -- what the kernel wants beyond the fake tree (backends/cgroup2.py Cgroup2Backend._kernel_order)


@check
async def cpu_weight_after_idle(shim: Shim) -> dict[str, Any]:
    sleeper, unit = subprocess.Popen(["sleep", "3600"]), "idle.scope"
    files = ("cpu.idle", "cpu.weight")
    try:
        out: dict[str, Any] = {"job": await shim.start(unit, [sleeper.pid], CPUWeight=t(0))}
        out["idle"] = {f: read(unit, f) for f in files}
        await shim.set(unit, CPUWeight=t(200))
        out["weight"] = {f: read(unit, f) for f in files}
        return out
    finally:
        await shim.stop(unit)
        sleeper.wait(10)


@check
async def cpu_quota_period_bounds(shim: Shim) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # what the kernel itself says to a 2 s period (cgroup-v2.rst cpu.max), beside scopeshim
    probe = CGROOT / "vm-probe"
    (CGROOT / "cgroup.subtree_control").write_text("+cpu\n")
    probe.mkdir()
    try:
        (probe / "cpu.max").write_text("200000 2000000\n")
        out["kernel_2s"] = "ok"
    except OSError as e:
        out["kernel_2s"] = errno.errorcode[e.errno or 0]
    finally:
        probe.rmdir()
    for unit, props in (
        ("period2s.scope", {"CPUQuotaPerSecUSec": t(200_000), "CPUQuotaPeriodUSec": t(2_000_000)}),
        ("halfpct.scope", {"CPUQuotaPerSecUSec": t(5_000)}),
    ):
        sleeper = subprocess.Popen(["sleep", "3600"])
        try:
            out[unit] = {"job": await shim.start(unit, [sleeper.pid], **props)}
            out[unit]["cpu.max"] = read(unit, "cpu.max")
        finally:
            await shim.stop(unit)
            sleeper.wait(10)
    return out


@check
async def io_bandwidth_reset(shim: Shim) -> dict[str, Any]:
    sleeper, unit = subprocess.Popen(["sleep", "3600"]), "ioreset.scope"
    limit = bandwidth(IO_DEVICE, MIB)
    try:
        out: dict[str, Any] = {
            "job": await shim.start(
                unit, [sleeper.pid], IOReadBandwidthMax=limit, IOWriteBandwidthMax=limit
            )
        }
        out["limited"] = read(unit, "io.max")
        await shim.set(unit, IOWriteBandwidthMax=Variant("a(st)", []))
        out["write_reset"] = read(unit, "io.max")
        await shim.set(unit, IOReadBandwidthMax=Variant("a(st)", []))
        out["reset"] = read(unit, "io.max")
        return out
    finally:
        await shim.stop(unit)
        sleeper.wait(10)


# -- the seeds' acceptance test: a delegated scope, stricter nested limits, no raise, no escape

DELEGATEE = r"""
import errno, json, os, subprocess, sys, time
S = sys.argv[1]
PY, WORKLOAD = sys.argv[2], sys.argv[3]
out = {"uid": os.getuid()}
def attempt(name, fn):
    try:
        fn()
        out[name] = "ok"
    except OSError as e:
        out[name] = errno.errorcode[e.errno]
def write(path, value):
    with open(path, "w") as f:
        f.write(value)
def read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        return errno.errorcode[e.errno]
def events(path):
    return dict((k, int(v)) for k, v in (l.split() for l in read(path).splitlines()))
def run_in(cg, *args):
    # a workload moved into CG before it acts; its exit status (-9: killed)
    p = subprocess.Popen([PY, "-S", WORKLOAD, *args], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "ready\n"
    write(cg + "/cgroup.procs", str(p.pid))
    p.stdin.write("go\n"); p.stdin.flush()
    line = p.stdout.readline()
    p.stdin.close()
    return {"exit": p.wait(), "out": json.loads(line) if line else None}
sys.stdin.readline()
attempt("mkdir_leaf", lambda: os.mkdir(S + "/leaf"))
attempt("move_self", lambda: write(S + "/leaf/cgroup.procs", str(os.getpid())))
attempt("enable", lambda: write(S + "/cgroup.subtree_control", "+memory +cpu +pids"))
attempt("mkdir_child", lambda: os.mkdir(S + "/child"))
attempt("child_memory", lambda: write(S + "/child/memory.max", str(64 << 20)))
attempt("child_cpu", lambda: write(S + "/child/cpu.max", "20000 100000"))
out["child_files"] = {f: read(S + "/child/" + f) for f in ("memory.max", "cpu.max")}
out["child_alloc"] = run_in(S + "/child", "alloc", "200")
out["child_memory_events"] = events(S + "/child/memory.events")
out["child_small"] = run_in(S + "/child", "alloc", "16")
out["child_burn"] = run_in(S + "/child", "burn", "2")
out["child_cpu_stat"] = events(S + "/child/cpu.stat")
# a child that raises its own limit above the scope's is still held by the scope's
attempt("mkdir_greedy", lambda: os.mkdir(S + "/greedy"))
attempt("greedy_memory", lambda: write(S + "/greedy/memory.max", "max"))
out["greedy_alloc"] = run_in(S + "/greedy", "alloc", "200")
out["scope_memory_events"] = events(S + "/memory.events")
attempt("raise_memory", lambda: write(S + "/memory.max", "max"))
attempt("raise_cpu", lambda: write(S + "/cpu.max", "max 100000"))
attempt("raise_pids", lambda: write(S + "/pids.max", "max"))
attempt("escape", lambda: write(S + "/../cgroup.procs", str(os.getpid())))
attempt("escape_root", lambda: write("/sys/fs/cgroup/cgroup.procs", str(os.getpid())))
attempt("sibling", lambda: os.mkdir(S + "/../intruder"))
out["scope_files"] = {f: read(S + "/" + f) for f in ("memory.max", "cpu.max")}
out["cgroup"] = [x for x in open("/proc/self/cgroup").read().split() if x[:3] == "0::"][0]
print(json.dumps(out), flush=True)
sys.stdin.read()
"""


@check
async def delegation(shim: Shim) -> dict[str, Any]:
    unit = "deleg.scope"
    nobody = 65534
    proc = subprocess.Popen(
        [PY, "-S", "-c", DELEGATEE, str(SLICE / unit), PY, str(HERE / "workload.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        user=nobody,
        group=nobody,
        extra_groups=[],
        cwd="/",
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        out: dict[str, Any] = {
            "job": await shim.start(
                unit,
                [proc.pid],
                Delegate=Variant("b", True),
                User=Variant("s", "nobody"),
                MemoryMax=t(128 * MIB),
                CPUQuotaPerSecUSec=t(500_000),
            )
        }
        out["files"] = {f: read(unit, f) for f in ("memory.max", "cpu.max", "cgroup.controllers")}
        out["owner"] = os.stat(SLICE / unit).st_uid
        proc.stdin.write("go\n")
        proc.stdin.flush()
        line = await asyncio.to_thread(proc.stdout.readline)
        out["delegatee"] = json.loads(line) if line else {"exit": proc.wait()}
        return out
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()
        await shim.stop(unit)
        proc.wait(10)
        out_exists = (SLICE / unit).exists()
        if out_exists:
            raise RuntimeError(f"{unit} left behind")


# ---- issue 17: the seeds' story (drop-in, user slices, persistent set-property) -------------

UNIT_ROOT = Path("/run/scopeshim-vm/unit-root")  # --unit-root: etc/ and run/ writable, usr -> /usr
USER_SLICE = CGROOT / "user.slice"


async def prop(shim: Shim, unit: str, interface: str, name: str) -> Any:
    """A unit's property as its D-Bus value (GetUnit, then Properties.Get)."""
    path = (await shim.call("GetUnit", "s", [unit])).body[0]
    reply = await shim.call(
        "Get",
        "ss",
        [f"org.freedesktop.systemd1.{interface}", name],
        path=path,
        interface="org.freedesktop.DBus.Properties",
    )
    return reply.body[0].value


async def session(shim: Shim, number: int, uid: int, pids: list[int]) -> str:
    """session-N.scope as logind 252 asks for it (logind-dbus.c manager_start_scope: the
    user's slice, After= logind and user-sessions, SendSIGHUP=, TasksMax= left to the slice)."""
    return await shim.start(
        f"session-{number}.scope",
        pids,
        Description=Variant("s", f"Session {number} of User {uid}"),
        Slice=Variant("s", f"user-{uid}.slice"),
        After=Variant("as", ["systemd-logind.service", "systemd-user-sessions.service"]),
        SendSIGHUP=Variant("b", True),
    )


def user_files(uid: int) -> dict[str, str | None]:
    return {f: read(f"user-{uid}.slice", f, USER_SLICE) for f in ("memory.max", "pids.max")}


@check
async def user_slices(shim: Shim) -> dict[str, Any]:
    # the admin's two steps (issue 17), then two users' sessions started as logind 252 sends
    # StartTransientUnit (logind_logins runs logind itself; here the logout, restart and
    # next login are steered one by one)
    dropin = UNIT_ROOT / "etc/systemd/system/user-.slice.d/50-memory.conf"
    control = UNIT_ROOT / "etc/systemd/system.control/user-1001.slice.d"
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text("[Slice]\nMemoryMax=64M\n")
    await shim.call("Reload", "", [])
    out: dict[str, Any] = {}
    sleepers = [subprocess.Popen(["sleep", "3600"], user=u, group=u) for u in (1000, 1001)]
    worker = Worker("alloc", "200", user=1000)
    try:
        out["jobs"] = [
            await session(shim, 1, 1000, [sleepers[0].pid, worker.pid]),
            await session(shim, 2, 1001, [sleepers[1].pid]),
        ]
        out["files"] = {u: user_files(u) for u in (1000, 1001)}
        out["dropins"] = await prop(shim, "user-1000.slice", "Unit", "DropInPaths")
        out["worker"] = await worker.go()
        out["events"] = read("user-1000.slice", "memory.events", USER_SLICE)
        # systemctl set-property user-1001.slice MemoryMax=32M TasksMax=100 (no --runtime)
        settings = [["MemoryMax", t(32 * MIB)], ["TasksMax", t(100)]]
        await shim.call("SetUnitProperties", "sba(sv)", ["user-1001.slice", False, settings])
        out["control"] = {p.name: p.read_text() for p in sorted(control.iterdir())}
        out["set"] = user_files(1001)
        # logout: the last session ends, the slice (StopWhenUnneeded=yes) goes with it
        out["logout"] = await shim.stop("session-2.scope")
        sleepers[1].wait(10)
        for _ in range(100):
            if not (USER_SLICE / "user-1001.slice").exists():
                break
            await asyncio.sleep(0.1)
        out["slice_gone"] = not (USER_SLICE / "user-1001.slice").exists()
        await shim.restart()
        sleepers[1] = subprocess.Popen(["sleep", "3600"], user=1001, group=1001)
        out["relogin"] = await session(shim, 3, 1001, [sleepers[1].pid])
        out["again"] = user_files(1001)
        out["again_dropins"] = await prop(shim, "user-1001.slice", "Unit", "DropInPaths")
        out["survivor"] = user_files(1000)
        return out
    finally:
        worker.end()
        for unit in ("session-1.scope", "session-3.scope", "user-1000.slice", "user-1001.slice"):
            with contextlib.suppress(RuntimeError):
                await shim.stop(unit)
        for s in sleepers:
            s.kill()
            s.wait(10)
        dropin.unlink()
        if control.exists():
            shutil.rmtree(control)
        await shim.call("Reload", "", [])


# ---- issue 17 with the real logind 252: two logins the way pam_systemd makes them -----------

LOGIND = "/lib/systemd/systemd-logind"  # Debian's 252, from the host's /usr
LOGIND_CONF = Path("/run/systemd/logind.conf.d/vm.conf")
LOGIN_CLIENT = ROOT / "tests/e2e/login_client.py"  # CreateSession as pam_systemd calls it
LOGIN_UIDS = (1000, 65534)  # the host's /etc/passwd has these two (the guest's /etc)


async def wait_gone(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while path.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return not path.exists()


@check
async def logind_logins(shim: Shim) -> dict[str, Any]:
    dropin = UNIT_ROOT / "etc/systemd/system/user-.slice.d/50-memory.conf"
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text("[Slice]\nMemoryMax=64M\n")
    await shim.call("Reload", "", [])
    LOGIND_CONF.parent.mkdir(parents=True, exist_ok=True)
    LOGIND_CONF.write_text(
        "[Login]\nNAutoVTs=0\nReserveVT=0\nKillUserProcesses=no\nUserStopDelaySec=0\n"
        "HandlePowerKey=ignore\nHandleSuspendKey=ignore\nHandleHibernateKey=ignore\n"
        "HandleLidSwitch=ignore\n"
    )
    log = open(OUT / "logind.log", "wb")  # noqa: SIM115
    env = {**os.environ, "SYSTEMD_LOG_LEVEL": "debug", "SYSTEMD_LOG_TARGET": "console"}
    logind = subprocess.Popen([LOGIND], stdout=log, stderr=log, env=env)
    clients: list[subprocess.Popen[str]] = []
    worker = Worker("alloc", "200", user=LOGIN_UIDS[0])
    out: dict[str, Any] = {}
    try:
        await wait_name(shim.bus, "org.freedesktop.login1", 120)
        for uid in LOGIN_UIDS:
            client = subprocess.Popen(
                [sys.executable, str(LOGIN_CLIENT), str(uid), "--gid", str(uid)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            clients.append(client)
            assert client.stdout is not None
            line = await asyncio.to_thread(client.stdout.readline)
            out[f"login_{uid}"] = json.loads(line) if line else {"exit": client.wait()}
        out["files"] = {uid: user_files(uid) for uid in LOGIN_UIDS}
        session = out[f"login_{LOGIN_UIDS[0]}"].get("session")
        # a process of the user in the session, as the login's children are (root writes it
        # to the scope's cgroup.procs: AttachProcessesToUnit refuses non-delegated units, as
        # systemd does), allocates
        await worker.ready()
        scope_dir = USER_SLICE / f"user-{LOGIN_UIDS[0]}.slice" / f"session-{session}.scope"
        (scope_dir / "cgroup.procs").write_text(str(worker.pid))
        out["worker"] = await worker.go()
        out["events"] = read(f"user-{LOGIN_UIDS[0]}.slice", "memory.events", USER_SLICE)
        # logout: ReleaseSession, the leader exits; logind stops the user's units
        for client in clients:
            assert client.stdin is not None
            client.stdin.write("release\nexit\n")
            client.stdin.flush()
            await asyncio.to_thread(client.wait, 30)
        out["gone"] = {
            uid: await wait_gone(USER_SLICE / f"user-{uid}.slice", 60) for uid in LOGIN_UIDS
        }
        return out
    finally:
        worker.end()
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.wait()
        logind.terminate()
        try:
            await asyncio.to_thread(logind.wait, 30)
        except subprocess.TimeoutExpired:
            logind.kill()
            logind.wait()
        log.close()
        for uid in LOGIN_UIDS:
            for unit in (f"user@{uid}.service", f"user-runtime-dir@{uid}.service",
                         f"user-{uid}.slice"):  # fmt: skip
                with contextlib.suppress(RuntimeError, TimeoutError):
                    await shim.stop(unit)
        dropin.unlink()
        await shim.call("Reload", "", [])


# ---- issue 18: a transient service's limits are there before it execs -----------------------

SHOW_LIMIT = 'cat "/sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/{0}" > {1}; exec "$@"'


async def service_run(
    shim: Shim, unit: str, file: str, argv: list[str], **props: Variant
) -> dict[str, Any]:
    """A transient service whose ExecStart= first writes its own cgroup's FILE (what the
    kernel held at exec) then execs ARGV; its job, the file, and what systemd properties say
    once it is over."""
    seen = Path(f"/run/{unit}.limit")
    command = ["/bin/sh", "-c", SHOW_LIMIT.format(file, seen), "sh", *argv]
    out: dict[str, Any] = {
        "job": await shim.start_service(unit, command, **props),
    }
    state = "unloaded"  # a transient service that succeeded is collected (unloaded)
    for _ in range(600):
        try:
            state = await prop(shim, unit, "Unit", "ActiveState")
        except RuntimeError as e:
            if "NoSuchUnit" not in str(e):
                raise
            break
        if state in ("failed", "inactive"):
            break
        await asyncio.sleep(0.1)
    out["state"] = state
    out["at_exec"] = seen.read_text().strip() if seen.exists() else None
    if state != "unloaded":
        for name in ("Result", "ExecMainCode", "ExecMainStatus"):
            out[name] = await prop(shim, unit, "Service", name)
    out["cgroup_left"] = (SLICE / unit).exists()
    with contextlib.suppress(RuntimeError):
        await shim.call("ResetFailedUnit", "s", [unit])
    with contextlib.suppress(RuntimeError):
        out["loaded_after_reset"] = await prop(shim, unit, "Unit", "LoadState")
    return out


ALLOC = "import sys; b = b'x' * (int(sys.argv[1]) << 20); print(len(b))"
FORKS = """import json, os, sys, time
kids, error = [], None
while len(kids) < 10:
    try:
        pid = os.fork()
    except OSError as e:
        error = e.errno
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    kids.append(pid)
for pid in kids:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
open(sys.argv[1], "w").write(json.dumps({"forked": len(kids), "errno": error}))
"""


@check
async def service_memory_max(shim: Shim) -> dict[str, Any]:
    return await service_run(
        shim, "oomsvc.service", "memory.max", [PY, "-S", "-c", ALLOC, "200"],
        MemoryMax=t(32 * MIB), MemorySwapMax=t(0),
    )  # fmt: skip


@check
async def service_tasks_max(shim: Shim) -> dict[str, Any]:
    report = Path("/run/forksvc.json")
    out = await service_run(
        shim, "forksvc.service", "pids.max", [PY, "-S", "-c", FORKS, str(report)],
        TasksMax=t(4), Type=Variant("s", "oneshot"),
    )  # fmt: skip
    out["forks"] = json.loads(report.read_text()) if report.exists() else None
    return out


# ---- issue 16 item 5: the user manager's own scopes, in its delegated subtree --------------

USER_UID = 1000  # the host's /etc/passwd entry (the guest's /etc is the host's, read-only)
USER_PROBE = """import errno, json, os, time
def attempt(path, text):
    try:
        with open(path, "w") as f:
            f.write(text)
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
cg = open("/proc/self/cgroup").read().strip().partition("::")[2]
here = "/sys/fs/cgroup" + cg
manager = here.partition("/app.slice/")[0]
out = {"cgroup": cg}
for name in ("memory.max", "pids.max"):
    out[name] = open(here + "/" + name).read().strip()
kids, error = [], None
while len(kids) < 10:
    try:
        pid = os.fork()
    except OSError as e:
        error = errno.errorcode[e.errno]
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    kids.append(pid)
for pid in kids:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
out["forked"], out["fork_error"] = len(kids), error
out["raise_memory"] = attempt(manager + "/memory.max", "max")
out["raise_pids"] = attempt(manager + "/pids.max", "max")
out["leave"] = attempt(os.path.dirname(manager) + "/cgroup.procs", str(os.getpid()))
out["leave_root"] = attempt("/sys/fs/cgroup/cgroup.procs", str(os.getpid()))
out["still"] = open("/proc/self/cgroup").read().strip()
print(json.dumps(out), flush=True)
b = b"x" * (200 << 20)
print("survived", len(b), flush=True)
"""


@check
async def user_manager_scopes(shim: Shim) -> dict[str, Any]:
    uid = USER_UID
    service = f"user@{uid}.service"
    tree = USER_SLICE / f"user-{uid}.slice" / service
    out: dict[str, Any] = {}
    try:
        # what logind 252 starts at a user's first login (user_start_service)
        out["runtime_dir"] = await shim._job(
            "StartUnit", "ss", [f"user-runtime-dir@{uid}.service", "replace"]
        )
        out["manager"] = await shim._job("StartUnit", "ss", [service, "replace"])
        # the admin's limit on the user manager's own cgroup (the user's whole tree)
        await shim.set(service, MemoryMax=t(256 * MIB), TasksMax=t(64))
        out["service_files"] = {
            f: read(service, f, tree.parent) for f in ("memory.max", "pids.max")
        }
        out["owner"] = os.stat(tree).st_uid
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": "/",
            "XDG_RUNTIME_DIR": f"/run/user/{uid}",
            "DBUS_SESSION_BUS_ADDRESS": f"unix:path=/run/user/{uid}/bus",
        }
        argv = ["systemd-run", "--user", "--scope", "--unit", "vm-user",
                "-p", "MemoryMax=64M", "-p", "TasksMax=5", "-p", "MemorySwapMax=0",
                PY, "-S", "-c", USER_PROBE]  # fmt: skip
        p = await asyncio.to_thread(
            subprocess.run, argv, env=env, user=uid, group=uid, extra_groups=[], cwd="/",
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        out["run"] = {"rc": p.returncode, "err": p.stderr[-1500:]}
        first, _, rest = p.stdout.partition("\n")
        out["probe"] = json.loads(first) if first.startswith("{") else p.stdout[-1500:]
        out["survived"] = "survived" in rest
        # the scope is gone once its only process was killed (at once, since the stop path
        # got faster): app.slice's memory.events counts its descendants' kills too
        # (cgroup-v2.rst), and nothing else under it has a limit the probe's 200 MiB exceeds
        out["scope_events"] = read("app.slice", "memory.events", tree)
        out["service_after"] = {
            f: read(service, f, tree.parent) for f in ("memory.max", "pids.max")
        }
        return out
    finally:
        for unit in (service, f"user-runtime-dir@{uid}.service", f"user-{uid}.slice"):
            with contextlib.suppress(RuntimeError, TimeoutError):
                out[f"stop {unit}"] = await shim.stop(unit)
        out["left"] = tree.exists()


# ---- issue 23: runc update through scopeshim, the limits in the kernel ----------------------


@check
async def runc_update(shim: Shim) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from tests.e2e import oci_bundle

    bundle = Path("/tmp/runc-c1")
    state = "/run/runc-vm"
    oci_bundle.build(bundle, ["sleep", "3600"])
    marker = Path("/run/systemd/system")  # runc's IsRunningSystemd: sd_booted(3)
    marker.mkdir(parents=True, exist_ok=True)
    unit = "runc-c1.scope"

    def runc(*args: str) -> dict[str, Any]:
        # files, not pipes: a detached container keeps runc's stdout and stderr open
        with open("/run/runc.out", "w+") as so, open("/run/runc.err", "w+") as se:
            p = subprocess.run(
                ["runc", "--systemd-cgroup", "--root", state, *args],
                stdout=so, stderr=se, timeout=120, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            se.seek(0)
            return {"rc": p.returncode, "err": se.read()[-1000:]}

    files = ("pids.max", "memory.max", "cpu.max")
    out: dict[str, Any] = {}
    try:
        out["run"] = await asyncio.to_thread(runc, "run", "--detach", "--bundle", str(bundle), "c1")
        out["before"] = {f: read(unit, f) for f in files}
        out["pids"] = await asyncio.to_thread(runc, "update", "--pids-limit", "100", "c1")
        out["memory"] = await asyncio.to_thread(runc, "update", "--memory", "100M", "c1")
        out["cpu"] = await asyncio.to_thread(
            runc, "update", "--cpu-period", "100000", "--cpu-quota", "50000", "c1"
        )
        out["after"] = {f: read(unit, f) for f in files}
        out["props"] = {
            name: await prop(shim, unit, "Scope", name) for name in ("TasksMax", "MemoryMax")
        }
        # the new pids limit holds: runc exec's tasks (its init's threads, the shell's forks)
        # do not fit beside the container's sleep
        out["pids2"] = await asyncio.to_thread(runc, "update", "--pids-limit", "3", "c1")
        out["pids_events_before"] = read(unit, "pids.events")
        out["exec"] = await asyncio.to_thread(
            runc, "exec", "c1", "sh", "-c", "sleep 5 & sleep 5 & sleep 5 & wait"
        )
        out["pids_events"] = read(unit, "pids.events")
    finally:
        out["delete"] = await asyncio.to_thread(runc, "delete", "--force", "c1")
        for _ in range(50):
            if not (SLICE / unit).exists():
                break
            await asyncio.sleep(0.1)
        out["left"] = (SLICE / unit).exists()
        marker.rmdir()
    return out


# ---- the run ---------------------------------------------------------------------------------


def record(results: Any, **fields: Any) -> None:
    print(f"{time.monotonic():.1f} {fields.get('check')}", file=sys.stderr, flush=True)
    results.write(json.dumps(fields) + "\n")
    results.flush()
    os.fsync(results.fileno())


async def wait_name(bus: MessageBus, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = await bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="NameHasOwner",
                signature="s",
                body=[name],
            )
        )
        if reply is not None and reply.body and reply.body[0]:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{name} did not appear on the bus in {timeout} s")


async def run(results: Any, only: set[str]) -> None:
    run_dir = Path("/run/scopeshim-vm")
    run_dir.mkdir(parents=True, exist_ok=True)
    Path("/run/dbus").mkdir(exist_ok=True)
    (run_dir / "bus.conf").write_text(BUS_CONFIG)
    (run_dir / "scopeshim.toml").write_text(CONFIG)
    bus_log = open(OUT / "dbus.log", "wb")  # noqa: SIM115
    shim_log = open(OUT / "scopeshim.log", "wb")  # noqa: SIM115
    started = time.monotonic()
    print(f"{started:.1f} starting", file=sys.stderr, flush=True)
    dbus = subprocess.Popen(
        ["dbus-daemon", "--nofork", "--nopidfile", f"--config-file={run_dir / 'bus.conf'}"],
        stdout=bus_log,
        stderr=bus_log,
    )
    os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = f"unix:path={SOCKET}"
    for _ in range(200):
        if os.path.exists(SOCKET):
            break
        await asyncio.sleep(0.05)
    UNIT_ROOT.mkdir(parents=True, exist_ok=True)
    for top in ("usr", "lib"):  # the host's (Debian's) units and drop-ins, read-only
        if not (UNIT_ROOT / top).exists():
            (UNIT_ROOT / top).symlink_to(f"/{top}")
    argv = [
        sys.executable,
        "-m",
        "shim",
        "serve",
        "--system",
        "--backend",
        "cgroup2",
        "--cgroup-root",
        str(CGROOT),
        "--state-dir",
        "/run/scopeshim",
        "--log-level",
        "debug",
        "--config",
        str(run_dir / "scopeshim.toml"),
        "--unit-root",
        str(UNIT_ROOT),
    ]
    daemon = subprocess.Popen(argv, cwd=ROOT, stdout=shim_log, stderr=shim_log)
    try:
        bus = await MessageBus(bus_address=f"unix:path={SOCKET}").connect()
        await wait_name(bus, "org.freedesktop.systemd1", 180)
        shim = Shim(bus)

        async def restart() -> None:
            nonlocal daemon
            daemon.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(daemon.wait, 60)
            print(f"{time.monotonic():.1f} scopeshim exited {code}: again", file=sys.stderr)
            daemon = subprocess.Popen(argv, cwd=ROOT, stdout=shim_log, stderr=shim_log)
            await wait_name(bus, "org.freedesktop.systemd1", 180)

        shim.restarter = restart
        await shim.call(
            "AddMatch",
            "s",
            ["type='signal',sender='org.freedesktop.systemd1'"],
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
        )
        record(results, check="_setup", seconds=time.monotonic() - started)
        for name, fn in CHECKS.items():
            if only and name not in only:
                continue
            t0 = time.monotonic()
            try:
                out = await asyncio.wait_for(fn(shim), 180)
                record(results, check=name, seconds=time.monotonic() - t0, **out)
            except Exception:
                record(
                    results, check=name, seconds=time.monotonic() - t0, error=traceback.format_exc()
                )
        bus.disconnect()
    finally:
        for name, proc in (("scopeshim", daemon), ("dbus-daemon", dbus)):
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            record(results, check=f"_exit_{name}", exit=code)
        left = sorted(
            f"{s.name}/{p.name}"
            for s in (SLICE, CGROOT / "user.slice", CGROOT / "limits.slice")
            if s.is_dir()
            for p in s.iterdir()
            if p.is_dir()
        )
        record(results, check="_leftovers", cgroups=left, seconds=time.monotonic() - started)


def main() -> None:
    only = set(os.environ.get("SCOPESHIM_VM_ONLY", "").split(",")) - {""}
    with open(OUT / "results.jsonl", "a") as results:
        asyncio.run(run(results, only))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
