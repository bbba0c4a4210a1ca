"""Inside the sandbox: the per-user manager. scopeshim (user_manager = "scopeshim") and the
unmodified logind; a login of an unprivileged user makes logind start user@UID.service, for
which scopeshim starts `scopeshim serve --user` as the user in user@UID.service/init.scope;
it starts the user's session bus (dbus-daemon --session at /run/user/UID/bus) in
session.slice/dbus.service. Then, as the user, the unmodified systemctl --user (status,
list-units, show, show-environment, set-environment), dbus-update-activation-environment
--systemd and systemd-run --user --scope -p TasksMax=10; last the logout, after which
logind stops user@UID.service and nothing of the user is left.

Usage: scenario_user_manager.py [--logind PATH]; prints one JSON object per step.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.e2e import oci_bundle
from tests.e2e.inside import CGROOT, ROOT, connect, report, stop, wait_name
from tests.e2e.logind_kit import (
    INSTALLED_LOGIND,
    LOGIN1,
    SYSTEMD1,
    Logs,
    Signals,
    logind_version,
    private_user,
    start_logind,
    unit_state,
    wait_until,
)

CLIENT = Path(__file__).with_name("login_client.py")
E2E_CONFIG = Path(__file__).with_name("scopeshim-e2e.toml")


SITE = next((ROOT / ".venv/lib").glob("python3*/site-packages"))


def config(run: Path, zygote: bool) -> Path:
    """The e2e configuration with the user manager on. exec: Debian's python3 with the venv's
    packages (the venv's interpreter lives under /root, mode 700, out of the user's reach);
    zygote: the default, forks of the system daemon's zygote (then started with Debian's
    python3 too, see start_scopeshim)."""
    command = ["/usr/bin/env", f"PYTHONPATH={ROOT}:{SITE}", "/usr/bin/python3", "-m", "shim",
               "serve", "--user", "--notify-ready", "--log-level", "debug"]  # fmt: skip
    units = 'user_manager = "scopeshim"'
    if not zygote:
        units += f"\nuser_manager_command = {json.dumps(command)}"
    text = E2E_CONFIG.read_text().replace('user_manager = "masked"', units)
    path = run / "scopeshim-user.toml"
    path.write_text(text)
    return path


def start_scopeshim(conf: Path, zygote: bool) -> subprocess.Popen[bytes]:
    log = open(Path(os.environ["SCOPESHIM_E2E_RUN"]) / "scopeshim.log", "ab")  # noqa: SIM115
    python, env = sys.executable, dict(os.environ)
    if zygote:
        # the zygote's forks import what is left to import as the user: an interpreter and
        # packages the user may read, as an installed scopeshim has them
        python, env["PYTHONPATH"] = "/usr/bin/python3", f"{ROOT}:{SITE}"
    return subprocess.Popen(
        [python, "-m", "shim", "serve", "--system", "--backend", "cgroup2",
         "--cgroup-root", str(CGROOT), "--state-dir", "/run/scopeshim", "--log-level",
         "debug", "--config", str(conf)],
        cwd=ROOT, stdout=log, stderr=log, env=env,
    )  # fmt: skip


def _user_env(uid: int, home: str) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "XDG_RUNTIME_DIR": f"/run/user/{uid}",
        "DBUS_SESSION_BUS_ADDRESS": f"unix:path=/run/user/{uid}/bus",
        "SYSTEMD_COLORS": "0",
        "SYSTEMD_PAGER": "",
        "G_MESSAGES_DEBUG": "GnomeDesktop",
    }


def as_user(
    uid: int,
    gid: int,
    home: str,
    *argv: str,
    timeout: float = 60,
    extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run ARGV as the user with a login's environment (and EXTRA); its status and output."""
    env = {**_user_env(uid, home), **(extra or {})}
    # runc uses its systemd driver on a booted systemd only (sd_booted(3): /run/systemd/system
    # exists); the system instance here runs without --mark-booted, so runc's mount namespace
    # has its own /run/systemd with it
    drop = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups"]
    proc = subprocess.run(
        [*drop, *argv], env=env, capture_output=True, text=True, timeout=timeout, cwd="/"
    )
    return {"status": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}


def processes_of(uid: int) -> dict[int, dict[str, str]]:
    out: dict[int, dict[str, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open(f"/proc/{entry}/cgroup") as f:
                cg = next((x.strip()[3:] for x in f if x.startswith("0::")), "")
        except OSError:
            continue
        out[int(entry)] = {"cmdline": cmd, "cgroup": cg}
    return out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logind", default=INSTALLED_LOGIND)
    parser.add_argument("--zygote", action="store_true", help="the default launch (forks)")
    parser.add_argument("--rootless", action="append", default=[], help="runc or crun")
    parser.add_argument("--podman", action="store_true", help="rootless podman too")
    parser.add_argument("--clients", help="get-logind.sh's bin/ of 257 or 262: their clients too")
    args = parser.parse_args()
    run = Path(os.environ["SCOPESHIM_E2E_RUN"])
    user = private_user(run / "user")
    uid, gid = user.uid, user.gid
    report(step="setup", uid=uid, user=user.name, logind=logind_version(args.logind))
    daemon = start_scopeshim(config(run, args.zygote), args.zygote)
    bus = await connect()
    logind = login = login2 = None
    service = f"user@{uid}.service"
    tree = f"/user.slice/user-{uid}.slice/{service}"
    try:
        await wait_name(bus, SYSTEMD1)
        signals = await Signals.attach(bus)
        logind = start_logind(args.logind, run)
        await wait_name(bus, LOGIN1)
        login = subprocess.Popen(
            [sys.executable, str(CLIENT), str(uid), "--gid", str(gid)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert login.stdout is not None and login.stdin is not None
        created = json.loads(login.stdout.readline() or "{}")

        # logind started user@UID.service; its job is done once the user manager serves
        async def user_active() -> dict[str, Any] | None:
            state = await unit_state(bus, service)
            return state if state.get("ActiveState") in ("active", "failed") else None

        state = await wait_until(user_active, timeout=60)
        procs = processes_of(uid)
        report(
            step="login",
            created=created,
            user_unit=state or await unit_state(bus, service),
            processes=procs,
            bus_socket=os.path.exists(f"/run/user/{uid}/bus"),
            private_dir=os.path.isdir(f"/run/user/{uid}/systemd"),
        )

        home = user.home
        ctl = ["systemctl", "--user", "--no-pager"]
        report(
            step="systemctl",
            status=as_user(uid, gid, home, *ctl, "status"),
            list_units=as_user(
                uid, gid, home, *ctl, "list-units", "--all", "--plain", "--no-legend"
            ),
            show=as_user(
                uid,
                gid,
                home,
                *ctl,
                "show",
                "-p",
                "ControlGroup",
                "-p",
                "Version",
                "-p",
                "SystemState",
            ),
            show_environment=as_user(uid, gid, home, *ctl, "show-environment"),
            set_environment=as_user(uid, gid, home, *ctl, "set-environment", "E2E=yes"),
            activation=as_user(
                uid,
                gid,
                home,
                "dbus-update-activation-environment",
                "--systemd",
                "--verbose",
                "ACTIVATED=1",
            ),
            after=as_user(uid, gid, home, *ctl, "show-environment"),
            dbus_status=as_user(uid, gid, home, *ctl, "status", "dbus.service"),
        )
        scope = as_user(
            uid, gid, home, "systemd-run", "--user", "--scope", "--unit", "run-e2e",
            "-p", "TasksMax=10", "sh", "-c",
            "cat /proc/self/cgroup; systemctl --user show run-e2e.scope -P TasksMax",
        )  # fmt: skip
        report(
            step="systemd-run",
            scope=scope,
            pids_max=_read(CGROOT / tree.lstrip("/") / "app.slice/run-e2e.scope/pids.max"),
        )

        if args.clients:
            report(step="clients-new", **newer_clients(Path(args.clients), uid, gid, home, tree))
        for runtime in args.rootless:
            report(step=f"rootless-{runtime}", **rootless_oci(runtime, uid, gid, home, tree))
        if args.podman:
            report(step="podman", **rootless_podman(uid, gid, home, tree, run))

        # SIGKILL of the user manager while a scope of the user runs: it is started again and
        # takes the scope back; the process never leaves it
        keeper = subprocess.Popen(
            ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups", "systemd-run",
             "--user", "--scope", "--unit", "run-keep", "sleep", "300"],
            env=_user_env(uid, home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        scope_dir = CGROOT / tree.lstrip("/") / "app.slice/run-keep.scope"
        # once systemd-run has its job and exec'd sleep (a client still waiting for JobRemoved
        # on the private socket would lose its connection with the manager, as with systemd)
        await wait_until(
            lambda: (
                (_read(Path(f"/proc/{keeper.pid}/cmdline")) or "").startswith("sleep")
                and _read(scope_dir / "cgroup.procs")
            ),
            timeout=30,
        )
        init_dir = CGROOT / tree.lstrip("/") / "init.scope"
        before = (_read(init_dir / "cgroup.procs") or "").split()
        for pid in before:
            os.kill(int(pid), 9)

        def new_manager() -> str | None:
            now = (_read(init_dir / "cgroup.procs") or "").split()
            return now[0] if now and now[0] not in before else None

        after = await wait_until(new_manager, timeout=30)
        await asyncio.sleep(1)
        report(
            step="sigkill",
            killed=before,
            new_manager=after,
            keeper_cgroup=_read(scope_dir / "cgroup.procs"),
            keeper_pid=keeper.pid,
            show=as_user(uid, gid, home, *ctl, "show", "run-keep.scope", "-P", "ActiveState"),
            user_unit=await unit_state(bus, service),
        )
        keeper.kill()
        keeper.wait()

        # flatpak's calls over /run/user/UID/systemd/private, then gnome-desktop's
        # gnome_start_systemd_scope from inside the user's tree (python3-gi, Debian's libraries)
        here = Path(__file__).resolve().parent
        report(
            step="clients",
            flatpak=as_user(
                uid,
                gid,
                home,
                "/usr/bin/python3",
                str(here / "flatpak_scope.py"),
                "org.example.App",
            ),
            gnome=as_user(
                uid,
                gid,
                home,
                "systemd-run",
                "--user",
                "--scope",
                "--unit",
                "run-gnome",
                "/usr/bin/python3",
                str(here / "gnome_scope.py"),
                "org.example.Gnome",
            ),
            gnome_available=_gnome_desktop(),
        )

        # a second session of the same user: logind starts user@UID.service again, which is
        # running already: the same manager serves both; the first session's logout ends that
        # session's scope only, the user manager keeps running (pam_systemd(8): the user
        # manager lives as long as the user has a session or lingers)
        manager = _read(init_dir / "cgroup.procs")
        mark = signals.mark()
        login2 = subprocess.Popen(
            [sys.executable, str(CLIENT), str(uid), "--gid", str(gid)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert login2.stdout is not None and login2.stdin is not None
        created2 = json.loads(login2.stdout.readline() or "{}")
        with_two = await unit_state(bus, service)
        manager_two = _read(init_dir / "cgroup.procs")
        first = f"session-{created.get('session')}.scope"
        login.stdin.write("release\nexit\n")
        login.stdin.flush()
        login.wait(30)
        first_gone = await signals.wait(mark, "UnitRemoved", first, timeout=60) is not None
        # logind 252 stops the user UserStopDelaySec= (10 s) after its last session: a wrong
        # stop would have begun within that time
        await asyncio.sleep(12)
        report(
            step="second-session",
            created=created2,
            user_unit=with_two,
            manager_before=manager,
            manager_with_two=manager_two,
            first_removed=first_gone,
            manager_after=_read(init_dir / "cgroup.procs"),
            user_states=signals.states(mark, service),
            user_unit_after=await unit_state(bus, service),
            show_environment=as_user(uid, gid, home, *ctl, "show-environment"),
        )

        # logout of the last session: logind stops user@UID.service: everything under it goes
        login2.stdin.write("release\nexit\n")
        login2.stdin.flush()
        login2.wait(30)
        stopped = await signals.wait(0, "UnitRemoved", service, timeout=60) is not None
        gone = await wait_until(lambda: not processes_of(uid) or None, timeout=30)
        slice_dir = CGROOT / f"user.slice/user-{uid}.slice"
        # the user's slice goes once logind's stop jobs are through (user-runtime-dir@ last)
        await wait_until(lambda: not slice_dir.exists() or None, timeout=30)
        report(
            step="logout",
            user_unit_removed=stopped,
            processes_left=processes_of(uid),
            gone=bool(gone),
            user_cgroup_left=(CGROOT / tree.lstrip("/")).exists(),
            slice_cgroup_left=(CGROOT / f"user.slice/user-{uid}.slice").exists(),
            runtime_dir_mounted=os.path.ismount(f"/run/user/{uid}"),
        )
        # linger: logind starts user@UID.service without a login (SetUserLinger, what
        # `loginctl enable-linger` calls); turned off, it stops it and nothing is left.
        # /var/lib/systemd is a tmpfs of this sandbox's mount namespace: the host's is untouched
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=755", "scopeshim-linger",
                        "/var/lib/systemd"], check=True)  # fmt: skip
        mark = signals.mark()
        enabled = _linger(uid, True)
        lingering = await wait_until(user_active, timeout=60)
        env_lingering = as_user(uid, gid, home, *ctl, "show-environment")
        disabled = _linger(uid, False)
        stopped = await signals.wait(mark, "UnitRemoved", service, timeout=60) is not None
        await wait_until(lambda: not processes_of(uid) or None, timeout=30)
        await wait_until(lambda: not slice_dir.exists() or None, timeout=30)
        report(
            step="linger",
            enabled=enabled,
            user_unit=lingering,
            show_environment=env_lingering,
            disabled=disabled,
            user_unit_removed=stopped,
            processes_left=processes_of(uid),
            slice_cgroup_left=slice_dir.exists(),
        )
    finally:
        for client in (login, login2):
            if client is not None and client.poll() is None:
                client.kill()
                client.wait()
        bus.disconnect()
        if logind is not None:
            report(step="logind-exit", exit=stop(logind))
        report(step="stopped", exit=stop(daemon))
        report(step="logs", **Logs(run).excerpt({"logind.log": 0, "scopeshim.log": 0}))


def newer_clients(bindir: Path, uid: int, gid: int, home: str, tree: str) -> dict[str, Any]:
    """The unmodified systemctl --user and systemd-run --user of 257 or 262 (BINDIR), as the
    user: status, list-units, show, show-environment, import-environment, kill, stop, and a
    scope with -p limits."""
    ctl = [str(bindir / "systemctl"), "--user", "--no-pager"]
    run = [str(bindir / "systemd-run"), "--user", "--scope"]
    app = CGROOT / tree.lstrip("/") / "app.slice"
    out: dict[str, Any] = {"version": as_user(uid, gid, home, ctl[0], "--version")["stdout"]}
    out["status"] = as_user(uid, gid, home, *ctl, "status")
    out["list_units"] = as_user(uid, gid, home, *ctl, "list-units", "--all", "--plain",
                                "--no-legend")  # fmt: skip
    out["show"] = as_user(uid, gid, home, *ctl, "show", "-p", "ControlGroup", "-p", "Version",
                          "-p", "SystemState")  # fmt: skip
    out["import"] = as_user(uid, gid, home, *ctl, "import-environment", "E2E_IMPORTED",
                            extra={"E2E_IMPORTED": "from-login"})  # fmt: skip
    out["show_environment"] = as_user(uid, gid, home, *ctl, "show-environment")
    # the limits as the manager answers them from inside the scope; the files where the
    # controller is on this cgroup2 tree, else the manager's note (the log of user@UID.service)
    show = f"{ctl[0]} --user show run-new.scope -p TasksMax -p MemoryMax -p CPUWeight"
    files = f"cd {app}/run-new.scope && grep -H . pids.max memory.max cpu.weight"
    log = Path(os.environ["SCOPESHIM_E2E_RUN"]) / "scopeshim.log"
    mark = log.stat().st_size
    out["scope"] = as_user(
        uid, gid, home, *run, "--unit", "run-new", "-p", "TasksMax=12", "-p", "MemoryMax=32M",
        "-p", "CPUWeight=50", "sh", "-c", f"cat /proc/self/cgroup; {show}; {files}; true",
    )  # fmt: skip
    with log.open("rb") as f:
        f.seek(mark)
        lines = f.read().decode(errors="replace").splitlines()
    out["scope_notes"] = [x for x in lines if "run-new.scope: " in x and " DEBUG " not in x]
    # kill and stop, each of a scope whose sleep runs in the background
    for unit, verb in (("run-kill", "kill"), ("run-stop", "stop")):
        sleeper = subprocess.Popen(
            ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups", *run, "--unit",
             unit, "sleep", "300"],
            env=_user_env(uid, home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs = app / f"{unit}.scope" / "cgroup.procs"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and str(sleeper.pid) not in (_read(procs) or ""):
            time.sleep(0.05)
        before = _read(procs)
        args = ["kill", "-s", "SIGTERM"] if verb == "kill" else ["stop"]
        done = as_user(uid, gid, home, *ctl, *args, f"{unit}.scope")
        try:
            status: int | None = sleeper.wait(30)
        except subprocess.TimeoutExpired:
            sleeper.kill()
            status = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (app / f"{unit}.scope").exists():
            time.sleep(0.05)
        out[verb] = {**done, "procs_before": before, "pid": sleeper.pid, "exit": status,
                     "cgroup_left": (app / f"{unit}.scope").exists()}  # fmt: skip
    out["after"] = as_user(uid, gid, home, *ctl, "list-units", "--all", "--plain", "--no-legend")
    return out


BOOTED = "mount -t tmpfs scopeshim-booted /run/systemd && mkdir /run/systemd/system"


def rootless_oci(runtime: str, uid: int, gid: int, home: str, tree: str) -> dict[str, Any]:
    """Rootless RUNTIME (runc or crun) --systemd-cgroup as the user: it asks the user manager
    (on the session bus) for a scope, reads its ControlGroup, and runs the container in
    user@UID.service/app.slice/RUNTIME-rootless-e2e.scope. runc picks its cgroup driver from
    /sys/fs/cgroup: root makes a mount namespace where that is the cgroup2 tree, then drops
    to the user (as scenario_clients_runc.py does, without the drop)."""
    bundle = oci_bundle.build(
        Path(home) / f"{runtime}-bundle",
        ["sh", "-c", "cat /proc/self/cgroup; cat /sys/fs/cgroup/cgroup.procs >/dev/null; id -u"],
        cgroups_path=f"app.slice:{runtime}:rootless-e2e",
        rootless=(uid, gid),
    )
    # runc uses its systemd driver on a booted systemd only (sd_booted(3): /run/systemd/system
    # exists); the system instance here runs without --mark-booted, so the runtime's mount
    # namespace has its own /run/systemd with it
    drop = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups"]
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f"mount --bind {CGROOT} /sys/fs/cgroup && {BOOTED} && exec \"$@\"", runtime,
            *drop, runtime, "--root", f"/run/user/{uid}/{runtime}", "--systemd-cgroup", "run",
            "--bundle", str(bundle), "rootless-e2e"]  # fmt: skip
    proc = subprocess.run(
        argv, env=_user_env(uid, home), capture_output=True, text=True, timeout=60, cwd="/"
    )
    scope = CGROOT / tree.lstrip("/") / f"app.slice/{runtime}-rootless-e2e.scope"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and scope.exists():
        time.sleep(0.1)
    return {"status": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr,
            "scope_left": scope.exists()}  # fmt: skip


def rootless_podman(uid: int, gid: int, home: str, tree: str, run: Path) -> dict[str, Any]:
    """Rootless podman --cgroup-manager=systemd as the user: subordinate ids for the user
    (/etc/subuid and /etc/subgid of this sandbox's mount namespace), an image imported from
    the busybox rootfs, a container whose cgroup is a scope of the user manager. As for runc,
    root makes a mount namespace with the cgroup2 tree at /sys/fs/cgroup first."""
    for name in ("subuid", "subgid"):
        ids = run / name
        ids.write_text(f"{uid if name == 'subuid' else gid}:100000:65536\n")
        subprocess.run(["mount", "--bind", str(ids), f"/etc/{name}"], check=True)
    rootfs = oci_bundle.build(Path(home) / "podman-bundle", ["true"], rootless=(uid, gid))
    tar = Path(home) / "busybox.tar"
    subprocess.run(["tar", "-C", str(rootfs / "rootfs"), "-cf", str(tar), "."], check=True)
    os.chown(tar, uid, gid)
    drop = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups"]
    setup = f'mount --bind {CGROOT} /sys/fs/cgroup && {BOOTED} && exec "$@"'
    wrap = ["unshare", "--mount", "--propagation", "private", "sh", "-c", setup, "podman",
            *drop]  # fmt: skip
    podman = ["podman", "--cgroup-manager=systemd", "--storage-driver=vfs",
              "--events-backend=file", "--log-level=info"]  # fmt: skip
    out: dict[str, Any] = {}
    for step, argv in (
        # the user namespace podman makes with newuidmap: the user, then the subordinate ids
        ("unshare", [*podman, "unshare", "cat", "/proc/self/uid_map"]),
        ("import", [*podman, "import", str(tar), "localhost/scopeshim-busybox"]),
        # --pids-limit=-1: podman's default 2048 goes to pids.max, and this host's pids
        # controller is held by cgroup v1 (no pids.max on its cgroup2 tree, runc fails)
        *((f"run-{rt}", [*podman, "--runtime", rt, "run", "--rm", "--network=none",
                         "--cgroupns=host", "--pids-limit=-1", "--name", f"e2e-{rt}",
                         "localhost/scopeshim-busybox", "sh", "-c",
                         "cat /proc/self/cgroup; id -u"])
          for rt in ("runc", "crun") if shutil.which(rt)),
    ):  # fmt: skip
        proc = subprocess.run(
            [*wrap, *argv], env=_user_env(uid, home), capture_output=True, text=True,
            timeout=120, cwd="/",
        )  # fmt: skip
        out[step] = {
            "status": proc.returncode,
            "stdout": proc.stdout,
            "stderr": proc.stderr[-3000:],
        }
    # the container's and conmon's scopes go once empty
    parent = CGROOT / tree.lstrip("/") / "user.slice"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(parent.glob("libpod-*")):
        time.sleep(0.1)
    out["scopes_left"] = sorted(x.name for x in parent.glob("libpod-*"))
    return out


def _linger(uid: int, on: bool) -> dict[str, Any]:
    """login1's SetUserLinger(uid, on, interactive=false), as root."""
    proc = subprocess.run(
        ["busctl", "--system", "call", "org.freedesktop.login1", "/org/freedesktop/login1",
         "org.freedesktop.login1.Manager", "SetUserLinger", "ubb", str(uid),
         "true" if on else "false", "false"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return {"status": proc.returncode, "stderr": proc.stderr}


def _gnome_desktop() -> bool:
    probe = subprocess.run(
        ["/usr/bin/python3", "-c", "import gi; gi.require_version('GnomeDesktop', '3.0')"],
        capture_output=True,
    )
    return probe.returncode == 0


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


if __name__ == "__main__":
    asyncio.run(main())
