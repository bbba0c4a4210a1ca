"""Differential replay (`scopeshim replay --against ADDRESS`): one capture replayed on two live
implementations, the second's conversation compared with the first's: two scopeshim daemons
(equal, then one with another user-manager policy), and scopeshim against the lab's real
systemd 252 booted as PID 1."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from shim.replay.command import differ_all
from shim.replay.report import text
from shim.replay.rules import RuleSet

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / "fixtures" / "dbus-logs"
SESSION = LOGS / "real-systemd-252-lab" / "logind-session.log"
STATUS = LOGS / "real-systemd-252" / "real-systemctl-status.log"
LAB = Path(os.environ.get("SCOPESHIM_LAB_KIT", "/work/shared/lab"))

pytestmark = pytest.mark.skipif(
    shutil.which("dbus-daemon") is None, reason="dbus-daemon is not installed"
)


async def _two(config: str | None, traces: list[Path]) -> list:
    from shim.bus import replay

    async with replay.spawned_daemon() as a, replay.spawned_daemon(config) as b:
        return await differ_all([str(t) for t in traces], RuleSet(), a, b, replay.drive)


@pytest.mark.timeout(120)
def test_two_equal_daemons_answer_alike() -> None:
    results = asyncio.run(_two(None, [SESSION, STATUS]))
    for r in results:
        assert r.ok, text(r, verbose=True)
        assert r.calls > 0
    assert results[0].matched_signals == results[0].signals > 50


@pytest.mark.timeout(120)
def test_a_different_daemon_is_named_call_by_call() -> None:
    from shim.bus import replay

    with tempfile.TemporaryDirectory() as d:
        masked = replay._SPAWN_CONFIG.format(root=d).replace(
            'user_manager = "noop"', 'user_manager = "masked"'
        )
        [r] = asyncio.run(_two(masked, [SESSION]))
    report = text(r)
    assert not r.ok, report
    assert 'Manager.StartUnit("user@0.service", "replace")' in report
    assert (
        "expected return <job:user@0.service>, got error org.freedesktop.systemd1.UnitMasked"
        in (report)
    )


@pytest.mark.timeout(120)
def test_the_command_line_takes_two_addresses(tmp_path: Path) -> None:
    """`--address A --against B`: exit status 0 (alike), the header names both."""
    from shim.bus import replay

    async def run() -> subprocess.CompletedProcess[str]:
        async with replay.spawned_daemon() as a, replay.spawned_daemon() as b:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "shim", "replay", "--address", a, "--against", b,
                str(STATUS), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            out, err = await proc.communicate()
            return subprocess.CompletedProcess([], proc.returncode or 0, out.decode(), err.decode())

    proc = asyncio.run(run())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "differential replay: expected = what unix:" in proc.stdout
    assert "1 traces: 1 ok" in proc.stdout


SID_ROOT = Path(os.environ.get("SCOPESHIM_SYSTEMD_SID", "/var/cache/scopeshim-lab/systemd-sid"))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("version", ["252", "262"])
def test_against_the_real_systemd(version: str, tmp_path: Path) -> None:
    """Inside the lab's real-systemd.sh (the real systemd 252, or sid's 262 with
    --systemd-root, as PID 1 on a private bus), a phase of a lab capture of that version is
    replayed on a spawned scopeshim and on that PID 1; what differs is covered by the rules
    (allowances and known differences)."""
    kit = LAB / "real-systemd.sh"
    if not kit.is_file():
        pytest.skip(f"the lab kit is not at {LAB} (set SCOPESHIM_LAB_KIT)")
    if os.geteuid() != 0:
        pytest.skip("the lab's real-systemd.sh needs root")
    options: list[str] = []
    if version == "262":
        if not (SID_ROOT / "root" / "usr").is_dir():
            pytest.skip(f"no systemd 262 at {SID_ROOT} (shared/lab/bin/get-systemd-sid.sh)")
        options = ["--systemd-root", str(SID_ROOT / "root")]
    # a phase of a lab run, with no metadata chain: the scope it names is inferred first
    rules = [LOGS / "rules" / "real-systemd-252.toml"]
    if version == "262":
        rules.append(LOGS / "rules" / "real-systemd-262.toml")
    source = LOGS / f"real-systemd-{version}-lab" / "systemctl-scope.log"
    traces = []
    for start, until in (("status", "show"), ("stop", "end")):
        (tmp_path / f"{start}.log").write_bytes(source.read_bytes())
        (tmp_path / f"{start}.meta.toml").write_text(
            "include = [" + ", ".join(f'"{r}"' for r in rules) + "]\n[provenance]\n"
            f'systemd = "{version}"\ncommand = "the {start} phase of {source.name}"\n'
            f'[conversation]\nfrom_marker = "{start}"\nuntil_marker = "{until}"\n'
        )
        traces.append(str(tmp_path / f"{start}.log"))
    inner = (
        f'cd {ROOT} && {sys.executable} -m shim replay --against "$DBUS_SYSTEM_BUS_ADDRESS" '
        + " ".join(traces)
    )
    proc = subprocess.run(
        [str(kit), *options, "--bind", str(tmp_path), "--timeout", "240", "--",
         "sh", "-c", inner],
        capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    if proc.returncode == 77:
        pytest.skip(f"real-systemd.sh cannot run here: {proc.stderr.strip()[-300:]}")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"systemd {version}" in out  # the kit names the PID 1 it booted
    assert "got = what unix:path=/run/scopeshim-lab/system_bus_socket did" in out
    assert "2 traces: 2 ok, 0 with differences, 0 errors" in out
    # they did differ where systemd is known to: the transient unit file
    assert 'FragmentPath: expected "", got "/run/systemd/transient/replay1.scope"' in out


def test_polls_may_differ_in_timing_other_replies_may_not() -> None:
    """Pure: two runs that answered as recorded, except that the second saw a poll's answer
    change earlier (another recorded answer to that poll: no difference), then a StartUnit
    answered otherwise (a difference)."""
    from shim.replay.compare import Live, LiveSignal, compare
    from shim.replay.differential import as_reference, differ
    from shim.replay.normalize import NReply
    from shim.replay.plan import build

    plan = build(str(SESSION))
    recorded = Live(
        replies={s.index: s.nreply for s in plan.steps if not s.setup},
        signals=[LiveSignal(e.after, e.nsignal) for e in plan.signals],
    )
    polls = [
        s for s in plan.compared_steps if s.ncall.member == "Get" and "ActiveState" in s.ncall.body
    ]
    answers = {s.nreply.body for s in polls}
    assert len(answers) > 1, answers  # the recording saw the state change
    first_poll = polls[0]
    other = next(s.nreply for s in polls if s.nreply.body != first_poll.nreply.body)
    # the first run saw one answer to every such poll; the second, once, another
    for s in polls:
        if s.ncall == first_poll.ncall:
            recorded.replies[s.index] = first_poll.nreply
    second = Live(replies=dict(recorded.replies), signals=list(recorded.signals))
    second.replies[first_poll.index] = other
    assert compare(as_reference(plan, recorded, "a"), second).failures  # unfiltered
    assert differ(plan, recorded, second, "a", "b").ok
    start = next(s for s in plan.compared_steps if s.ncall.member == "StartUnit")
    second.replies[start.index] = NReply(
        "error", "org.freedesktop.systemd1.UnitMasked", "s", ("Unit user@0.service is masked.",)
    )
    result = differ(plan, recorded, second, "a", "b")
    assert [d.call for d in result.failures] == [start.number]
