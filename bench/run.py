"""`make bench`: every peer on its own private bus, one driver (bench/driver.py) for all.

Peers, in this order (each one alone on the machine while it is measured):
  floor              bench/floor.py, a trivial dbus-fast service (host, private dbus-daemon)
  dbusmock           python-dbusmock's `systemd` template (Debian's python3-dbusmock, host)
  scopeshim-fake     scopeshim, fake backend, state dir on tmpfs (host, private dbus-daemon)
  scopeshim-cgroup2  scopeshim, real cgroup2 backend, inside tests/e2e/sandbox.sh
  systemd            the real systemd 252 as PID 1 (../shared/lab/real-systemd.sh)
  logind-scopeshim   systemd-logind 252 on scopeshim (cgroup2), in tests/e2e/sandbox.sh
  logind-systemd     systemd-logind 252 on the real systemd (real-systemd.sh)
  replay             bench/replay_parse.py, when it exists
  empty-cgroups      bench/empty_latency.py: how soon the cgroup1 backend sees a cgroup empty

Where a sandbox cannot run (not root, no namespaces, no lab kit) the peer is skipped and the
reason goes into the results. Outputs: bench/results/{bench.json,bench.md,latency_vs_units.png}
and the raw per-peer JSON plus logs in bench/results/raw/.

Usage: run.py [--quick] [--only NAME[,NAME...]] [--phases PHASE[,...]] [--report-only]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
RAW = RESULTS / "raw"
PY = sys.executable
DRIVER = str(HERE / "driver.py")
SANDBOX = ROOT / "tests" / "e2e" / "sandbox.sh"
LAB = Path(os.environ.get("BENCH_LAB", ROOT.parent / "shared" / "lab"))
CANNOT_RUN = 77
# the private bus: like the e2e sandbox's (tests/e2e/sandbox-init.sh), default limits
BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"""
PEERS = [
    "floor",
    "dbusmock",
    "scopeshim-fake",
    "scopeshim-cgroup2",
    "systemd",
    "logind-scopeshim",
    "logind-systemd",
    "replay",
    "empty-cgroups",
]


def say(*parts: object) -> None:
    print("bench:", *parts, flush=True)


def scopeshim_cmd(rest: str) -> str:
    return f"{PY} -m shim serve {rest}"


EXTRA_DRIVER_ARGS: list[str] = []  # bench/profile.py adds --profile


def driver_args(name: str, kind: str, opts: argparse.Namespace, *extra: str) -> list[str]:
    out = [PY, DRIVER, "--kind", kind, "--label", name, "--out", str(RAW / f"{name}.json")]
    out += EXTRA_DRIVER_ARGS
    out += ["--levels", opts.levels]
    if getattr(opts, "phases", ""):
        out += ["--phases", opts.phases]
    if opts.quick:
        out.append("--quick")
    return out + list(extra)


def fresh(name: str) -> None:
    """No stale figures: a run that writes nothing must not find an old file."""
    for f in (RAW / f"{name}.json", RAW / f"{name}.result.json"):
        f.unlink(missing_ok=True)
    shutil.rmtree(RAW / f"{name}.logs", ignore_errors=True)


def finish(name: str, proc: subprocess.CompletedProcess[str], secs: float) -> dict[str, Any]:
    log = RAW / f"{name}.stderr"
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode == CANNOT_RUN:
        reason = (proc.stderr.strip().splitlines() or ["cannot run here"])[-1]
        say(f"{name}: skipped: {reason}")
        return {"label": name, "skipped": reason}
    out = RAW / f"{name}.json"
    if not out.exists():
        say(f"{name}: no result (exit {proc.returncode}); see {log}")
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        return {"label": name, "error": f"exit {proc.returncode}: " + " | ".join(tail)}
    result: dict[str, Any] = json.loads(out.read_text())
    say(f"{name}: done in {secs:.0f} s" + (f" (error: {result['error']})" if "error" in result
                                          else ""))  # fmt: skip
    return result


def run_host(name: str, kind: str, spawn: str, opts: argparse.Namespace) -> dict[str, Any]:
    """A private dbus-daemon of its own, the driver starting the peer on it."""
    if shutil.which("dbus-daemon") is None:
        return {"label": name, "skipped": "dbus-daemon is not installed"}
    tmp = Path(tempfile.mkdtemp(prefix="scopeshim-bench-bus-"))
    (tmp / "bus.conf").write_text(BUS_CONF.format(socket=tmp / "bus.sock"))
    bus = subprocess.Popen(
        ["dbus-daemon", f"--config-file={tmp / 'bus.conf'}", "--nofork", "--nopidfile",
         "--print-address=1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert bus.stdout is not None
    address = bus.stdout.readline().strip()
    try:
        t0 = time.time()
        # run dirs (scopeshim's state) on tmpfs, as /run is on the machines it serves
        run_dir = "/dev/shm" if Path("/dev/shm").is_dir() else str(tmp)
        proc = subprocess.run(
            [*driver_args(name, kind, opts), "--address", address, "--spawn", spawn,
             "--run-dir", run_dir],
            capture_output=True, text=True, cwd=ROOT, timeout=opts.timeout,
        )  # fmt: skip
        return finish(name, proc, time.time() - t0)
    except subprocess.TimeoutExpired:
        return {"label": name, "error": f"timed out after {opts.timeout} s"}
    finally:
        bus.terminate()
        bus.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def run_wrapped(
    name: str, wrapper: list[str], kind: str, opts: argparse.Namespace, *extra: str
) -> dict[str, Any]:
    """The driver as COMMAND of a sandbox that provides the private system bus."""
    if not Path(wrapper[0]).exists():
        return {"label": name, "skipped": f"{wrapper[0]} not found"}
    t0 = time.time()
    argv = [*wrapper, "--", *driver_args(name, kind, opts, "--address", "env", *extra)]
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    ) as popen:
        try:
            out, err = popen.communicate(timeout=opts.timeout + 60)
        except subprocess.TimeoutExpired:
            popen.terminate()  # the sandbox passes it on and tears everything down
            out, err = popen.communicate()
            return {"label": name, "error": f"timed out after {opts.timeout + 60} s"}
        finally:
            # the sandboxes name their cgroup after their own PID: nothing of ours may remain
            mine = [n for n in leftovers() if n.endswith(f"-{popen.pid}") or
                    f"-{popen.pid}-" in n]  # fmt: skip
            if mine:
                say(f"WARNING: cgroups left behind by {name}: {', '.join(mine)}")
    proc = subprocess.CompletedProcess(argv, popen.returncode, out, err)
    return finish(name, proc, time.time() - t0)


def run_replay(opts: argparse.Namespace) -> dict[str, Any]:
    script = HERE / "replay_parse.py"
    if not script.exists():
        return {"label": "replay", "skipped": "bench/replay_parse.py does not exist (yet)"}
    out = RAW / "replay.json"
    try:
        proc = subprocess.run(
            [PY, str(script), *(["--quick"] if opts.quick else []), "--out", str(out)],
            capture_output=True, text=True, cwd=ROOT, timeout=opts.timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"label": "replay", "error": f"timed out after {opts.timeout} s"}
    (RAW / "replay.stderr").write_text(proc.stdout + proc.stderr)
    if out.exists():
        return {"label": "replay", **json.loads(out.read_text())}
    for line in reversed(proc.stdout.splitlines()):  # or one JSON object on stdout
        if line.startswith("{"):
            return {"label": "replay", **json.loads(line)}
    return {"label": "replay", "error": f"exit {proc.returncode}, no JSON output"}


def run_empty(opts: argparse.Namespace) -> dict[str, Any]:
    out = RAW / "empty-cgroups.json"
    try:
        proc = subprocess.run(
            [PY, str(HERE / "empty_latency.py"), *(["--quick"] if opts.quick else []),
             "--out", str(out)],
            capture_output=True, text=True, cwd=ROOT, timeout=opts.timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"label": "empty-cgroups", "error": f"timed out after {opts.timeout} s"}
    if out.exists():
        return {"label": "empty-cgroups", **json.loads(out.read_text())}
    return {"label": "empty-cgroups", "error": f"exit {proc.returncode}: {proc.stderr[-300:]}"}


def leftovers() -> list[str]:
    base = Path("/sys/fs/cgroup/unified")
    if not base.is_dir():
        base = Path("/sys/fs/cgroup")
    try:
        return sorted(p.name for p in base.iterdir() if "scopeshim" in p.name)
    except OSError:
        return []


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", default=bool(os.environ.get("BENCH_QUICK")))
    p.add_argument("--only", default="", help="comma-separated peer names (default: all)")
    p.add_argument("--phases", default=os.environ.get("BENCH_PHASES", ""),
                   help="the driver's phases, a subset (driver.py --phases)")  # fmt: skip
    p.add_argument("--report-only", action="store_true", help="rebuild the outputs from raw/")
    p.add_argument("--timeout", type=int, default=1800, help="per peer, seconds")
    opts = p.parse_args()
    opts.levels = "100,1000" if opts.quick else "100,1000,10000"
    wanted = [n for n in opts.only.split(",") if n] or PEERS
    unknown = set(wanted) - set(PEERS)
    if unknown:
        p.error(f"unknown peers: {', '.join(sorted(unknown))} (known: {', '.join(PEERS)})")
    RAW.mkdir(parents=True, exist_ok=True)
    if not opts.report_only:
        sandbox = [str(SANDBOX), "--timeout", str(opts.timeout)]
        real = [str(LAB / "real-systemd.sh"), "-q", "--timeout", str(opts.timeout)]
        cg2_args = (
            "--system --backend cgroup2 --cgroup-root /sys/fs/cgroup/unified "
            "--state-dir {run}/state"
        )
        fake_args = (
            "--address {address} --backend fake --cgroup-root {run}/cgroupfs "
            "--state-dir {run}/state"
        )
        cg2 = scopeshim_cmd(cg2_args)
        runs = {
            "floor": lambda: run_host(
                "floor", "floor", f"{PY} {HERE / 'floor.py'} --address {{address}}", opts
            ),
            "dbusmock": lambda: run_host(
                "dbusmock", "dbusmock", "/usr/bin/python3 -m dbusmock --system --template systemd",
                opts,
            ),
            "scopeshim-fake": lambda: run_host(
                "scopeshim-fake", "scopeshim", scopeshim_cmd(fake_args), opts
            ),
            "scopeshim-cgroup2": lambda: run_wrapped(
                "scopeshim-cgroup2", sandbox, "scopeshim", opts, "--spawn", cg2,
                "--run-dir", "/run",
            ),
            "systemd": lambda: run_wrapped(
                "systemd", [*real, "--no-logind"], "systemd", opts
            ),
            "logind-scopeshim": lambda: run_wrapped(
                "logind-scopeshim", sandbox, "scopeshim", opts, "--mode", "logind",
                "--start-logind", "--run-dir", "/run", "--spawn",
                cg2 + f" --config {HERE / 'scopeshim-logind.toml'}",
            ),
            "logind-systemd": lambda: run_wrapped(
                "logind-systemd", [*real, "--user-stop-delay", "0"], "systemd", opts,
                "--mode", "logind",
            ),
            "replay": lambda: run_replay(opts),
            "empty-cgroups": lambda: run_empty(opts),
        }  # fmt: skip
        for name in wanted:
            say(f"{name}: running" + (" (quick)" if opts.quick else ""))
            fresh(name)
            result = runs[name]()
            (RAW / f"{name}.result.json").write_text(json.dumps(result, indent=1))
    from report import build  # bench/ is on sys.path: this script's directory

    paths = build(RAW, RESULTS, quick=opts.quick)
    for path in paths:
        say(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
