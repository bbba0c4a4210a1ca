"""Issue 18: a transient service's limits are in its cgroup before ExecStart= runs, and the
kernel enforces them: MemoryMax= OOM-kills (systemd's Result=oom-kill), TasksMax= fails fork(2);
nothing is left once it is over."""

from __future__ import annotations

import errno

from tests.vm import harness
from tests.vm.conftest import result


def test_memory_max_oom_kills_a_service_with_result_oom_kill(vm: harness.Boot) -> None:
    r = result(vm, "service_memory_max")
    assert r["job"] == "done"
    assert r["at_exec"] == str(32 << 20), r
    # systemd.service(5) Result=: "oom-kill" when the kernel's OOM killer acted on the unit
    assert (r["state"], r["Result"]) == ("failed", "oom-kill"), r
    assert (r["ExecMainCode"], r["ExecMainStatus"]) == (2, 9), r  # CLD_KILLED by SIGKILL
    assert not r["cgroup_left"], r
    assert r.get("loaded_after_reset") is None, r  # ResetFailedUnit: the transient unit is gone


def test_tasks_max_fails_fork_in_a_service(vm: harness.Boot) -> None:
    r = result(vm, "service_tasks_max")
    assert r["at_exec"] == "4", r
    # the main process and 3 children: the fourth fork gets EAGAIN
    assert r["forks"] == {"forked": 3, "errno": errno.EAGAIN}, r
    # Type=oneshot: the job waited for it; it succeeded and was collected (no Result left)
    assert (r["job"], r["state"]) == ("done", "unloaded"), r
    assert not r["cgroup_left"], r
