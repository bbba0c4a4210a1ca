"""Profile scopeshim under the benchmark load: py-spy attached to the daemon, one recording
per phase of bench/driver.py, then the costs summed per function.

  profile.py [--quick] [--backend fake]      run + analyse -> bench/results/profile/
  profile.py --analyse DIR                   analyse existing recordings

py-spy samples at 500 Hz without pausing the daemon (--nonblocking), idle time (the event
loop waiting in epoll) excluded, so a share is a share of the daemon's busy CPU time.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench_run  # noqa: E402  (bench/run.py: private bus, driver invocation)

OUT = HERE / "results" / "profile"
# the interpreter and the event loop: in every stack, never the cost itself
LOOP_FRAMES = ("<module>", "_run_module_as_main", "_run_code", "Runner.run ", "BaseEventLoop.",
               "run (asyncio", "Handle._run ", "main (", "run (shim/", "serve (shim/")  # fmt: skip
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")


def short(frame: str) -> str:
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m["file"]
    for root in ("/work/main/", "site-packages/", "lib/python3.11/"):
        if root in path:
            path = path.split(root, 1)[1]
            break
    return f"{m['func']} ({path})"


def load(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        head, _, count = line.rpartition(" ")
        if not head or not count.isdigit():
            continue
        frames = [short(f) for f in head.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        stacks.append((frames, int(count)))
    return stacks


def analyse(path: Path, top: int = 25) -> str:
    stacks = load(path)
    total = sum(c for _, c in stacks)
    if not total:
        return f"### {path.stem}\n\nno samples\n"
    self_cost: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        if frames:
            self_cost[frames[-1]] += count
        for f in set(frames):
            inclusive[f] += count
    lines = [f"### {path.stem} ({total} samples at 500 Hz = {total / 500:.1f} s busy)", ""]
    lines += ["| inclusive % | self % | function |", "|---|---|---|"]
    ranked = sorted(inclusive.items(), key=lambda kv: -kv[1])
    shown = 0
    for func, n in ranked:
        if n / total < 0.02 or shown >= top:
            break
        if func.startswith(LOOP_FRAMES):
            continue
        lines.append(f"| {100 * n / total:.1f} | {100 * self_cost[func] / total:.1f} | `{func}` |")
        shown += 1
    lines += ["", "Top self (leaf) costs:", ""]
    for func, n in self_cost.most_common(12):
        lines.append(f"- {100 * n / total:.1f}% `{func}`")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--analyse", type=Path, default=None)
    p.add_argument("--backend", choices=["fake", "cgroup2"], default="fake",
                   help="cgroup2 runs inside tests/e2e/sandbox.sh")  # fmt: skip
    p.add_argument("--phases", default="", help="the driver's phases, a subset")
    opts = p.parse_args()
    out = opts.analyse or OUT
    if opts.analyse is None:
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob(f"scopeshim-{opts.backend}-*.txt"):
            old.unlink()
        bench_run.RAW.mkdir(parents=True, exist_ok=True)
        args = argparse.Namespace(
            quick=opts.quick, levels="100,1000" if opts.quick else "100,1000,10000",
            timeout=1800, phases=opts.phases,
        )  # fmt: skip
        name = f"scopeshim-{opts.backend}"
        bench_run.EXTRA_DRIVER_ARGS = ["--profile", str(out / name)]
        if opts.backend == "fake":
            spawn = bench_run.scopeshim_cmd(
                "--address {address} --backend fake --cgroup-root {run}/cgroupfs "
                "--state-dir {run}/state"
            )
            result = bench_run.run_host(f"profile-{name}", "scopeshim", spawn, args)
        else:
            spawn = bench_run.scopeshim_cmd(
                "--system --backend cgroup2 --cgroup-root /sys/fs/cgroup/unified "
                "--state-dir {run}/state"
            )
            sandbox = [str(bench_run.SANDBOX), "--timeout", "1800"]
            result = bench_run.run_wrapped(
                f"profile-{name}", sandbox, "scopeshim", args, "--spawn", spawn,
                "--run-dir", "/run",
            )  # fmt: skip
        if "error" in result:
            print("profile run error:", result["error"], file=sys.stderr)
    report = ["# scopeshim under the benchmark load (py-spy)", ""]
    for rec in sorted(out.glob("*.txt"), key=lambda f: f.stat().st_mtime):
        report.append(analyse(rec))
    (out / "profile.md").write_text("\n".join(report))
    print(out / "profile.md")


if __name__ == "__main__":
    main()
