"""compat.errors: one class per D-Bus error name, the ERRORS table, systemd's exact texts."""

from __future__ import annotations

import errno
import re

import pytest

from compat import errors
from compat.errors import ERRORS, PropertyReadOnly, SystemdError, property_read_only

# D-Bus specification: an error name has interface-name syntax: two or more dot-separated
# elements of [A-Za-z0-9_] not starting with a digit, at most 255 characters.
ERROR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")

SYSTEMD1 = [
    "NoSuchUnit",
    "NoUnitForPID",
    "NoUnitForInvocationID",
    "UnitExists",
    "LoadFailed",
    "BadUnitSetting",
    "JobFailed",
    "NoSuchJob",
    "NotSubscribed",
    "AlreadySubscribed",
    "OnlyByDependency",
    "TransactionJobsConflicting",
    "TransactionOrderIsCyclic",
    "TransactionIsDestructive",
    "UnitMasked",
    "UnitGenerated",
    "UnitLinked",
    "UnitBadPath",
    "JobTypeNotApplicable",
    "NoIsolation",
    "ShuttingDown",
    "ScopeNotRunning",
    "NoSuchDynamicUser",
    "NotReferenced",
    "DiskFull",
    "NothingToClean",
    "UnitBusy",
    "UnitInactive",
    "NoSuchProcess",
]
DBUS = [
    "InvalidArgs",
    "PropertyReadOnly",
    "UnknownObject",
    "UnknownInterface",
    "UnknownMethod",
    "UnknownProperty",
    "AccessDenied",
    "NotSupported",
    "Failed",
    "NoMemory",
    "LimitsExceeded",
    "InteractiveAuthorizationRequired",
    "UnixProcessIdUnknown",
    "FileNotFound",
    "InconsistentMessage",  # systemd 262: GetUnitByPIDFD with an fd index past the message's
]
DBUS += ["FileExists", "Timeout", "IOError"]  # sd_bus_error_set_errno(3): EEXIST, ETIMEDOUT, EIO
# errno-derived names sd-bus answers with (observed from systemd 252, tests/bus/test_bad_input.py)
SYSTEM = ["ENXIO", "EBUSY", "ENOSPC", "EAGAIN"]
SYSTEM += ["ENOTTY"]  # systemd 262: GetUnitByPIDFD of an fd that is no pidfd
EXPECTED = (
    {f"org.freedesktop.systemd1.{n}" for n in SYSTEMD1}
    | {f"org.freedesktop.DBus.Error.{n}" for n in DBUS}
    | {f"System.Error.{n}" for n in SYSTEM}
)

CLASSES = [
    obj
    for obj in vars(errors).values()
    if isinstance(obj, type) and issubclass(obj, SystemdError) and obj is not SystemdError
]


def test_the_table_is_exactly_the_expected_names():
    assert set(ERRORS) == EXPECTED
    assert len(ERRORS) == len(SYSTEMD1) + len(DBUS) + len(SYSTEM)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_each_class(cls):
    name = cls.error_name
    assert ERROR_NAME.fullmatch(name)
    assert len(name) <= 255
    assert name.rpartition(".")[2] == cls.__name__
    assert name.startswith(
        ("org.freedesktop.systemd1.", "org.freedesktop.DBus.Error.", "System.Error.")
    )
    assert ERRORS[name] is cls
    assert issubclass(cls, Exception)


def test_names_are_unique():
    names = [cls.error_name for cls in CLASSES]
    assert len(names) == len(set(names)) == len(CLASSES)
    assert set(names) == set(ERRORS)


def test_lookup_by_name():
    assert ERRORS["org.freedesktop.systemd1.NoSuchUnit"] is errors.NoSuchUnit
    assert ERRORS["org.freedesktop.DBus.Error.InvalidArgs"] is errors.InvalidArgs
    assert ERRORS["org.freedesktop.DBus.Error.UnknownObject"] is errors.UnknownObject
    assert "org.freedesktop.DBus.Error.ServiceUnknown" not in ERRORS  # the bus daemon's, not ours


def test_message():
    e = errors.NoSuchUnit("Unit lab2.scope not loaded.")
    assert e.message == "Unit lab2.scope not loaded."
    assert str(e) == "Unit lab2.scope not loaded."
    assert e.error_name == "org.freedesktop.systemd1.NoSuchUnit"
    with pytest.raises(SystemdError) as info:
        raise e
    assert info.value is e


def test_base_class_answers_as_failed():
    assert SystemdError("x").error_name == "org.freedesktop.DBus.Error.Failed"
    assert SystemdError not in ERRORS.values()


def test_property_read_only():
    e = property_read_only("Foo")
    assert type(e) is PropertyReadOnly
    assert e.error_name == "org.freedesktop.DBus.Error.PropertyReadOnly"
    assert e.message == "Cannot set property Foo, or unknown property."
    assert str(e) == "Cannot set property Foo, or unknown property."


def test_error_names_of_real_systemd_are_known():
    try:
        from tests.systemd252 import captures_dir

        directory = captures_dir()
    except (ImportError, FileNotFoundError):
        pytest.skip("no real-systemd-252 captures found")
    seen = {
        m.group(1)
        for p in directory.glob("*.log")
        for m in re.finditer(r"error_name=(org\.freedesktop\.systemd1\.\w+)", p.read_text())
    }
    assert seen
    assert seen <= set(ERRORS)


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (errno.EACCES, "org.freedesktop.DBus.Error.AccessDenied"),
        (errno.EPERM, "org.freedesktop.DBus.Error.AccessDenied"),
        (errno.ENOENT, "org.freedesktop.DBus.Error.FileNotFound"),
        (errno.ESRCH, "org.freedesktop.DBus.Error.UnixProcessIdUnknown"),
        (errno.EBUSY, "System.Error.EBUSY"),
        (errno.ENOSPC, "System.Error.ENOSPC"),
        (errno.EEXIST, "org.freedesktop.DBus.Error.FileExists"),
        (errno.EIO, "org.freedesktop.DBus.Error.IOError"),
        (errno.ELOOP, "System.Error.ELOOP"),
        (errno.EROFS, "System.Error.EROFS"),
        (errno.EROFS, "System.Error.EROFS"),  # the second time from the kept class
        (99999, "org.freedesktop.DBus.Error.Failed"),  # no errno name
        (None, "org.freedesktop.DBus.Error.Failed"),
    ],
)
def test_from_errno(code, name):
    e = errors.from_errno(code, "Failed to do it: reason")
    assert e.error_name == name and e.message == "Failed to do it: reason"
