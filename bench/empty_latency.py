"""How soon the cgroup1 backend notices an empty cgroup (the latency bounds the tests no longer
assert): through the pidfd when its last process exits, and through the poll when a process
is moved away unseen; on a temporary named-hierarchy-like tree, no root needed. Prints JSON.

    .venv/bin/python bench/empty_latency.py [--repeat 20] [--poll 0.2] [--quick] [--out FILE]

Output: {"pidfd_ms": {"p50", "max"}, "poll_ms": {"p50", "max"}, "poll_interval_ms", "repeat"}.
The goals the tests used to assert: pidfd well under 250 ms; poll within the interval + 150 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backends.cgroup1 import Cgroup1Backend  # noqa: E402


def backend(top: Path, poll: float) -> Cgroup1Backend:
    """A tracking hierarchy of plain files under TOP/systemd, as tests/backends' legacy()."""
    track = top / "systemd"
    track.mkdir(parents=True, exist_ok=True)
    for name in ("tasks", "cgroup.procs", "cgroup.clone_children"):
        (track / name).write_text("")
    return Cgroup1Backend(track, {}, mountinfo="", poll_interval=poll)


def release(p: subprocess.Popen[bytes]) -> None:
    """Let the held shell empty its cgroup.procs and exit."""
    assert p.stdin is not None
    p.stdin.write(b"go\n")
    p.stdin.close()


async def detected(b: Cgroup1Backend, path: str, empty: object) -> float:
    """Seconds from calling EMPTY() to the backend's callback for PATH."""
    fired: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    b.watch_empty(path, lambda _p: fired.done() or fired.set_result(time.monotonic()))
    t0 = time.monotonic()
    empty()  # type: ignore[operator]
    return await asyncio.wait_for(fired, 30) - t0


async def measure(repeat: int, poll: float) -> dict[str, object]:
    pidfd: list[float] = []
    polled: list[float] = []
    with tempfile.TemporaryDirectory(prefix="scopeshim-bench-empty-") as d:
        b = backend(Path(d), poll)
        for n in range(repeat):
            path = f"/p{n}.scope"
            b.create(path)
            procs = Path(d) / "systemd" / path.lstrip("/") / "cgroup.procs"
            p = subprocess.Popen(["sh", "-c", f"read go; : > {procs}"], stdin=subprocess.PIPE)
            procs.write_text(f"{p.pid}\n")
            pidfd.append(await detected(b, path, lambda p=p: release(p)))
            p.wait()
            path = f"/m{n}.scope"
            b.create(path)
            procs = Path(d) / "systemd" / path.lstrip("/") / "cgroup.procs"
            s = subprocess.Popen(["sleep", "60"])
            procs.write_text(f"{s.pid}\n")
            polled.append(await detected(b, path, lambda procs=procs: procs.write_text("")))
            s.kill()
            s.wait()
        b.close()

    def summary(xs: list[float]) -> dict[str, float]:
        return {"p50": round(statistics.median(xs) * 1000, 1), "max": round(max(xs) * 1000, 1)}

    return {
        "pidfd_ms": summary(pidfd),
        "poll_ms": summary(polled),
        "poll_interval_ms": poll * 1000,
        "repeat": repeat,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--poll", type=float, default=0.2)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out")
    opts = p.parse_args()
    result = asyncio.run(measure(5 if opts.quick else opts.repeat, opts.poll))
    text = json.dumps(result)
    if opts.out:
        Path(opts.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
