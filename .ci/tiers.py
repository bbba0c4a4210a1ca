"""Per-tier counts from pytest's JUnit XML (tests/bus, e2e, packaging, replay, the rest); with
--capable, a tier that ran nothing or a skip for a missing capability fails the run."""

from __future__ import annotations

import argparse
import re
import sys
import xml.etree.ElementTree as ET
from collections import Counter

TIERS = ("bus", "e2e", "packaging", "replay")
# skip reasons that mean "no root, no namespaces, no dbus-daemon": wrong on a capable machine
# (tests/e2e/sandbox.sh's, tests/conftest.py's and tests/packaging/conftest.py's wording)
CAPABILITY = re.compile(
    r"cannot run here|needs root|dbus-daemon is not installed|dbus-daemon and busctl are needed"
)


def tier_of(classname: str) -> str:
    parts = classname.split(".")
    if len(parts) >= 2 and parts[0] == "tests" and parts[1] in TIERS:
        return parts[1]
    return "other"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("junit_xml")
    ap.add_argument("--capable", action="store_true", help="root, namespaces and dbus-daemon")
    args = ap.parse_args()
    counts: dict[str, Counter[str]] = {t: Counter() for t in (*TIERS, "other")}
    reasons: dict[str, Counter[str]] = {t: Counter() for t in counts}
    for case in ET.parse(args.junit_xml).getroot().iter("testcase"):
        tier = tier_of(case.get("classname", ""))
        skipped = case.find("skipped")
        if skipped is not None:
            counts[tier]["skipped"] += 1
            reasons[tier][(skipped.get("message") or "").strip()[:160]] += 1
        elif case.find("failure") is not None or case.find("error") is not None:
            counts[tier]["failed"] += 1
        else:
            counts[tier]["passed"] += 1
    status = 0
    for tier, c in counts.items():
        line = f"{c['passed']:5} passed {c['skipped']:5} skipped {c['failed']:3} failed"
        print(f"ci: {tier:<9} {line}")
    if args.capable:
        for tier in TIERS:
            wrong = {r: n for r, n in reasons[tier].items() if CAPABILITY.search(r)}
            for reason, n in wrong.items():
                status = 1
                print(f"ci: FAIL: {n} {tier} test(s) skipped for a capability this machine "
                      f"has: {reason}", file=sys.stderr)  # fmt: skip
    for tier in TIERS:
        c = counts[tier]
        if c["passed"] == 0 and (c["skipped"] or args.capable):
            where = "on a machine where it should run (root, namespaces, dbus-daemon)"
            if args.capable:
                status = 1
                print(f"ci: FAIL: the {tier} tier ran no test {where}", file=sys.stderr)
                for reason, n in reasons[tier].most_common(5):
                    print(f"ci:   {n} skipped: {reason}", file=sys.stderr)
            else:
                print(f"ci: note: the {tier} tier ran no test (this machine lacks root, "
                      "namespaces or dbus-daemon)")  # fmt: skip
    return status


if __name__ == "__main__":
    sys.exit(main())
