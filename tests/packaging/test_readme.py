"""The install guide (docs/install.md), run: its commands are in it verbatim, and inside
tests/e2e/sandbox.sh (the staged `make install` tree at its real paths, a private /run, system
bus and cgroup2 tree, the installed systemd-logind 252 and pam_systemd) they start scopeshim
and logind, a PAM login lands in user.slice/user-UID.slice/session-N.scope, and logind then
scopeshim stop (scenario_readme.py)."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from tests.packaging import scenario_readme as readme
from tests.packaging.conftest import HERE, ROOT, Installed, by_step, run_in_sandbox

pytestmark = pytest.mark.timeout(600)


def test_the_readme_has_the_commands_the_scenario_runs() -> None:
    # the full install guide; the README points to it
    section = (ROOT / "docs" / "install.md").read_text()
    assert "docs/install.md" in (ROOT / "README.md").read_text()
    for command in (
        readme.START_SCOPESHIM,
        *readme.START_LOGIND,
        readme.LIST_SESSIONS,
        readme.STOP_LOGIND,
        readme.STOP_SCOPESHIM,
    ):
        assert " ".join(command.split()) in " ".join(section.replace("\\\n", " ").split()), command
    for command in ("make install", "update-rc.d scopeshim defaults", "cat /proc/self/cgroup"):
        assert command in section, command


@pytest.fixture(scope="module")
def steps(installed: Installed) -> dict[str, dict]:
    if shutil.which("pamtester") is None:
        pytest.skip("pamtester is not installed (make deps installs it)")
    if not os.path.exists("/lib/systemd/systemd-logind"):
        pytest.skip("systemd-logind is not installed (make deps installs systemd)")
    events, proc = run_in_sandbox(
        sys.executable, str(HERE / "scenario_readme.py"), str(installed.destdir), timeout=240
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    found = by_step(events)
    if not found["setup"]["pam_systemd_in_common_session"]:
        pytest.skip("pam_systemd is not in /etc/pam.d/common-session (the README's step 1)")
    return found


def test_scopeshim_then_logind_start(steps) -> None:
    assert steps["start_scopeshim"]["rc"] == 0 and steps["start_scopeshim"]["owned"] is True
    assert [c["rc"] for c in steps["start_logind"]["commands"]] == [0, 0]
    assert steps["start_logind"]["owned"] is True, steps.get("log")


def test_a_pam_login_lands_in_its_session_scope(steps) -> None:
    uid = steps["setup"]["uid"]
    step = steps["logged_in"]
    hook = step["hook"]
    assert hook is not None and hook["XDG_SESSION_ID"], step
    scope = f"/user.slice/user-{uid}.slice/session-{hook['XDG_SESSION_ID']}.scope"
    assert hook["cgroup"] == scope
    assert f"0::{scope}\n" in step["pamtester_cgroup"]
    assert hook["XDG_RUNTIME_DIR"] == f"/run/user/{uid}"
    assert step["runtime_dir_owner"] == uid
    assert f'"{hook["XDG_SESSION_ID"]}" {uid} "scopeshim-readme"' in step["sessions"]["stdout"]
    assert step["scope"]["stdout"].strip() == 's "active"'


def test_logout_then_logind_and_scopeshim_stop(steps) -> None:
    assert steps["logged_out"]["pamtester_exit"] == 0, steps["logged_out"]["output"]
    assert steps["logged_out"]["scope_gone"] is True
    assert steps["stop_logind"]["rc"] == 0 and steps["stop_logind"]["gone"] is True
    assert steps["stop_scopeshim"]["rc"] == 0 and steps["stop_scopeshim"]["owned"] is False
