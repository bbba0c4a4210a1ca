"""Every trace under fixtures/dbus-logs/ is a test case: it parses (types recovered where the
systemd1 conversation needs them), and, when its metadata says where it comes from and that
it is a reference, `scopeshim replay` of it against scopeshim (fake backend, its own private
bus) matches the recording, allowed and known differences aside."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from shim.replay.command import collect
from shim.replay.compare import compare
from shim.replay.meta import meta_path
from shim.replay.plan import build
from shim.replay.report import text

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / "fixtures" / "dbus-logs"
TRACES = [Path(t) for t in collect([str(LOGS)])]
IDS = [str(t.relative_to(LOGS)) for t in TRACES]
# the traces test_trace_replays replays and compares: a metadata file that does not say
# `compare = false`
REFERENCES = [t for t in TRACES if meta_path(t) is not None and build(str(t)).meta.compare]


def test_there_are_reference_traces():
    """At least the 12 references there are today are replayed and compared (not merely
    parsed: a trace with a metadata file may be a format sample)."""
    assert len(REFERENCES) >= 12, [str(t.relative_to(LOGS)) for t in REFERENCES]


@pytest.mark.parametrize("trace", TRACES, ids=IDS)
def test_trace_parses(trace: Path) -> None:
    plan = build(str(trace))
    for step in plan.steps:
        assert step.call.recovered, f"{trace}:{step.line}: argument types not recovered"
    if meta_path(trace) is not None:
        prov = plan.meta.provenance
        assert prov.get("command") and (prov.get("systemd") or prov.get("synthetic")), prov


@pytest.mark.timeout(120)
@pytest.mark.parametrize("trace", TRACES, ids=IDS)
async def test_trace_replays(trace: Path) -> None:
    if shutil.which("dbus-daemon") is None:
        pytest.skip("dbus-daemon is not installed (apt-get install dbus-daemon)")
    if trace not in REFERENCES:
        pytest.skip("no metadata file, or it says [replay] compare = false: only parsed")
    plan = build(str(trace))
    assert plan.steps, "a reference with no call to replay"
    from shim.bus import replay

    async with replay.spawned_daemon() as address:
        live = await replay.replay(plan, address)
    result = compare(plan, live)
    assert result.ok, text(result)
