"""How fast `scopeshim replay` reads dbus-monitor text: parse (and recover the types of) about
SIZE MB of captures built from the reference traces in fixtures/dbus-logs, print JSON.

    .venv/bin/python bench/replay_parse.py [--mb 10] [--repeat 3] [--quick] [--out FILE]

Output: {"bytes", "messages", "seconds" (best of the repeats), "mb_per_s", "issues", ...}.
The issue's target: 10 MB of text logs in a few seconds at most.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shim.replay.trace import loads  # noqa: E402

SOURCES = sorted((ROOT / "fixtures" / "dbus-logs").rglob("*.log"))


def corpus(megabytes: float) -> bytes:
    """Whole captures appended until the size is reached (every message stays intact)."""
    parts = [p.read_bytes() for p in SOURCES]
    parts = [p if p.endswith(b"\n") else p + b"\n" for p in parts if p]
    want = int(megabytes * 1_000_000)
    out = bytearray()
    while len(out) < want:
        for p in parts:
            out += p
            if len(out) >= want:
                break
    return bytes(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=10.0, help="megabytes of text (default 10)")
    ap.add_argument("--repeat", type=int, default=3, help="runs; the best counts (default 3)")
    ap.add_argument("--quick", action="store_true", help="2 MB, one run")
    ap.add_argument("--out", metavar="FILE", help="also write the JSON to FILE")
    args = ap.parse_args()
    if args.quick:
        args.mb, args.repeat = 2.0, 1
    data = corpus(args.mb)
    best = float("inf")
    messages = issues = 0
    for _ in range(max(1, args.repeat)):
        started = time.perf_counter()
        trace = loads(data, "bench")
        best = min(best, time.perf_counter() - started)
        messages, issues = len(trace.messages), len(trace.issues)
    result = {
        "bench": "replay_parse",
        "bytes": len(data),
        "sources": len(SOURCES),
        "messages": messages,
        "issues": issues,
        "seconds": round(best, 3),
        "mb_per_s": round(len(data) / 1e6 / best, 2),
        "python": sys.version.split()[0],
    }
    print(json.dumps(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
