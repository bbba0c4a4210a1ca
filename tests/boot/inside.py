"""Inside a booted system of tests/boot/boot.sh (the host's /usr/bin/python3, entered with
nsenter, or run by the shutdown witness): waits for the boot, runs the README's install steps
for the init, reports the facts the tests check (who runs scopeshim, who owns the name, the
order against logind), a PAM login through pamtester and its logout, and starts the init's own
reboot. Standard library only; prints one JSON object per line.

Usage: inside.py booted INIT N | install INIT | check INIT N | login INIT N |
       shutdown INIT reboot|poweroff | witness
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SYSTEMD1 = "org.freedesktop.systemd1"
LOGIN1 = "org.freedesktop.login1"
USER, UID = "scopeshim-boot", 4711
SHARED = Path("/run/scopeshim-boot")
WHEELS = "/usr/src/scopeshim-wheels"
SRC = "/usr/src/scopeshim"
VERSION = ("busctl", "get-property", SYSTEMD1, "/org/freedesktop/systemd1",
           f"{SYSTEMD1}.Manager", "Version")  # fmt: skip


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def run(*argv: str, timeout: float = 60) -> dict[str, Any]:
    """One command: its status and the end of its output."""
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"cmd": " ".join(argv), "rc": None, "out": str(e)}
    return {"cmd": " ".join(argv), "rc": p.returncode, "out": (p.stdout + p.stderr)[-1500:]}


def processes() -> list[dict[str, Any]]:
    """Every process of this pid namespace: pid, ppid, uid, argv, start time, cgroup."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")[:-1]
            stat = (d / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            uid = int((d / "status").read_text().split("Uid:")[1].split()[0])
            cgroup = (d / "cgroup").read_text().strip()
        except (OSError, IndexError, ValueError):
            continue
        out.append({
            "pid": int(d.name), "ppid": int(fields[1]), "uid": uid, "start": int(fields[19]),
            "argv": [a.decode(errors="replace") for a in argv], "cgroup": cgroup,
        })  # fmt: skip
    return sorted(out, key=lambda p: p["pid"])


def is_scopeshim(p: dict[str, Any]) -> bool:
    a = p["argv"]
    return "serve" in a and ("shim" in a or any(x.endswith("/scopeshim") for x in a[:2]))


def is_logind(p: dict[str, Any]) -> bool:
    return bool(p["argv"]) and p["argv"][0].endswith("systemd-logind")


def bus_call(*args: str) -> str | None:
    r = run("busctl", "--system", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
            "org.freedesktop.DBus", *args, timeout=10)  # fmt: skip
    return r["out"].strip() if r["rc"] == 0 else None


def owner_pid(name: str) -> int | None:
    """The pid of NAME's owner (asking the bus driver does not activate the name)."""
    if bus_call("NameHasOwner", "s", name) != "b true":
        return None
    out = bus_call("GetConnectionUnixProcessID", "s", name)
    return int(out.split()[1]) if out else None


def connection_serial(name: str) -> int | None:
    """N of the unique name ":1.N" of NAME's owner: the bus numbers connections in order."""
    out = bus_call("GetNameOwner", "s", name)
    return int(out.split(".")[-1].rstrip('"')) if out else None


def booted(init: str, n: str) -> None:
    """Waits (at most 120 s) until the init has run its boot: the runlevel's scripts done."""
    t0 = time.monotonic()
    ok = False
    while time.monotonic() - t0 < 120:
        argvs = [" ".join(p["argv"]) for p in processes()]
        if init == "sysvinit":
            busy = any("/etc/init.d/rc" in a or "startpar" in a for a in argvs)
            ok = not busy and run("runlevel")["out"].strip().endswith(" 2")
        elif init == "openrc":
            soft = Path("/run/openrc/softlevel")
            busy = any(a.split(" ")[0] in ("openrc", "/sbin/openrc") for a in argvs)
            ok = soft.exists() and soft.read_text().strip() == "default" and not busy
        else:
            # runit has no end of boot: runsvdir is up and every enabled service says "up"
            # (sv check: its check script, where it has one)
            busy = any("run_sysv_scripts" in a or "/etc/runit/1" in a for a in argvs)
            ok = not busy and any(a.startswith("runsvdir") for a in argvs)
        # and the services the README enabled say they run (the runlevel may be entered
        # an instant before its scripts start)
        ok = ok and all(status(init, name)["rc"] == 0 for name in enabled(init))
        if ok:
            break
        time.sleep(0.2)
    emit(step="booted", boot=int(n), ok=ok, seconds=round(time.monotonic() - t0, 1))


def install(init: str) -> None:
    """The README's steps: make install INIT=..., the service enabled and started the init's
    way, logind's definition likewise, and the README's look at the name."""
    pip = f"PIP_INSTALL_ARGS=--no-index --find-links {WHEELS}"
    steps: list[tuple[str, ...]] = [("make", "-s", "-C", SRC, "install", f"INIT={init}", pip)]
    if init == "sysvinit":
        steps += [("update-rc.d", "scopeshim", "defaults"), ("/etc/init.d/scopeshim", "start"),
                  ("/etc/init.d/scopeshim", "status"), VERSION,
                  ("update-rc.d", "systemd-logind", "defaults"),
                  ("/etc/init.d/systemd-logind", "start")]  # fmt: skip
    elif init == "openrc":
        steps += [("rc-update", "add", "scopeshim", "default"),
                  ("rc-service", "scopeshim", "start"), ("rc-service", "scopeshim", "status"),
                  VERSION,
                  ("rc-update", "add", "systemd-logind", "default"),
                  ("rc-service", "systemd-logind", "start")]  # fmt: skip
    else:  # runit: enabling is starting; the README's next step asks for the name at once
        steps += [("ln", "-s", "/etc/sv/scopeshim", "/etc/sv/systemd-logind", "/etc/service/"),
                  VERSION, ("sv", "status", "scopeshim"),
                  ("sv", "start", "systemd-logind")]  # fmt: skip
    for argv in steps:
        emit(step="install", **run(*argv, timeout=600))


def init_owns(init: str, p: dict[str, Any], procs: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether the init supervises process P: its pid file, supervise-daemon or runsv."""
    parent = next((q for q in procs if q["pid"] == p["ppid"]), None)
    pargv = " ".join(parent["argv"]) if parent else ""
    if init == "sysvinit":
        try:
            pidfile: int | None = int(Path("/run/scopeshim.pid").read_text())
        except (OSError, ValueError):
            pidfile = None
        return {"pidfile": pidfile, "ok": pidfile == p["pid"], "parent": pargv}
    if init == "openrc":
        return {"parent": pargv, "ok": "supervise-daemon" in pargv and "scopeshim" in pargv}
    return {"parent": pargv, "ok": pargv.startswith("runsv scopeshim")}


def enabled(init: str) -> list[str]:
    """Which of scopeshim and logind the init starts at boot."""
    names = ("scopeshim", "systemd-logind")
    if init == "sysvinit":
        return [n for n in names if list(Path("/etc/rc2.d").glob(f"S[0-9][0-9]{n}"))]
    if init == "openrc":
        return [n for n in names if Path(f"/etc/runlevels/default/{n}").exists()]
    return [n for n in names if Path(f"/etc/service/{n}").exists()]


def status(init: str, name: str = "scopeshim") -> dict[str, Any]:
    """The init's own status command for NAME (runit: sv check, which runs the check script)."""
    if init == "sysvinit":
        return run(f"/etc/init.d/{name}", "status")
    if init == "openrc":
        return run("rc-service", name, "status")
    return run("sv", "-w", "1", "check", name)


def check(init: str, n: str) -> None:
    """The facts once things settled (30 s at most): both names owned, no activation under
    way; the tests judge them."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:
        busy = [p for p in processes() if any("scopeshim/activate" in a for a in p["argv"])]
        if owner_pid(SYSTEMD1) and owner_pid(LOGIN1) and not busy:
            break
        time.sleep(0.2)
    procs = processes()
    shims = [p for p in procs if is_scopeshim(p)]
    logind = [p for p in procs if is_logind(p)]
    emit(step="check", boot=int(n),
         scopeshim=[{"pid": p["pid"], "start": p["start"], "argv": p["argv"], "cgroup": p["cgroup"],
                     "init": init_owns(init, p, procs)} for p in shims],
         logind=[{"pid": p["pid"], "start": p["start"], "cgroup": p["cgroup"]} for p in logind],
         owner=owner_pid(SYSTEMD1), login1_owner=owner_pid(LOGIN1), status=status(init),
         logind_status=status(init, "systemd-logind"),
         connections={"scopeshim": connection_serial(SYSTEMD1),
                      "logind": connection_serial(LOGIN1)},
         activations=[p["argv"] for p in procs
                      if any("scopeshim/activate" in a for a in p["argv"])],
         version=run(*VERSION)["out"].strip())  # fmt: skip


def hook_record(pam: Path, kind: str, seconds: float) -> dict[str, Any] | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        try:
            for line in (pam / "hook.jsonl").read_text().splitlines():
                rec = json.loads(line)
                if rec["type"] == kind:
                    return dict(rec)
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return None


def mounts() -> list[str]:
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]


def user_left() -> dict[str, Any]:
    """What of the user is still there: cgroups, runtime directory mount, processes, sessions."""
    cg = Path("/sys/fs/cgroup/user.slice") / f"user-{UID}.slice"
    try:  # the tree may go while it is walked
        cgroups = ([str(cg)] if cg.exists() else []) + sorted(
            str(d) for d in cg.rglob("*") if d.is_dir()
        )
    except OSError:
        cgroups = [str(cg)]
    sessions = run("busctl", "call", LOGIN1, "/org/freedesktop/login1",
                   f"{LOGIN1}.Manager", "ListSessions", timeout=10)["out"].strip()  # fmt: skip
    return {
        "cgroups": cgroups,
        "runtime_mounted": f"/run/user/{UID}" in mounts(),
        "processes": [p["argv"] for p in processes() if p["uid"] == UID],
        "sessions": sessions,
    }


def login(init: str, n: str) -> None:
    """pamtester open_session/close_session through common-session (pam_systemd), held by the
    e2e hook so that the session can be looked at; then everything of the user gone."""
    pam = SHARED / "pam"
    pam.mkdir(exist_ok=True)
    log = open(pam / "pamtester.log", "w+")  # noqa: SIM115
    argv = ["pamtester", "-v", "scopeshim-boot", USER, "open_session", "close_session"]
    tester = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    opened = hook_record(pam, "open_session", 60)
    fields: dict[str, Any] = {"opened": opened}
    if opened:
        sid = opened["XDG_SESSION_ID"]
        unit = "session_2d" + sid.replace("-", "_2d") + "_2escope"
        state = run("busctl", "get-property", SYSTEMD1, f"/org/freedesktop/systemd1/unit/{unit}",
                    f"{SYSTEMD1}.Unit", "ActiveState")  # fmt: skip
        fields |= {"scope_state": state["out"].strip(),
                   "runtime_mounted": opened["XDG_RUNTIME_DIR"] in mounts()}  # fmt: skip
    (pam / "go-open_session").touch()
    fields["closed"] = hook_record(pam, "close_session", 60)
    (pam / "go-close_session").touch()
    try:
        fields["pamtester_rc"] = tester.wait(60)
    except subprocess.TimeoutExpired:
        tester.kill()
        fields["pamtester_rc"] = None
    log.seek(0)
    fields["pamtester_out"] = log.read()[-800:]
    t0 = time.monotonic()
    left = user_left()
    while time.monotonic() - t0 < 30 and (
        left["cgroups"] or left["runtime_mounted"] or left["processes"]
    ):
        time.sleep(0.2)
        left = user_left()
    fields["left"] = left
    emit(step="login", boot=int(n), **fields)


def shutdown(init: str, action: str) -> None:
    """The init's own reboot or power-off command (the namespace ends with it)."""
    if init == "openrc":
        argv = ["openrc-shutdown", "-r" if action == "reboot" else "-p", "now"]
    else:
        argv = [f"/sbin/{action}"]
    subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    emit(step="shutdown", argv=argv)


def witness() -> None:
    """At shutdown, once the init has stopped scopeshim and logind: what is left."""
    procs = processes()
    ancestors = set()
    pid = os.getpid()
    while pid > 1:  # this witness and the init's script running it are not leftovers
        ancestors.add(pid)
        pid = next((q["ppid"] for q in procs if q["pid"] == pid), 1)
    nonempty = []
    for f in Path("/sys/fs/cgroup").rglob("cgroup.procs"):
        try:
            pids = [int(x) for x in f.read_text().split() if int(x) not in ancestors]
        except OSError:
            continue
        if pids and f.parent != Path("/sys/fs/cgroup"):
            nonempty.append(str(f.parent))
    data = {
        "scopeshim": [p["argv"] for p in procs if is_scopeshim(p)],
        "logind": [p["argv"] for p in procs if is_logind(p)],
        "user_processes": [p["argv"] for p in procs if p["uid"] == UID],
        "nonempty_cgroups": sorted(nonempty),
        "user_mounts": [m for m in mounts() if m.startswith("/run/user/")],
        "processes": [" ".join(p["argv"])[:120] for p in procs if p["pid"] not in ancestors],
    }
    (SHARED / "witness.json").write_text(json.dumps(data))


COMMANDS: dict[str, Callable[..., None]] = {
    "booted": booted, "install": install, "check": check, "login": login,
    "shutdown": shutdown, "witness": witness,
}  # fmt: skip


def main() -> None:
    os.chdir("/")
    COMMANDS[sys.argv[1]](*sys.argv[2:])


if __name__ == "__main__":
    main()
