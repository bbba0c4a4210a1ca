"""Edge cases answered exactly as the real systemd 252 answered them (fixtures/oracle/).

Each case makes the call that fixtures/oracle/errors-N.py made against systemd 252 and
compares: the error name exactly, the message with run-specific numbers generalised, or
success where systemd succeeded. All mismatches are reported together.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Message, MessageType, Variant

from tests.conftest import Client, Daemon

ORACLE = Path(__file__).resolve().parents[2] / "fixtures" / "oracle"
STU = "ssa(sv)a(sa(sv))"
PROPS = "org.freedesktop.DBus.Properties"
UNIT = "org.freedesktop.systemd1.Unit"
U = "/org/freedesktop/systemd1/unit/"


def observed(n: int) -> dict[str, dict[str, str]]:
    lines = (ORACLE / f"errors-{n}.jsonl").read_text().splitlines()
    return {d["q"]: d for d in map(json.loads, lines)}


def _pattern(message: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\d\+|\d+", r"\\d+", re.escape(message)))


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


class Checker:
    """Runs calls and compares each reply with systemd's answer for the same label."""

    def __init__(self, client: Client, answers: dict[str, dict[str, str]]) -> None:
        self.client = client
        self.answers = answers
        self.mismatches: list[str] = []
        self.checked = 0

    async def check(self, label: str, reply: Awaitable[Message]) -> Message:
        msg = await reply
        want = self.answers[label]
        self.checked += 1
        if "err" in want:
            got = (msg.error_name, msg.body[0] if msg.body else "")
            if msg.message_type is not MessageType.ERROR:
                self.mismatches.append(f"{label}: succeeded, systemd said {want['err']}")
            elif got[0] != want["err"] or not _pattern(want["msg"]).fullmatch(got[1]):
                self.mismatches.append(f"{label}: {got} != systemd {(want['err'], want['msg'])}")
        elif msg.message_type is MessageType.ERROR:
            self.mismatches.append(f"{label}: {msg.error_name} {msg.body}, systemd succeeded")
        return msg

    def stu(self, name: str, props: list[Any], mode: str = "fail") -> Awaitable[Message]:
        return self.client.call("StartTransientUnit", STU, [name, mode, props, []])

    def m(self, member: str, sig: str = "", body: list[Any] | None = None) -> Awaitable[Message]:
        return self.client.call(member, sig, body or [])

    def on(
        self, path: str, iface: str, member: str, sig: str = "", body: list[Any] | None = None
    ) -> Awaitable[Message]:
        return self.client.call(member, sig, body or [], path=path, interface=iface)

    def get(self, path: str, iface: str, prop: str) -> Awaitable[Message]:
        return self.on(path, PROPS, "Get", "ss", [iface, prop])


def P(*pids: int) -> list[Any]:
    return ["PIDs", Variant("au", list(pids))]


async def wait_job(client: Client, reply: Message) -> None:
    job = reply.body[0]
    await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job)


async def test_errors_1(
    daemon: Daemon, client: Client, processes: Callable[..., subprocess.Popen[bytes]]
) -> None:
    c = Checker(client, observed(1))
    s1, s2, s3 = processes(), processes(), processes()
    await c.check("deadpid", c.stu("o-dead.scope", [P(dead_pid())]))
    await wait_job(client, await c.check("running", c.stu("o-a.scope", [P(s1.pid)])))
    await wait_job(client, await c.check("pid-in-other-scope", c.stu("o-b.scope", [P(s1.pid)])))
    assert daemon.backend.cgroup_of(s1.pid) == "/system.slice/o-b.scope"  # moved, as in 252
    await c.check("emptypids", c.stu("o-e.scope", [["PIDs", Variant("au", [])]]))
    await c.check("nopids", c.stu("o-n.scope", [["Description", Variant("s", "x")]]))
    await c.check("pid1", c.stu("o-p1.scope", [P(1)]))
    await c.check("dup", c.stu("o-b.scope", [P(s2.pid)]))
    for n in [
        "foo",
        "a/b.scope",
        "../x.scope",
        "x" * 250 + ".scope",
        "foo@.scope",
        "foo@bar.scope",
        "",
        ".scope",
        "foo.bogus",
    ]:
        await c.check("name:" + n[:20], c.stu(n, [P(s2.pid)]))
    for t in [
        "service",
        "target",
        "mount",
        "socket",
        "timer",
        "device",
        "path",
        "swap",
        "automount",
    ]:
        await c.check("type:" + t, c.stu("o-t." + t, [P(s2.pid)]))
    await c.check("mode-bogus", c.stu("o-m.scope", [P(s2.pid)], mode="bogus"))
    await c.check("mode-isolate", c.stu("o-mi.scope", [P(s2.pid)], mode="isolate"))
    props = {
        "bogus": ["Bogus", Variant("s", "x")],
        "desc-u": ["Description", Variant("u", 1)],
        "pids-as": ["PIDs", Variant("as", ["1"])],
        "wants-s": ["Wants", Variant("s", "a.service")],
        "requiredby": ["RequiredBy", Variant("as", ["a.service"])],
        "slice-service": ["Slice", Variant("s", "foo.service")],
        "slice-invalid": ["Slice", Variant("s", "a--b.slice")],
        "wants-invalid": ["Wants", Variant("as", ["not a unit"])],
        "killmode-bogus": ["KillMode", Variant("s", "bogus")],
        "cpuweight0": ["CPUWeight", Variant("t", 0)],
        "cpuweight10001": ["CPUWeight", Variant("t", 10001)],
        "tasksmax0": ["TasksMax", Variant("t", 0)],
        "memorymax0": ["MemoryMax", Variant("t", 0)],
        "oom-bogus": ["OOMPolicy", Variant("s", "bogus")],
        "collect-bogus": ["CollectMode", Variant("s", "bogus")],
        "killsignal99": ["KillSignal", Variant("i", 99)],
        "iow0": ["IOWeight", Variant("t", 0)],
        "rmf-rel": ["RequiresMountsFor", Variant("as", ["rel/x"])],
        "devallow-bad": ["DeviceAllow", Variant("a(ss)", [["/dev/null", "rwx"]])],
        "cpuquota0": ["CPUQuotaPerSecUSec", Variant("t", 0)],
    }
    for k, v in props.items():
        await c.check("prop:" + k, c.stu("o-p-" + k + ".scope", [P(s3.pid), v]))
    await c.check("slice-with-pids", c.stu("o-sl.slice", [P(s3.pid)]))
    await wait_job(client, await c.check("slice-transient", c.stu("o-x-y.slice", [])))
    await c.check("GetUnit-never", c.m("GetUnit", "s", ["never-loaded.scope"]))
    await c.check("GetUnit-invalid", c.m("GetUnit", "s", ["invalid"]))
    await c.check("LoadUnit-never", c.m("LoadUnit", "s", ["never.scope"]))
    await c.check(
        "StartUnit-nonexistent", c.m("StartUnit", "ss", ["nonexistent.service", "replace"])
    )
    await c.check("StopUnit-never", c.m("StopUnit", "ss", ["never2.scope", "replace"]))
    await c.check("KillUnit-never", c.m("KillUnit", "ssi", ["never3.scope", "all", 15]))
    await c.check("KillUnit-main", c.m("KillUnit", "ssi", ["o-b.scope", "main", 15]))
    await c.check("KillUnit-control", c.m("KillUnit", "ssi", ["o-b.scope", "control", 15]))
    await c.check("KillUnit-bogus", c.m("KillUnit", "ssi", ["o-b.scope", "bogus", 15]))
    for sig in (0, 65, -1):
        await c.check(f"KillUnit-sig{sig}", c.m("KillUnit", "ssi", ["o-b.scope", "all", sig]))
    await c.check("KillUnit-inactive-slice", c.m("KillUnit", "ssi", ["o-never.slice", "all", 15]))
    await c.check("KillUnit-allfail-empty", c.m("KillUnit", "ssi", ["o-x-y.slice", "all-fail", 15]))
    await c.check("ResetFailedUnit-unknown", c.m("ResetFailedUnit", "s", ["unknown9.scope"]))
    await c.check(
        "SetUnitProperties-unknown",
        c.m(
            "SetUnitProperties",
            "sba(sv)",
            ["unknown8.scope", True, [["Description", Variant("s", "x")]]],
        ),
    )
    await c.check(
        "SetUnitProperties-slice",
        c.m(
            "SetUnitProperties",
            "sba(sv)",
            ["o-b.scope", True, [["Slice", Variant("s", "x.slice")]]],
        ),
    )
    await c.check(
        "SetUnitProperties-desc",
        c.m(
            "SetUnitProperties",
            "sba(sv)",
            ["o-b.scope", True, [["Description", Variant("s", "newdesc")]]],
        ),
    )
    await c.check(
        "SetUnitProperties-memmax",
        c.m(
            "SetUnitProperties",
            "sba(sv)",
            ["o-b.scope", True, [["MemoryMax", Variant("t", 1 << 30)]]],
        ),
    )
    await c.check(
        "SetUnitProperties-pids",
        c.m("SetUnitProperties", "sba(sv)", ["o-b.scope", True, [P(s3.pid)]]),
    )
    await c.check("AbandonScope-unknown", c.m("AbandonScope", "s", ["unknown7.scope"]))
    await c.check("AbandonScope-slice", c.m("AbandonScope", "s", ["o-x.slice"]))
    await c.check(
        "GetUnitByControlGroup-nonexistent", c.m("GetUnitByControlGroup", "s", ["/nonexistent"])
    )
    await c.check(
        "GetUnitByControlGroup-sub",
        c.m("GetUnitByControlGroup", "s", ["/system.slice/o-b.scope/sub"]),
    )
    await c.check("GetUnitByInvocationID-3", c.m("GetUnitByInvocationID", "ay", [b"\1\1\1"]))
    await c.check("Subscribe1", c.m("Subscribe"))
    await c.check("Subscribe2", c.m("Subscribe"))
    await c.check("Unsubscribe1", c.m("Unsubscribe"))
    await c.check("Unsubscribe2", c.m("Unsubscribe"))
    await c.check("RefUnit", c.m("RefUnit", "s", ["o-b.scope"]))
    await c.check("UnrefUnit", c.m("UnrefUnit", "s", ["o-b.scope"]))
    await c.check("UnrefUnit2", c.m("UnrefUnit", "s", ["o-b.scope"]))
    await c.check("FreezeUnit", c.m("FreezeUnit", "s", ["o-b.scope"]))
    await c.check("ThawUnit", c.m("ThawUnit", "s", ["o-b.scope"]))
    await c.check("FreezeUnit-inactive", c.m("FreezeUnit", "s", ["never5.scope"]))
    await c.check("GetUnitProcesses", c.m("GetUnitProcesses", "s", ["o-b.scope"]))
    await c.check("GetUnitProcesses-unknown", c.m("GetUnitProcesses", "s", ["unknown6.scope"]))
    s4 = processes()
    for label, sub, pids in (
        ("Attach-root", "/", [s4.pid]),
        ("Attach-sub-nodelegate", "/sub", [s4.pid]),
        ("Attach-empty", "/", []),
    ):
        await c.check(label, c.m("AttachProcessesToUnit", "ssau", ["o-b.scope", sub, pids]))
    await c.check("ListJobs", c.m("ListJobs"))
    await c.check("ClearJobs", c.m("ClearJobs"))
    await c.check("StartUnit-running-scope", c.m("StartUnit", "ss", ["o-b.scope", "replace"]))
    await c.check("StopUnit-rootslice", c.m("StopUnit", "ss", ["-.slice", "replace"]))
    await c.check("Manager-bogus", c.m("Bogus"))
    await c.check("Manager-badsig", c.m("GetUnit", "u", [1]))
    await c.check("Get-never", c.get(U + "never_2eloaded_2escope", UNIT, "ActiveState"))
    await c.check("Get-badlabel", c.get(U + "foo", UNIT, "ActiveState"))
    await c.check(
        "Get-job999999",
        c.get("/org/freedesktop/systemd1/job/999999", "org.freedesktop.systemd1.Job", "State"),
    )
    await c.check("Get-bogusprop", c.get(U + "o_2db_2escope", UNIT, "Bogus"))
    await c.check(
        "Get-wrongiface", c.get(U + "o_2dx_2eslice", "org.freedesktop.systemd1.Scope", "Controller")
    )
    await c.check("Get-bogusiface", c.get(U + "o_2dx_2eslice", "org.bogus.Iface", "X"))
    await c.check(
        "Set-ro",
        c.on(U + "o_2db_2escope", PROPS, "Set", "ssv", [UNIT, "Description", Variant("s", "x")]),
    )
    await c.check(
        "Ping-badpath", c.on("/org/freedesktop/systemd1/foo", "org.freedesktop.DBus.Peer", "Ping")
    )
    await c.check("Get-badpath", c.get("/org/freedesktop/systemd1/foo", UNIT, "Id"))
    scope = "org.freedesktop.systemd1.Scope"
    await c.check("Abandon-path-never", c.on(U + "gone_2escope", scope, "Abandon"))
    await c.check("Abandon-1", c.on(U + "o_2db_2escope", scope, "Abandon"))
    await c.check("Abandon-2", c.on(U + "o_2db_2escope", scope, "Abandon"))
    await c.check(
        "ManagerControlGroup",
        c.get("/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager", "ControlGroup"),
    )
    assert c.mismatches == []
    assert c.checked >= 90


async def test_errors_2(
    daemon: Daemon, client: Client, processes: Callable[..., subprocess.Popen[bytes]]
) -> None:
    c = Checker(client, observed(2))
    s1, s2 = processes(), processes()
    dead = dead_pid()
    await wait_job(
        client,
        await c.check("start-a", c.stu("q-a.scope", [P(s1.pid), ["Delegate", Variant("b", True)]])),
    )
    await c.check("GetUnitByPID-s1", c.m("GetUnitByPID", "u", [s1.pid]))
    await c.check("GetUnitByPID-dead", c.m("GetUnitByPID", "u", [dead]))
    await c.check("GetUnitByPID-huge", c.m("GetUnitByPID", "u", [4000000]))
    await c.check("GetJob-999", c.m("GetJob", "u", [999]))
    await c.check("CancelJob-999", c.m("CancelJob", "u", [999]))
    inv = daemon.manager.units["q-a.scope"].invocation_id
    reply = await c.check("GetUnitByInvocationID", c.m("GetUnitByInvocationID", "ay", [inv]))
    assert reply.body[0].endswith(inv.hex()[1:])  # systemd answers with the invocation path
    await c.check("Get-by-invocation-path-raw", c.get(reply.body[0], UNIT, "Id"))
    for k, v in {
        "memlow0": ["MemoryLow", Variant("t", 0)],
        "memmin0": ["MemoryMin", Variant("t", 0)],
        "memhigh0": ["MemoryHigh", Variant("t", 0)],
        "swap0": ["MemorySwapMax", Variant("t", 0)],
        "memmaxscale0": ["MemoryMaxScale", Variant("u", 0)],
        "tasksscale0": ["TasksMaxScale", Variant("u", 0)],
        "memlimit0": ["MemoryLimit", Variant("t", 0)],
        "cpushares1": ["CPUShares", Variant("t", 1)],
        "blkio5": ["BlockIOWeight", Variant("t", 5)],
        "startupcpuweight0": ["StartupCPUWeight", Variant("t", 0)],
        "controller-bad": ["Controller", Variant("s", "not a bus name")],
        "desc-twice": ["Description", Variant("s", "x")],
    }.items():
        await c.check("prop:" + k, c.stu("q-p-" + k + ".scope", [P(s2.pid), v]))
    await c.check("Start-notfound-path", c.on(U + "nf_2eservice", UNIT, "Start", "s", ["replace"]))
    await c.check("Stop-notfound-path", c.on(U + "nf2_2eservice", UNIT, "Stop", "s", ["replace"]))
    await c.check("Kill-notfound-path", c.on(U + "nf3_2escope", UNIT, "Kill", "si", ["all", 15]))
    await c.check("ResetFailed-notfound-path", c.on(U + "nf4_2escope", UNIT, "ResetFailed"))
    await c.check(
        "SetProperties-notfound-path",
        c.on(
            U + "nf5_2escope",
            UNIT,
            "SetProperties",
            "ba(sv)",
            [True, [["Description", Variant("s", "x")]]],
        ),
    )
    await c.check(
        "GetProcesses-notfound-path",
        c.on(U + "nf6_2escope", "org.freedesktop.systemd1.Scope", "GetProcesses"),
    )
    await c.check("KillUnit-mainfail", c.m("KillUnit", "ssi", ["q-a.scope", "main-fail", 15]))
    await c.check("ThawUnit-running", c.m("ThawUnit", "s", ["q-a.scope"]))
    s3, s4 = processes(), processes()
    await c.check(
        "Attach-deleg-root", c.m("AttachProcessesToUnit", "ssau", ["q-a.scope", "/", [s3.pid]])
    )
    assert daemon.backend.cgroup_of(s3.pid) == "/system.slice/q-a.scope"
    for label, sub, pids in (
        ("Attach-deleg-sub", "/sub", [s4.pid]),
        ("Attach-deleg-empty", "/", []),
        ("Attach-deleg-dead", "/", [dead]),
        ("Attach-deleg-dotdot", "/../x", [s4.pid]),
        ("Attach-deleg-relative", "rel", [s4.pid]),
    ):
        await c.check(label, c.m("AttachProcessesToUnit", "ssau", ["q-a.scope", sub, pids]))
    await c.check("LoadUnit-then-STU", c.m("LoadUnit", "s", ["q-pristine.scope"]))
    s5 = processes()
    await wait_job(
        client, await c.check("STU-after-LoadUnit", c.stu("q-pristine.scope", [P(s5.pid)]))
    )
    await c.check(
        "StartUnit-inactive-slice", c.m("StartUnit", "ss", ["q-inactive2.slice", "replace"])
    )
    await c.check(
        "STU-slice-parent-wrong", c.stu("q-z-w.slice", [["Slice", Variant("s", "other.slice")]])
    )
    client.signals.clear()
    await c.check("KillUnit-all-sigusr", c.m("KillUnit", "ssi", ["q-pristine.scope", "all", 10]))
    await client.wait_signal(
        lambda m: m.member == "UnitRemoved" and m.body[0] == "q-pristine.scope"
    )
    await c.check("StartUnit-scope-dead", c.m("StartUnit", "ss", ["q-pristine.scope", "replace"]))
    await c.check(
        "GetMachineId-badpath", c.on("/nope", "org.freedesktop.DBus.Peer", "GetMachineId")
    )
    await c.check(
        "Introspect-badpath",
        c.on("/org/freedesktop/systemd1/nope", "org.freedesktop.DBus.Introspectable", "Introspect"),
    )
    await c.check(
        "GetAll-badpath", c.on("/org/freedesktop/systemd1/nope", PROPS, "GetAll", "s", [""])
    )
    await c.check(
        "GetAll-bogusiface", c.on(U + "q_2da_2escope", PROPS, "GetAll", "s", ["org.bogus"])
    )
    await c.check("Method-noiface-path-badlabel", c.on(U + "foo", UNIT, "Start", "s", ["replace"]))
    assert c.mismatches == []
    assert c.checked >= 40


@pytest.mark.parametrize(
    ("label", "why"),
    [
        ("prop:bpf", "BPFProgram is refused so that crun falls back to DevicePolicy/DeviceAllow"),
    ],
)
def test_documented_deviations(label: str, why: str) -> None:
    """Where scopeshim answers differently on purpose; systemd's answer is kept for reference."""
    assert observed(1)[label].get("ok"), why
