"""Inside the sandbox: scopeshim as an unprivileged user over a subtree delegated to it.

Root hands CGROOT/delegated to nobody (as a container manager or a systemd host would),
then scopeshim runs as nobody with --cgroup-root on it: scopes work for processes inside
the subtree; a process outside it fails the scope's job with the kernel's reason and
leaves no cgroup behind.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import subprocess
import sys
import tempfile
from pathlib import Path

from dbus_fast import Variant

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.e2e.inside import (
    CGROOT,
    ROOT,
    call,
    cgroup_of,
    connect,
    report,
    stop,
    subscribe,
    wait_name,
)

SUBTREE = CGROOT / "delegated"


def delegate(uid: int, gid: int) -> None:
    SUBTREE.mkdir()
    for path in [SUBTREE] + [
        SUBTREE / n for n in Path("/sys/kernel/cgroup/delegate").read_text().split()
    ]:
        if path.exists():
            os.chown(path, uid, gid)


def start_daemon_as(user: pwd.struct_passwd, state: str) -> subprocess.Popen[bytes]:
    """The interpreter of the venv lives under /root (mode 700): the system python with the
    venv's packages on the path runs the same code as the unprivileged user."""
    site = next((ROOT / ".venv/lib").glob("python3*/site-packages"))
    log = open(Path(os.environ["SCOPESHIM_E2E_RUN"]) / "scopeshim-nonroot.log", "wb")  # noqa: SIM115
    return subprocess.Popen(
        [
            "/usr/bin/python3", "-m", "shim", "serve", "--system", "--backend", "cgroup2",
            "--cgroup-root", str(SUBTREE), "--state-dir", state, "--log-level", "debug",
            # no /run/systemd/private: an unprivileged instance cannot create it, and the
            # private socket admits only root, whom this instance does not serve
            "--private-socket", "",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT}:{site}"},
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        stdout=log,
        stderr=log,
    )  # fmt: skip


async def start_scope(bus, signals, name: str, pid: int) -> str:  # type: ignore[no-untyped-def]
    reply = await call(
        bus,
        "StartTransientUnit",
        "ssa(sv)a(sa(sv))",
        [
            name,
            "fail",
            [["PIDs", Variant("au", [pid])], ["Slice", Variant("s", "user-1000.slice")]],
            [],
        ],
    )
    job = reply.body[0]
    while (m := await asyncio.wait_for(signals.get(), 10)).body[1:2] != [job]:
        pass
    return str(m.body[3])


async def main() -> None:
    nobody = pwd.getpwnam("nobody")
    delegate(nobody.pw_uid, nobody.pw_gid)
    inside = subprocess.Popen(
        ["sleep", "600"], user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[]
    )
    (SUBTREE / "cgroup.procs").write_text(str(inside.pid))
    outside = subprocess.Popen(["sleep", "600"])  # root's, in the sandbox's root cgroup
    state = tempfile.mkdtemp(prefix="scopeshim-nonroot-")
    os.chown(state, nobody.pw_uid, nobody.pw_gid)
    daemon = start_daemon_as(nobody, state)
    bus = await connect()
    try:
        await wait_name(bus, "org.freedesktop.systemd1")
        report(step="daemon", uid=os.stat(f"/proc/{daemon.pid}").st_uid)
        signals = await subscribe(bus, ("JobRemoved", "UnitRemoved"))
        result = await start_scope(bus, signals, "inside.scope", inside.pid)
        report(step="inside", job=result, cgroup=cgroup_of(inside.pid))
        result = await start_scope(bus, signals, "outside.scope", outside.pid)
        props = await call(
            bus,
            "Get",
            "ss",
            ["org.freedesktop.systemd1.Scope", "Result"],
            path="/org/freedesktop/systemd1/unit/outside_2escope",
            interface="org.freedesktop.DBus.Properties",
        )
        report(
            step="outside",
            job=result,
            result=props.body[0].value,
            cgroup=cgroup_of(outside.pid),
            left=(SUBTREE / "user.slice/user-1000.slice/outside.scope").exists(),
        )
        inside.kill()
        while (m := await asyncio.wait_for(signals.get(), 10)).body[:1] != ["inside.scope"]:
            pass
        report(
            step="emptied",
            signal=m.member,
            left=(SUBTREE / "user.slice/user-1000.slice/inside.scope").exists(),
        )
    finally:
        bus.disconnect()
        report(step="stopped", exit=stop(daemon))
        outside.kill()
        log = Path(os.environ["SCOPESHIM_E2E_RUN"]) / "scopeshim-nonroot.log"
        reason = [line for line in log.read_text().splitlines() if "outside.scope: PID" in line]
        report(step="log", lines=reason)


asyncio.run(main())
