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
import shlex
import shutil
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


def readable_code() -> Path:
    """The daemon's code where nobody can read it, wherever the checkout is: a clone inside a
    0700 directory (root's home, `mktemp -d`) is closed to other users. The project's packages
    and the third-party packages they import (from the venv) are copied to a world-readable
    directory; nothing under the checkout is needed afterwards."""
    # what `serve --backend cgroup2` imports, and more (pydantic: a configuration file)
    import pydantic

    import backends.cgroup2
    import shim.bus.daemon
    import shim.cli

    del backends, pydantic, shim

    site = next((ROOT / ".venv/lib").glob("python3*/site-packages"))
    top = Path(tempfile.mkdtemp(prefix="scopeshim-code-"))
    for pkg in ("shim", "compat", "backends"):
        shutil.copytree(ROOT / pkg, top / "src" / pkg, ignore=shutil.ignore_patterns("*.pyc"))
    used = set()
    for module in list(sys.modules.values()):
        f = getattr(module, "__file__", None)
        if f and Path(f).resolve().is_relative_to(site.resolve()):
            used.add(Path(f).resolve().relative_to(site.resolve()).parts[0])
    for name in sorted(used):
        src, dst = site / name, top / "site" / name
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.pyc"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    for d, _dirs, files in os.walk(top):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644 if not f.endswith(".so") else 0o755)
    return top


def start_daemon_as(user: pwd.struct_passwd, state: str, code: Path) -> subprocess.Popen[bytes]:
    """The system python runs the copied code as the unprivileged user, in a mount namespace
    of its own where the checkout is hidden under an empty root-only tmpfs: it is shown to
    need nothing there (the venv's interpreter lives under the checkout too)."""
    log = open(Path(os.environ["SCOPESHIM_E2E_RUN"]) / "scopeshim-nonroot.log", "wb")  # noqa: SIM115
    serve = [
        "/usr/bin/python3", "-m", "shim", "serve", "--system", "--backend", "cgroup2",
        "--cgroup-root", str(SUBTREE), "--state-dir", state, "--log-level", "debug",
        # no /run/systemd/private: an unprivileged instance cannot create it, and the
        # private socket admits only root, whom this instance does not serve
        "--private-socket", "",
    ]  # fmt: skip
    drop = [
        "setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--",
    ]  # fmt: skip
    hide = f"mount -t tmpfs -o mode=0700 scopeshim-hidden {shlex.quote(str(ROOT))}"
    return subprocess.Popen(
        ["unshare", "--mount", "--", "sh", "-c", f'{hide} && exec "$@"', "sh", *drop, *serve],
        cwd=code,
        env={**os.environ, "PYTHONPATH": f"{code / 'src'}:{code / 'site'}"},
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
    code = readable_code()
    daemon = start_daemon_as(nobody, state, code)
    bus = await connect()
    try:
        await wait_name(bus, "org.freedesktop.systemd1")
        report(
            step="daemon",
            uid=os.stat(f"/proc/{daemon.pid}").st_uid,
            # its checkout is an empty directory it cannot enter
            hidden=os.stat(f"/proc/{daemon.pid}/root{ROOT}").st_mode & 0o777 == 0o700
            and not os.listdir(f"/proc/{daemon.pid}/root{ROOT}"),
            code=os.readlink(f"/proc/{daemon.pid}/cwd") == str(code),
        )
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
