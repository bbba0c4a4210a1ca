"""What the body of a message should look like: signatures of methods, signals and properties.

Sources, in order of precedence: Introspect XML found in the capture itself, the compat tables
(compat/readable.py: readable properties and the Manager's methods of systemd 252;
compat/properties.py: settable properties), shim/replay/systemd252.py (methods and signals of
every systemd 252 interface, properties of the unit types compat does not model), and the
bus driver's and standard interfaces below.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from compat import readable
from compat.buspath import JOB_PATH_PREFIX, MANAGER_PATH, unit_name_from_path
from compat.properties import PROPERTIES as SETTABLE
from shim.replay import systemd252, systemd262

PROPERTIES_IFACE = "org.freedesktop.DBus.Properties"
INTROSPECTABLE = "org.freedesktop.DBus.Introspectable"
PEER = "org.freedesktop.DBus.Peer"
DRIVER = "org.freedesktop.DBus"
SD = "org.freedesktop.systemd1."
MANAGER = SD + "Manager"
UNIT = SD + "Unit"
JOB = SD + "Job"

# interface -> (methods, signals, properties) that the tables above do not hold
_BUILTIN: dict[str, tuple[dict[str, tuple[str, str]], dict[str, str], dict[str, str]]] = {
    PROPERTIES_IFACE: (
        {"Get": ("ss", "v"), "GetAll": ("s", "a{sv}"), "Set": ("ssv", "")},
        {"PropertiesChanged": "sa{sv}as"},
        {},
    ),
    INTROSPECTABLE: ({"Introspect": ("", "s")}, {}, {}),
    PEER: ({"Ping": ("", ""), "GetMachineId": ("", "s")}, {}, {}),
    # dbus-daemon(1), the bus driver
    DRIVER: (
        {
            "Hello": ("", "s"),
            "RequestName": ("su", "u"),
            "ReleaseName": ("s", "u"),
            "StartServiceByName": ("su", "u"),
            "NameHasOwner": ("s", "b"),
            "ListNames": ("", "as"),
            "ListActivatableNames": ("", "as"),
            "ListQueuedOwners": ("s", "as"),
            "AddMatch": ("s", ""),
            "RemoveMatch": ("s", ""),
            "GetNameOwner": ("s", "s"),
            "GetConnectionUnixUser": ("s", "u"),
            "GetConnectionUnixProcessID": ("s", "u"),
            "GetConnectionCredentials": ("s", "a{sv}"),
            "GetAdtAuditSessionData": ("s", "ay"),
            "GetConnectionSELinuxSecurityContext": ("s", "ay"),
            "GetId": ("", "s"),
            "ReloadConfig": ("", ""),
            "UpdateActivationEnvironment": ("a{ss}", ""),
            "BecomeMonitor": ("asu", ""),
        },
        {"NameOwnerChanged": "sss", "NameLost": "s", "NameAcquired": "s"},
        {
            # GetConnectionCredentials' keys
            "UnixUserID": "u",
            "UnixGroupIDs": "au",
            "ProcessID": "u",
            "ProcessFD": "h",
            "LinuxSecurityLabel": "ay",
            "WindowsSID": "s",
        },
    ),
    "org.freedesktop.DBus.Monitoring": ({"BecomeMonitor": ("asu", "")}, {}, {}),
    # src/core/dbus-job.c (systemd 252); there is no job in the busctl-tree capture
    JOB: (
        {"Cancel": ("", ""), "GetAfter": ("", "a(usssoo)"), "GetBefore": ("", "a(usssoo)")},
        {},
        {
            "Id": "u",
            "Unit": "(so)",
            "JobType": "s",
            "State": "s",
            "ActivationDetails": "a(ss)",
        },
    ),
    # org.freedesktop.login1(5): what pam_systemd, loginctl and the lab's clients call
    "org.freedesktop.login1.Manager": (
        {
            "CreateSession": ("uusssssussbssa(sv)", "soshusub"),
            "CreateSessionWithPIDFD": ("uhsssssussbssta(sv)", "soshusub"),
            "ReleaseSession": ("s", ""),
            "GetSession": ("s", "o"),
            "GetSessionByPID": ("u", "o"),
            "GetUser": ("u", "o"),
            "GetUserByPID": ("u", "o"),
            "ListSessions": ("", "a(susso)"),
            "ListUsers": ("", "a(uso)"),
            "ListSeats": ("", "a(so)"),
            "ListInhibitors": ("", "a(ssssuu)"),
            "TerminateSession": ("s", ""),
            "TerminateUser": ("u", ""),
            "KillSession": ("ssi", ""),
            "KillUser": ("ui", ""),
            "ActivateSession": ("s", ""),
            "LockSession": ("s", ""),
            "UnlockSession": ("s", ""),
        },
        {
            "SessionNew": "so",
            "SessionRemoved": "so",
            "UserNew": "uo",
            "UserRemoved": "uo",
            "PrepareForShutdown": "b",
            "PrepareForSleep": "b",
        },
        {},
    ),
    "org.freedesktop.LogControl1": (
        {},
        {},
        {"LogLevel": "s", "LogTarget": "s", "SyslogIdentifier": "s"},
    ),
}

_COMPAT_PROPS = {
    MANAGER: readable.MANAGER,
    UNIT: readable.UNIT,
    SD + "Scope": readable.SCOPE,
    SD + "Slice": readable.SLICE,
    SD + "Service": readable.SERVICE,
    SD + "Target": readable.TARGET,
}

_SUFFIX_IFACE = {
    "service": "Service",
    "socket": "Socket",
    "target": "Target",
    "device": "Device",
    "mount": "Mount",
    "automount": "Automount",
    "swap": "Swap",
    "timer": "Timer",
    "path": "Path",
    "slice": "Slice",
    "scope": "Scope",
}


class Signatures:
    """Lookups of expected signatures; `add_introspection` adds what a capture showed."""

    def __init__(self) -> None:
        self.methods: dict[tuple[str, str], tuple[str, str]] = {}
        self.signals: dict[tuple[str, str], str] = {}
        self.props: dict[str, dict[str, str]] = {}
        for iface, (methods, signals, props) in systemd252.INTERFACES.items():
            for name, ins, outs in methods:
                self.methods[(iface, name)] = (ins, outs)
            for name, sig in signals:
                self.signals[(iface, name)] = sig
            self.props.setdefault(iface, {}).update(dict(props))
        for name, ins, outs in readable.MANAGER_METHODS:
            self.methods[(MANAGER, name)] = (ins, outs)
        for iface, table in _COMPAT_PROPS.items():
            self.props.setdefault(iface, {}).update({n: s for n, s, _ in table})
        for iface, newer in systemd262.PROPERTIES.items():  # newer ones, where 252 has none
            known = self.props.setdefault(iface, {})
            known.update({n: sig for n, sig in newer.items() if n not in known})
        for iface, (bmethods, bsignals, bprops) in _BUILTIN.items():
            for name, (ins, outs) in bmethods.items():
                self.methods[(iface, name)] = (ins, outs)
            for name, sig in bsignals.items():
                self.signals[(iface, name)] = sig
            self.props.setdefault(iface, {}).update(bprops)
        self._reindex()

    def _reindex(self) -> None:
        self.by_member: dict[str, list[tuple[str, str]]] = {}
        for (_, name), sigs in self.methods.items():
            self.by_member.setdefault(name, []).append(sigs)
        self.any_prop: dict[str, str] = {}
        for iface in sorted(self.props, key=lambda i: (i != UNIT, i)):
            for name, sig in self.props[iface].items():
                self.any_prop.setdefault(name, sig)

    def add_introspection(self, xml: str) -> bool:
        """Signatures from one Introspect document; False if it is not one."""
        start = xml.find("<node")
        if start < 0:
            return False
        try:
            root = ET.fromstring(xml[start:])
        except (ET.ParseError, ValueError):  # not XML, or not UTF-8 (a damaged capture)
            return False
        for iface in root.findall("interface"):
            iname = iface.get("name", "")
            for m in iface.findall("method"):
                args = m.findall("arg")
                ins = "".join(a.get("type", "") for a in args if a.get("direction", "in") == "in")
                outs = "".join(a.get("type", "") for a in args if a.get("direction") == "out")
                self.methods[(iname, m.get("name", ""))] = (ins, outs)
            for s in iface.findall("signal"):
                sig = "".join(a.get("type", "") for a in s.findall("arg"))
                self.signals[(iname, s.get("name", ""))] = sig
            table = self.props.setdefault(iname, {})
            for p in iface.findall("property"):
                table[p.get("name", "")] = p.get("type", "")
        self._reindex()
        return True

    def method(self, interface: str | None, member: str | None) -> tuple[str, str] | None:
        if member is None:
            return None
        if interface is not None:
            return self.methods.get((interface, member))
        found = set(self.by_member.get(member, ()))
        return found.pop() if len(found) == 1 else None

    def signal(self, interface: str | None, member: str | None) -> str | None:
        if interface is None or member is None:
            return None
        return self.signals.get((interface, member))

    def prop(self, interface: str | None, name: str) -> str | None:
        if interface:
            sig = self.props.get(interface, {}).get(name)
            if sig is not None:
                return sig
        return self.any_prop.get(name)

    def settable(self, name: str) -> str | None:
        spec = SETTABLE.get(name)
        if spec is not None:
            return spec.signature
        return self.any_prop.get(name)


def interfaces_for_path(path: str | None) -> list[str]:
    """The systemd1 interfaces an object path carries (GetAll with interface "")."""
    if path is None:
        return []
    if path == MANAGER_PATH:
        return [MANAGER]
    if path.startswith(JOB_PATH_PREFIX):
        return [JOB]
    name = unit_name_from_path(path)
    if name is None:
        return []
    suffix = name.rsplit(".", 1)[-1]
    out = [UNIT]
    if suffix in _SUFFIX_IFACE:
        out.append(SD + _SUFFIX_IFACE[suffix])
    return out
