"""Inside the sandbox: a scope's life on the real cgroup2 kernel tree with scopeshim."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
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


async def main() -> None:
    daemon = start_scopeshim()
    bus = await connect()
    try:
        await wait_name(bus, "org.freedesktop.systemd1")
        removed = await subscribe(bus, ("JobRemoved", "UnitRemoved"))
        sleeper = subprocess.Popen(["sleep", "600"])
        reply = await call(
            bus,
            "StartTransientUnit",
            "ssa(sv)a(sa(sv))",
            [
                "e2e.scope",
                "fail",
                [
                    ["PIDs", Variant("au", [sleeper.pid])],
                    ["Slice", Variant("s", "user-1000.slice")],
                ],
                [],
            ],
        )
        job = reply.body[0]
        while (m := await asyncio.wait_for(removed.get(), 10)).body[1:2] != [job]:
            pass
        path = "/user.slice/user-1000.slice/e2e.scope"
        invocation = await call(
            bus,
            "Get",
            "ss",
            ["org.freedesktop.systemd1.Unit", "InvocationID"],
            path="/org/freedesktop/systemd1/unit/e2e_2escope",
            interface="org.freedesktop.DBus.Properties",
        )
        label = os.getxattr(CGROOT / path.lstrip("/"), "trusted.invocation_id").decode()
        report(
            step="started",
            result=m.body[3],
            cgroup=cgroup_of(sleeper.pid),
            dir_exists=(CGROOT / path.lstrip("/")).is_dir(),
            labelled=label == bytes(invocation.body[0].value).hex(),
        )
        sleeper.kill()
        sleeper.wait()
        exited = time.monotonic()  # the last process is gone (reaped)
        while (m := await asyncio.wait_for(removed.get(), 10)).member != "UnitRemoved":
            pass
        latency_ms = round((time.monotonic() - exited) * 1000, 1)
        report(step="emptied", unit=m.body[0], dir_exists=(CGROOT / path.lstrip("/")).is_dir())
        report(step="latency", empty_to_unit_removed_ms=latency_ms)
        # freeze/thaw through cgroup.freeze, then a stop that needs SIGKILL (cgroup.kill)
        stubborn = subprocess.Popen(["sh", "-c", "trap '' TERM; while :; do sleep 1; done"])
        await asyncio.sleep(0.2)
        reply = await call(
            bus,
            "StartTransientUnit",
            "ssa(sv)a(sa(sv))",
            [
                "e2e-stop.scope",
                "fail",
                [
                    ["PIDs", Variant("au", [stubborn.pid])],
                    ["TimeoutStopUSec", Variant("t", 500_000)],
                ],
                [],
            ],
        )
        job = reply.body[0]
        while (m := await asyncio.wait_for(removed.get(), 10)).body[1:2] != [job]:
            pass
        events = CGROOT / "system.slice/e2e-stop.scope/cgroup.events"
        await call(bus, "FreezeUnit", "s", ["e2e-stop.scope"])
        await asyncio.sleep(0.2)
        frozen = "frozen 1" in events.read_text()
        await call(bus, "ThawUnit", "s", ["e2e-stop.scope"])
        await asyncio.sleep(0.2)
        thawed = "frozen 0" in events.read_text()
        reply = await call(bus, "StopUnit", "ss", ["e2e-stop.scope", "replace"])
        job = reply.body[0]
        while (m := await asyncio.wait_for(removed.get(), 10)).body[1:2] != [job]:
            pass
        rc = stubborn.wait(5)
        result = await call(
            bus,
            "Get",
            "ss",
            ["org.freedesktop.systemd1.Scope", "Result"],
            path="/org/freedesktop/systemd1/unit/e2e_2dstop_2escope",
            interface="org.freedesktop.DBus.Properties",
        )
        report(
            step="stop",
            frozen=frozen,
            thawed=thawed,
            job=m.body[3],
            exit=rc,
            result=result.body[0].value,
            dir_exists=(CGROOT / "system.slice/e2e-stop.scope").is_dir(),
        )
    finally:
        bus.disconnect()
        report(step="stopped", exit=stop(daemon))


asyncio.run(main())
