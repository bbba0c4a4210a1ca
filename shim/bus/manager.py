"""org.freedesktop.systemd1.Manager: methods, signals, properties (org.freedesktop.systemd1(5))."""

from __future__ import annotations

import asyncio
import platform
import time
from typing import Any

from compat import buspath, errors, readable
from compat.properties import UINT64_MAX
from shim.bus.call import Call
from shim.bus.convert import (
    close_passed_fds,
    dup_passed_fds,
    pid_of_pidfd,
    pidfds_to_pids,
    unwrap_properties,
)
from shim.bus.router import Interface, Method, Prop, Signal
from shim.bus.units import default_tasks_max, queue_signal
from shim.core.manager import Manager
from shim.core.units import Job, Unit

NAME = "org.freedesktop.systemd1.Manager"
# Methods whose handler needs the caller's PID (PIDs 0 and pid 0 mean "the caller")
NEEDS_CALLER = frozenset(
    {"StartTransientUnit", "GetUnitByPID", "GetUnitByInvocationID", "AttachProcessesToUnit"}
)

NAMES_PER_STEP = 500  # ListUnitsByNames names handled per loop turn
UnitTuple = tuple[str, str, str, str, str, str, str, int, str, str]
JobTuple = tuple[int, str, str, str, str, str]


def unit_tuple(unit: Unit) -> UnitTuple:
    """One (ssssssouso) entry of ListUnits."""
    job = unit.job
    return (
        unit.name,
        unit.description,
        unit.load_state,
        unit.active_state,
        unit.sub_state,
        "",
        buspath.unit_path(unit.name),
        job.id if job else 0,
        job.type if job else "",
        buspath.job_path(job.id) if job else "/",
    )


def job_tuple(job: Job) -> JobTuple:
    """One (usssoo) entry of ListJobs."""
    return (
        job.id,
        job.unit.name,
        job.type,
        job.state,
        buspath.job_path(job.id),
        buspath.unit_path(job.unit.name),
    )


def _job(job: Job) -> str:
    return buspath.job_path(job.id)


def _unit(unit: Unit) -> str:
    return buspath.unit_path(unit.name)


# -- handlers ---------------------------------------------------------------------------------


def GetUnit(c: Call, name: str) -> str:
    if name == "" and c.pid:
        return _unit(c.manager.unit_by_pid(c.pid))  # systemd 252: "" is the caller's unit
    return _unit(c.manager.get_unit(name))


def LoadUnit(c: Call, name: str) -> str:
    return _unit(c.manager.load_unit(name))


def GetUnitByPID(c: Call, pid: int) -> str:
    return _unit(c.manager.unit_by_pid(pid or (c.pid or 0)))


def GetUnitByInvocationID(c: Call, invocation_id: bytes) -> str:
    unit = c.manager.unit_by_invocation_id(bytes(invocation_id), c.pid)
    # systemd answers with the unit's invocation-ID path
    return buspath.UNIT_PATH_PREFIX + buspath.label_escape(unit.invocation_id.hex())


def _pid_from_pidfd(fds: list[int], index: int) -> int:
    """The PID behind the pidfd at INDEX, with the errors systemd 262 answers (fdinfo's Pid:
    is the pidfd's process, -1 once it is gone; proc(5)); nothing else is a pidfd."""
    if not 0 <= index < len(fds):
        raise errors.InconsistentMessage("Bad message")  # sd-bus rejects the message
    pid = pid_of_pidfd(fds[index])
    if pid is None:
        raise errors.ENOTTY("Failed to get PID from PIDFD: Inappropriate ioctl for device")
    if pid < 0:
        raise errors.UnixProcessIdUnknown("Failed to get PID from PIDFD: No such process")
    return pid


def GetUnitByPIDFD(c: Call, pidfd: int) -> tuple[str, str, bytes]:
    # org.freedesktop.systemd1(5): the unit's path, its name and its invocation ID
    pid = _pid_from_pidfd(c.fds, pidfd)
    unit = c.manager.unit_by_pid(pid)
    if _pid_from_pidfd(c.fds, pidfd) != pid:  # gone meanwhile: the PID may be another's
        raise errors.UnixProcessIdUnknown("Failed to get PID from PIDFD: No such process")
    return _unit(unit), unit.name, unit.invocation_id


def GetUnitByControlGroup(c: Call, cgroup: str) -> str:
    return _unit(c.manager.unit_by_shown_cgroup(cgroup))


def StartUnit(c: Call, name: str, mode: str) -> str:
    return _job(c.manager.start(c.manager.load_unit(name), mode))


def StopUnit(c: Call, name: str, mode: str) -> str:
    return _job(c.manager.stop(c.manager.unit_to_stop(name), mode))


def RestartUnit(c: Call, name: str, mode: str) -> str:
    return _job(c.manager.restart(c.manager.load_unit(name), mode))


def StartTransientUnit(c: Call, name: str, mode: str, props: list[Any], aux: list[Any]) -> str:
    converted = [(n, unwrap_properties(p)) for n, p in aux]
    properties = dup_passed_fds(pidfds_to_pids(unwrap_properties(props), c.fds), c.fds)
    try:
        return _job(
            c.manager.start_transient_unit(
                name, mode, properties, converted, c.pid, c.uid, caller=c.sender
            )
        )
    except BaseException:
        close_passed_fds(properties)  # refused: the unit keeps no descriptor
        raise


def KillUnit(c: Call, name: str, whom: str, signal: int) -> None:
    c.manager.kill(c.manager.get_unit(name), whom, signal)


def QueueSignalUnit(c: Call, name: str, whom: str, signo: int, value: int) -> None:
    queue_signal(c.manager.get_unit(name), whom, signo, value)


def AbandonScope(c: Call, name: str) -> None:
    c.manager.abandon(c.manager.get_unit(name))


def ResetFailedUnit(c: Call, name: str) -> None:
    c.manager.reset_failed(c.manager.get_unit(name))


def ResetFailed(c: Call) -> None:
    c.manager.reset_failed_all()


def SetUnitProperties(c: Call, name: str, runtime: bool, props: list[Any]) -> None:
    unit = c.manager.load_found(name)
    c.manager.set_properties(unit, runtime, unwrap_properties(props))


def ListUnits(c: Call) -> list[UnitTuple]:
    return [unit_tuple(u) for u in c.manager.list_units()]


def ListUnitsFiltered(c: Call, states: list[str]) -> list[UnitTuple]:
    return [unit_tuple(u) for u in c.manager.list_units(states)]


def ListUnitsByPatterns(c: Call, states: list[str], patterns: list[str]) -> list[UnitTuple]:
    return [unit_tuple(u) for u in c.manager.list_units(states, patterns)]


async def ListUnitsByNames(c: Call, names: list[str]) -> list[UnitTuple]:
    # any caller may ask about any number of names: a long list is answered in steps, so
    # that other callers (root's, logind's) are served between them
    out: list[UnitTuple] = []
    for start in range(0, len(names), NAMES_PER_STEP):
        if start:
            await asyncio.sleep(0)
        chunk = names[start : start + NAMES_PER_STEP]
        out.extend(unit_tuple(u) for u in c.manager.list_units(names=chunk))
    return out


def ListJobs(c: Call) -> list[JobTuple]:
    return [job_tuple(j) for j in c.manager.jobs.values()]


def GetJob(c: Call, job_id: int) -> str:
    return _job(c.manager.get_job(job_id))


def CancelJob(c: Call, job_id: int) -> None:
    c.manager.cancel_job(job_id)


def ClearJobs(c: Call) -> None:
    c.manager.clear_jobs()


def GetUnitProcesses(c: Call, name: str) -> list[tuple[str, int, str]]:
    return c.manager.processes(c.manager.get_unit(name))


def AttachProcessesToUnit(c: Call, name: str, subcgroup: str, pids: list[int]) -> None:
    c.manager.attach(c.manager.get_unit(name), subcgroup, pids, c.pid, c.uid)


def Subscribe(c: Call) -> None:
    c.manager.subscribe(c.sender)


def Unsubscribe(c: Call) -> None:
    c.manager.unsubscribe(c.sender)


def SetEnvironment(c: Call, assignments: list[str]) -> None:
    c.manager.set_environment([], assignments)


def UnsetEnvironment(c: Call, names: list[str]) -> None:
    c.manager.set_environment(names, [])


def UnsetAndSetEnvironment(c: Call, names: list[str], assignments: list[str]) -> None:
    c.manager.set_environment(names, assignments)


def Reload(c: Call) -> None:
    c.manager.reload()


def RevertUnitFiles(c: Call, names: list[str]) -> list[tuple[str, str, str]]:
    return c.manager.revert_unit_files(names)


def FreezeUnit(c: Call, name: str) -> None:
    c.manager.freeze(c.manager.get_unit(name))


def ThawUnit(c: Call, name: str) -> None:
    c.manager.thaw(c.manager.get_unit(name))


def RefUnit(c: Call, name: str) -> None:
    c.manager.ref(c.manager.load_unit(name), c.sender)


def UnrefUnit(c: Call, name: str) -> None:
    c.manager.unref(c.manager.get_unit(name), c.sender)


_METHODS = [
    Method("GetUnit", "s", "o", GetUnit, ("name",), ("unit",)),
    Method("GetUnitByPID", "u", "o", GetUnitByPID, ("pid",), ("unit",)),
    Method(
        "GetUnitByInvocationID", "ay", "o", GetUnitByInvocationID, ("invocation_id",), ("unit",)
    ),
    Method("GetUnitByControlGroup", "s", "o", GetUnitByControlGroup, ("cgroup",), ("unit",)),
    Method(
        "GetUnitByPIDFD",
        "h",
        "osay",
        GetUnitByPIDFD,
        ("pidfd",),
        ("unit", "unit_id", "invocation_id"),
    ),
    Method("LoadUnit", "s", "o", LoadUnit, ("name",), ("unit",)),
    Method("StartUnit", "ss", "o", StartUnit, ("name", "mode"), ("job",)),
    Method("StopUnit", "ss", "o", StopUnit, ("name", "mode"), ("job",)),
    Method("RestartUnit", "ss", "o", RestartUnit, ("name", "mode"), ("job",)),
    Method("KillUnit", "ssi", "", KillUnit, ("name", "whom", "signal")),
    Method(
        "QueueSignalUnit",
        "ssii",
        "",
        QueueSignalUnit,
        ("name", "whom", "signal", "value"),
    ),
    Method("FreezeUnit", "s", "", FreezeUnit, ("name",)),
    Method("ThawUnit", "s", "", ThawUnit, ("name",)),
    Method("ResetFailedUnit", "s", "", ResetFailedUnit, ("name",)),
    Method(
        "SetUnitProperties", "sba(sv)", "", SetUnitProperties, ("name", "runtime", "properties")
    ),
    Method("RefUnit", "s", "", RefUnit, ("name",)),
    Method("UnrefUnit", "s", "", UnrefUnit, ("name",)),
    Method(
        "StartTransientUnit",
        "ssa(sv)a(sa(sv))",
        "o",
        StartTransientUnit,
        ("name", "mode", "properties", "aux"),
        ("job",),
    ),
    Method("GetUnitProcesses", "s", "a(sus)", GetUnitProcesses, ("name",), ("processes",)),
    Method(
        "AttachProcessesToUnit",
        "ssau",
        "",
        AttachProcessesToUnit,
        ("unit_name", "subcgroup", "pids"),
    ),
    Method("AbandonScope", "s", "", AbandonScope, ("name",)),
    Method("GetJob", "u", "o", GetJob, ("id",), ("job",)),
    Method("CancelJob", "u", "", CancelJob, ("id",)),
    Method("ClearJobs", "", "", ClearJobs),
    Method("ResetFailed", "", "", ResetFailed),
    Method("ListUnits", "", "a(ssssssouso)", ListUnits, (), ("units",)),
    Method("ListUnitsFiltered", "as", "a(ssssssouso)", ListUnitsFiltered, ("states",), ("units",)),
    Method(
        "ListUnitsByPatterns",
        "asas",
        "a(ssssssouso)",
        ListUnitsByPatterns,
        ("states", "patterns"),
        ("units",),
    ),
    Method("ListUnitsByNames", "as", "a(ssssssouso)", ListUnitsByNames, ("names",), ("units",)),
    Method("ListJobs", "", "a(usssoo)", ListJobs, (), ("jobs",)),
    Method("Subscribe", "", "", Subscribe),
    Method("Unsubscribe", "", "", Unsubscribe),
    Method("Reload", "", "", Reload),
    Method("RevertUnitFiles", "as", "a(sss)", RevertUnitFiles, ("files",), ("changes",)),
    Method("SetEnvironment", "as", "", SetEnvironment, ("assignments",)),
    Method("UnsetEnvironment", "as", "", UnsetEnvironment, ("names",)),
    Method(
        "UnsetAndSetEnvironment",
        "asas",
        "",
        UnsetAndSetEnvironment,
        ("names", "assignments"),
    ),
]

MANAGER = Interface(NAME)
for _m in _METHODS:
    MANAGER.add(_m)
MANAGER.signals = [
    Signal("UnitNew", "so", ("id", "unit")),
    Signal("UnitRemoved", "so", ("id", "unit")),
    Signal("JobNew", "uos", ("id", "job", "unit")),
    Signal("JobRemoved", "uoss", ("id", "job", "unit", "result")),
    Signal(
        "StartupFinished",
        "tttttt",
        ("firmware", "loader", "kernel", "initrd", "userspace", "total"),
    ),
    Signal("UnitFilesChanged", ""),
    Signal("Reloading", "b", ("active",)),
]
MANAGER.properties = {n: Prop(n, s, e) for n, s, e in readable.MANAGER}

# -- properties -------------------------------------------------------------------------------

_BOOT_REALTIME = time.time_ns() // 1000
_BOOT_MONOTONIC = time.monotonic_ns() // 1000
_ZERO = {"s": "", "t": 0, "b": False, "u": 0, "i": 0, "d": 0.0, "as": [], "y": 0}
_ARCH = {
    "x86_64": "x86-64",
    "aarch64": "arm64",
    "i686": "x86",
    "armv7l": "arm",
    "ppc64le": "ppc64-le",
    "riscv64": "riscv64",
    "s390x": "s390x",
}
# systemd-system.conf(5) defaults
_STATIC: dict[str, object] = {
    "Features": "",
    "Architecture": _ARCH.get(platform.machine(), platform.machine()),
    "Progress": 1.0,
    "LogLevel": "info",
    "LogTarget": "console",
    "SystemState": "running",
    "DefaultStandardOutput": "journal",
    "DefaultStandardError": "inherit",
    "DefaultTimerAccuracyUSec": 60_000_000,
    "DefaultTimeoutStartUSec": 90_000_000,
    "DefaultTimeoutStopUSec": 90_000_000,
    "DefaultTimeoutAbortUSec": 90_000_000,
    "DefaultDeviceTimeoutUSec": 90_000_000,
    "DefaultRestartUSec": 100_000,
    "DefaultStartLimitIntervalUSec": 10_000_000,
    "DefaultStartLimitBurst": 5,
    "DefaultTasksAccounting": True,
    "DefaultMemoryAccounting": True,
    "DefaultCPUAccounting": True,  # 252 turns it on where cpu.stat is free (cgroup2)
    "ServiceWatchdogs": True,
    "RebootWatchdogUSec": 600_000_000,  # RebootWatchdogSec=10min
    "DefaultOOMPolicy": "stop",
    "CtrlAltDelBurstAction": "reboot-force",
    "RuntimeWatchdogPreGovernor": "",
    "TimerSlackNSec": 50_000,
    "UserspaceTimestamp": _BOOT_REALTIME,
    "UserspaceTimestampMonotonic": _BOOT_MONOTONIC,
    "FinishTimestamp": _BOOT_REALTIME,
    "FinishTimestampMonotonic": _BOOT_MONOTONIC,
}


def get_property(m: Manager, version: str, name: str) -> object:
    dynamic: dict[str, Any] = {
        "Version": version,
        "NNames": len(m.units),
        "NFailedUnits": m.n_failed_units,
        "NJobs": len(m.jobs),
        "NInstalledJobs": m.n_installed_jobs,
        "NFailedJobs": m.n_failed_jobs,
        "DefaultTasksMax": default_tasks_max(),
        # a user manager's own cgroup (user@UID.service); "" on the system instance
        "ControlGroup": m.instance.cgroup_prefix,
        "Environment": list(m.instance.environment),
        "UnitPath": m.unit_path(),
    }
    if name in dynamic:
        return dynamic[name]
    if name in _STATIC:
        return _STATIC[name]
    if name.startswith("DefaultLimit"):
        return UINT64_MAX
    return _ZERO.get(MANAGER.properties[name].sig, 0)
