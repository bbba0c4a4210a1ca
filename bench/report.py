"""The outputs of `make bench`: bench.json (every figure), bench.md (ratios scopeshim / peer,
the goals), latency_vs_units.png (latency against live units, one line per implementation).

Usage: report.py [RAW_DIR] [OUT_DIR]   (run.py calls build() after the runs)
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
IMPLS = [
    ("scopeshim-fake", "scopeshim (fake)"),
    ("scopeshim-cgroup2", "scopeshim (cgroup2)"),
    ("systemd", "systemd 252"),
    ("dbusmock", "dbusmock"),
    ("floor", "floor"),
]
# (numerator, denominator, header): every ratio is scopeshim / peer
RATIOS = [
    ("scopeshim-cgroup2", "systemd", "cgroup2 / systemd"),
    ("scopeshim-fake", "systemd", "fake / systemd"),
    ("scopeshim-fake", "dbusmock", "fake / dbusmock"),
    ("scopeshim-fake", "floor", "fake / floor"),
]
FLAT_LIMIT = 1.25  # "flat": the p50 at 10,000 live units within 25 % of the p50 at 100

Getter = Callable[[dict[str, Any]], float | None]


def dig(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def mib(d: Any, *keys: str) -> float | None:
    v = dig(d, *keys)
    return None if v is None else v / 1024


def level(lv: int, *keys: str) -> Getter:
    return lambda r: dig(r, "levels", str(lv), *keys)


def rows(levels: list[int]) -> list[tuple[str, str, Getter]]:
    """(measure, better, getter) for every row of the table."""
    out: list[tuple[str, str, Getter]] = [
        ("start to name acquired, p50 (ms)", "lower",
         lambda r: dig(r, "ready", "start_to_name_acquired", "p50_ms")),
        ("idle RSS (MiB)", "lower", lambda r: mib(r, "memory_idle", "vmrss_kib")),
        ("StartTransientUnit -> JobRemoved, sequential, p50 (ms)", "lower",
         lambda r: dig(r, "start_seq", "job_removed", "p50_ms")),
        ("StartTransientUnit -> JobRemoved, sequential, p99 (ms)", "lower",
         lambda r: dig(r, "start_seq", "job_removed", "p99_ms")),
        ("StartTransientUnit -> JobRemoved, 64 in flight, p50 (ms)", "lower",
         lambda r: dig(r, "start_64", "job_removed", "p50_ms")),
        ("StartTransientUnit -> JobRemoved, 64 in flight, p99 (ms)", "lower",
         lambda r: dig(r, "start_64", "job_removed", "p99_ms")),
        ("scope starts per second, 64 in flight", "higher",
         lambda r: dig(r, "start_64", "per_s")),
        ("StopUnit -> JobRemoved, sequential, p50 (ms)", "lower",
         lambda r: dig(r, "stop_seq", "job_removed", "p50_ms")),
        ("StopUnit -> JobRemoved, sequential, p99 (ms)", "lower",
         lambda r: dig(r, "stop_seq", "job_removed", "p99_ms")),
        ("StopUnit -> JobRemoved, 64 in flight, p50 (ms)", "lower",
         lambda r: dig(r, "stop_64", "job_removed", "p50_ms")),
        ("scope lifecycles per second, sequential", "higher",
         lambda r: dig(r, "lifecycle", "seq", "per_s")),
        ("scope lifecycles per second, 64 in flight", "higher",
         lambda r: dig(r, "lifecycle", "inflight_64", "per_s")),
    ]  # fmt: skip
    for lv in levels:
        out += [
            (f"@{lv:,} live: start -> JobRemoved p50 (ms)", "lower", level(lv, "start", "p50_ms")),
            (f"@{lv:,} live: StopUnit -> JobRemoved p50 (ms)", "lower",
             level(lv, "stop", "p50_ms")),
            (f"@{lv:,} live: GetUnit p50 (ms)", "lower", level(lv, "get_unit", "p50_ms")),
            (f"@{lv:,} live: Get ActiveState p50 (ms)", "lower",
             level(lv, "get_active_state", "p50_ms")),
            (f"@{lv:,} live: ListUnits median (ms)", "lower", level(lv, "list_units", "p50_ms")),
            (f"@{lv:,} live: RSS (MiB)", "lower",
             lambda r, lv=lv: mib(r, "levels", str(lv), "memory", "vmrss_kib")),
        ]  # fmt: skip
    lo, hi = levels[0], levels[-1]
    if hi != lo:
        for what, key in (("start", "start"), ("StopUnit", "stop"), ("GetUnit", "get_unit")):
            out.append(
                (f"{what} p50 growth {lo:,} -> {hi:,} live (x)", "lower",
                 lambda r, k=key: growth(r, lo, hi, k))
            )  # fmt: skip
    return out


def growth(r: dict[str, Any], lo: int, hi: int, key: str) -> float | None:
    a = dig(r, "levels", str(lo), key, "p50_ms")
    b = dig(r, "levels", str(hi), key, "p50_ms")
    return None if not a or b is None else b / a


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}"


def goals(peers: dict[str, dict[str, Any]], levels: list[int]) -> list[tuple[str, str, str]]:
    """(goal, verdict, evidence)."""
    fake, cg2, sd = (peers.get(k, {}) for k in ("scopeshim-fake", "scopeshim-cgroup2", "systemd"))
    mock = peers.get("dbusmock", {})
    out = []

    def pair(a: Any, b: Any) -> float | None:
        return None if a is None or b is None or not b else a / b

    checks = [
        ("start seq p50", pair(dig(cg2, "start_seq", "job_removed", "p50_ms"),
                               dig(sd, "start_seq", "job_removed", "p50_ms")), "le"),
        ("start 64-in-flight p50", pair(dig(cg2, "start_64", "job_removed", "p50_ms"),
                                        dig(sd, "start_64", "job_removed", "p50_ms")), "le"),
        ("stop seq p50", pair(dig(cg2, "stop_seq", "job_removed", "p50_ms"),
                              dig(sd, "stop_seq", "job_removed", "p50_ms")), "le"),
        ("lifecycles/s seq", pair(dig(cg2, "lifecycle", "seq", "per_s"),
                                  dig(sd, "lifecycle", "seq", "per_s")), "ge"),
        ("lifecycles/s 64 in flight", pair(dig(cg2, "lifecycle", "inflight_64", "per_s"),
                                           dig(sd, "lifecycle", "inflight_64", "per_s")), "ge"),
    ]  # fmt: skip
    known = [(n, v, d) for n, v, d in checks if v is not None]
    ok = all((v <= 1.0) if d == "le" else (v >= 1.0) for _, v, d in known)
    out.append((
        "as fast as real systemd 252 at scope create/teardown (cgroup2 backend vs systemd)",
        "n/a" if not known else ("met" if ok else "missed"),
        "; ".join(f"{n} {v:.2f}x" for n, v, _ in known) or "systemd or cgroup2 run missing",
    ))  # fmt: skip
    m = [
        ("start seq p50", pair(dig(mock, "start_seq", "job_removed", "p50_ms"),
                               dig(fake, "start_seq", "job_removed", "p50_ms"))),
        ("start 64-in-flight throughput", pair(dig(fake, "start_64", "per_s"),
                                               dig(mock, "start_64", "per_s"))),
    ]  # fmt: skip
    mk = [(n, v) for n, v in m if v is not None]
    out.append((
        ">= 5x python-dbusmock's systemd template (fake backend)",
        "n/a" if not mk else ("met" if all(v >= 5 for _, v in mk) else "missed"),
        "; ".join(f"{n}: dbusmock / scopeshim = {v:.2f}x" for n, v in mk) or "a run is missing",
    ))  # fmt: skip
    lo, hi = levels[0], levels[-1]
    flat = []
    for label, r in (("fake", fake), ("cgroup2", cg2)):
        for key in ("start", "stop", "get_unit", "get_active_state"):
            g = growth(r, lo, hi, key)
            if g is not None:
                flat.append((f"{label} {key}", g))
    out.append((
        f"flat cost per operation {lo:,} -> {hi:,} live units (p50 within {FLAT_LIMIT}x)",
        "n/a" if not flat else ("met" if all(g <= FLAT_LIMIT for _, g in flat) else "missed"),
        "; ".join(f"{n} {g:.2f}x" for n, g in flat) or "levels missing",
    ))  # fmt: skip
    rss = [(lbl, mib(r, "memory_idle", "vmrss_kib")) for lbl, r in (("fake", fake),
                                                                  ("cgroup2", cg2))]  # fmt: skip
    rss = [(n, v) for n, v in rss if v is not None]
    out.append((
        "idle RSS <= 30 MiB",
        "n/a" if not rss else ("met" if all(v <= 30 for _, v in rss) else "missed"),
        "; ".join(f"{n} {v:.1f} MiB" for n, v in rss),
    ))  # fmt: skip
    ready = [(lbl, dig(r, "ready", "start_to_name_acquired", "p50_ms"))
             for lbl, r in (("fake", fake), ("cgroup2", cg2))]  # fmt: skip
    ready = [(n, v) for n, v in ready if v is not None]
    out.append((
        "ready on the bus <= 300 ms (start -> name acquired, p50)",
        "n/a" if not ready else ("met" if all(v <= 300 for _, v in ready) else "missed"),
        "; ".join(f"{n} {v:.0f} ms" for n, v in ready),
    ))  # fmt: skip
    _, new = issue20_table(peers)
    known20 = [(m, v, x) for m, v, x in new if v != "n/a"]
    out.append((
        "issue 20's measures at least as good as systemd 252's (cgroup2 backend)",
        "n/a" if not known20 else ("met" if all(v == "met" for _, v, _ in known20) else "missed"),
        "; ".join(f"{m}: {x}x" for m, v, x in known20 if v == "missed") or
        ("all met" if known20 else "cgroup2 or systemd run missing"),
    ))  # fmt: skip
    return out


def issue20_rows() -> list[tuple[str, Getter]]:
    """(measure, getter) of issue 20's measures (bench/extras.py); all lower-is-better."""
    out: list[tuple[str, Getter]] = []
    k = ("kube_burst",)
    out += [
        ("kubelet burst 100 pods x 2: total (s)", lambda r: dig(r, *k, "total_s")),
        ("kubelet burst: create (s)", lambda r: dig(r, *k, "create_s")),
        ("kubelet burst: update (s)", lambda r: dig(r, *k, "update_s")),
        ("kubelet burst: teardown (s)", lambda r: dig(r, *k, "teardown_s")),
        ("kubelet burst: per call p50 (ms)", lambda r: dig(r, *k, "all_calls", "p50_ms")),
        ("kubelet burst: per call p99 (ms)", lambda r: dig(r, *k, "all_calls", "p99_ms")),
        ("kubelet burst: start -> JobRemoved p99 (ms)",
         lambda r: dig(r, *k, "calls", "start_job", "p99_ms")),
        ("kubelet burst: Get Version, 2nd client, p99 (ms)",
         lambda r: dig(r, *k, "second_client", "get_version", "p99_ms")),
    ]  # fmt: skip
    for lv in (3000, 10000):
        out += [
            (f"@{lv:,} loaded, starts running: GetUnit p99 (ms)",
             lambda r, lv=lv: dig(r, "respond", str(lv), "get_unit", "p99_ms")),
            (f"@{lv:,} loaded, starts running: Get ActiveState p99 (ms)",
             lambda r, lv=lv: dig(r, "respond", str(lv), "get_active_state", "p99_ms")),
        ]  # fmt: skip
    for what, key in (("lifecycle (exit)", "lifecycle"), ("start + StopUnit", "start_stop")):
        out += [
            (f"bus messages per scope {what}", lambda r, k=key: dig(r, "bus_bytes", k, "messages")),
            (f"bus bytes per scope {what}", lambda r, k=key: dig(r, "bus_bytes", k, "bytes")),
        ]  # fmt: skip
    sv = ("services",)
    out += [
        ("service StartTransientUnit -> JobRemoved p50 (ms)",
         lambda r: dig(r, *sv, "job_removed", "p50_ms")),
        ("service StartTransientUnit -> JobRemoved p99 (ms)",
         lambda r: dig(r, *sv, "job_removed", "p99_ms")),
        ("service start -> exited, UnitRemoved p50 (ms)",
         lambda r: dig(r, *sv, "exited_removed", "p50_ms")),
        ("service start -> exited, UnitRemoved p99 (ms)",
         lambda r: dig(r, *sv, "exited_removed", "p99_ms")),
        ("systemd-run --wait true p50 (ms)", lambda r: dig(r, *sv, "systemd_run", "p50_ms")),
        ("systemd-run --wait true p99 (ms)", lambda r: dig(r, *sv, "systemd_run", "p99_ms")),
    ]  # fmt: skip
    return out


def issue20_table(peers: dict[str, dict[str, Any]]) -> tuple[list[str], list[tuple[str, str, str]]]:
    """Markdown lines of issue 20's measures; each row's goal: cgroup2 <= systemd 252."""
    cg2, fake, sd = (peers.get(k, {}) for k in ("scopeshim-cgroup2", "scopeshim-fake", "systemd"))
    lines = [
        "| measure (lower is better) | scopeshim (cgroup2) | scopeshim (fake) | systemd 252 | "
        "cgroup2 / systemd | goal (<= 1.0) |",
        "|---|---|---|---|---|---|",
    ]
    verdicts = []
    for measure, get in issue20_rows():
        a, f, b = get(cg2), get(fake), get(sd)
        if a is None and f is None and b is None:
            continue
        v = "n/a" if a is None or not b else ("met" if a / b <= 1.0 else "missed")
        verdicts.append((measure, v, ratio(a, b)))
        lines.append(f"| {measure} | {fmt(a)} | {fmt(f)} | {fmt(b)} | {ratio(a, b)} | {v} |")
    for label, r in (("cgroup2", cg2), ("fake", fake), ("systemd", sd)):
        skip = dig(r, "services", "systemd_run", "skipped")
        if skip:
            lines.append(f"\nsystemd-run on {label}: skipped: {one_line(skip)}")
    return lines, verdicts


def one_line(text: str, limit: int = 300) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    out = lines[0] if len(lines) <= 1 else f"{lines[0]} ... {lines[-1]}"
    return out[:limit]


def markdown(data: dict[str, Any]) -> str:
    peers: dict[str, dict[str, Any]] = data["peers"]
    levels: list[int] = data["meta"]["levels"]
    lines = [
        "# scopeshim benchmarks",
        "",
        f"{data['meta']['when']} on {data['meta']['machine']}, scopeshim "
        f"{data['meta'].get('revision', '?')}; "
        f"{'QUICK mode; ' if data['meta']['quick'] else ''}one run, one machine, each peer "
        "alone on its own private bus, one driver (bench/driver.py) for all.",
        "",
        "Ratios are scopeshim / peer: for times (ms, MiB, growth) below 1 is better for "
        "scopeshim, for rates (per second) above 1 is. Latencies are medians (p50) or p99 over "
        'the samples given under *Repeats*; "-" = the peer has no such operation or the '
        "run was skipped (reasons below).",
        "",
    ]
    head = ["measure", "better"] + [h for _, h in IMPLS] + [h for _, _, h in RATIOS]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for measure, better, get in rows(levels):
        vals = {k: (get(peers[k]) if k in peers else None) for k, _ in IMPLS}
        cells = [measure, better] + [fmt(vals[k]) for k, _ in IMPLS]
        cells += [ratio(vals[a], vals[b]) for a, b, _ in RATIOS]
        lines.append("| " + " | ".join(cells) + " |")
    # logind and replay: their own small tables
    ls, lsd = peers.get("logind-scopeshim", {}), peers.get("logind-systemd", {})
    a = dig(ls, "logind", "create_session", "p50_ms")
    b = dig(lsd, "logind", "create_session", "p50_ms")
    a99 = dig(ls, "logind", "create_session", "p90_ms")
    b99 = dig(lsd, "logind", "create_session", "p90_ms")
    lines += [
        "",
        "logind 252 CreateSession round trip (a first login each time: session, user, "
        "user slice, runtime dir, user@ job; scopeshim on the cgroup2 backend):",
        "",
        "| measure | scopeshim (cgroup2) | systemd 252 | scopeshim / systemd |",
        "|---|---|---|---|",
        f"| CreateSession p50 (ms) | {fmt(a)} | {fmt(b)} | {ratio(a, b)} |",
        f"| CreateSession p90 (ms) | {fmt(a99)} | {fmt(b99)} | {ratio(a99, b99)} |",
    ]
    rp = peers.get("replay", {})
    if "mb_per_s" in rp:
        what = (
            f"**{rp['mb_per_s']:.2f} MB/s** ({rp.get('bytes', 0) / 1e6:.1f} MB of dbus-monitor "
            f"text, {rp.get('messages', '?')} messages, {rp.get('seconds', '?')} s; "
            "bench/replay_parse.py's own figure: the best of its repeats)"
        )
    elif not rp:
        what = "not run in this invocation"
    elif "skipped" in rp:
        what = f"skipped: {rp['skipped']}"
    else:
        what = f"error: {one_line(rp.get('error', '?'))}"
    lines += ["", "Replay parse throughput (scopeshim replay reading dbus-monitor logs): " + what]
    em = peers.get("empty-cgroups", {})
    if "pidfd_ms" in em:
        what = (
            f"pidfd (last process exits) p50 {em['pidfd_ms']['p50']} ms, max "
            f"{em['pidfd_ms']['max']} ms; poll (moved away unseen, every "
            f"{em['poll_interval_ms']:.0f} ms) p50 {em['poll_ms']['p50']} ms, max "
            f"{em['poll_ms']['max']} ms; {em['repeat']} repeats (bench/empty_latency.py)"
        )
    else:
        what = em.get("skipped") or em.get("error") or "not run in this invocation"
    lines += ["", "Empty cgroup seen by the cgroup1 backend: " + what]
    table, _ = issue20_table(peers)
    if len(table) > 2:
        lines += ["", "## Issue 20's measures (bench/extras.py)", "", *table]
    lines += ["", "## Goals", "", "| goal | verdict | measured |", "|---|---|---|"]
    for goal, verdict, evidence in data["goals"]:
        lines.append(f"| {goal} | **{verdict}** | {evidence} |")
    lines += ["", "## Repeats, warm-up, skips", ""]
    for name, r in peers.items():
        if "skipped" in r:
            lines.append(f"- {name}: skipped: {r['skipped']}")
        elif "error" in r:
            lines.append(f"- {name}: error: {r['error']}")
        elif r.get("mode") == "logind":
            lines.append(
                f"- {name}: {r['params']['logind_reps']} CreateSession round trips after 2 "
                f"warm-up; run took {r.get('wall_s', 0):.0f} s"
            )
        elif "params" in r:
            p = r["params"]
            lines.append(
                f"- {name}: warm-up {p['warmup']} start/stop cycles; sequential {p['seq']} "
                f"starts then {p['seq']} stops; {p['par']} starts and stops with "
                f"{p['inflight']} in flight; {p['life']} lifecycles sequential and {p['life']} "
                f"with {p['inflight']} in flight; per level {p['reps']} start/stop cycles, "
                f"GetUnit and Get, {p['list_reps']} ListUnits; ready: "
                + (f"{p['ready_reps']} starts after 1 warm-up"
                   if dig(r, "ready", "lower_bound") is None else "PID 1's own timestamps "
                   "(lower bound)")
                + f"; run took {r.get('wall_s', 0):.0f} s"
            )  # fmt: skip
    lines += ["", "## Errors and missing measures", ""]
    for name, r in peers.items():
        for e in r.get("errors", []):
            lines.append(
                f"- {name}, phase {e['phase']}: {one_line(e['error'])}"
                + (" -- the peer went away and was restarted for the phases after it; its "
                   "log ended: `" + " / ".join(e.get("peer_log", [])[-3:])[:400] + "`"
                   if e.get("peer_went_away") else "")
            )  # fmt: skip
        if "skipped" in (r.get("lifecycle") or {}):
            lines.append(f"- {name}, lifecycle: {one_line(r['lifecycle']['skipped'])}")
        for d in (r.get("levels") or {}).values():
            if "skipped" in (d.get("list_units") or {}):
                lines.append(f"- {name}, ListUnits: {one_line(d['list_units']['skipped'])}")
                break
    lines += [
        "",
        "Notes: the real systemd 252 runs as PID 1 in the lab sandbox "
        "(../shared/lab/real-systemd.sh, cgroup2 only, no logind for the systemd1 figures); "
        "its start-to-name figure is PID 1's exec to dbus.service active (a lower bound: it "
        "includes starting the bus, then connects). dbusmock's template creates no units and "
        "tracks no processes: its units come from AddMockUnit (untimed), it has no ListUnits "
        "and never sends UnitRemoved. ListUnits times include dbus-fast's decoding in the "
        "driver, the same for every peer. Live units are scopes, one idle process each. "
        "Other engineers' test runs shared the 2 CPUs during parts of the run.",
        "",
    ]
    return "\n".join(lines)


def plot(data: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib missing, no plot (pip install -e '.[bench]')", file=sys.stderr)
        return None
    peers = data["peers"]
    panels = [
        ("start", "StartTransientUnit -> JobRemoved p50"),
        ("stop", "StopUnit -> JobRemoved p50"),
        ("get_unit", "GetUnit p50"),
        ("list_units", "ListUnits median"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(18, 4.8))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for name, label in IMPLS:
            r = peers.get(name, {})
            pts = sorted(
                (int(lv), v["p50_ms"])
                for lv, d in (r.get("levels") or {}).items()
                if isinstance(v := d.get(key), dict) and "p50_ms" in v
            )
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("live units")
        ax.set_ylabel("ms")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"latency against live units ({data['meta']['when']}, {data['meta']['machine']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def revision() -> str:
    """The commit measured, and whether the work tree differed from it."""
    import subprocess

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=HERE.parent, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "shim", "compat", "backends")
    return head + (" + uncommitted changes in shim/compat/backends" if dirty else "")


def build(raw: Path, out: Path, quick: bool = False) -> list[Path]:
    peers: dict[str, dict[str, Any]] = {}
    for f in sorted(raw.glob("*.result.json")):
        r = json.loads(f.read_text())
        peers[r.get("label") or f.name.split(".")[0]] = r
    levels = sorted({int(lv) for r in peers.values() for lv in (r.get("levels") or {})}) or [100]
    data: dict[str, Any] = {
        "meta": {
            "when": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "machine": f"{platform.node()} ({os.cpu_count()} CPUs, Linux {platform.release()})",
            "quick": quick,
            "revision": revision(),
            "levels": levels,
            "ratios": "scopeshim / peer",
        },
        "peers": peers,
    }
    data["goals"] = goals(peers, levels)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "bench.json", out / "bench.md"]
    written[0].write_text(json.dumps(data, indent=1))
    written[1].write_text(markdown(data))
    png = plot(data, out / "latency_vs_units.png")
    if png is not None:
        written.append(png)
    return written


if __name__ == "__main__":
    raw = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results" / "raw"
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else HERE / "results"
    for p in build(raw, out):
        print(p)
