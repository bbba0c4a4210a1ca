"""`scopeshim replay [--address ADDR | --spawn] [--against ADDR2] [--rules FILE] [--junit FILE]
TRACE...`

Each TRACE (a capture, or a directory searched for captures) is replayed against a daemon:
the one at ADDR (all traces in turn, on one daemon), or, by default (`--spawn`), a fresh
private dbus-daemon + `scopeshim serve --backend fake` per trace. With `--against ADDR2` it is
replayed on both, and ADDR2's conversation is compared with the first's (differential replay)
instead of with the recording. Exit status: 0 when every
trace matches its recording (allowed and known differences listed), 1 when one differs,
2 when a trace, a metadata or rules file cannot be used or the daemon cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from shim.replay.compare import Live, Result, compare
from shim.replay.plan import Plan
from shim.replay.rules import MetaError, RuleSet
from shim.replay.trace import TraceError

TRACE_SUFFIXES = (".log", ".pcap", ".bin", ".dbus")
# replays a plan on a live daemon (at an address, or a spawned one for None): the bus
# layer's driver, handed in by the command line (replay sits beside the core, below the bus)
Driver = Callable[[Plan, str | None], Awaitable[Live]]


NOT_TRACES = (".toml", ".md", ".sh", ".py", ".json", ".xml")


def collect(paths: list[str]) -> list[str]:
    """Captures named or found (recursively, sorted) in the directories named. Metadata,
    rules and notes named explicitly (`fixtures/dbus-logs/*` names them too) are passed
    over."""
    out: list[str] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(
                str(f) for f in path.rglob("*") if f.is_file() and f.suffix in TRACE_SUFFIXES
            )
            out.extend(found)
        elif path.suffix not in NOT_TRACES:
            out.append(p)
    return out


async def _replay_one(path: str, rules: RuleSet, address: str | None, drive: Driver) -> Result:
    from shim.replay.plan import build

    started = time.monotonic()
    try:
        plan = build(path, rules)
    except (TraceError, MetaError) as e:
        return Result(path, error=str(e))
    if not plan.meta.compare:
        result = compare(plan, Live())
        result.compared = False
        result.failures.clear()
        result.allowed.clear()
        result.known.clear()
        return result
    try:
        live = await drive(plan, address)
    except Exception as e:  # a bug of ours: one line, not a traceback, and go on
        live = Live(error=f"internal error of the replayer: {type(e).__name__}: {e}")
    result = compare(plan, live)
    result.seconds = time.monotonic() - started
    return result


async def replay_all(
    traces: list[str], rules: RuleSet, address: str | None, drive: Driver
) -> list[Result]:
    return [await _replay_one(t, rules, address, drive) for t in traces]


async def _differ_one(
    path: str, rules: RuleSet, first: str | None, second: str, drive: Driver
) -> Result:
    """The trace replayed on `first` (None: a spawned scopeshim) and on `second`; the
    second's conversation compared with the first's."""
    from shim.replay.differential import differ
    from shim.replay.plan import build

    started = time.monotonic()
    try:
        plan = build(path, rules)
    except (TraceError, MetaError) as e:
        return Result(path, error=str(e))
    lives = []
    for address in (first, second):
        try:
            lives.append(await drive(plan, address))
        except Exception as e:  # a bug of ours: one line, not a traceback, and go on
            lives.append(Live(error=f"internal error of the replayer: {type(e).__name__}: {e}"))
    result = differ(plan, lives[0], lives[1], first or "scopeshim (spawned)", second)
    result.seconds = time.monotonic() - started
    return result


async def differ_all(
    traces: list[str], rules: RuleSet, first: str | None, second: str, drive: Driver
) -> list[Result]:
    return [await _differ_one(t, rules, first, second, drive) for t in traces]


def run(args: argparse.Namespace, drive: Driver) -> int:
    try:
        return _run(args, drive)
    except BrokenPipeError:  # `scopeshim replay --show X | head`: the reader left
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run(args: argparse.Namespace, drive: Driver) -> int:
    rules = RuleSet()
    try:
        if args.rules:
            from shim.replay.meta import load_rules

            for f in args.rules:
                rules.extend(load_rules(f))
    except MetaError as e:
        print(f"scopeshim replay: {e}", file=sys.stderr)
        return 2
    traces = collect(args.traces)
    missing = [t for t in traces if not Path(t).is_file()]
    if missing:
        print(f"scopeshim replay: no such trace: {', '.join(missing)}", file=sys.stderr)
        return 2
    if not traces:
        print("scopeshim replay: no traces found", file=sys.stderr)
        return 2
    from shim.replay import report

    if getattr(args, "show", False):
        return _show(traces, rules)
    against = getattr(args, "against", None)
    if against:
        first = args.address or "scopeshim (spawned)"
        print(f"differential replay: expected = what {first} answered, got = what {against} did")
        results = asyncio.run(differ_all(traces, rules, args.address, against, drive))
    else:
        results = asyncio.run(replay_all(traces, rules, args.address, drive))
    for r in results:
        print(report.text(r, verbose=args.verbose))
    if args.junit:
        Path(args.junit).write_bytes(report.junit(results))
    failed = [r for r in results if r.failures]
    errors = [r for r in results if r.error is not None]
    print(
        f"--- {len(results)} traces: {len(results) - len(failed) - len(errors)} ok, "
        f"{len(failed)} with differences, {len(errors)} errors"
    )
    if errors:
        return 2
    return 1 if failed else 0


def _show(traces: list[str], rules: RuleSet) -> int:
    """The normalised conversations, as a replay would send and expect them."""
    from shim.replay import report
    from shim.replay.plan import build

    status = 0
    for t in traces:
        try:
            plan = build(t, rules)
        except (TraceError, MetaError) as e:
            print(f"=== {t}: error: {e}")
            status = 2
            continue
        print(report.conversation(plan))
        if plan.world is not None and plan.world.lines():
            print("  inferred before the first call (made first, not compared):")
            for line in plan.world.lines():
                print(f"    {line}")
        for issue in plan.issues:
            print(f"    type not recovered: {issue}")
    return status
