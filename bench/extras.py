"""Issue 20's measures for bench/driver.py: a kubelet-sized burst, responsiveness with many
units, bytes on the bus per scope lifecycle, transient services (systemd-run --wait).

Each is a coroutine taking the driver's Bench (its Client, Children, a second and a monitor
connection made here) and returning a JSON-able dict. Same calls for every peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

if TYPE_CHECKING:
    from driver import Bench, Client

PROPS = "org.freedesktop.DBus.Properties"
UNIT = "org.freedesktop.systemd1.Unit"
KUBE_PODS = 100
KUBE_CONTAINERS = 2
KUBE_INFLIGHT = 32
BURST = 256
# argv: systemd-run, true, count; prints the seconds of each `systemd-run --wait true`
SYSTEMD_RUN_LOOP = """
import subprocess, sys, time
run, true, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for _ in range(n):
    t0 = time.perf_counter()
    p = subprocess.run([run, "--wait", "--quiet", "--no-ask-password", true],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if p.returncode:
        sys.exit(p.stderr)
    print(time.perf_counter() - t0, flush=True)
"""  # starts (then stops) with 64 in flight while the second client measures


def log(*parts: object) -> None:
    from driver import log as dlog

    dlog(*parts)


def _s(values: list[float]) -> dict[str, Any]:
    from driver import summary

    return summary(values)


async def second_bus(c: Client) -> MessageBus:
    """Another connection to the same bus (the driver's address)."""
    return await MessageBus(bus_address=c.address, negotiate_unix_fd=True).connect()


async def _call(bus: MessageBus, member: str, sig: str, body: list[Any], path: str,
                iface: str) -> Message:  # fmt: skip
    msg = Message(destination="org.freedesktop.systemd1", path=path, interface=iface,
                  member=member, signature=sig, body=body)  # fmt: skip
    reply = await bus.call(msg)
    assert reply is not None
    return reply


class Poller:
    """A second client calling in a loop while a burst runs: latencies of each call."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.stop = False
        self.times: dict[str, list[float]] = {}
        self.errors = 0

    async def timed(self, key: str, member: str, sig: str, body: list[Any], path: str,
                    iface: str) -> Message:  # fmt: skip
        t0 = time.perf_counter()
        reply = await _call(self.bus, member, sig, body, path, iface)
        self.times.setdefault(key, []).append(time.perf_counter() - t0)
        if reply.message_type is MessageType.ERROR:
            self.errors += 1
        return reply

    async def version_loop(self) -> None:
        while not self.stop:
            await self.timed("get_version", "Get", "ss",
                             ["org.freedesktop.systemd1.Manager", "Version"],
                             "/org/freedesktop/systemd1", PROPS)  # fmt: skip
            await asyncio.sleep(0.01)

    async def unit_loop(self, names: list[str]) -> None:
        rng = random.Random(len(names))
        while not self.stop:
            name = rng.choice(names)
            reply = await self.timed("get_unit", "GetUnit", "s", [name],
                                     "/org/freedesktop/systemd1",
                                     "org.freedesktop.systemd1.Manager")  # fmt: skip
            if reply.message_type is not MessageType.ERROR:
                await self.timed("get_active_state", "Get", "ss", [UNIT, "ActiveState"],
                                 reply.body[0], PROPS)  # fmt: skip
            await asyncio.sleep(0.005)

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: _s(v) for k, v in self.times.items()}
        out["errors"] = self.errors
        return out


# -- (a) the kubelet-sized burst ----------------------------------------------------------------


def _b(v: bool) -> Variant:
    return Variant("b", v)


def _accounting() -> list[list[Any]]:
    """The *Accounting flags the driver turns on for every unit it makes."""
    return [[f"{what}Accounting", _b(True)] for what in ("Memory", "CPU", "IO", "Tasks")]


def pod_slice_props(parent: str) -> list[list[Any]]:
    """What opencontainers/cgroups' systemd driver sends for a pod slice (kubelet's
    cgroup manager): Wants= the parent, accounting on, DefaultDependencies=false."""
    return [
        ["Description", Variant("s", "libcontainer container kubepods pod")],
        ["Wants", Variant("as", [parent])],
        ["DefaultDependencies", _b(False)],
        *_accounting(),
        ["MemoryMax", Variant("t", 512 << 20)],
        ["CPUWeight", Variant("t", 102)],
        ["CPUQuotaPerSecUSec", Variant("t", 1_000_000)],
    ]


def container_props(pod: str, pid: int) -> list[list[Any]]:
    """runc's container scope: Delegate=true, resource limits, accounting flags."""
    return [
        ["Description", Variant("s", "libcontainer container")],
        ["Slice", Variant("s", pod)],
        ["Delegate", _b(True)],
        ["PIDs", Variant("au", [pid])],
        ["DefaultDependencies", _b(False)],
        *_accounting(),
        ["MemoryMax", Variant("t", 256 << 20)],
        ["CPUWeight", Variant("t", 39)],
        ["CPUQuotaPerSecUSec", Variant("t", 500_000)],
        ["TasksMax", Variant("t", 4096)],
        ["AllowedCPUs", Variant("ay", b"\x01")],
    ]


async def kube_burst(b: Bench) -> dict[str, Any]:
    """100 pods x 2 containers created, updated, torn down with 32 calls in flight, as
    kubelet + runc drive systemd; a second connection calls Get Version meanwhile."""
    c = b.c
    calls: dict[str, list[float]] = {}

    def note(key: str, t: float) -> None:
        calls.setdefault(key, []).append(t)

    async def ok(member: str, sig: str, body: list[Any], path: str = "/org/freedesktop/systemd1",
                 iface: str = "org.freedesktop.systemd1.Manager") -> Message:  # fmt: skip
        t0 = time.perf_counter()
        reply = await c.call(member, sig, body, path=path, interface=iface)
        note(member, time.perf_counter() - t0)
        return reply

    async def start(name: str, props: list[list[Any]]) -> None:
        from driver import OpError

        done = c.expect("JobRemoved", name)
        t0 = time.perf_counter()
        reply = await ok("StartTransientUnit", "ssa(sv)a(sa(sv))", [name, "replace", props, []])
        if reply.message_type is MessageType.ERROR:
            c.forget("JobRemoved", name)
            raise OpError(f"StartTransientUnit {name}: {reply.error_name}: {reply.body}")
        t1, body = await c.wait(done, f"JobRemoved for {name}")
        note("start_job", t1 - t0)
        if body[3] != "done":
            raise OpError(f"start job of {name} ended {body[3]}")

    async def stop(name: str) -> None:
        done = c.expect("JobRemoved", name)
        t0 = time.perf_counter()
        reply = await ok("StopUnit", "ss", [name, "replace"])
        if reply.message_type is MessageType.ERROR:
            c.forget("JobRemoved", name)  # gone already: runc ignores NoSuchUnit
        else:
            t1, _ = await c.wait(done, f"JobRemoved (stop) for {name}")
            note("stop_job", t1 - t0)
        await ok("ResetFailedUnit", "s", [name])  # an error (not failed / gone) is ignored

    parent = "kubepods-burstable.slice"
    for name in ("kubepods.slice", parent):  # kubelet's QoS slices, once, untimed
        with contextlib.suppress(Exception):
            await start(name, pod_slice_props("kubepods.slice")[:5])
    calls.clear()
    pods = [f"kubepods-burstable-pod{uuid.uuid4().hex}.slice" for _ in range(KUBE_PODS)]
    pids = b.kids.take(KUBE_PODS * KUBE_CONTAINERS)
    containers: dict[str, list[str]] = {p: [] for p in pods}
    pid_iter = iter(pids)

    async def create(pod: str) -> None:
        await start(pod, pod_slice_props(parent))
        for _ in range(KUBE_CONTAINERS):
            await ok("Get", "ss", ["org.freedesktop.systemd1.Manager", "Version"], iface=PROPS)
            name = f"cri-containerd-{uuid.uuid4().hex}.scope"
            containers[pod].append(name)
            await start(name, container_props(pod, next(pid_iter)))

    async def update(pod: str) -> None:
        new = [["MemoryMax", Variant("t", 768 << 20)], ["CPUWeight", Variant("t", 204)],
               ["CPUQuotaPerSecUSec", Variant("t", 2_000_000)]]  # fmt: skip
        await ok("SetUnitProperties", "sba(sv)", [pod, True, new])
        for name in containers[pod]:
            await ok("SetUnitProperties", "sba(sv)", [name, True, new[:2]])

    async def teardown(pod: str) -> None:
        for name in containers[pod]:
            await stop(name)
        await stop(pod)

    bus2 = await second_bus(c)
    poll = Poller(bus2)
    loop = asyncio.create_task(poll.version_loop())
    saved = b.inflight_n
    out: dict[str, Any] = {"pods": KUBE_PODS, "containers_per_pod": KUBE_CONTAINERS,
                           "inflight": KUBE_INFLIGHT}  # fmt: skip
    try:
        b.inflight_n = KUBE_INFLIGHT
        t0 = time.perf_counter()
        for what, op in (("create", create), ("update", update), ("teardown", teardown)):
            _, wall = await b.pooled(pods, op)
            out[f"{what}_s"] = wall
        out["total_s"] = time.perf_counter() - t0
    finally:
        b.inflight_n = saved
        poll.stop = True
        with contextlib.suppress(Exception):
            await loop
        bus2.disconnect()
        for pid in pids:
            b.kids.kill(pid)
    out["calls"] = {k: _s(v) for k, v in calls.items()}
    out["all_calls"] = _s([t for k, v in calls.items() if k not in ("start_job", "stop_job")
                           for t in v])  # fmt: skip
    out["second_client"] = poll.result()
    return out


# -- (b) responsiveness with many units ---------------------------------------------------------


async def responsiveness(b: Bench) -> dict[str, Any]:
    """GetUnit and Get(ActiveState) of random live units from a second connection while
    BURST scope starts then stops run with 64 in flight on the first."""
    bus2 = await second_bus(b.c)
    poll = Poller(bus2)
    names = [n for n, _ in b.live]
    loop = asyncio.create_task(poll.unit_loop(names))
    pids = b.kids.take(BURST)
    pairs = [(b.name("resp"), pid) for pid in pids]
    try:
        _, wall_start = await b.pooled(pairs, lambda p: b.c.start_scope(*p))
        _, wall_stop = await b.pooled([p[0] for p in pairs], b.c.stop_unit)
    finally:
        poll.stop = True
        with contextlib.suppress(Exception):
            await loop
        bus2.disconnect()
        for pid in pids:
            b.kids.kill(pid)
    return {"live_units": len(names), "burst": BURST, "burst_s": wall_start + wall_stop,
            **poll.result()}  # fmt: skip


# -- (c) bytes on the bus -----------------------------------------------------------------------


async def bus_bytes(b: Bench, n: int = 20) -> dict[str, Any]:
    """Messages and bytes the peer emits (every message whose sender is its unique name, as a
    monitor sees them: re-marshalled size) per scope lifecycle, with one subscribed client
    (the driver): start, process exits, removal; and per start + StopUnit cycle."""
    c = b.c
    owner = await c.dbus("GetNameOwner", "s", ["org.freedesktop.systemd1"])
    mon = await second_bus(c)
    seen: list[tuple[str, int]] = []
    counting = False

    failures: list[str] = []

    def on(msg: Message) -> bool:
        # a monitor must never answer (the bus would drop it): never raise, every call "handled"
        # (dbus-fast answers unhandled calls; replies stay unhandled: BecomeMonitor's own)
        try:
            if counting and msg.sender == owner:
                size = len(msg._marshall(True))
                seen.append((f"{msg.message_type.name}:{msg.member or ''}", size))
        except Exception as e:
            failures.append(repr(e)[:200])
        return msg.message_type is MessageType.METHOD_CALL

    mon.add_message_handler(on)
    become = Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                     interface="org.freedesktop.DBus.Monitoring", member="BecomeMonitor",
                     signature="asu", body=[[], 0])  # fmt: skip
    reply = await mon.call(become)
    log(f"bytes: monitor {reply and reply.message_type}")
    if reply is None or reply.message_type is MessageType.ERROR:
        mon.disconnect()
        return {"skipped": f"BecomeMonitor refused: {reply.body if reply else None}"}
    out: dict[str, Any] = {"n": n, "failures": failures}
    try:
        for what in ("lifecycle", "start_stop"):
            await b.settle()
            pids = b.kids.take(n)
            log(f"bytes: {what}")
            seen.clear()
            counting = True
            for pid in pids:
                if what == "lifecycle":
                    await b.lifecycle_one(pid)
                else:
                    name = b.name("bytes")
                    await c.start_scope(name, pid)
                    removed = c.expect("UnitRemoved", name)
                    await c.stop_unit(name)
                    await c.wait(removed, f"UnitRemoved of {name}")
            await asyncio.sleep(0.5)  # signals sent after the last one we waited for
            counting = False
            for pid in pids:
                b.kids.kill(pid)
            members: dict[str, int] = {}
            for m, _ in seen:
                members[m] = members.get(m, 0) + 1
            out[what] = {
                "messages": len(seen) / n,
                "bytes": sum(s for _, s in seen) / n,
                "by_member": {k: v / n for k, v in sorted(members.items())},
            }
    finally:
        mon.disconnect()
    return out


# -- (d) transient services ---------------------------------------------------------------------


async def services(b: Bench, n: int = 30) -> dict[str, Any]:
    """StartTransientUnit(service, ExecStart=/bin/true) -> JobRemoved -> UnitRemoved (the
    service exited and was collected); and `systemd-run --wait true` end to end."""
    from driver import OpError

    c = b.c
    true = shutil.which("true") or "/bin/true"
    job, gone = [], []
    for i in range(n + 3):
        name = f"bench-svc-{b.seq}-{i}.service"
        done = c.expect("JobRemoved", name)
        removed = c.expect("UnitRemoved", name)
        t0 = time.perf_counter()
        reply = await c.call("StartTransientUnit", "ssa(sv)a(sa(sv))", [
            name, "fail",
            [["ExecStart", Variant("a(sasb)", [[true, [true], False]])],
             ["Description", Variant("s", "bench service")]], []])  # fmt: skip
        if reply.message_type is MessageType.ERROR:
            c.forget("JobRemoved", name)
            c.forget("UnitRemoved", name)
            raise OpError(f"StartTransientUnit {name}: {reply.error_name}: {reply.body}")
        t1, _ = await c.wait(done, f"JobRemoved for {name}")
        t2, _ = await c.wait(removed, f"UnitRemoved for {name}")
        if i >= 3:
            job.append(t1 - t0)
            gone.append(t2 - t0)
    out: dict[str, Any] = {"job_removed": _s(job), "exited_removed": _s(gone)}
    run = shutil.which("systemd-run")
    if run is None:
        out["systemd_run"] = {"skipped": "systemd-run not installed"}
        return out
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": c.address}
    # the same timing loop for every peer, in a child process; systemd-run refuses to run
    # unless /run/systemd/system marks systemd as PID 1: where it is missing (scopeshim), the
    # loop gets the marker in a mount namespace of its own, as tests/e2e/logind_kit.py does
    argv = [sys.executable, "-c", SYSTEMD_RUN_LOOP, run, true, str(n + 3)]
    if not os.path.isdir("/run/systemd/system") and shutil.which("unshare"):
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                "mount -t tmpfs -o size=1m,mode=755 bench-booted /run/systemd"
                ' && mkdir /run/systemd/system && exec "$@"', "sh", *argv]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    raw, err = await proc.communicate()
    if proc.returncode != 0:
        out["systemd_run"] = {"skipped": f"exit {proc.returncode}: {err.decode()[-300:]}"}
        return out
    times = [float(v) for v in raw.split()][3:]
    out["systemd_run"] = _s(times)
    return out
