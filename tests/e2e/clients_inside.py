"""Helpers for the client scenarios (scenario_clients*.py): they run the real, unmodified
systemctl, systemd-run, busctl, loginctl, systemd-cgls and runc as subprocesses inside
tests/e2e/sandbox.sh and report what each did, with the kernel's view and the daemon's log.

A scenario is a list of steps. `Session.step(name)` puts a marker signal on the bus (the lab
kit's form: lab.Marker.Phase(s) on /lab/marker), so that the one `dbus-monitor --system` of
the run can be cut into one trace per step; it notes where the daemon's debug log stood, so
that each step reports the "unknown member" lines the daemon logged meanwhile; and it turns an
exception into an "error" field instead of ending the scenario.

The same scenario runs under shared/lab/real-systemd.sh (`--oracle`): no scopeshim is
started, and the real systemd 252 as PID 1 answers the same commands. That is how the
expected outputs in the tests were checked.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
E2E = Path(__file__).resolve().parent
SYSTEMD1 = "org.freedesktop.systemd1"
BOOTED = Path("/run/systemd/system")
# the environment every client runs with: no pager, no colours, no ellipsis, C locale
CLIENT_ENV = {
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
    "SYSTEMD_LOG_COLOR": "0",
    "COLUMNS": "200",
    "LANG": "C.UTF-8",
    "TZ": "UTC",
}
UNKNOWN = re.compile(r"unknown member: .*")


def report(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def run_steps(session: Any, make: Any, steps: Sequence[str]) -> None:
    """A scenario's whole run: start, each of STEPS as a method of MAKE(session) reporting
    its facts, then cleanup and finish whatever failed."""
    report(step="start", **session.start())
    scenario = make(session)
    try:
        for name in steps:
            with session.step(name.replace("_", "-")) as facts:
                getattr(scenario, name)(facts)
    finally:
        report(step="cleanup", **scenario.cleanup())
        report(step="finish", **session.finish())


def run(argv: Sequence[str], timeout: float = 30, **kw: Any) -> dict[str, Any]:
    """One client command: its argv, exit status (None on timeout), stdout and stderr."""
    env = {**os.environ, **CLIENT_ENV, **kw.pop("env", {})}
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, env=env, **kw
        )
    except subprocess.TimeoutExpired as e:
        return {
            "argv": list(argv),
            "rc": None,
            "out": (e.stdout or b"").decode(errors="replace") if e.stdout else "",
            "err": f"timed out after {timeout} s",
        }
    return {"argv": list(argv), "rc": proc.returncode, "out": proc.stdout, "err": proc.stderr}


def wait_for(predicate: Any, timeout: float = 10, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def name_has_owner(name: str) -> bool:
    out = run(
        ["busctl", "--system", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
         "org.freedesktop.DBus", "NameHasOwner", "s", name],
        timeout=5,
    )  # fmt: skip
    return out["out"].strip() == "b true"


def mark(name: str) -> None:
    """A marker signal on the bus, as shared/lab/bin/lab_mark puts it."""
    run(["busctl", "--system", "emit", "/lab/marker", "lab.Marker", "Phase", "s", name])


def show(unit: str, *props: str) -> dict[str, str]:
    """`systemctl show -p ... UNIT` as a dict."""
    args = ["systemctl", "show", unit] + [f"--property={p}" for p in props]
    out = run(args)
    return dict(line.split("=", 1) for line in out["out"].splitlines() if "=" in line)


def getall_types(path: str) -> dict[str, Any]:
    """GetAll("") of one object through busctl --json: {property: D-Bus signature}, or
    {"error": ...}."""
    out = run(
        ["busctl", "--system", "--json=short", "call", SYSTEMD1, path,
         "org.freedesktop.DBus.Properties", "GetAll", "s", ""],
    )  # fmt: skip
    if out["rc"] != 0:
        return {"error": out["err"].strip()}
    data = json.loads(out["out"])["data"][0]
    return {name: value["type"] for name, value in data.items()}


def start_scope(unit: str, pids: Sequence[int], *props: tuple[str, str, str]) -> dict[str, Any]:
    """StartTransientUnit through busctl (not systemd-run, so that the systemctl steps do not
    depend on systemd-run working), waiting until the scope is active."""
    args = ["busctl", "--system", "call", SYSTEMD1, "/org/freedesktop/systemd1",
            f"{SYSTEMD1}.Manager", "StartTransientUnit", "ssa(sv)a(sa(sv))", unit, "fail",
            str(len(props) + 1)]  # fmt: skip
    for name, sig, value in props:
        args += [name, sig, value]
    args += ["PIDs", "au", str(len(pids)), *map(str, pids), "0"]
    out = run(args)
    out["active"] = wait_for(lambda: show(unit, "ActiveState").get("ActiveState") == "active")
    return out


def cgroup_state(root: Path, relative: str, files: Sequence[str] = ()) -> dict[str, Any]:
    """A cgroup directory as the kernel shows it: existence, processes, frozen, files."""
    path = root / relative.lstrip("/")
    if not path.is_dir():
        return {"exists": False}
    state: dict[str, Any] = {"exists": True}
    with contextlib.suppress(OSError):
        state["procs"] = sorted(int(p) for p in (path / "cgroup.procs").read_text().split())
    with contextlib.suppress(OSError):
        events = dict(
            line.split(" ", 1) for line in (path / "cgroup.events").read_text().splitlines()
        )
        state["populated"] = events.get("populated")
        state["frozen"] = events.get("frozen")
    for name in files:
        try:
            state[name] = (path / name).read_text().strip()
        except OSError as e:
            state[name] = f"<{e.strerror}>"
    with contextlib.suppress(OSError):
        state["controllers"] = (path / "cgroup.controllers").read_text().split()
    return state


def cgroup_walk(root: Path, below: str = "") -> list[str]:
    """Every cgroup directory under ROOT/BELOW, as cgroup paths."""
    base = root / below.lstrip("/")
    if not base.is_dir():
        return []
    for _ in range(10):  # a cgroup removed while it is walked: walk again
        with contextlib.suppress(FileNotFoundError):
            return sorted(
                "/" + str(p.relative_to(root))
                for p in base.rglob("*")
                if (p / "cgroup.procs").exists()
            )
    return []


def xattrs(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in ("trusted.invocation_id", "user.invocation_id"):
        with contextlib.suppress(OSError):
            out[name] = os.getxattr(path, name).decode(errors="replace")
    return out


class Daemon:
    """scopeshim as the scenarios run it: cgroup2 backend on the sandbox's tree, debug log,
    --mark-booted (systemctl, systemd-run, loginctl and runc need /run/systemd/system),
    /run/systemd/private (root's systemctl and systemd-run 257+ talk only there) on the
    sandbox's own tmpfs /run."""

    def __init__(self, run_dir: Path, cgroot: Path) -> None:
        self.log_path = run_dir / "scopeshim.log"
        self.cgroot = cgroot
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> bool:
        log = open(self.log_path, "wb")  # noqa: SIM115 (the daemon writes it)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shim", "serve", "--system", "--backend", "cgroup2",
             "--cgroup-root", str(self.cgroot), "--state-dir", "/run/scopeshim",
             "--log-level", "debug", "--mark-booted",
             "--private-socket", "/run/systemd/private",
             "--config", str(E2E / "scopeshim-e2e.toml")],
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )  # fmt: skip
        return wait_for(lambda: name_has_owner(SYSTEMD1), 15) and wait_for(BOOTED.is_dir, 5)

    def offset(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def lines_since(self, offset: int) -> list[str]:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return []
        return text.splitlines()

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


class Session:
    """One scenario run: the daemon (or the oracle), the bus monitor, the steps."""

    def __init__(self, name: str, oracle: bool, capture: str | None) -> None:
        self.name = name
        self.oracle = oracle
        self.capture = Path(capture) if capture else None
        self.run_dir = Path(
            os.environ.get("SCOPESHIM_E2E_RUN") or os.environ.get("LAB_RUN_DIR") or "/run"
        )
        # the sandbox shows its cgroup2 tree at /sys/fs/cgroup/unified (hybrid view); the
        # lab's real PID 1 runs in the unified view
        unified = Path("/sys/fs/cgroup/unified")
        self.cgroot = unified if unified.is_dir() else Path("/sys/fs/cgroup")
        self.daemon = None if oracle else Daemon(self.run_dir, self.cgroot)
        self.monitor: subprocess.Popen[bytes] | None = None
        self.trace = self.run_dir / f"{name}-bus.log"
        self.steps: list[str] = []

    def start(self) -> dict[str, Any]:
        facts: dict[str, Any] = {"booted_before": BOOTED.is_dir()}
        with open(self.trace, "wb") as out:
            self.monitor = subprocess.Popen(
                ["dbus-monitor", "--system"], stdout=out, stderr=subprocess.DEVNULL
            )
        wait_for(lambda: self.trace.stat().st_size > 0, 5)
        if self.daemon is not None:
            facts["serving"] = self.daemon.start()
        facts["booted"] = BOOTED.is_dir()
        facts["private_socket"] = os.path.exists("/run/systemd/private")
        facts["versions"] = {
            tool: run([tool, "--version"])["out"].splitlines()[:1]
            for tool in ("systemctl", "busctl", "loginctl", "runc", "dbus-monitor")
            if shutil.which(tool)
        }
        return facts

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[dict[str, Any]]:
        """Collects a step's facts; reports them with the daemon's unknown-member lines."""
        self.steps.append(name)
        mark(f"{self.name}:{name}")
        offset = self.daemon.offset() if self.daemon else 0
        facts: dict[str, Any] = {}
        try:
            yield facts
        except Exception:
            facts["error"] = traceback.format_exc()
        time.sleep(0.2)  # late calls (a client's last Get) reach the log
        if self.daemon is not None:
            lines = self.daemon.lines_since(offset)
            facts["unknown_members"] = [m.group(0) for line in lines if (m := UNKNOWN.search(line))]
            facts["daemon_log"] = [line for line in lines if " DEBUG " not in line][-40:]
        report(step=name, **facts)

    @contextlib.contextmanager
    def property_reads(self) -> Iterator[list[list[str]]]:
        """The Properties.Get calls to systemd1 meanwhile, as [path, interface, property]."""
        log = self.run_dir / f"{self.name}-gets.log"
        reads: list[list[str]] = []
        with open(log, "wb") as out:
            mon = subprocess.Popen(
                ["dbus-monitor", "--system",
                 f"type='method_call',destination='{SYSTEMD1}',member='Get'"],
                stdout=out,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
        wait_for(lambda: log.stat().st_size > 0, 5)
        try:
            yield reads
        finally:
            time.sleep(0.2)
            mon.terminate()
            mon.wait(5)
            call = re.compile(r'path=(\S+); .*member=Get\n\s+string "([^"]*)"\n\s+string "([^"]*)"')
            reads.extend(list(m.groups()) for m in call.finditer(log.read_text()))

    def finish(self) -> dict[str, Any]:
        facts: dict[str, Any] = {}
        mark(f"{self.name}:end")
        if self.daemon is not None:
            facts["daemon_exit"] = self.daemon.stop()
            facts["booted_after"] = BOOTED.is_dir()
        time.sleep(0.3)
        if self.monitor is not None:
            self.monitor.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.monitor.wait(5)
        facts["traces"] = self.split_trace()
        return facts

    def split_trace(self) -> list[str]:
        """The monitor's text cut at the markers: one file per step (markers dropped)."""
        if not self.trace.exists():
            return []
        text = self.trace.read_text(errors="replace")
        marker = re.compile(
            r"^signal .*path=/lab/marker; interface=lab\.Marker; member=Phase\n"
            r'   string "([^"]*)"\n',
            re.M,
        )
        parts = marker.split(text)
        written = []
        # parts: [before, name1, body1, name2, body2, ...]
        for i in range(1, len(parts) - 1, 2):
            name, body = parts[i], parts[i + 1]
            step = name.split(":", 1)[-1]
            if step == "end":
                continue
            number = self.steps.index(step) + 1 if step in self.steps else 0
            file_name = f"{self.name}-{number:02d}-{step}.log"
            if self.capture is not None:
                self.capture.mkdir(parents=True, exist_ok=True)
                (self.capture / file_name).write_text(body)
            written.append(file_name)
        return written
