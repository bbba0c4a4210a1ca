"""Issue 23: Debian's runc with --systemd-cgroup against scopeshim in the VM, where every
controller is on cgroup2: `runc update` succeeds and the kernel files hold the new limits
(tests/e2e/test_clients_runc.py can only see it fail on this machine kind)."""

from __future__ import annotations

from tests.vm import harness
from tests.vm.conftest import events, result


def test_runc_update_lands_in_the_kernel_files(vm: harness.Boot) -> None:
    r = result(vm, "runc_update")
    # runc warns of the one default device the guest lacks (/dev/net/tun): no error
    assert r["run"]["rc"] == 0 and "level=error" not in r["run"]["err"], r
    for key in ("pids", "memory", "cpu"):
        assert r[key] == {"rc": 0, "err": ""}, r
    assert r["before"]["pids.max"] != "100" and r["before"]["memory.max"] != str(100 << 20)
    assert r["after"] == {
        "pids.max": "100",
        "memory.max": str(100 << 20),
        "cpu.max": "50000 100000",
    }, r
    assert r["props"] == {"TasksMax": 100, "MemoryMax": 100 << 20}, r


def test_runc_pids_limit_is_enforced(vm: harness.Boot) -> None:
    r = result(vm, "runc_update")
    assert r["pids2"] == {"rc": 0, "err": ""}, r
    # runc exec's tasks do not fit: the kernel refuses them (pids.events max counts each
    # refusal, cgroup-v2.rst) and the exec fails
    assert r["exec"]["rc"] != 0, r["exec"]
    before = events(r["pids_events_before"])["max"]
    assert events(r["pids_events"])["max"] > before, r


def test_runc_delete_leaves_nothing(vm: harness.Boot) -> None:
    r = result(vm, "runc_update")
    assert r["delete"]["rc"] == 0 and not r["left"], r
