"""Inside the sandbox: the installed LSB init script, /etc/init.d/scopeshim, with the staged
tree at its real paths and the sandbox's private system bus. start, status, a second start,
reload, restart, stop, a second stop; then a configuration the daemon refuses: start fails
and leaves no pid file. One JSON line per step.

Usage: scenario_sysvinit.py DESTDIR
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.packaging.inside import (
    alive,
    cmdline,
    name_owner_pid,
    report,
    result,
    run,
    stage,
    wait_for,
)

SCRIPT = "/etc/init.d/scopeshim"
PIDFILE = Path("/run/scopeshim.pid")
LOGFILE = Path("/run/scopeshim.log")
CONFIG = Path("/etc/scopeshim/scopeshim.toml")


def state() -> dict[str, Any]:
    pid = int(PIDFILE.read_text()) if PIDFILE.exists() else None
    return {
        "pidfile": pid,
        "alive": alive(pid) if pid else False,
        "cmdline": cmdline(pid) if pid else [],
        "owner": name_owner_pid(),
    }


def action(name: str, *args: str) -> None:
    r = run(SCRIPT, *args, timeout=60)
    report(step=name, **result(r), **state())


def main() -> None:
    stage(Path(sys.argv[1]))
    # the daemon's output to a file (the shipped file logs to syslog, absent here: stderr)
    default = Path("/etc/default/scopeshim")
    default.write_text(default.read_text() + f"LOGFILE={LOGFILE}\n")
    action("status_before", "status")
    action("start", "start")
    action("status", "status")
    action("start_again", "start")
    before = name_owner_pid()
    action("reload", "reload")
    wait_for(lambda: LOGFILE.exists() and "SIGHUP: reloaded" in LOGFILE.read_text(), 10)
    report(step="reloaded", same_owner=name_owner_pid() == before)
    action("restart", "restart")
    action("stop", "stop")
    action("status_after", "status")
    action("stop_again", "stop")

    good = CONFIG.read_text()
    CONFIG.write_text(good.replace('# backend = "auto"', 'backend = "cgroup9"'))
    action("start_bad_config", "start")
    action("status_bad_config", "status")
    CONFIG.write_text(good)
    action("start_fixed", "start")
    action("stop_fixed", "stop")
    report(step="log", text=LOGFILE.read_text() if LOGFILE.exists() else "")


if __name__ == "__main__":
    main()
