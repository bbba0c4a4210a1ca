"""Inside the sandbox: the staged install at its real paths and a real system bus, started
from the distribution's own configuration (`dbus-daemon --system`: /usr/share/dbus-1/
system.conf, running as messagebus, activating through the setuid dbus-daemon-launch-helper),
next to Debian's /usr/share/dbus-1/system-services/org.freedesktop.systemd1.service
(Exec=/bin/false) and /usr/share/dbus-1/system.d/org.freedesktop.systemd1.conf.

Steps (one JSON line each): the first call activates the installed scopeshim (its file in
/usr/local/share/dbus-1/system-services wins); the installed policy refuses nobody's mutating
calls at the bus and lets nobody read, root change; then the same activation file offered
through a <servicedir> in an /etc/dbus-1/system.d snippet, and in system-local.conf, loses to
Debian's file; with /usr/local's file back, activation works again.

Usage: scenario_system_bus.py DESTDIR
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.packaging.inside import (
    SYSTEMD1,
    WORK,
    alive,
    cmdline,
    gdbus,
    mount,
    name_owner_pid,
    report,
    result,
    run,
    stage,
    wait_for,
)

SERVICEDIR = Path("/usr/local/share/dbus-1/system-services")
DISTRO_SERVICE = Path("/usr/share/dbus-1/system-services") / f"{SYSTEMD1}.service"
MANAGER = "org.freedesktop.systemd1.Manager"
PATH = "/org/freedesktop/systemd1"
SNIPPET = Path("/etc/dbus-1/system.d/zz-scopeshim-servicedir.conf")
LOCAL = Path("/etc/dbus-1/system-local.conf")


def busconfig(body: str) -> str:
    return (
        '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"\n'
        ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n'
        f"<busconfig>\n  {body}\n</busconfig>\n"
    )


def reload_bus() -> dict[str, object]:
    return result(
        run("busctl", "--system", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
            "org.freedesktop.DBus", "ReloadConfig")
    )  # fmt: skip


def first_call() -> dict[str, object]:
    """A read of Version: activates org.freedesktop.systemd1 when nobody owns it."""
    before = name_owner_pid()
    r = run("busctl", "--system", "--timeout=30", "get-property", SYSTEMD1, PATH, MANAGER,
            "Version", timeout=60)  # fmt: skip
    pid = name_owner_pid()
    return {**result(r), "owner_before": before, "owner": pid,
            "owner_cmdline": cmdline(pid) if pid else []}  # fmt: skip


def daemons() -> list[int]:
    """PIDs of every scopeshim daemon running (their command line: python3 -I -m shim serve)."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                argv = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"shim" in argv and b"serve" in argv:
                found.append(int(d.name))
    return found


def init_view() -> dict[str, object]:
    """What the init script says: its pidfile and `status`."""
    pidfile = Path("/run/scopeshim.pid")
    status = run("/etc/init.d/scopeshim", "status", timeout=30)
    return {"init_pid": int(pidfile.read_text()) if pidfile.exists() else None,
            "init_status": status.returncode, "daemons": daemons()}  # fmt: skip


def race() -> dict[str, object]:
    """The boot's `/etc/init.d/scopeshim start` and logind's first call at the same moment:
    one scopeshim, the init's."""
    init = subprocess.Popen(["/etc/init.d/scopeshim", "start"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    call = first_call()
    init.wait(timeout=60)
    wait_for(lambda: len(daemons()) <= 1, 10)
    return {**call, **init_view()}


def stop_owner() -> bool:
    pid = name_owner_pid()
    if pid is None:
        return True
    os.kill(pid, signal.SIGTERM)
    return wait_for(lambda: name_owner_pid() is None and not alive(pid), 20)


def main() -> None:
    destdir = Path(sys.argv[1])
    stage(destdir)
    # a fresh /run/dbus for the distribution's bus (the sandbox's own bus is left behind it)
    mount("-t", "tmpfs", "-o", "mode=755,size=1m", "scopeshim-dbus", "/run/dbus")
    log = open(WORK / "dbus-daemon.log", "w+")  # noqa: SIM115
    bus = subprocess.Popen(
        ["dbus-daemon", "--system", "--nofork", "--nopidfile", "--nosyslog"],
        stdout=log,
        stderr=log,
    )
    os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = "unix:path=/run/dbus/system_bus_socket"
    try:
        ok = wait_for(lambda: Path("/run/dbus/system_bus_socket").exists(), 10)
        report(
            step="setup",
            bus_started=ok and bus.poll() is None,
            distro_service=DISTRO_SERVICE.read_text() if DISTRO_SERVICE.exists() else None,
            ours=(SERVICEDIR / f"{SYSTEMD1}.service").read_text(),
            policies=sorted(os.listdir("/etc/dbus-1/system.d")),
        )
        if not ok:
            return

        # 1. the first call starts the installed scopeshim
        report(step="activation", **first_call(), **init_view())
        report(step="before_race", gone=stop_owner())
        report(step="race", **race())

        # 2. the installed policy, next to Debian's
        reads = {}
        for name, call in {
            "Get": ["--object-path", PATH, "--method", "org.freedesktop.DBus.Properties.Get",
                    MANAGER, "Version"],
            "Introspect": ["--object-path", PATH, "--method",
                           "org.freedesktop.DBus.Introspectable.Introspect"],
            "ListUnits": ["--object-path", PATH, "--method", f"{MANAGER}.ListUnits"],
            "GetUnit": ["--object-path", PATH, "--method", f"{MANAGER}.GetUnit", "'-.slice'"],
            "Subscribe": ["--object-path", PATH, "--method", f"{MANAGER}.Subscribe"],
        }.items():  # fmt: skip
            reads[name] = result(gdbus(*call, as_nobody=True))
        mutations = {}
        for name, call in {
            "StartUnit": [f"{MANAGER}.StartUnit", "user@65534.service", "replace"],
            "StopUnit": [f"{MANAGER}.StopUnit", "'-.slice'", "fail"],
            "KillUnit": [f"{MANAGER}.KillUnit", "'-.slice'", "all", "15"],
            "StartTransientUnit": [f"{MANAGER}.StartTransientUnit", "nobody.scope", "fail",
                                   "[('PIDs', <[uint32 1]>)]", "@a(sa(sv)) []"],
        }.items():  # fmt: skip
            mutations[name] = result(
                gdbus("--object-path", PATH, "--method", *call, as_nobody=True)
            )
        sleeper = subprocess.Popen(["sleep", "300"])
        root_start = result(
            gdbus("--object-path", PATH, "--method", f"{MANAGER}.StartTransientUnit",
                  "pkg-test.scope", "fail", f"[('PIDs', <[uint32 {sleeper.pid}]>)]",
                  "@a(sa(sv)) []")
        )  # fmt: skip
        wait_for(lambda: "pkg-test.scope" in Path(f"/proc/{sleeper.pid}/cgroup").read_text(), 10)
        sleeper_cgroup = Path(f"/proc/{sleeper.pid}/cgroup").read_text()
        root_stop = result(
            gdbus("--object-path", PATH, "--method", f"{MANAGER}.StopUnit", "pkg-test.scope",
                  "replace")
        )  # fmt: skip
        try:
            sleeper_exit = sleeper.wait(timeout=30)
        except subprocess.TimeoutExpired:
            sleeper.kill()
            sleeper_exit = sleeper.wait()
        report(
            step="policy",
            reads=reads,
            mutations=mutations,
            root_start=root_start,
            sleeper_cgroup=sleeper_cgroup,
            root_stop=root_stop,
            sleeper_exit=sleeper_exit,
        )
        report(step="stopped", ok=stop_owner())

        # 3. the same file through a <servicedir> in /etc/dbus-1/system.d: Debian's wins
        alt = WORK / "alt-services"
        alt.mkdir()
        shutil.copy2(SERVICEDIR / f"{SYSTEMD1}.service", alt)
        mount("-t", "tmpfs", "-o", "mode=755,size=1m", "scopeshim-hide", str(SERVICEDIR))
        SNIPPET.write_text(busconfig(f"<servicedir>{alt}</servicedir>"))
        report(step="etc_snippet", reload=reload_bus(), **first_call())
        stop_owner()

        # 4. ... and in /etc/dbus-1/system-local.conf, included last: Debian's wins still
        SNIPPET.unlink()
        LOCAL.write_text(busconfig(f"<servicedir>{alt}</servicedir>"))
        report(step="system_local", reload=reload_bus(), **first_call())
        stop_owner()

        # 5. the file back in /usr/local/share/dbus-1/system-services: scopeshim starts again
        LOCAL.unlink()
        run("umount", str(SERVICEDIR))
        report(step="restored", reload=reload_bus(), **first_call())
        stop_owner()
    finally:
        stop_owner()
        bus.terminate()
        bus.wait(timeout=10)
        log.seek(0)
        report(step="dbus_log", text=log.read())


if __name__ == "__main__":
    main()
