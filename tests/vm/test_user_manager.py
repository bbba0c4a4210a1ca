"""Issue 16 item 5: the user manager's own scopes. user@1000.service (started as logind 252
starts it, StartUnit of user-runtime-dir@ then user@) runs `scopeshim serve --user`; the user's
`systemd-run --user --scope -p MemoryMax=64M -p TasksMax=5` makes a scope under
user@1000.service/app.slice whose limits the user's manager writes into the delegated subtree
and the kernel enforces; the user cannot raise user@1000.service's own limits or leave it."""

from __future__ import annotations

from tests.vm import harness
from tests.vm.conftest import events, result

TREE = "/user.slice/user-1000.slice/user@1000.service"


def test_the_users_scope_gets_its_limits_in_the_delegated_subtree(vm: harness.Boot) -> None:
    r = result(vm, "user_manager_scopes")
    assert (r["runtime_dir"], r["manager"]) == ("done", "done"), r
    assert r["owner"] == 1000, r  # Delegate=yes: the subtree is the user's
    p = r["probe"]
    assert p["cgroup"] == f"{TREE}/app.slice/vm-user.scope", r
    assert (p["memory.max"], p["pids.max"]) == (str(64 << 20), "5"), r


def test_the_users_limits_are_enforced(vm: harness.Boot) -> None:
    r = result(vm, "user_manager_scopes")
    p = r["probe"]
    # TasksMax=5: the probe and 4 children, the fifth fork refused
    assert (p["forked"], p["fork_error"]) == (4, "EAGAIN"), r
    # MemoryMax=64M: 200 MiB is OOM-killed in the user's scope (systemd-run exec'd the probe)
    assert r["run"]["rc"] == -9 and not r["survived"], r
    assert p["memory.max"] == str(64 << 20), r
    assert events(r["scope_events"])["oom_kill"] >= 1, r  # app.slice's: the scope is gone


def test_the_user_cannot_raise_the_managers_limits_or_leave(vm: harness.Boot) -> None:
    r = result(vm, "user_manager_scopes")
    p = r["probe"]
    # systemd.resource-control(5) Delegate=: the delegated cgroup's own limit files stay root's
    assert (p["raise_memory"], p["raise_pids"]) == ("EACCES", "EACCES"), r
    assert r["service_files"] == r["service_after"] == {"memory.max": str(256 << 20),
                                                        "pids.max": "64"}, r  # fmt: skip
    # moving out needs write access to the common ancestor's cgroup.procs (cgroup-v2.rst)
    assert (p["leave"], p["leave_root"]) == ("EACCES", "EACCES"), r
    assert p["still"] == f"0::{TREE}/app.slice/vm-user.scope", r
    assert not r["left"], r  # stopped: nothing of the user is left
