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
_MANAGER = "org.freedesktop.systemd1.Manager"
_UNIT = "org.freedesktop.systemd1.Unit"
_SCOPE = "org.freedesktop.systemd1.Scope"
_JOB = "org.freedesktop.systemd1.Job"

ACTIONS: dict[tuple[str, str], str] = {
    **{
        (_MANAGER, m): MANAGE_UNITS
        for m in (
            "StartUnit", "StartUnitReplace", "StopUnit", "ReloadUnit", "RestartUnit",
            "TryRestartUnit", "ReloadOrRestartUnit", "ReloadOrTryRestartUnit", "KillUnit",
            "QueueSignalUnit", "ResetFailedUnit", "SetUnitProperties", "StartTransientUnit",
            "AbandonScope", "FreezeUnit", "ThawUnit", "CancelJob", "ClearJobs", "ResetFailed",
        )
    },
    (_MANAGER, "Reload"): RELOAD_DAEMON,
    **{
        (_MANAGER, m): SET_ENVIRONMENT
        for m in ("SetEnvironment", "UnsetEnvironment", "UnsetAndSetEnvironment")
    },
    (_MANAGER, "Reexecute"): RELOAD_DAEMON,
    **{
        (_UNIT, m): MANAGE_UNITS
        for m in (
            "Start", "Stop", "Reload", "Restart", "TryRestart", "ReloadOrRestart",
            "ReloadOrTryRestart", "Kill", "QueueSignal", "ResetFailed", "SetProperties",
            "Freeze", "Thaw",
        )
    },
    # AttachProcessesToUnit and Unit.AttachProcesses need no polkit action on systemd: a
    # caller other than root must own the processes and the unit (shim/core/scopes.py)
    (_SCOPE, "Abandon"): MANAGE_UNITS,
    (_JOB, "Cancel"): MANAGE_UNITS,
}  # fmt: skip
_BY_MEMBER = {member: action for (_, member), action in ACTIONS.items()}


def action_for(interface: str | None, member: str) -> str | None:
    """The polkit action a call needs, None for the open ones (reads, Subscribe, Ref)."""
    if interface is None:
        return _BY_MEMBER.get(member)  # no interface given: sd-bus matches by member
    return ACTIONS.get((interface, member))


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
