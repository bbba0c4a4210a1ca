"""What differs between the system instance and a user's instance (`systemd --user`): the
default and standard slices, where the instance's tree sits in the cgroup hierarchy, who may
change things, and the manager's environment block. Everything else is the same engine."""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from compat import errors, unitname
from compat.unitname import ROOT_SLICE

# systemd.special(7): units without Slice= go to system.slice on the system manager and to
# app.slice on a user manager
SYSTEM_DEFAULT_SLICE = "system.slice"
USER_DEFAULT_SLICE = "app.slice"
# systemd.special(7): slices that exist on every systemd machine, needed or not
SYSTEM_SLICES = frozenset({ROOT_SLICE, "system.slice", "user.slice", "machine.slice"})
# systemd.special(7), "Special User Units": app.slice, background.slice, session.slice
USER_SLICES = frozenset({ROOT_SLICE, "app.slice", "background.slice", "session.slice"})
# the Description= of systemd 252's units/user/*.slice
USER_SLICE_DESCRIPTIONS = {
    "app.slice": "User Application Slice",
    "background.slice": "User Background Tasks Slice",
    "session.slice": "User Core Session Slice",
}
# systemd.special(7): init.scope holds the manager itself (PID 1, or systemd --user)
INIT_SCOPE = "init.scope"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# environ(7) / systemd's strv_env_name_is_valid(): a name is a C identifier-ish string
# without "=", not empty, not starting with a digit
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENV_MAX = 128 * 1024  # sysconf(ARG_MAX)/4-ish: an entry longer than this is refused


def user_cgroup(uid: int) -> str:
    """user@.service(5) / systemd.special(7): a user manager's own control group."""
    return f"/user.slice/user-{uid}.slice/user@{uid}.service"


def valid_name(name: str) -> bool:
    """A variable name systemd's environment methods accept."""
    return bool(_NAME.match(name)) and len(name) < _ENV_MAX


def valid_assignment(entry: str) -> bool:
    """NAME=VALUE with a valid name and printable UTF-8 text (no control characters but tab
    and newline), as systemd's env_assignment_is_valid() requires."""
    name, eq, value = entry.partition("=")
    if not eq or not valid_name(name) or len(entry) > _ENV_MAX:
        return False
    return all(c in "\t\n" or (ord(c) >= 0x20 and ord(c) != 0x7F) for c in value)


@dataclass(slots=True)
class Instance:
    """One manager instance: the system's (uid None) or the user manager of `uid`."""

    uid: int | None = None
    # the instance's tree in the hierarchy as clients see it ("" for the system instance:
    # backend paths are shown as they are); a user manager's units live below it
    cgroup_prefix: str = ""
    environment: list[str] = field(default_factory=list)

    @staticmethod
    def for_user(
        uid: int, cgroup_prefix: str | None = None, environment: Iterable[str] | None = None
    ) -> Instance:
        prefix = user_cgroup(uid) if cgroup_prefix is None else cgroup_prefix.rstrip("/")
        env = list(environment) if environment is not None else user_environment(uid)
        return Instance(uid, prefix, sorted(env))

    @property
    def user(self) -> bool:
        return self.uid is not None

    @property
    def default_slice(self) -> str:
        return USER_DEFAULT_SLICE if self.user else SYSTEM_DEFAULT_SLICE

    @property
    def standard_slices(self) -> frozenset[str]:
        return USER_SLICES if self.user else SYSTEM_SLICES

    def slice_description(self, name: str) -> str:
        if self.user and name in USER_SLICE_DESCRIPTIONS:
            return USER_SLICE_DESCRIPTIONS[name]
        return unitname.slice_description(name)

    @property
    def runtime_dir(self) -> str | None:
        """A user manager's XDG_RUNTIME_DIR (from its environment block)."""
        for entry in self.environment:
            if entry.startswith("XDG_RUNTIME_DIR="):
                return entry.partition("=")[2]
        return None

    def trusted(self, uid: int | None) -> bool:
        """May this caller change units? Root always; on a user manager also its user
        (systemd --user trusts its own uid; the kernel keeps it inside the subtree)."""
        return uid == 0 or (self.uid is not None and uid == self.uid)

    def check_process_owner(self, pid: int, owner: int | None, caller_uid: int | None) -> None:
        """A user manager only takes its user's processes (systemd's AttachProcessesToUnit
        texts for the same rules); the system instance checks nothing more here."""
        if self.uid is None or owner == self.uid:
            return
        if caller_uid not in (0, self.uid):
            raise errors.AccessDenied(f"Process {pid} not owned by client's UID. Refusing.")
        raise errors.AccessDenied(f"Process {pid} not owned by target unit's UID. Refusing.")

    # -- cgroup paths: the backend's (relative to the tree it manages) and the shown ones ----

    def shown(self, path: str) -> str:
        """A backend path as ControlGroup shows it (the full path in the hierarchy)."""
        if not self.cgroup_prefix:
            return path
        return self.cgroup_prefix if path == "/" else self.cgroup_prefix + path

    def inner(self, shown: str) -> str | None:
        """A shown path as the backend's, None when it lies outside this instance's tree."""
        if not self.cgroup_prefix:
            return shown
        if shown.rstrip("/") == self.cgroup_prefix:
            return "/"
        if shown.startswith(self.cgroup_prefix + "/"):
            return shown[len(self.cgroup_prefix) :]
        return None

    # -- the manager's environment block (SetEnvironment, UnsetEnvironment, ...) -----------

    def update_environment(self, unset: Sequence[str], assignments: Sequence[str]) -> bool:
        """UnsetAndSetEnvironment(): NAMES (or NAME=VALUE entries) removed first, then the
        assignments applied, last one winning; validated before anything changes. Returns
        whether the block changed."""
        if not all(valid_name(n) or valid_assignment(n) for n in unset):
            raise errors.InvalidArgs("Invalid environment variable names or assignments")
        if not all(valid_assignment(a) for a in assignments):
            raise errors.InvalidArgs("Invalid environment assignments")
        current = dict(e.split("=", 1) for e in self.environment)
        for entry in unset:
            name, eq, value = entry.partition("=")
            if not eq or current.get(name) == value:
                current.pop(name, None)
        for entry in assignments:
            name, _, value = entry.partition("=")
            current[name] = value
        new = sorted(f"{k}={v}" for k, v in current.items())
        changed = new != self.environment
        self.environment = new
        return changed


def user_environment(uid: int, runtime_dir: str | None = None) -> list[str]:
    """What a user manager starts with, as user@.service sets it up for systemd --user:
    HOME, USER, LOGNAME, SHELL from the password database, PATH, XDG_RUNTIME_DIR and the
    session bus (pam_systemd(8), systemd.exec(5) "Environment variables in spawned
    processes")."""
    runtime = runtime_dir or f"/run/user/{uid}"
    env = {
        "PATH": os.environ.get("PATH", DEFAULT_PATH),
        "XDG_RUNTIME_DIR": runtime,
        "DBUS_SESSION_BUS_ADDRESS": f"unix:path={runtime}/bus",
    }
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        pass
    else:
        env.update(
            HOME=entry.pw_dir,
            USER=entry.pw_name,
            LOGNAME=entry.pw_name,
            SHELL=entry.pw_shell or "/bin/sh",
        )
    if "LANG" in os.environ:
        env["LANG"] = os.environ["LANG"]
    return sorted(f"{k}={v}" for k, v in env.items())
