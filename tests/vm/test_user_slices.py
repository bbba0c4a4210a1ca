"""Issue 17's seeds' story in the kernel: the admin's `user-.slice.d/50-memory.conf` drop-in
(with Debian's own `user-.slice.d/10-defaults.conf`) limits every user's slice, a process above
the limit is OOM-killed, and a persistent `set-property` outlives the slice and a restart.

Two runs of it: with Debian's systemd-logind 252 in the guest and two logins made as
pam_systemd makes them (CreateSession, tests/e2e/login_client.py); and, for the persistent
set-property across logout, a daemon restart and the next login, `session-N.scope`s started
as logind 252 asks for them (StartTransientUnit with `Slice=user-UID.slice`)."""

from __future__ import annotations

from tests.vm import harness
from tests.vm.conftest import events, result

HEADER = (
    '# This is a drop-in unit file extension, created via "systemctl set-property"\n'
    "# or an equivalent operation. Do not edit.\n"
)
UNIT_ROOT = "/run/scopeshim-vm/unit-root"  # inside.py: the daemon's --unit-root
M64, M32 = str(64 << 20), str(32 << 20)


def test_the_drop_in_limits_every_users_slice_in_the_kernel(vm: harness.Boot) -> None:
    r = result(vm, "user_slices")
    assert r["jobs"] == ["done", "done"]
    for uid in ("1000", "1001"):
        assert r["files"][uid]["memory.max"] == M64, r["files"]
        # Debian's 10-defaults.conf TasksMax=33% (systemd.resource-control(5)): a number
        assert r["files"][uid]["pids.max"] not in (None, "max"), r["files"]
    # the unit root's lib/ is the host's /lib: Debian's own file, then the admin's
    assert r["dropins"] == [
        f"{UNIT_ROOT}/lib/systemd/system/user-.slice.d/10-defaults.conf",
        f"{UNIT_ROOT}/etc/systemd/system/user-.slice.d/50-memory.conf",
    ], r["dropins"]


def test_a_users_process_above_the_limit_is_oom_killed(vm: harness.Boot) -> None:
    r = result(vm, "user_slices")
    assert r["worker"] == {"ok": False, "exit": -9, "signal": "SIGKILL"}, r["worker"]
    assert events(r["events"])["oom_kill"] >= 1, r["events"]


def test_persistent_set_property_outlives_the_slice_and_a_restart(vm: harness.Boot) -> None:
    r = result(vm, "user_slices")
    # systemd's file names and contents for `systemctl set-property user-1001.slice
    # MemoryMax=32M TasksMax=100`, applied at once (systemd 252 does, real-systemd-252-e2e.out)
    assert r["control"] == {
        "50-MemoryMax.conf": HEADER + "[Slice]\nMemoryMax=33554432\n",
        "50-TasksMax.conf": HEADER + "[Slice]\nTasksMax=100\n",
    }, r["control"]
    assert r["set"] == {"memory.max": M32, "pids.max": "100"}, r["set"]
    assert r["logout"] == "done" and r["slice_gone"], r
    # logout removed the slice; the daemon restarted; the next login re-creates it
    assert r["relogin"] == "done"
    control = f"{UNIT_ROOT}/etc/systemd/system.control/user-1001.slice.d"
    assert r["again_dropins"] == [
        f"{UNIT_ROOT}/lib/systemd/system/user-.slice.d/10-defaults.conf",
        f"{control}/50-MemoryMax.conf",
        f"{control}/50-TasksMax.conf",
        f"{UNIT_ROOT}/etc/systemd/system/user-.slice.d/50-memory.conf",
    ], r["again_dropins"]
    # TasksMax=100 outlived it; MemoryMax=32M is there but 50-memory.conf sorts after
    # 50-MemoryMax.conf and wins, as on systemd 252 (fixtures/oracle/dropins/
    # real-systemd-252-oracle2.out: after stop and start, the 2G drop-in's MemoryMax=)
    assert r["again"] == {"memory.max": M64, "pids.max": "100"}, r["again"]
    # the other user kept the drop-in's limit across the restart
    assert r["survivor"]["memory.max"] == M64


def test_two_logins_through_logind_252_get_the_drop_ins_limit(vm: harness.Boot) -> None:
    """The same drop-in with Debian's systemd-logind 252 running in the guest and two logins
    made as pam_systemd makes them (tests/e2e/login_client.py: CreateSession)."""
    r = result(vm, "logind_logins")
    for uid in ("1000", "65534"):
        login = r[f"login_{uid}"]
        assert login.get("ok") is True, r
        assert login["cgroup"] == f"/user.slice/user-{uid}.slice/session-{login['session']}.scope"
        assert r["files"][uid]["memory.max"] == M64, r["files"]
        assert r["files"][uid]["pids.max"] not in (None, "max"), r["files"]
    # a process of the first user in its session: 200 MiB is OOM-killed in the user's slice
    assert r["worker"] == {"ok": False, "exit": -9, "signal": "SIGKILL"}, r["worker"]
    assert events(r["events"])["oom_kill"] >= 1, r["events"]
    # logout: logind stops the user's units, the slices go
    assert r["gone"] == {"1000": True, "65534": True}, r
