"""The administrator's story with Debian's systemctl 252 and logind 252 against scopeshim in
the sandbox (scenario_unitfiles.py), compared with the same scenario run against the real
systemd 252 (fixtures/oracle/dropins/real-systemd-252-e2e.out): a user-.slice.d drop-in limits
every user slice, `systemctl cat`/`show`/`status` show the files, a persistent set-property
outlives logout, a daemon restart and the next login, `systemctl revert` removes it, a slice
comes from /etc/systemd/system. This machine's cgroup2 tree has no memory controller (it is
on cgroup v1), so the kernel file is checked where it exists and otherwise through the
daemon's note that it wrote the limit (as test_clients.py does)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.clients_host import Steps, explain, no_unknown_members, run_scenario
from tests.e2e.test_clients import limit_landed

pytestmark = pytest.mark.timeout(600)

ORACLE_FILE = Path(__file__).parents[2] / "fixtures/oracle/dropins/real-systemd-252-e2e.out"
STEPS = ("setup", "logins", "inspect", "set-property", "relogin", "revert", "slice-file")
DROPIN = "/etc/systemd/system/user-.slice.d/50-memory.conf"
CONTROL = "/etc/systemd/system.control/user-65534.slice.d"


@pytest.fixture(scope="module")
def steps() -> Steps:
    return run_scenario(sys.executable, "scenario_unitfiles.py")


@pytest.fixture(scope="module")
def oracle() -> dict[str, dict[str, Any]]:
    events = [json.loads(line) for line in ORACLE_FILE.read_text().splitlines() if line.strip()]
    return {e["step"]: e for e in events}


def names(dropins: str) -> list[str]:
    """DropInPaths by file name (the vendor 10-defaults.conf lives elsewhere in the lab)."""
    return [p.rsplit("/", 1)[-1] for p in dropins.split()]


def same_show(got: dict[str, str], want: dict[str, str]) -> None:
    for key in ("MemoryMax", "MemoryHigh", "TasksMax", "Description", "FragmentPath"):
        assert got[key] == want[key], f"{key}: {got[key]!r} != systemd's {want[key]!r}"
    assert names(got["DropInPaths"]) == names(want["DropInPaths"])
    assert [p for p in got["DropInPaths"].split() if p.startswith("/etc/")] == [
        p for p in want["DropInPaths"].split() if p.startswith("/etc/")
    ]


@pytest.mark.parametrize("name", STEPS)
def test_every_call_lands_on_an_implemented_member(steps: Steps, name: str) -> None:
    no_unknown_members(steps[name])


def test_drop_in_limits_every_user_slice(steps: Steps, oracle: dict[str, Any]) -> None:
    f = steps["logins"]
    assert steps["setup"]["etc_private"] == "tmpfs" and steps["setup"]["reload"]["rc"] == 0
    for uid in (0, 65534):
        assert f[f"created-{uid}"]["ok"], explain(f)
        same_show(f[f"user-{uid}"]["show"], oracle["logins"][f"user-{uid}"]["show"])
        limit_landed(f, f[f"user-{uid}"]["cgroup"], "memory.max", "2147483648")


def test_cat_show_status_show_the_files(steps: Steps, oracle: dict[str, Any]) -> None:
    f, want = steps["inspect"], oracle["inspect"]
    assert f["show"]["out"].splitlines()[0] == "FragmentPath="
    assert names(f["show"]["out"].splitlines()[1].removeprefix("DropInPaths=")) == [
        "10-defaults.conf",
        "50-memory.conf",
    ]
    # systemctl cat prints each file under its path: the vendor one, then the admin's
    assert f["cat"]["rc"] == 0
    tail = f"# {DROPIN}\n[Slice]\nMemoryMax=2G\n"
    assert f["cat"]["out"].endswith(tail) and want["cat"]["out"].endswith(tail)
    assert f["cat"]["out"].split("\n", 1)[1] == want["cat"]["out"].split("\n", 1)[1]
    status = f["status"]["out"].splitlines()
    assert status[1] == "     Loaded: loaded"
    assert (
        status[4:6]
        == want["status"]["out"].splitlines()[4:6]
        == [
            "             /etc/systemd/system/user-.slice.d",
            "             └─50-memory.conf",
        ]
    )


def test_persistent_set_property(steps: Steps, oracle: dict[str, Any]) -> None:
    f, want = steps["set-property"], oracle["set-property"]
    assert f["set"]["rc"] == 0 and f["set"]["err"] == "", explain(f)
    assert f["files"] == want["files"]  # systemd's file names and contents, byte for byte
    same_show(f["user-65534"]["show"], want["user-65534"]["show"])
    limit_landed(f, f["user-65534"]["cgroup"], "memory.max", "1073741824")


def test_set_property_survives_logout_restart_and_login(
    steps: Steps, oracle: dict[str, Any]
) -> None:
    f, want = steps["relogin"], oracle["relogin"]
    assert f["logout"] == {"exit": 0, "slice_gone": True}, explain(f)
    assert f["file_kept"] is True
    assert f["daemon_stop"] == 0 and f["daemon_start"] is True
    assert f["created"]["ok"], explain(f)
    # MemoryHigh=1G is back; MemoryMax is 2G again: 50-memory.conf sorts after
    # 50-MemoryMax.conf, exactly as on systemd 252
    same_show(f["user-65534"]["show"], want["user-65534"]["show"])
    assert f["user-65534"]["show"]["MemoryHigh"] == "1073741824"
    same_show(f["user-0"]["show"], want["user-0"]["show"])


def test_revert(steps: Steps, oracle: dict[str, Any]) -> None:
    f, want = steps["revert"], oracle["revert"]
    assert f["revert"]["rc"] == 0, explain(f)
    assert sorted(f["revert"]["err"].splitlines()) == sorted(want["revert"]["err"].splitlines())
    assert f["file_gone"] is True
    same_show(f["user-65534"]["show"], want["user-65534"]["show"])


def test_slice_from_a_unit_file(steps: Steps, oracle: dict[str, Any]) -> None:
    f, want = steps["slice-file"], oracle["slice-file"]
    assert (f["reload"]["rc"], f["start"]["rc"], f["stop"]["rc"]) == (0, 0, 0), explain(f)
    same_show(f["show"], want["show"])
    got, ref = f["status"]["out"].splitlines(), want["status"]["out"].splitlines()
    assert (
        got[:2]
        == ref[:2]
        == [
            "● e2e.slice - E2E slice",
            "     Loaded: loaded (/etc/systemd/system/e2e.slice; static)",
        ]
    )
    limit_landed(f, f["cgroup"], "memory.max", "314572800")


def test_logouts_leave_nothing(steps: Steps) -> None:
    f = steps["cleanup"]
    assert f["logout-0"] == {"exit": 0, "slice_gone": True}, explain(f)
    assert f["logout-65534"] == {"exit": 0, "slice_gone": True}, explain(f)
