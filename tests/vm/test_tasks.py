"""TasksMax= the kernel enforces (cgroup-v2.rst "PID Interface Files"): fork(2) is refused."""

from __future__ import annotations

from tests.vm import harness
from tests.vm.conftest import events, result


def test_tasks_max_from_start_refuses_the_sixth_task(vm: harness.Boot) -> None:
    r = result(vm, "tasks_max_start")
    assert r["before"]["pids.max"] == "5"
    # the sleeper and the worker are 2 of the 5: three forks succeed, the fourth gets EAGAIN
    assert r["worker"] == {"ok": True, "forked": 3, "error": "EAGAIN"}
    assert events(r["after"]["pids.events"])["max"] >= 1


def test_tasks_max_from_set_unit_properties_on_a_running_scope(vm: harness.Boot) -> None:
    r = result(vm, "tasks_max_set")
    assert r["set"]["pids.max"] == "4"
    assert r["worker"] == {"ok": True, "forked": 2, "error": "EAGAIN"}
    assert events(r["after"]["pids.events"])["max"] >= 1
