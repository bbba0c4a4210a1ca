"""The one table of D-Bus errors systemd1 answers with: one exception class per error name."""

# Class names are the last component of the D-Bus error name, so no "Error" suffix:
# ruff: noqa: N818

from __future__ import annotations

import errno as _errno
from typing import ClassVar

_SYSTEMD1 = "org.freedesktop.systemd1."
_DBUS = "org.freedesktop.DBus.Error."


class SystemdError(Exception):
    """Base of every error sent back over the bus; `error_name` is the D-Bus error name.

    The base itself answers as org.freedesktop.DBus.Error.Failed, so a stray raise still maps to
    a well-formed error; raise a subclass.
    """

    error_name: ClassVar[str] = _DBUS + "Failed"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# org.freedesktop.systemd1.* (systemd's bus-common-errors; the names appear in systemctl(1) output)


class NoSuchUnit(SystemdError):
    error_name = _SYSTEMD1 + "NoSuchUnit"


class NoUnitForPID(SystemdError):
    error_name = _SYSTEMD1 + "NoUnitForPID"


class NoUnitForInvocationID(SystemdError):
    error_name = _SYSTEMD1 + "NoUnitForInvocationID"


class UnitExists(SystemdError):
    error_name = _SYSTEMD1 + "UnitExists"


class LoadFailed(SystemdError):
    error_name = _SYSTEMD1 + "LoadFailed"


class BadUnitSetting(SystemdError):
    error_name = _SYSTEMD1 + "BadUnitSetting"


class JobFailed(SystemdError):
    error_name = _SYSTEMD1 + "JobFailed"


class NoSuchJob(SystemdError):
    error_name = _SYSTEMD1 + "NoSuchJob"


class NotSubscribed(SystemdError):
    error_name = _SYSTEMD1 + "NotSubscribed"


class AlreadySubscribed(SystemdError):
    error_name = _SYSTEMD1 + "AlreadySubscribed"


class OnlyByDependency(SystemdError):
    error_name = _SYSTEMD1 + "OnlyByDependency"


class TransactionJobsConflicting(SystemdError):
    error_name = _SYSTEMD1 + "TransactionJobsConflicting"


class TransactionOrderIsCyclic(SystemdError):
    error_name = _SYSTEMD1 + "TransactionOrderIsCyclic"


class TransactionIsDestructive(SystemdError):
    error_name = _SYSTEMD1 + "TransactionIsDestructive"


class UnitMasked(SystemdError):
    error_name = _SYSTEMD1 + "UnitMasked"


class UnitGenerated(SystemdError):
    error_name = _SYSTEMD1 + "UnitGenerated"


class UnitLinked(SystemdError):
    error_name = _SYSTEMD1 + "UnitLinked"


class UnitBadPath(SystemdError):
    error_name = _SYSTEMD1 + "UnitBadPath"


class JobTypeNotApplicable(SystemdError):
    error_name = _SYSTEMD1 + "JobTypeNotApplicable"


class NoIsolation(SystemdError):
    error_name = _SYSTEMD1 + "NoIsolation"


class ShuttingDown(SystemdError):
    error_name = _SYSTEMD1 + "ShuttingDown"


class ScopeNotRunning(SystemdError):
    error_name = _SYSTEMD1 + "ScopeNotRunning"


class NoSuchDynamicUser(SystemdError):
    error_name = _SYSTEMD1 + "NoSuchDynamicUser"


class NotReferenced(SystemdError):
    error_name = _SYSTEMD1 + "NotReferenced"


class DiskFull(SystemdError):
    error_name = _SYSTEMD1 + "DiskFull"


class NothingToClean(SystemdError):
    error_name = _SYSTEMD1 + "NothingToClean"


class UnitBusy(SystemdError):
    error_name = _SYSTEMD1 + "UnitBusy"


class UnitInactive(SystemdError):
    error_name = _SYSTEMD1 + "UnitInactive"


class NoSuchProcess(SystemdError):
    error_name = _SYSTEMD1 + "NoSuchProcess"


# org.freedesktop.DBus.Error.* (the standard errors of the D-Bus specification and sd-bus)


class InvalidArgs(SystemdError):
    error_name = _DBUS + "InvalidArgs"


class PropertyReadOnly(SystemdError):
    error_name = _DBUS + "PropertyReadOnly"


class UnknownObject(SystemdError):
    error_name = _DBUS + "UnknownObject"


class UnknownInterface(SystemdError):
    error_name = _DBUS + "UnknownInterface"


class UnknownMethod(SystemdError):
    error_name = _DBUS + "UnknownMethod"


class UnknownProperty(SystemdError):
    error_name = _DBUS + "UnknownProperty"


class AccessDenied(SystemdError):
    error_name = _DBUS + "AccessDenied"


class NotSupported(SystemdError):
    error_name = _DBUS + "NotSupported"


class Failed(SystemdError):
    error_name = _DBUS + "Failed"


class NoMemory(SystemdError):
    error_name = _DBUS + "NoMemory"


class LimitsExceeded(SystemdError):
    error_name = _DBUS + "LimitsExceeded"


class InteractiveAuthorizationRequired(SystemdError):
    error_name = _DBUS + "InteractiveAuthorizationRequired"


class UnixProcessIdUnknown(SystemdError):
    error_name = _DBUS + "UnixProcessIdUnknown"


class FileNotFound(SystemdError):
    error_name = _DBUS + "FileNotFound"


class InconsistentMessage(SystemdError):
    error_name = _DBUS + "InconsistentMessage"


class FileExists(SystemdError):
    error_name = _DBUS + "FileExists"


class Timeout(SystemdError):
    error_name = _DBUS + "Timeout"


class IOError(SystemdError):  # noqa: A001 - the D-Bus error's own name
    error_name = _DBUS + "IOError"


# sd-bus turns a bare errno into "System.Error.<NAME>"; systemd 252 answers a property whose
# variant has the wrong type with ENXIO ("Unexpected message contents"); the cgroupfs errnos
# below reach clients the same way


class ENXIO(SystemdError):
    error_name = "System.Error.ENXIO"


class EBUSY(SystemdError):
    error_name = "System.Error.EBUSY"


class ENOSPC(SystemdError):
    error_name = "System.Error.ENOSPC"


class EAGAIN(SystemdError):
    error_name = "System.Error.EAGAIN"


class ENOTTY(SystemdError):
    error_name = "System.Error.ENOTTY"  # an fd that is not a pidfd, where one is wanted


def _table() -> dict[str, type[SystemdError]]:
    table: dict[str, type[SystemdError]] = {}
    for cls in SystemdError.__subclasses__():
        if cls.error_name in table:
            raise RuntimeError(f"duplicate D-Bus error name {cls.error_name}")
        table[cls.error_name] = cls
    return table


ERRORS: dict[str, type[SystemdError]] = _table()


def property_read_only(name: str) -> PropertyReadOnly:
    """The error systemd answers when a(sv) names a property it cannot set."""
    return PropertyReadOnly(f"Cannot set property {name}, or unknown property.")


# sd-bus's errno -> D-Bus error name map (sd_bus_error_set_errno(3): the standard names it
# knows; any other errno is sent as "System.Error.<ERRNO>")
_ERRNO_ERRORS: dict[int, type[SystemdError]] = {
    _errno.EACCES: AccessDenied,
    _errno.EPERM: AccessDenied,
    _errno.ENOENT: FileNotFound,
    _errno.EEXIST: FileExists,
    _errno.ESRCH: UnixProcessIdUnknown,
    _errno.ENOMEM: NoMemory,
    _errno.EINVAL: InvalidArgs,
    _errno.EOPNOTSUPP: NotSupported,
    _errno.ETIMEDOUT: Timeout,
    _errno.EIO: IOError,
    _errno.ENOBUFS: LimitsExceeded,
    _errno.EBADMSG: InconsistentMessage,
    _errno.ENXIO: ENXIO,
    _errno.EBUSY: EBUSY,
    _errno.ENOSPC: ENOSPC,
    _errno.EAGAIN: EAGAIN,
    _errno.ENOTTY: ENOTTY,
}


def _system_error(code: int) -> type[SystemdError]:
    """System.Error.<ERRNO> for an errno outside the table (made once, then kept there)."""
    name = _errno.errorcode.get(code)
    if name is None:
        return Failed
    cls = type(name, (SystemdError,), {"error_name": "System.Error." + name})
    _ERRNO_ERRORS[code] = cls
    return cls


def from_errno(code: int | None, message: str) -> SystemdError:
    """The error systemd sends for a failed system call with this errno and text."""
    if code is None:
        return Failed(message)
    cls = _ERRNO_ERRORS.get(code) or _system_error(code)
    return cls(message)
