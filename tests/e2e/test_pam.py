"""A real PAM login on scopeshim: pamtester opens and closes a session through an unmodified
pam_systemd.so, for root and for an unprivileged user that exists only in the sandbox, with
logind 252 (installed), 254 and 257 (fetched by tests/e2e/get-logind.sh) and the host's
module, and with logind 262 and its own module (262's pam_systemd talks varlink to logind;
logind 258+ refuses the host's 252 module: "Leader PIDFD not available")."""

from __future__ import annotations

import os
import shutil

import pytest

from compat.buspath import label_escape
from tests.e2e.test_logind import USERS, VERSIONS, explain, run_scenario

SERVICE = "scopeshim-e2e"
CASES = [(v, u) for v in VERSIONS for u in USERS]


def pam_systemd_installed() -> bool:
    return any(
        os.path.exists(os.path.join(d, "pam_systemd.so"))
        for d in ("/lib/x86_64-linux-gnu/security", "/usr/lib/x86_64-linux-gnu/security")
    )


@pytest.mark.timeout(400)
@pytest.mark.parametrize(("version", "user"), CASES, ids=["-".join(c) for c in CASES])
def test_pam_login_through_pam_systemd(
    request: pytest.FixtureRequest, version: str, user: str
) -> None:
    request.node.user_properties.append(("case", f"logind {version}  {user:<12}  pam-login"))
    if shutil.which("pamtester") is None:
        pytest.skip("pamtester is not installed (make deps installs it)")
    if not pam_systemd_installed():
        pytest.skip("pam_systemd.so is not installed (make deps installs libpam-systemd)")
    outcome = run_scenario("scenario_pam.py", version, "--user", user, timeout=180)
    if outcome.skipped:
        pytest.skip(outcome.skipped)
    events = outcome.steps
    why = explain(events) + "\n" + outcome.stderr
    assert outcome.returncode == 0, why
    setup = events["setup"]
    assert setup["logind"].startswith(f"systemd {version} "), why
    uid, name = setup["uid"], setup["user"]
    assert (uid == 0) is (user == "root"), why

    # open_session: pamtester itself sits in session-N.scope under user.slice/user-UID.slice
    opened = events["open_session"]
    assert opened["ok"] is True, why
    hook = opened["hook"]
    sid = hook["XDG_SESSION_ID"]
    assert sid, why
    scope = f"session-{sid}.scope"
    cgroup = f"/user.slice/user-{uid}.slice/{scope}"
    pid = opened["pamtester_pid"]
    assert hook["pamtester"] == pid, why
    assert hook["cgroup"] == cgroup, why
    assert opened["pamtester_cgroup"] == cgroup, why
    assert opened["scope_cgroup"]["exists"] is True, why
    assert pid in opened["scope_cgroup"]["procs"], why
    # pam_systemd exports XDG_RUNTIME_DIR only for a directory the user owns
    assert hook["XDG_RUNTIME_DIR"] == f"/run/user/{uid}", why
    assert opened["runtime_dir"]["exists"] is True, why
    assert opened["runtime_dir"]["owner"] == uid, why
    # logind maps the process to its session and user (from its cgroup), as loginctl shows
    assert opened["session_by_pid"] == f"/org/freedesktop/login1/session/{label_escape(sid)}", why
    assert opened["user_by_pid"] == f"/org/freedesktop/login1/user/_{uid}", why
    shown = opened["loginctl_session"]
    assert shown.get("Scope") == scope, why
    assert shown.get("Name") == name, why
    assert shown.get("Service") == SERVICE, why
    assert shown.get("Leader") == str(pid), why
    assert shown.get("State") in ("active", "online"), why
    assert opened["loginctl_user"].get("State") in ("active", "online"), why
    assert opened["loginctl_user"].get("RuntimePath") == f"/run/user/{uid}", why
    assert opened["scope"]["ActiveState"] == "active", why

    # close_session: pam_systemd released the session; pamtester is still in the scope
    closing = events["close_session"]
    assert closing["ok"] is True, why
    assert closing["session"]["State"] == "closing", why
    assert closing["pamtester_cgroup"] == cgroup, why
    assert closing["scope"]["ActiveState"] == "active", why
    # (logind stops the session, abandoning the scope, once pamtester closes the session
    # FIFO at its exit, or RELEASE_USEC = 20 s after ReleaseSession)

    # pamtester's exit empties the scope: scope, session, user, slice and runtime dir go
    exited = events["exited"]
    assert exited["pamtester_exit"] == 0, why
    assert "successfully opened a session" in exited["output"], why
    assert "session has successfully been closed" in exited["output"], why
    assert exited["scope_removed"] is True, why
    assert exited["session_removed"] is True, why
    assert exited["user_removed"] is True, why
    assert exited["slice_removed"] is True, why
    assert exited["scope_cgroup"] == {"exists": False}, why
    assert exited["slice_cgroup"] == {"exists": False}, why
    assert exited["runtime_dir"] == {"exists": False}, why
    assert exited["session"]["error"] == "org.freedesktop.DBus.Error.UnknownObject", why
    assert exited["user"]["error"] == "org.freedesktop.DBus.Error.UnknownObject", why

    assert events["logind-exit"]["exit"] == 0, why
    assert events["stopped"]["exit"] == 0, why
