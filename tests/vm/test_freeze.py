"""FreezeUnit/ThawUnit on the kernel's cgroup.freeze: a frozen scope's processes run no more
(its CPU time stands still) until it is thawed (cgroup-v2.rst cgroup.freeze)."""

from __future__ import annotations

from tests.vm import harness
from tests.vm.conftest import events, result


def test_a_frozen_scope_runs_nothing_until_thawed(vm: harness.Boot) -> None:
    r = result(vm, "freeze_thaw")
    assert r["job"] == "done"
    assert events(r["frozen_events"])["frozen"] == 1
    # told to burn while frozen, it did not run at all
    before, after = r["frozen_usage"]
    assert before == after
    # thawed, it burns and answers
    assert r["worker"]["cpu_seconds"] > 0
    assert events(r["thawed_events"])["frozen"] == 0
