"""Who may call what: the polkit action of each privileged member, and the polkit check.

org.freedesktop.systemd1(5): reading is open to everyone; changing units needs
org.freedesktop.systemd1.manage-units and reloading org.freedesktop.systemd1.reload-daemon,
which uid 0 always has. Other callers are asked about through polkit when it is on the bus,
and refused when it is not.
"""

from __future__ import annotations

import logging

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from compat import errors

log = logging.getLogger(__name__)

MANAGE_UNITS = "org.freedesktop.systemd1.manage-units"
RELOAD_DAEMON = "org.freedesktop.systemd1.reload-daemon"
SET_ENVIRONMENT = "org.freedesktop.systemd1.set-environment"
MANAGE_UNIT_FILES = "org.freedesktop.systemd1.manage-unit-files"
_PREFIX = "org.freedesktop.systemd1."
_MANAGER = _PREFIX + "Manager"
_UNIT = _PREFIX + "Unit"
_SCOPE = _PREFIX + "Scope"
_SLICE = _PREFIX + "Slice"
_SERVICE = _PREFIX + "Service"
_JOB = _PREFIX + "Job"
_OPEN = None  # no authorization needed


def _each(interface: str, action: str | None, members: str) -> dict[tuple[str, str], str | None]:
    return {(interface, m): action for m in members.split()}


# The one table: (interface, member) -> the polkit action it needs, None when open to
# everyone. org.freedesktop.systemd1(5) "Security": reading, Subscribe/Unsubscribe and
# Ref/Unref are open; whatever changes units needs manage-units, Reload/Reexecute
# reload-daemon. Every member of every systemd1 interface served is listed (a test checks),
# and a member missing from it is refused to unprivileged callers all the same.
ACTIONS: dict[tuple[str, str], str | None] = {
    **_each(_MANAGER, _OPEN, "GetUnit GetUnitByPID GetUnitByPIDFD GetUnitByInvocationID "
            "GetUnitByControlGroup LoadUnit ListUnits ListUnitsFiltered ListUnitsByPatterns "
            "ListUnitsByNames ListJobs GetJob GetUnitProcesses Subscribe Unsubscribe RefUnit "
            "UnrefUnit"),
    **_each(_MANAGER, MANAGE_UNITS, "StartUnit StartUnitReplace StopUnit ReloadUnit RestartUnit "
            "TryRestartUnit ReloadOrRestartUnit ReloadOrTryRestartUnit KillUnit QueueSignalUnit "
            "ResetFailedUnit SetUnitProperties StartTransientUnit AttachProcessesToUnit "
            "AbandonScope FreezeUnit ThawUnit CancelJob ClearJobs ResetFailed"),
    **_each(_MANAGER, RELOAD_DAEMON, "Reload Reexecute"),
    **_each(_MANAGER, SET_ENVIRONMENT, "SetEnvironment UnsetEnvironment UnsetAndSetEnvironment"),
    **_each(_MANAGER, MANAGE_UNIT_FILES, "RevertUnitFiles"),
    **_each(_UNIT, _OPEN, "Ref Unref"),
    **_each(_UNIT, MANAGE_UNITS, "Start Stop Reload Restart TryRestart ReloadOrRestart "
            "ReloadOrTryRestart Kill QueueSignal ResetFailed SetProperties Freeze Thaw"),
    # systemd's cgroup vtable: on each unit type with a cgroup, not on .Unit
    **_each(_SCOPE, _OPEN, "GetProcesses"),
    **_each(_SCOPE, MANAGE_UNITS, "AttachProcesses Abandon"),
    **_each(_SLICE, _OPEN, "GetProcesses"),
    **_each(_SLICE, MANAGE_UNITS, "AttachProcesses"),
    **_each(_SERVICE, _OPEN, "GetProcesses"),
    **_each(_SERVICE, MANAGE_UNITS, "AttachProcesses"),
    **_each(_JOB, _OPEN, "GetAfter GetBefore"),
    **_each(_JOB, MANAGE_UNITS, "Cancel"),
}  # fmt: skip


def _strictest(actions: set[str | None]) -> str | None:
    for action in (RELOAD_DAEMON, MANAGE_UNIT_FILES, SET_ENVIRONMENT, MANAGE_UNITS):
        if action in actions:
            return action
    return None


# a call without an interface reaches the member on whichever interface has it (sd-bus
# matches by member): it needs what the member needs on any of them
_BY_MEMBER: dict[str, str | None] = {}
for (_iface, _member), _action in ACTIONS.items():
    _BY_MEMBER[_member] = _strictest({_BY_MEMBER.get(_member), _action})


# systemd's AttachProcessesToUnit() asks no polkit action: a caller other than root may move
# its own processes into a unit that runs as it (User=), which is how a user manager moves
# its user's processes into its own user@UID.service (Service._owner_may_attach)
ATTACH_MEMBERS = frozenset({"AttachProcessesToUnit", "AttachProcesses"})


def action_for(interface: str | None, member: str) -> str | None:
    """The polkit action a call needs, None for the open ones (reads, Subscribe, Ref)."""
    if interface is None:
        return _BY_MEMBER.get(member)  # unknown members: UnknownMethod, as for everyone
    if (interface, member) in ACTIONS:
        return ACTIONS[(interface, member)]
    if interface.startswith(_PREFIX):
        return MANAGE_UNITS  # a systemd1 member nobody filed: refused unless authorized
    return None  # Peer, Introspectable, Properties (all properties are read-only)


async def check_polkit(bus: MessageBus, sender: str, action: str, interactive: bool) -> None:
    """Ask polkit (CheckAuthorization for the caller's bus name); raise unless allowed."""
    reply = await bus.call(
        Message(
            destination="org.freedesktop.PolicyKit1",
            path="/org/freedesktop/PolicyKit1/Authority",
            interface="org.freedesktop.PolicyKit1.Authority",
            member="CheckAuthorization",
            signature="(sa{sv})sa{ss}us",
            body=[
                ["system-bus-name", {"name": Variant("s", sender)}],
                action,
                {},
                1 if interactive else 0,  # AllowUserInteraction
                "",
            ],
        )
    )
    if reply is None or reply.message_type is not MessageType.METHOD_RETURN:
        if reply is not None:
            log.debug("polkit unavailable for %s: %s %s", action, reply.error_name, reply.body)
        raise errors.AccessDenied("Permission denied")
    authorized, challenge, _details = reply.body[0]
    if authorized:
        return
    if challenge:
        raise errors.InteractiveAuthorizationRequired("Interactive authentication required.")
    raise errors.AccessDenied("Permission denied")
