"""Real boots (tests/boot/boot.sh): Debian 12's sysvinit, OpenRC and runit as PID 1 in
namespaces over an overlay of this machine's root, scopeshim installed the README's way in the
first boot, then rebooted with the init's own command, SCOPESHIM_BOOTS boots in all (default
3). On every boot: exactly one scopeshim and it is the init's, started before logind; a PAM
login lands in user.slice/user-UID.slice/session-N.scope with XDG_RUNTIME_DIR; logout leaves
nothing; the init's own shutdown stops scopeshim, logind and every session before it kills
what is left. Skipped, with the reason, without root, namespaces or the init's packages.
s6 is not among them: Debian 12 packages s6 but neither s6-rc nor s6-linux-init, so its s6
cannot be booted as PID 1 the way its definitions (packaging/init/s6) expect."""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
BOOTS = int(os.environ.get("SCOPESHIM_BOOTS", "3"))
UID = 4711
BOOT_LIMIT = 240  # boot.sh --timeout: one boot, shutdown included
pytestmark = pytest.mark.timeout(600 + BOOT_LIMIT * BOOTS)


@pytest.fixture(scope="module", params=["sysvinit", "openrc", "runit"])
def boots(request: pytest.FixtureRequest) -> dict[str, Any]:
    """boot.sh INIT: its JSON lines grouped by step, and the init's name."""
    init = request.param
    if os.geteuid() != 0:
        pytest.skip("booting an init needs root")
    keep = os.environ.get("SCOPESHIM_BOOT_KEEP")
    proc = subprocess.run(
        [str(HERE / "boot.sh"), "--boots", str(BOOTS), "--timeout", str(BOOT_LIMIT),
         *(["--keep", f"{keep}/{init}"] if keep else []), init],
        capture_output=True, text=True, timeout=300 + BOOT_LIMIT * BOOTS,
    )  # fmt: skip
    if proc.returncode == 77:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    if keep:
        (Path(keep) / init / "boot.jsonl").write_text(proc.stdout)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    # boot.sh's own: the cgroup subtree and the run directory, gone once it has ended
    leftovers = [
        p
        for top in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")
        for p in glob.glob(f"{top}/scopeshim-boot-{init}-*")
    ]
    leftovers += glob.glob(f"/var/tmp/scopeshim-boot.{init}.*")
    by: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by.setdefault(line["step"], []).append(line)
    return {"init": init, "steps": by, "stderr": proc.stderr[-3000:], "leftovers": leftovers}


def per_boot(boots: dict[str, Any], step: str) -> list[dict[str, Any]]:
    got = boots["steps"].get(step, [])
    assert [s["boot"] for s in got] == list(range(1, BOOTS + 1)), (step, boots["stderr"])
    return got


def test_every_boot_comes_up_and_ends_the_inits_way(boots) -> None:
    assert all(b["ok"] for b in per_boot(boots, "booted")), per_boot(boots, "booted")
    for end in per_boot(boots, "end"):
        assert not end["timed_out"] and end["ended"] == end["asked"], end


def test_the_readme_steps_succeed(boots) -> None:
    steps = boots["steps"]["install"]
    assert steps and all(s["rc"] == 0 for s in steps), steps
    assert any(
        s["cmd"].startswith("busctl get-property") and s["out"].startswith("s ") for s in steps
    )


def test_exactly_one_scopeshim_and_it_is_the_inits(boots) -> None:
    for check in per_boot(boots, "check"):
        shims = check["scopeshim"]
        assert len(shims) == 1, check
        assert shims[0]["init"]["ok"], check  # its pid file, supervise-daemon or runsv
        assert check["owner"] == shims[0]["pid"], check  # it owns org.freedesktop.systemd1
        assert not check["activations"], check  # no activation left waiting
        assert check["status"]["rc"] == 0, check
        if boots["init"] == "runit":
            assert check["status"]["out"].startswith("ok: run: scopeshim:"), check
        assert check["version"].startswith('s "'), check


def test_scopeshim_starts_before_logind(boots) -> None:
    for check in per_boot(boots, "check"):
        logind = check["logind"]
        assert len(logind) == 1 and check["login1_owner"] == logind[0]["pid"], check
        # logind connected to the bus after scopeshim did (the bus numbers its connections
        # :1.N in order); its process may be older (runit's run script waits, then execs it)
        conn = check["connections"]
        assert conn["scopeshim"] is not None and conn["logind"] is not None, check
        assert conn["scopeshim"] < conn["logind"], check
        assert check["scopeshim"][0]["start"] <= logind[0]["start"], check


def test_a_login_lands_in_its_session_scope(boots) -> None:
    for login in per_boot(boots, "login"):
        opened = login["opened"]
        assert opened, login
        sid = opened["XDG_SESSION_ID"]
        assert re.fullmatch(r"c?[0-9]+", sid), login
        assert opened["cgroup"] == f"/user.slice/user-{UID}.slice/session-{sid}.scope", login
        assert opened["XDG_RUNTIME_DIR"] == f"/run/user/{UID}" and login["runtime_mounted"], login
        assert login["scope_state"] == 's "active"', login
        assert login["closed"] and login["pamtester_rc"] == 0, login


def test_logout_leaves_nothing(boots) -> None:
    for login in per_boot(boots, "login"):
        left = login["left"]
        assert left["cgroups"] == [] and not left["runtime_mounted"], login
        assert left["processes"] == [] and left["sessions"] == "a(susso) 0", login


def test_the_inits_shutdown_stops_everything(boots) -> None:
    for end in per_boot(boots, "end"):
        w = end["witness"]
        assert w is not None, end  # the witness ran after scopeshim and logind were stopped
        assert w["scopeshim"] == [] and w["logind"] == [] and w["user_processes"] == [], end
        # the init's other services (dbus) may still run then, in OpenRC's cgroup of theirs
        ours = ("user.slice", "scopeshim", "systemd-logind")
        assert not [c for c in w["nonempty_cgroups"] if any(o in c for o in ours)], end
        assert w["user_mounts"] == [] and end["left_processes"] == 0, end
        # empty cgroups may stay (user.slice: scopeshim keeps the slice; OpenRC's of dbus;
        # cgroupfs does not survive a real reboot); none of a user, session or of scopeshim's
        # and logind's services
        left = end["left_cgroups"].split()
        assert not [c for c in left if c != "./user.slice" and any(o in c for o in ours)], end


def test_the_harness_leaves_nothing_on_the_host(boots) -> None:
    assert boots["leftovers"] == [], boots["leftovers"]
