"""Reports of replay results: the readable conversation diff and JUnit XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable

from shim.replay.compare import Difference, Result
from shim.replay.plan import Plan


def text(result: Result, *, verbose: bool = False) -> str:
    status = "ok" if result.ok else "FAIL"
    if not result.compared:
        status = "parsed (not replayed: [replay] compare = false)"
    lines = [f"=== {result.trace}: {status}"]
    prov = result.provenance
    if prov and (prov.get("systemd") or prov.get("synthetic")):
        what = "synthetic sample" if prov.get("synthetic") else f"systemd {prov.get('systemd')}"
        lines.append(f"    recorded from: {what}; {prov.get('command', '')}".rstrip("; "))
    if result.error is not None:
        lines.append(f"    error: {result.error}")
        return "\n".join(lines)
    if result.compared:
        lines.append(
            f"    {result.calls} calls, {result.signals} signals expected "
            f"({result.matched_signals} equal), {len(result.failures)} differences, "
            f"{len(result.known)} known differences, {len(result.allowed)} allowed "
            f"({result.seconds:.1f} s)"
        )
    units = sum(1 for x in result.inferred if x.startswith(("exists: ", "subscribed: ")))
    gaps = sum(1 for x in result.inferred if x.startswith("missing: "))
    if units or gaps or (verbose and result.inferred):
        lines.append(
            f"    began mid-flight: {units} units or subscriptions made first from the trace "
            f"(not compared; `--show` lists them), {gaps} facts missing"
        )
        if verbose or not result.ok:
            lines.extend(f"      {x}" for x in result.inferred)
    for x in result.not_made:
        lines.append(f"    inferred setup failed: {x}")
    for issue in result.issues:
        lines.append(f"    type not recovered: {issue}")
    lines.extend(grouped(result.failures, "    "))
    if result.known:
        lines.append("    known differences (scopeshim behaviour to fix, see the rules):")
        lines.extend(grouped(result.known, "      "))
    if result.allowed:
        if verbose:
            lines.append("    allowed:")
            lines.extend(grouped(result.allowed, "      "))
        else:
            lines.append("    allowed by the rules: " + summarize(result.allowed))
    return "\n".join(lines)


def grouped(diffs: list[Difference], indent: str) -> list[str]:
    """Differences of one message under one heading: where, what, then field by field."""
    out: list[str] = []
    last: tuple[str, str, str] | None = None
    last_rule = None
    for d in diffs:
        key = (d.where, d.kind, d.title)
        if key != last:
            out.append(f"{indent}{d.where}: {d.kind}")
            out.append(f"{indent}    {d.title}")
            last = key
            last_rule = None
        if d.field or d.expected or d.got:
            detail = f"{indent}    {d.field or '(value)'}:"
            if d.expected or d.got:
                detail += f" expected {d.expected or '-'}, got {d.got or '-'}"
            out.append(detail)
        if d.rule is not None and d.rule is not last_rule:
            out.append(f"{indent}    ({d.rule.label()}: {d.rule.reason})")
            last_rule = d.rule
    return out


def summarize(diffs: Iterable[Difference]) -> str:
    counts = Counter(d.rule.id if d.rule else "-" for d in diffs)
    return ", ".join(f"{rule} x{n}" for rule, n in sorted(counts.items()))


def junit(results: list[Result]) -> bytes:
    """One <testsuite> per trace; one <testcase> per compared call, plus one for the
    signals; failures carry the diff."""
    root = ET.Element("testsuites", name="scopeshim replay")
    for r in results:
        suite = ET.SubElement(root, "testsuite", name=r.trace)
        cases = 0
        failures = 0
        errors = 0
        if r.error is not None:
            case = ET.SubElement(suite, "testcase", classname=r.trace, name="replay")
            ET.SubElement(case, "error", message=r.error).text = r.error
            cases += 1
            errors += 1
        else:
            by_call: dict[str, list[Difference]] = {}
            signal_diffs: list[Difference] = []
            for d in r.failures + r.known:
                if d.call is not None:
                    by_call.setdefault(str(d.call), []).append(d)
                else:
                    signal_diffs.append(d)
            for n in range(1, r.calls + 1):
                case = ET.SubElement(suite, "testcase", classname=r.trace, name=f"call {n}")
                cases += 1
                failing = [d for d in by_call.get(str(n), []) if d.rule is None]
                if failing:
                    failures += 1
                    body = "\n".join(x for d in failing for x in d.lines())
                    ET.SubElement(case, "failure", message=failing[0].kind).text = body
            case = ET.SubElement(suite, "testcase", classname=r.trace, name="signals")
            cases += 1
            failing = [d for d in signal_diffs if d.rule is None]
            if failing:
                failures += 1
                body = "\n".join(x for d in failing for x in d.lines())
                ET.SubElement(case, "failure", message=f"{len(failing)} signals").text = body
            notes = [str(i) for i in r.issues]
            notes += [f"known difference: {' '.join(d.lines())}" for d in r.known]
            if notes:
                ET.SubElement(suite, "system-out").text = "\n".join(notes)
        suite.set("tests", str(cases))
        suite.set("failures", str(failures))
        suite.set("errors", str(errors))
        suite.set("time", f"{r.seconds:.3f}")
    ET.indent(root)
    out: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return out


def conversation(plan: Plan, *, width: int = 160) -> str:
    """The normalised conversation a replay would re-send and expect, one line per message:
    what a metadata file's rules and actions refer to (call numbers, symbols)."""
    from shim.replay.compare import describe_call, describe_reply, describe_signal

    setup = len(plan.steps) - len(plan.compared_steps)
    lines = [f"=== {plan.trace}: {len(plan.compared_steps)} calls ({setup} setup calls)"]
    by_after: dict[int, list[str]] = {}
    for e in plan.signals:
        by_after.setdefault(e.after, []).append(
            f"      signal (line {e.line}) {describe_signal(e.nsignal, width)}"
        )
    for after, name in plan.markers:
        by_after.setdefault(after, []).append(f"      --- marker {name}")
    for after, label in plan.departures:
        by_after.setdefault(after, []).append(f"      --- {label} leaves the bus")
    for line in by_after.get(0, []):
        lines.append(line)
    for step in plan.steps:
        tag = "setup " if step.setup else ""
        lines.append(f"  {tag}call {step.number} (line {step.line}) {describe_call(step, width)}")
        lines.append(f"      reply {describe_reply(step.nreply)[:width]}")
        lines.extend(by_after.get(step.index, []))
    return "\n".join(lines)
