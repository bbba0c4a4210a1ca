"""Transient services (systemd.service(5), as systemd-run, pystemd and app launchers create
them): which settings make one, and the Handler that runs it (handled.py runs handlers)."""

from __future__ import annotations

from compat import errors
from compat.enums import ServiceType
from compat.properties import passed_fd, standard_file
from shim.core.policy import ExecContext, Handler, Kind

# systemd.service(5): the states a oneshot ends in, with and without RemainAfterExit=yes
EXITED, DEAD = "exited", "dead"


def check(name: str, settings: dict[str, object]) -> None:
    """Refuse a transient service its settings cannot make, as systemd 252 does."""
    commands = settings.get("ExecStart")
    if not isinstance(commands, list) or not commands:
        # systemd.service(5): "Service has no ExecStart=, ExecStop=, or SuccessAction=.
        # Refusing." (the unit fails to load; the call answers the bad setting)
        raise errors.BadUnitSetting(f"Unit {name} has a bad unit file setting.")
    kind = settings.get("Type", ServiceType.SIMPLE)
    if len(commands) > 1 and kind != ServiceType.ONESHOT:
        # systemd.service(5): more than one ExecStart= only for Type=oneshot
        raise errors.BadUnitSetting(f"Unit {name} has a bad unit file setting.")
    if len(commands) > 1:
        # one command per service here (documented in docs/differences.md)
        raise errors.InvalidArgs(f"{name}: scopeshim runs one ExecStart= command per service")


def handler(name: str, settings: dict[str, object]) -> Handler:
    """What runs a transient service: Type=oneshot runs to completion before the start job
    ends, every other Type= is active once its main process is forked (simple; exec, notify,
    dbus, forking and idle are treated as simple, see docs/differences.md)."""
    commands = settings["ExecStart"]
    assert isinstance(commands, list) and commands
    path, argv, _ignore = commands[0]
    oneshot = settings.get("Type") == ServiceType.ONESHOT
    user = settings.get("User")
    group = settings.get("Group")
    environment = settings.get("Environment", [])
    assert isinstance(environment, list)
    nice = settings.get("Nice")
    umask = settings.get("UMask", 0o022)
    directory = settings.get("WorkingDirectory")
    output_file = standard_file(settings, "StandardOutput")
    input_file = standard_file(settings, "StandardInput")
    fds = {s: passed_fd(settings, s) for s in ("StandardInput", "StandardOutput", "StandardError")}
    fds = {s: fd for s, fd in fds.items() if fd is not None and fd >= 0}  # -1: closed since
    # a file or a passed descriptor for standard output: nothing of it goes to the log
    output = (
        "file"
        if output_file or "StandardOutput" in fds
        else settings.get("StandardOutput", "journal")
    )
    identifier = settings.get("SyslogIdentifier") or argv[0].rsplit("/", 1)[-1]
    context = ExecContext(
        group=str(group) if group else None,
        environment=tuple(str(e) for e in environment),
        working_directory=str(directory) if directory else None,
        nice=int(nice) if isinstance(nice, int) else None,
        umask=int(umask) if isinstance(umask, int) else 0o022,
        output=str(output),
        identifier=str(identifier),
        input_file=input_file[1] if input_file else None,
        output_file=output_file,
        error_file=standard_file(settings, "StandardError"),
        input_fd=fds.get("StandardInput"),
        output_fd=fds.get("StandardOutput"),
        error_fd=fds.get("StandardError"),
    )
    remain = bool(settings.get("RemainAfterExit", False))
    return Handler(
        Kind.ONESHOT if oneshot else Kind.SIMPLE,
        str(settings.get("Description") or name),
        start=(str(path), *(str(a) for a in argv[1:])),
        user=str(user) if user else None,
        context=context,
        success=EXITED if remain else DEAD,
    )
