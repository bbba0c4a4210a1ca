"""Memory of what runs per logged-in user: N user managers (`scopeshim serve --user`, fake
backend), each with its own session bus (the dbus-daemon --session it starts), as on a
shared login server. Prints RSS and PSS (proc(5) /proc/PID/smaps_rollup) per process kind
and in total at each N, and the cost of each additional user (PSS slope).

Usage: bench/user_memory.py [--users 1,10,50] [--mode exec|zygote] [--json FILE]

exec: each manager is its own `python -m shim serve --user` (what user@UID.service runs by
default). zygote: each manager is forked from one pre-imported parent (gc.freeze() first),
the variant docs/user-manager.md argues about; pages shared with the parent count once in
PSS. Nothing here is asserted: the figures go to docs/user-manager.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def smaps(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB."""
    rss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
            if ppid == pid:
                out.append(int(entry))
    return out


def start_exec(runtime: Path) -> subprocess.Popen[str]:
    env = {"PATH": os.environ["PATH"], "XDG_RUNTIME_DIR": str(runtime), "HOME": str(runtime)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "shim", "serve", "--user", "--backend", "fake", "--notify-ready",
         "--log-level", "warning"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "READY=1":
        raise SystemExit(f"user manager in {runtime} did not start: {line!r}")
    return proc


def session_bus_pid(manager: int, runtime: Path) -> int | None:
    """The dbus-daemon the manager started (its child, in a session of its own)."""
    for pid in children_of(manager):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"dbus-daemon" in cmd and str(runtime).encode() in cmd:
            return pid
    return None


def measure(pids: dict[str, list[int]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for kind, members in pids.items():
        rss = pss = 0
        for pid in members:
            r, p = smaps(pid)
            rss += r
            pss += p
        out[kind] = {"n": len(members), "rss_mib": rss / 1024, "pss_mib": pss / 1024}
    return out


def run(users: int, mode: str) -> dict[str, object]:
    base = Path(tempfile.mkdtemp(prefix="scopeshim-mem-"))
    managers: list[subprocess.Popen[str]] = []
    zygote: subprocess.Popen[str] | None = None
    buses: list[int] = []
    manager_pids: list[int] = []
    try:
        if mode == "zygote":
            zygote = subprocess.Popen(
                [sys.executable, "-m", "shim", "zygote", "--log-level", "warning"],
                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert zygote.stdout is not None and zygote.stdin is not None
            assert zygote.stdout.readline().strip() == "READY=1"
        for i in range(users):
            runtime = base / f"u{i}"
            runtime.mkdir()
            if zygote is None:
                proc = start_exec(runtime)
                managers.append(proc)
                pid = proc.pid
            else:
                assert zygote.stdin is not None and zygote.stdout is not None
                argv = ["serve", "--user", "--backend", "fake", "--notify-ready",
                        "--log-level", "warning"]  # fmt: skip
                env = {"XDG_RUNTIME_DIR": str(runtime), "HOME": str(runtime),
                       "PATH": os.environ["PATH"]}  # fmt: skip
                request = {"argv": argv, "env": env}
                zygote.stdin.write(json.dumps(request) + "\n")
                zygote.stdin.flush()
                forked = json.loads(zygote.stdout.readline())
                assert forked["stage"] == "forked", forked
                zygote.stdin.write("go\n")
                zygote.stdin.flush()
                answer = json.loads(zygote.stdout.readline())
                pid = int(answer["pid"])
                if not answer.get("ready"):
                    raise SystemExit(f"forked user manager not ready: {answer}")
            manager_pids.append(pid)
            bus = None
            for _ in range(100):
                bus = session_bus_pid(pid, runtime)
                if bus:
                    break
                time.sleep(0.02)
            if bus:
                buses.append(bus)
        time.sleep(1.0)  # let start-up garbage settle
        kinds = {"user manager": manager_pids, "session bus": buses}
        if zygote is not None:
            kinds["zygote (once)"] = [zygote.pid]
        figures = measure(kinds)
        total_pss = sum(v["pss_mib"] for k, v in figures.items())
        total_rss = sum(v["rss_mib"] for k, v in figures.items())
        return {"users": users, "mode": mode, "kinds": figures,
                "total_rss_mib": total_rss, "total_pss_mib": total_pss}  # fmt: skip
    finally:
        for pid in manager_pids + buses:  # managers first: they must not lose their bus
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for proc in managers:
            proc.wait(30)
            if proc.stdout is not None:
                proc.stdout.close()
        if zygote is not None:
            zygote.terminate()
            zygote.wait(30)
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", default="1,10,50")
    parser.add_argument("--mode", choices=("exec", "zygote"), default="exec")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    results = [run(int(n), args.mode) for n in args.users.split(",")]
    for r in results:
        kinds = r["kinds"]
        assert isinstance(kinds, dict)
        parts = ", ".join(
            f"{k}: {v['n']} x {v['rss_mib'] / max(v['n'], 1):.1f} MiB RSS,"
            f" {v['pss_mib'] / max(v['n'], 1):.1f} MiB PSS"
            for k, v in kinds.items()
        )
        print(f"{args.mode} {r['users']:>3} users: total RSS {r['total_rss_mib']:.1f} MiB, "
              f"PSS {r['total_pss_mib']:.1f} MiB ({parts})")  # fmt: skip
    if len(results) > 1:
        a, b = results[0], results[-1]
        slope = (float(b["total_pss_mib"]) - float(a["total_pss_mib"])) / (
            int(b["users"]) - int(a["users"])
        )  # type: ignore[arg-type]
        print(f"{args.mode}: each additional user costs {slope:.1f} MiB PSS")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
