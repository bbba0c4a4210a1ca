"""Inside the sandbox: Delegate=yes hands a real cgroup2 subtree to an unprivileged user.

The delegatee (uid nobody, the scope's only process) creates sub-cgroups, moves itself,
sets a stricter limit below itself, and is refused when it raises its own limit or writes
outside its subtree (kernel cgroup-v2.rst "Delegation Containment"). All controllers of this
machine kind sit on v1, so the limits here are the cgroup2 core ones (cgroup.max.*).
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

from dbus_fast import Variant

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.e2e.inside import (
    CGROOT,
    call,
    cgroup_of,
    connect,
    report,
    start_scopeshim,
    stop,
    subscribe,
    wait_name,
)

UNIT = "deleg.scope"
CG = CGROOT / "system.slice" / UNIT

# runs as nobody inside the scope once told to go; reports each step's outcome as JSON
DELEGATEE = f"""
import errno, json, os, sys
sys.stdin.readline()
cg = {str(CG)!r}
out = {{}}
def attempt(name, fn):
    try:
        fn()
        out[name] = "ok"
    except OSError as e:
        out[name] = errno.errorcode[e.errno]
def write(path, value):
    with open(path, "w") as f:
        f.write(value)
attempt("mkdir", lambda: os.mkdir(cg + "/payload"))
attempt("move_self", lambda: write(cg + "/payload/cgroup.procs", str(os.getpid())))
attempt("nested", lambda: os.mkdir(cg + "/payload/nested"))
attempt("stricter_child", lambda: write(cg + "/payload/cgroup.max.descendants", "1"))
attempt("too_many", lambda: os.mkdir(cg + "/payload/nested2"))
attempt("raise_own", lambda: write(cg + "/cgroup.max.descendants", "max"))
attempt("escape", lambda: write(cg + "/../cgroup.procs", str(os.getpid())))
attempt("sibling", lambda: os.mkdir(cg + "/../intruder"))
out["cgroup"] = [x for x in open("/proc/self/cgroup").read().split() if x[:3] == "0::"][0]
print(json.dumps(out), flush=True)
sys.stdin.readline()
"""


async def main() -> None:
    nobody = pwd.getpwnam("nobody")
    daemon = start_scopeshim()
    bus = await connect()
    try:
        await wait_name(bus, "org.freedesktop.systemd1")
        signals = await subscribe(bus, ("JobRemoved", "UnitRemoved"))
        delegatee = subprocess.Popen(
            ["/usr/bin/python3", "-c", DELEGATEE],
            user=nobody.pw_uid,
            group=nobody.pw_gid,
            extra_groups=[],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd="/",
        )
        assert delegatee.stdin is not None and delegatee.stdout is not None
        reply = await call(
            bus,
            "StartTransientUnit",
            "ssa(sv)a(sa(sv))",
            [
                UNIT,
                "fail",
                [
                    ["PIDs", Variant("au", [delegatee.pid])],
                    ["Delegate", Variant("b", True)],
                    ["User", Variant("s", "nobody")],
                ],
                [],
            ],
        )
        job = reply.body[0]
        while (m := await asyncio.wait_for(signals.get(), 10)).body[1:2] != [job]:
            pass
        owners = {
            name: os.stat(CG / name).st_uid
            for name in (".", "cgroup.procs", "cgroup.subtree_control", "cgroup.max.descendants")
        }
        report(step="started", job=m.body[3], owners=owners, uid=nobody.pw_uid)
        delegatee.stdin.write("go\n")
        delegatee.stdin.flush()
        outcome = json.loads(delegatee.stdout.readline())
        report(step="delegatee", **outcome)
        # root moves another process into the delegatee's sub-cgroup over D-Bus
        helper = subprocess.Popen(["sleep", "600"])
        await call(bus, "AttachProcessesToUnit", "ssau", [UNIT, "/payload", [helper.pid]])
        report(step="attached", cgroup=cgroup_of(helper.pid))
        # stopping removes the whole subtree, including what the delegatee created
        reply = await call(bus, "StopUnit", "ss", [UNIT, "replace"])
        job = reply.body[0]
        while (m := await asyncio.wait_for(signals.get(), 10)).body[1:2] != [job]:
            pass
        helper.wait(5)
        delegatee.wait(5)
        report(step="stopped", job=m.body[3], exists=CG.exists())
    finally:
        bus.disconnect()
        report(step="daemon", exit=stop(daemon))


asyncio.run(main())
