"""Job objects: org.freedesktop.systemd1.Job at /org/freedesktop/systemd1/job/<id>."""

from __future__ import annotations

from compat import buspath
from shim.bus.call import Call
from shim.bus.router import Interface, Method, Prop
from shim.core.units import Job


def Cancel(c: Call) -> None:
    c.manager.cancel_job(c.job.id)


def GetAfter(c: Call) -> list[tuple[int, str, str, str, str, str]]:
    return []  # jobs run independently: none waits for another


def GetBefore(c: Call) -> list[tuple[int, str, str, str, str, str]]:
    return []


JOB = Interface(
    "org.freedesktop.systemd1.Job",
    properties={
        "Id": Prop("Id", "u", "const"),
        "Unit": Prop("Unit", "(so)", "const"),
        "JobType": Prop("JobType", "s", "const"),
        "State": Prop("State", "s", "true"),
        "ActivationDetails": Prop("ActivationDetails", "a(ss)", "const"),
    },
)
for _m in (
    Method("Cancel", "", "", Cancel),
    Method("GetAfter", "", "a(usssoo)", GetAfter, (), ("jobs",)),
    Method("GetBefore", "", "a(usssoo)", GetBefore, (), ("jobs",)),
):
    JOB.add(_m)


def get_property(job: Job, name: str) -> object:
    values: dict[str, object] = {
        "Id": job.id,
        "Unit": (job.unit.name, buspath.unit_path(job.unit.name)),
        "JobType": str(job.type),
        "State": str(job.state),
        "ActivationDetails": [],
    }
    return values[name]
