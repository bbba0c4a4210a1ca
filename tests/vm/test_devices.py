"""DevicePolicy=/DeviceAllow= on Debian 12's kernel (6.1): backends/bpfdev.py's BPF device
filter, verified and attached by that kernel, refuses what the policy does not allow
(systemd.resource-control(5) DevicePolicy=; the host kernel's run is tests/e2e)."""

from __future__ import annotations

from tests.vm import harness
from tests.vm.conftest import result


def test_closed_allows_the_pseudo_devices_and_the_entries_only(vm: harness.Boot) -> None:
    r = result(vm, "devices")["closed"]
    assert r["job"] == "done"
    assert r["worker"] == {
        "ok": True,
        "r /dev/null": "ok",
        "w /dev/null": "ok",
        "r /dev/zero": "ok",  # closed: the standard pseudo devices too
        "r /dev/vda": "EPERM",
        "w /dev/vdb": "EPERM",
    }


def test_strict_allows_the_entries_only(vm: harness.Boot) -> None:
    r = result(vm, "devices")["strict"]
    assert r["job"] == "done"
    assert r["worker"] == {
        "ok": True,
        "r /dev/null": "ok",
        "w /dev/null": "ok",
        "r /dev/zero": "EPERM",
        "r /dev/vda": "EPERM",
        "w /dev/vdb": "EPERM",
    }
