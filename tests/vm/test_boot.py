"""The VM tier's run itself: scopeshim started and stopped cleanly, every check reported."""

from __future__ import annotations

from tests.vm import harness, inside


def test_every_check_reported(vm: harness.Boot) -> None:
    assert vm.job_exit == 0, vm.describe()
    assert not vm.timed_out
    assert set(inside.CHECKS) <= set(vm.results), vm.describe()


def test_scopeshim_exits_cleanly_and_leaves_no_cgroup(vm: harness.Boot) -> None:
    assert vm.results["_exit_scopeshim"] == {"exit": 0}, vm.describe()
    assert vm.results["_exit_dbus-daemon"] == {"exit": 0}
    assert vm.results["_leftovers"]["cgroups"] == []
