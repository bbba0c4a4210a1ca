"""Inside the sandbox: the installed systemd-logind (252) opens and closes a session on
scopeshim with the real cgroup2 backend, through a pam_systemd-like CreateSession."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.e2e.inside import CGROOT, connect, report, start_scopeshim, stop, subscribe, wait_name

LOGIND = os.environ.get("SCOPESHIM_LOGIND", "/lib/systemd/systemd-logind")
# logind.conf(5): no VTs, no key handling, no idle action on a test machine
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


async def main() -> None:
    run = Path(os.environ["SCOPESHIM_E2E_RUN"])
    Path("/run/systemd/logind.conf.d").mkdir(parents=True, exist_ok=True)
    Path("/run/systemd/logind.conf.d/e2e.conf").write_text(LOGIND_CONF)
    daemon = start_scopeshim()
    bus = await connect()
    logind = None
    try:
        await wait_name(bus, "org.freedesktop.systemd1")
        signals = await subscribe(bus, ("UnitRemoved",))
        with open(run / "logind.log", "wb") as log:
            logind = subprocess.Popen(
                [LOGIND],
                stdout=log,
                stderr=log,
                env={**os.environ, "SYSTEMD_LOG_LEVEL": "debug", "SYSTEMD_LOG_TARGET": "console"},
            )
        await wait_name(bus, "org.freedesktop.login1")
        client = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("login_client.py")), "0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert client.stdout is not None and client.stdin is not None
        line = await asyncio.wait_for(asyncio.to_thread(client.stdout.readline), 60)
        created = json.loads(line)
        scope = CGROOT / "user.slice/user-0.slice" / f"session-{created.get('session')}.scope"
        report(step="created", **created, scope_dir=scope.is_dir())
        client.stdin.write("\n")
        client.stdin.flush()
        released = json.loads(await asyncio.wait_for(asyncio.to_thread(client.stdout.readline), 30))
        client.wait(10)
        unit = f"session-{created.get('session')}.scope"
        while (m := await asyncio.wait_for(signals.get(), 30)).body[0] != unit:
            pass
        report(step="released", ok=released["ok"], removed=m.body[0], scope_dir=scope.is_dir())
    finally:
        bus.disconnect()
        if logind is not None:
            report(step="logind", exit=stop(logind))
        report(step="stopped", exit=stop(daemon))


asyncio.run(main())
