"""Inside the sandbox: DevicePolicy=/DeviceAllow= on the real kernel's cgroup2 (a
BPF_PROG_TYPE_CGROUP_DEVICE program per unit, backends/bpfdev.py).

The scope's only process is a prober that sits idle until told to try opening device nodes
(and mknod), so every attempt is made from inside the scope, under its filter. The nodes it
tries live in the sandbox's private /run: /dev/null and /dev/zero themselves, and copies
of /dev/loop-control (c 10:237) and /dev/loop0 (b 7:0) made with mknod, which nothing
allows under DevicePolicy=closed. Each step reports the outcomes, the programs attached to
the scope's cgroup, the daemon's bpf-prog fds and the properties as the bus reads them back.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dbus_fast import Variant

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from backends import bpfdev
from tests.e2e.inside import (
    CGROOT,
    call,
    connect,
    report,
    start_scopeshim,
    stop,
    subscribe,
    wait_name,
)

UNIT = "devices.scope"
UNIT_PATH = "/org/freedesktop/systemd1/unit/devices_2escope"
SCOPE = "org.freedesktop.systemd1.Scope"
NODES = Path("/run/devtest")
LOOP_CONTROL, LOOP0 = str(NODES / "loop-control"), str(NODES / "loop0")
# op: r, w (open O_RDONLY/O_WRONLY), mknod-c-MAJ-MIN (a node in /run/devtest, removed again)
CHECKS = [
    ["r", "/dev/null"],
    ["w", "/dev/null"],
    ["r", "/dev/zero"],
    ["r", LOOP_CONTROL],
    ["w", LOOP_CONTROL],
    ["r", LOOP0],
    ["mknod-c-1-3", ""],
    ["mknod-c-10-237", ""],
]

# what runc 1.1.5 sends for runc spec's default devices (test_clients_runc.py)
RUNC_DEFAULTS = {
    "DevicePolicy": "strict",
    "DeviceAllow": [
        ("char-pts", "rwm"), ("/dev/char/10:200", "rwm"), ("/dev/char/5:2", "rwm"),
        ("/dev/char/5:0", "rwm"), ("/dev/char/1:9", "rwm"), ("/dev/char/1:8", "rwm"),
        ("/dev/char/1:7", "rwm"), ("/dev/char/1:5", "rwm"), ("/dev/char/1:3", "rwm"),
        ("char-*", "m"), ("block-*", "m"),
    ],
}  # fmt: skip

PROBER = f"""
import errno, json, os, stat, sys
for line in sys.stdin:
    out = {{}}
    for op, path in json.loads(line):
        try:
            if op.startswith("mknod-c-"):
                major, minor = map(int, op.split("-")[2:])
                node = {str(NODES)!r} + f"/m-{{major}}-{{minor}}"
                os.mknod(node, 0o600 | stat.S_IFCHR, os.makedev(major, minor))
                os.unlink(node)
            else:
                flags = os.O_RDONLY if op == "r" else os.O_WRONLY
                os.close(os.open(path, flags | os.O_CLOEXEC | os.O_NONBLOCK))
            result = "ok"
        except OSError as e:
            result = errno.errorcode.get(e.errno, str(e.errno))
        out[(op + " " + path).strip()] = result
    print(json.dumps(out), flush=True)
"""


class Prober:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PROBER], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )

    async def probe(self) -> dict[str, str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(CHECKS) + "\n").encode())
        self.proc.stdin.flush()
        loop = asyncio.get_running_loop()
        line = await asyncio.wait_for(loop.run_in_executor(None, self.proc.stdout.readline), 10)
        result: dict[str, str] = json.loads(line)
        return result


def daemon_bpf_fds(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:bpf-prog"
        except OSError:
            continue
    return count


def attached(directory: Path) -> list[dict[str, Any]]:
    return [{"id": p.id, "name": p.name, "type": p.type} for p in bpfdev.attached(directory)]


def freed(prog_id: int, timeout: float = 5) -> bool:
    """Whether the program is gone from the kernel (nothing references it any more)."""
    kernel = bpfdev.Kernel()
    deadline = time.monotonic() + timeout
    while True:
        try:
            kernel.close(kernel.prog_fd_by_id(prog_id))
        except bpfdev.BpfError as e:
            return e.errno == errno.ENOENT
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


async def properties(bus: Any) -> dict[str, Any]:
    out = {}
    for name in ("DevicePolicy", "DeviceAllow", "ControlGroup"):
        reply = await call(
            bus, "Get", "ss", [SCOPE, name], path=UNIT_PATH,
            interface="org.freedesktop.DBus.Properties",
        )  # fmt: skip
        out[name] = reply.body[0].value
    return out


async def set_properties(bus: Any, *props: list[Any]) -> None:
    await call(bus, "SetUnitProperties", "sba(sv)", [UNIT, True, list(props)])


def verifier_accepts() -> dict[str, str]:
    """Programs for assorted rule sets, loaded (not attached): the kernel's verifier takes
    what the compiler emits, not only the programs of the steps below."""
    kernel = bpfdev.Kernel()
    sets = {
        "deny-all": [],
        "closed": bpfdev.device_rules({"DevicePolicy": "closed"})[0] or [],
        "runc-defaults": bpfdev.device_rules(RUNC_DEFAULTS)[0] or [],
        "allow-all": [bpfdev.Rule(None, None, None, "rwm")],
        "one-access-each": [bpfdev.Rule("c", 1, n, a) for n, a in enumerate(["r", "w", "m"])],
        "many": [
            bpfdev.Rule("cb"[n % 2], n % 4096, (n * 7919) % (1 << 20), "rwm"[n % 3 :])
            for n in range(400)
        ],
    }
    out = {}
    for name, found in sets.items():
        try:
            kernel.close(kernel.prog_load(bpfdev.assemble(bpfdev.compile_rules(found))))
            out[name] = "ok"
        except bpfdev.BpfError as e:
            out[name] = str(e)
    # and a program the verifier refuses (R0 never set): its reason is in the error
    try:
        kernel.close(kernel.prog_load(bpfdev.assemble([bpfdev.exit_insn()])))
        out["refused"] = "loaded"
    except bpfdev.BpfError as e:
        out["refused"] = f"{errno.errorcode.get(e.errno or 0)}: {e}"
    return out


async def main() -> None:
    report(step="verifier", results=verifier_accepts())
    NODES.mkdir()
    os.mknod(LOOP_CONTROL, 0o600 | stat.S_IFCHR, os.makedev(10, 237))
    os.mknod(LOOP0, 0o600 | stat.S_IFBLK, os.makedev(7, 0))
    daemon = start_scopeshim()
    bus = await connect()
    prober = Prober()
    try:
        await wait_name(bus, "org.freedesktop.systemd1")
        removed = await subscribe(bus, ("JobRemoved",))

        async def wait_job(reply: Any) -> str:
            job = reply.body[0]
            while (m := await asyncio.wait_for(removed.get(), 10)).body[1] != job:
                pass
            return str(m.body[3])

        result = await wait_job(
            await call(
                bus, "StartTransientUnit", "ssa(sv)a(sa(sv))",
                [UNIT, "fail", [
                    ["PIDs", Variant("au", [prober.proc.pid])],
                    ["DevicePolicy", Variant("s", "closed")],
                    ["DeviceAllow", Variant("a(ss)", [["/dev/null", "rw"]])],
                ], []],
            )
        )  # fmt: skip
        props = await properties(bus)
        cg = CGROOT / props["ControlGroup"].lstrip("/")

        async def state(step: str, **extra: Any) -> list[dict[str, Any]]:
            progs = attached(cg)
            report(
                step=step, probe=await prober.probe(), attached=progs,
                daemon_bpf_fds=daemon_bpf_fds(daemon.pid), properties=await properties(bus),
                **extra,
            )  # fmt: skip
            return progs

        first = await state("closed", job=result)
        await set_properties(bus, ["DeviceAllow", Variant("a(ss)", [["/dev/char/10:237", "r"]])])
        second = await state("allow-loop-control")
        report(step="replaced", old_freed=freed(first[0]["id"]), new=second[0]["id"])
        await set_properties(bus, ["DevicePolicy", Variant("s", "strict")])
        await state("strict")
        await set_properties(bus, ["DeviceAllow", Variant("a(ss)", [])])
        await state("strict-empty")
        await set_properties(bus, ["DevicePolicy", Variant("s", "auto")])
        await state("auto")
        await set_properties(bus, ["DevicePolicy", Variant("s", "closed")])
        before = await state("closed-again")

        # a restart: the units outlive the daemon, and so does their filter; the new daemon
        # takes its program over (by name) and replaces it, never adding a second one
        report(step="daemon-stopped", exit=stop(daemon))
        await asyncio.sleep(0.2)
        report(step="while-down", probe=await prober.probe(), attached=attached(cg))
        daemon = start_scopeshim()
        await wait_name(bus, "org.freedesktop.systemd1")
        await set_properties(bus, ["DeviceAllow", Variant("a(ss)", [["/dev/char/10:237", "r"]])])
        after = await state("restarted")
        report(step="adopted", old_freed=freed(before[0]["id"]), new=after[0]["id"])

        result = await wait_job(await call(bus, "StopUnit", "ss", [UNIT, "replace"]))
        prober.proc.wait(10)
        report(
            step="stopped", job=result, exists=cg.exists(), freed=freed(after[0]["id"]),
            daemon_bpf_fds=daemon_bpf_fds(daemon.pid), parent=attached(cg.parent),
        )  # fmt: skip
    finally:
        if prober.proc.poll() is None:
            prober.proc.send_signal(signal.SIGKILL)
            prober.proc.wait()
        bus.disconnect()
        report(step="daemon", exit=stop(daemon))


asyncio.run(main())
