"""Every readable property answers with systemd 252's type (GetAll "" on each kind of object)."""

from __future__ import annotations

import pytest
from dbus_fast import Variant

from compat import readable
from tests.conftest import MANAGER_PATH, Client, Daemon

PROPS = "org.freedesktop.DBus.Properties"


def table(*names: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for n in names:
        out.update({name: sig for name, sig, _ in getattr(readable, n)})
    return out


async def get_all(client: Client, path: str, interface: str = "") -> dict[str, Variant]:
    (values,) = await client.ok("GetAll", "s", [interface], path=path, interface=PROPS)
    return values


async def test_manager_get_all(daemon: Daemon, client: Client) -> None:
    values = await get_all(client, MANAGER_PATH)
    expected = table("MANAGER")
    assert {n: v.signature for n, v in values.items()} == expected
    assert values["Version"].value == "252"
    assert values["SystemState"].value == "running"
    assert values["NNames"].value == len(daemon.manager.units)


async def test_scope_and_slice_get_all(daemon: Daemon, client: Client, processes) -> None:
    proc = processes()
    (job,) = await client.ok(
        "StartTransientUnit",
        "ssa(sv)a(sa(sv))",
        [
            "ga.scope",
            "fail",
            [["PIDs", Variant("au", [proc.pid])], ["Slice", Variant("s", "ga.slice")]],
            [],
        ],
    )
    await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job)
    scope = await get_all(client, "/org/freedesktop/systemd1/unit/ga_2escope")
    assert {n: v.signature for n, v in scope.items()} == table("UNIT", "SCOPE")
    assert scope["ControlGroup"].value == "/ga.slice/ga.scope"
    assert scope["Requires"].value == ["ga.slice"]
    assert scope["Conflicts"].value == ["shutdown.target"]
    assert scope["KillMode"].value == "control-group"
    assert scope["TasksCurrent"].value == 1
    only_scope = await get_all(
        client, "/org/freedesktop/systemd1/unit/ga_2escope", "org.freedesktop.systemd1.Scope"
    )
    assert set(only_scope) == set(table("SCOPE"))
    sl = await get_all(client, "/org/freedesktop/systemd1/unit/ga_2eslice")
    assert {n: v.signature for n, v in sl.items()} == table("UNIT", "SLICE")


@pytest.mark.parametrize("label", ["never_2eservice", "never_2etarget", "never_2escope"])
async def test_not_found_units_get_all(daemon: Daemon, client: Client, label: str) -> None:
    values = await get_all(client, f"/org/freedesktop/systemd1/unit/{label}")
    assert values["LoadState"].value == "not-found"
    assert values["ActiveState"].value == "inactive"
    assert values["SubState"].value == "dead"
    assert values["LoadError"].value[0] == "org.freedesktop.systemd1.NoSuchUnit"
    kind = label.rsplit("_2e", 1)[1].upper()
    # every unit object carries its type's interface, loaded or not (systemd 252's tables)
    assert {n: v.signature for n, v in values.items()} == table("UNIT", kind)


async def test_handled_service_get_all(daemon: Daemon, client: Client) -> None:
    path = "/org/freedesktop/systemd1/unit/user_2druntime_2ddir_40123_2eservice"
    values = await get_all(client, path)
    assert {n: v.signature for n, v in values.items()} == table("UNIT", "SERVICE")
    assert values["LoadState"].value == "loaded"
    assert values["Description"].value == "User Runtime Directory /run/user/123"
    assert values["Slice"].value == "user-123.slice"
    assert (values["Type"].value, values["RemainAfterExit"].value) == ("oneshot", True)


async def test_job_get_all(daemon: Daemon, client: Client, processes) -> None:
    proc = processes(ignore_term=True)
    (job,) = await client.ok(
        "StartTransientUnit",
        "ssa(sv)a(sa(sv))",
        [
            "gj.scope",
            "fail",
            [["PIDs", Variant("au", [proc.pid])], ["TimeoutStopUSec", Variant("t", 10**7)]],
            [],
        ],
    )
    await client.wait_signal(lambda m: m.member == "JobRemoved" and m.body[1] == job)
    (job,) = await client.ok("StopUnit", "ss", ["gj.scope", "replace"])
    values = await get_all(client, job)
    assert {n: v.signature for n, v in values.items()} == {
        "Id": "u",
        "Unit": "(so)",
        "JobType": "s",
        "State": "s",
        "ActivationDetails": "a(ss)",
    }
    assert values["JobType"].value == "stop"
    assert list(values["Unit"].value) == ["gj.scope", "/org/freedesktop/systemd1/unit/gj_2escope"]
    proc.kill()
