"""Which non-transient units exist and what starting them does (there are no unit files).

logind asks for a few units by name: user-runtime-dir@UID.service, user@UID.service, the
power and sleep targets and autovt@ttyN.service. `Policy.handler_for(name)` answers what
stands behind each; every other non-transient name is "not found", as on systemd.
"""

from __future__ import annotations

import enum
import os
import re
import sys
from dataclasses import dataclass, field

RUNTIME_DIR_HELPER = "/lib/systemd/systemd-user-runtime-dir"

# systemd.special(7): the targets logind starts in mode replace-irreversibly
POWER_TARGETS = (
    "poweroff.target", "reboot.target", "halt.target", "kexec.target", "suspend.target",
    "hibernate.target", "hybrid-sleep.target", "suspend-then-hibernate.target",
    "factory-reset.target",
)  # fmt: skip

# what each target does on a machine whose init is not systemd; the init's own tools
# (sysvinit, OpenRC, runit, s6 and Upstart all install poweroff/reboot/halt) and the
# kernel's /sys/power/state (Documentation/admin-guide/pm/sleep-states.rst)
DEFAULT_POWER_ACTIONS: dict[str, tuple[str, ...]] = {
    "poweroff.target": ("/sbin/poweroff",),
    "reboot.target": ("/sbin/reboot",),
    "halt.target": ("/sbin/halt",),
    "kexec.target": ("/sbin/kexec", "-e"),
    "suspend.target": ("/bin/sh", "-c", "echo mem > /sys/power/state"),
    "hibernate.target": ("/bin/sh", "-c", "echo disk > /sys/power/state"),
    "hybrid-sleep.target": (
        "/bin/sh", "-c", "echo suspend > /sys/power/disk && echo disk > /sys/power/state",
    ),
    "suspend-then-hibernate.target": ("/bin/sh", "-c", "echo mem > /sys/power/state"),
    "factory-reset.target": (),
}  # fmt: skip

RECORD = ("record",)  # a power action that only appends what would run to the record file
USER_INSTANCE_ARGS = ("serve", "--user", "--notify-ready")


def user_instance_command() -> tuple[str, ...]:
    """The command of a user manager: this scopeshim, `serve --user`, with this Python."""
    return (sys.executable, "-m", "shim", *USER_INSTANCE_ARGS)


_USER_UNIT = re.compile(r"^(user-runtime-dir|user)@(0|[1-9][0-9]{0,9})\.service$")
_AUTOVT = re.compile(r"^autovt@(tty[0-9]+)\.service$")


class Kind(enum.StrEnum):
    """How a handled unit behaves (systemd.service(5) Type= it imitates)."""

    ONESHOT = "oneshot"  # Type=oneshot, RemainAfterExit=yes: start and stop commands
    SIMPLE = "simple"  # Type=simple: a long-running main process in the unit's cgroup
    # Type=notify (user@.service): a long-running main process, active once it says ready
    NOOP = "noop"  # starts and stops without running anything
    MASKED = "masked"  # LoadState=masked: starting it answers UnitMasked
    ACTION = "action"  # a target whose start runs a command once (power and sleep)
    NOTIFY = "notify"


# the kinds with a main process whose cgroup decides when the unit is dead
LONG_RUNNING = (Kind.SIMPLE, Kind.NOTIFY)
READY = "READY=1"  # sd_notify(3)'s word, printed on its own line by a NOTIFY unit when ready
# systemd-system.conf(5) DefaultTimeoutStartSec=90s
START_TIMEOUT = 90.0


class UserManager(enum.StrEnum):
    """The user@UID.service policy."""

    MASKED = "masked"
    NOOP = "noop"
    EXEC = "exec"
    SCOPESHIM = "scopeshim"  # scopeshim's own user instance (shim/core/instance.py)


@dataclass(frozen=True, slots=True)
class ExecContext:
    """systemd.exec(5) settings a service's processes start with (transient services)."""

    group: str | None = None  # Group=; None: the user's primary group
    environment: tuple[str, ...] = ()  # Environment= NAME=VALUE, over the clean base
    working_directory: str | None = None  # WorkingDirectory= ("~": the user's home)
    nice: int | None = None  # Nice=
    umask: int = 0o022  # UMask=
    output: str = "journal"  # StandardOutput=/StandardError=: journal (our log), null, inherit
    identifier: str = ""  # SyslogIdentifier=: the name its output lines carry
    # systemd.exec(5) StandardInput=file:, StandardOutput=/StandardError= file:, append:,
    # truncate:: (mode, path)
    input_file: str | None = None
    output_file: tuple[str, str] | None = None
    error_file: tuple[str, str] | None = None
    # StandardInput=/StandardOutput=/StandardError=fd: the daemon's copies of the passed
    # descriptors (systemd-run --pipe, --pty)
    input_fd: int | None = None
    output_fd: int | None = None
    error_fd: int | None = None


@dataclass(frozen=True, slots=True)
class Handler:
    """What stands behind one non-transient unit."""

    kind: Kind
    description: str
    slice: str | None = None
    start: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()
    user: str | None = None  # run the commands as this user (name or UID)
    stop_when_unneeded: bool = False  # systemd.unit(5) StopWhenUnneeded=
    requires: tuple[str, ...] = ()  # systemd.unit(5) Requires= (with After=)
    context: ExecContext | None = None  # a transient service's execution settings
    success: str = "exited"  # the state a oneshot reaches (RemainAfterExit=yes: exited)
    # systemd.resource-control(5) Delegate=yes: the unit's cgroup belongs to `user`
    delegate: bool = False
    subcgroup: str = ""  # the main process runs in this sub-cgroup (user@: "init.scope")
    # fork the main process from the zygote with these `scopeshim` arguments (shim/zygote.py)
    # instead of running `start`
    zygote: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Policy:
    """The handled units, from the configuration file or these defaults."""

    user_manager: UserManager = UserManager.SCOPESHIM
    user_manager_command: tuple[str, ...] = ()
    # a user manager's own instance: no user@, runtime-dir, power or getty units there
    user_instance: bool = False
    # user_manager = "scopeshim": fork each user manager from one pre-imported parent
    # (docs/user-manager.md, "Memory") rather than run a new interpreter for each
    user_manager_zygote: bool = True
    user_manager_args: tuple[str, ...] = USER_INSTANCE_ARGS
    runtime_dir_helper: str = RUNTIME_DIR_HELPER
    power_actions: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: dict(DEFAULT_POWER_ACTIONS)
    )
    autovt_command: tuple[str, ...] = ()  # empty: autovt@ttyN.service is not found
    record_file: str = "/run/scopeshim/actions.log"

    @staticmethod
    def harmless(state_dir: str | os.PathLike[str]) -> Policy:
        """Defaults that change nothing on the host: power actions are recorded under
        STATE_DIR, no runtime directory is mounted."""
        return Policy(
            user_manager=UserManager.MASKED,  # no user manager over a fake tree
            runtime_dir_helper="",
            power_actions=dict.fromkeys(POWER_TARGETS, RECORD),
            record_file=os.path.join(state_dir, "actions.log"),
        )

    @staticmethod
    def for_user_instance() -> Policy:
        """What stands behind units on a user manager: nothing (no unit files; systemd
        --user's own targets and services are not offered)."""
        return Policy(user_instance=True, runtime_dir_helper="", power_actions={})

    def handler_for(self, name: str) -> Handler | None:
        if self.user_instance:
            return None
        m = _USER_UNIT.match(name)
        if m:
            return self._user_unit(m.group(1), m.group(2))
        if name in POWER_TARGETS:
            action = self.power_actions.get(name, ())
            return Handler(Kind.ACTION, _POWER_DESCRIPTIONS[name], start=action)
        m = _AUTOVT.match(name)
        if m and self.autovt_command:
            tty = m.group(1)
            command = tuple(a.replace("%I", tty) for a in self.autovt_command)
            return Handler(Kind.SIMPLE, f"Getty on {tty}", slice="system.slice", start=command)
        return None

    def _user_unit(self, which: str, uid: str) -> Handler:
        user_slice = f"user-{uid}.slice"
        if which == "user-runtime-dir":
            # units/user-runtime-dir@.service (systemd 252): a oneshot that mounts
            # /run/user/UID, StopWhenUnneeded=yes; no helper configured: nothing to run
            return Handler(
                Kind.ONESHOT if self.runtime_dir_helper else Kind.NOOP,
                f"User Runtime Directory /run/user/{uid}",
                slice=user_slice,
                start=(self.runtime_dir_helper, "start", uid),
                stop=(self.runtime_dir_helper, "stop", uid),
                stop_when_unneeded=True,
            )
        description = f"User Manager for UID {uid}"
        if self.user_manager is UserManager.MASKED:
            return Handler(Kind.MASKED, description, slice=user_slice)
        if self.user_manager is UserManager.NOOP:
            return Handler(Kind.NOOP, description, slice=user_slice)
        if self.user_manager is UserManager.SCOPESHIM:
            # units/user@.service: User=%i, Type=notify, Delegate=yes, the manager itself in
            # init.scope (systemd.special(7)); ready once its names are owned
            return Handler(
                Kind.NOTIFY,
                description,
                slice=user_slice,
                start=tuple(a.replace("%i", uid) for a in self.user_manager_command)
                or user_instance_command(),
                user=uid,
                requires=(f"user-runtime-dir@{uid}.service",),
                delegate=True,
                subcgroup="init.scope",
                zygote=self.user_manager_args
                if self.user_manager_zygote and not self.user_manager_command
                else (),
            )
        # units/user@.service: Requires=user-runtime-dir@%i.service, runs as the user
        return Handler(
            Kind.SIMPLE,
            description,
            slice=user_slice,
            start=tuple(a.replace("%i", uid) for a in self.user_manager_command),
            user=uid,
            requires=(f"user-runtime-dir@{uid}.service",),
        )


_POWER_DESCRIPTIONS = {
    "poweroff.target": "System Power Off",
    "reboot.target": "System Reboot",
    "halt.target": "System Halt",
    "kexec.target": "Reboot via kexec",
    "suspend.target": "Suspend",
    "hibernate.target": "System Hibernation",
    "hybrid-sleep.target": "Hybrid Suspend+Hibernate",
    "suspend-then-hibernate.target": "Suspend; Hibernate if not used for a period of time",
    "factory-reset.target": "Factory Reset",
}
