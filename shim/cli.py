"""The `scopeshim` command line (also `python -m shim`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.handlers
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from backends import BACKENDS

if TYPE_CHECKING:
    from shim.bus.daemon import Reloaded

DEFAULT_STATE_DIR = "/run/scopeshim"
BOOTED_MARKER = "/run/systemd/system"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scopeshim",
        description="systemd's org.freedesktop.systemd1 D-Bus API for machines whose init "
        "is not systemd.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="own org.freedesktop.systemd1 and serve until SIGTERM")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--address", help="D-Bus address of the bus to serve on")
    where.add_argument("--system", action="store_true", help="serve on the system bus (default)")
    s.add_argument(
        "--user",
        action="store_true",
        help="be the calling user's manager (systemd --user): on the session bus "
        "($DBUS_SESSION_BUS_ADDRESS, else $XDG_RUNTIME_DIR/bus, started if nobody serves it), "
        "managing the user@UID.service tree this process runs in",
    )
    s.add_argument(
        "--notify-ready",
        action="store_true",
        help="print READY=1 on standard output once serving",
    )
    s.add_argument(
        "--backend", choices=BACKENDS, default=None, help="cgroup backend (default: auto)"
    )
    s.add_argument(
        "--cgroup-root",
        metavar="DIR",
        default=None,
        help="root of the cgroup tree the backend manages",
    )
    s.add_argument("--config", metavar="FILE", help="TOML configuration file")
    s.add_argument(
        "--private-socket",
        metavar="PATH",
        default=None,
        help="serve peer-to-peer connections of root on PATH (default /run/systemd/private "
        'on the system bus, none with --address; "" for none)',
    )
    s.add_argument(
        "--log-target",
        choices=["stderr", "syslog"],
        default=None,
        help="where log lines go (default: stderr)",
    )
    s.add_argument(
        "--exit-on-idle",
        metavar="SEC",
        type=float,
        default=None,
        help="exit after SEC seconds without units or jobs (for bus activation)",
    )
    s.add_argument(
        "--unit-root",
        metavar="DIR",
        default=None,
        help="root of the unit search path: drop-ins and slice units are read from, and "
        "set-property drop-ins written to, DIR/etc/systemd/system... (default: /; with the "
        "fake backend STATE_DIR/unit-root)",
    )
    s.add_argument(
        "--mark-booted",
        action="store_true",
        default=None,
        help="create /run/systemd/system while serving, so that systemctl, systemd-run and "
        "loginctl run (sd_booted(3); see the README for what else changes)",
    )
    s.add_argument(
        "--ready-fd",
        metavar="FD",
        type=int,
        default=None,
        help="write a newline to descriptor FD and close it once ready (s6's notification-fd)",
    )
    s.add_argument(
        "--state-dir",
        metavar="DIR",
        default=None,
        help=f"runtime state directory (default {DEFAULT_STATE_DIR})",
    )
    s.add_argument(
        "--log-level",
        default=None,
        choices=["debug", "info", "warning", "error"],
        help="default: info",
    )
    s.add_argument(
        "--version",
        dest="api_version",
        default=None,
        help="the Manager's Version property (default 252)",
    )
    s.add_argument(
        "--cassette",
        metavar="TRACE",
        default=None,
        help="answer from a recorded trace instead of the engine (see `scopeshim replay`)",
    )
    z = sub.add_parser(
        "zygote", help="fork user managers from one pre-imported parent (docs/user-manager.md)"
    )
    z.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    _replay_parser(sub)
    return p


def _replay_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = sub.add_parser("replay", help="replay captured D-Bus traces against a systemd1")
    where = r.add_mutually_exclusive_group()
    where.add_argument("--address", help="D-Bus address of a bus where systemd1 is served")
    where.add_argument(
        "--spawn",
        action="store_true",
        help="a private bus and scopeshim (fake backend) per trace (the default)",
    )
    r.add_argument(
        "--against",
        metavar="ADDRESS",
        help="differential: replay on this bus's systemd1 too and compare it with the first",
    )
    r.add_argument("--rules", metavar="FILE", action="append", default=[], help="rules (TOML)")
    r.add_argument("--junit", metavar="FILE", help="write JUnit XML results to FILE")
    r.add_argument("-v", "--verbose", action="store_true", help="list allowed differences")
    r.add_argument("--show", action="store_true", help="print the conversations, do not replay")
    r.add_argument("traces", metavar="TRACE", nargs="+", help="captures or directories")


def _settings(args: argparse.Namespace) -> dict[str, object]:
    settings: dict[str, object] = {
        "address": None,
        "system": False,
        "backend": "auto",
        "cgroup_root": None,
        "state_dir": None,
        "log_level": "info",
        "version": "252",
        "mark_booted": False,
        "exit_on_idle": None,
        "unit_root": None,
        "log_target": "stderr",
        "private_socket": None,
        "policy": None,
    }
    if args.config:
        from shim.config import load

        settings.update(load(args.config))
    given = {
        "address": args.address,
        "system": args.system or None,
        "backend": args.backend,
        "cgroup_root": args.cgroup_root,
        "state_dir": args.state_dir,
        "log_level": args.log_level,
        "version": args.api_version,
        "mark_booted": args.mark_booted,
        "exit_on_idle": args.exit_on_idle,
        "unit_root": args.unit_root,
        "log_target": args.log_target,
        "private_socket": args.private_socket,
    }
    settings.update({k: v for k, v in given.items() if v is not None})
    if args.system:
        settings["address"] = None
    return settings


def _logging(level: str, target: str) -> None:
    """Log lines with their level to stderr, or to syslog(3) through /dev/log (facility
    daemon); no secrets are ever logged (the daemon sees none)."""
    handler: logging.Handler = logging.StreamHandler()
    fmt = "scopeshim[%(process)d]: %(levelname)s %(name)s: %(message)s"
    if target == "syslog":
        if not os.path.exists("/dev/log"):
            print("scopeshim: no syslog (/dev/log does not exist); logging to stderr",
                  file=sys.stderr)  # fmt: skip
        else:
            handler = logging.handlers.SysLogHandler(
                address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_DAEMON
            )
    handler.setFormatter(logging.Formatter(fmt))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def _seconds(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _state_dir(wanted: object) -> Path:
    path = Path(str(wanted or DEFAULT_STATE_DIR))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        if wanted:
            raise
        path = Path(tempfile.mkdtemp(prefix="scopeshim-"))
    return path


def _user_settings(args: argparse.Namespace, settings: dict[str, object]) -> str | None:
    """--user: the session bus, the state directory in XDG_RUNTIME_DIR and the cgroup tree
    this process runs in (user@UID.service, from its init.scope); an error message or None."""
    uid = os.getuid()
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{uid}"
    if args.address is None:
        settings["address"] = os.environ.get("DBUS_SESSION_BUS_ADDRESS", f"unix:path={runtime}/bus")
    if args.state_dir is None:
        settings["state_dir"] = os.path.join(runtime, "scopeshim")
    if settings.get("private_socket") is None:
        # systemd --user's private socket, which flatpak and systemctl --user try first
        settings["private_socket"] = os.path.join(runtime, "systemd", "private")
    settings["mark_booted"] = False
    from shim.core.instance import Instance, user_cgroup, user_environment
    from shim.core.policy import Policy

    settings["policy"] = Policy.for_user_instance()
    prefix = None
    if settings["backend"] != "fake" and settings["cgroup_root"] is None:
        from backends.detect import Mode, detect

        found, _root = detect()
        if found.mode not in (Mode.UNIFIED, Mode.HYBRID):
            # the delegated tree is a cgroup2 one (cgroup-v2.rst "Delegation"); on a hybrid
            # host its v1 controllers stay the system's, as for systemd --user
            return f"--user needs a cgroup2 hierarchy: {found.reason}"
        settings["backend"] = "cgroup2"
        mine = _own_cgroup()
        if mine is None or not mine.endswith("/init.scope"):
            return (
                f"--user: this process is in cgroup {mine}, not in a user@{uid}.service/"
                "init.scope (where the system instance starts user managers); "
                "give --cgroup-root DIR (a directory delegated to this user)"
            )
        prefix = mine[: -len("/init.scope")]
        settings["cgroup_root"] = found.tracking.rstrip("/") + prefix
    env = user_environment(uid, runtime)
    if settings["address"] != f"unix:path={runtime}/bus":
        env = [e for e in env if not e.startswith("DBUS_SESSION_BUS_ADDRESS=")]
        env.append(f"DBUS_SESSION_BUS_ADDRESS={settings['address']}")
    settings["instance"] = Instance.for_user(uid, prefix or user_cgroup(uid), env)
    return None


def _own_cgroup() -> str | None:
    """This process's cgroup2 path (proc(5) /proc/self/cgroup, the "0::" line)."""
    try:
        with open("/proc/self/cgroup") as f:
            return next((x.strip()[3:] or "/" for x in f if x.startswith("0::")), None)
    except OSError:
        return None


def _unit_root(wanted: object, backend: str, state_dir: Path) -> str:
    """The unit search path's root: the fake backend changes nothing on the host, so its
    default is a directory of its own; the real backends read and write /etc and /run."""
    if wanted:
        return str(wanted)
    return str(state_dir / "unit-root") if backend == "fake" else "/"


def serve(args: argparse.Namespace) -> int:
    if getattr(args, "cassette", None):
        from shim.bus import cassette

        return cassette.serve(args.cassette, args.address, args.log_level)
    from backends import make_backend
    from backends.base import BackendError
    from shim.bus.daemon import SYSTEM_PRIVATE_SOCKET, NameTakenError, Options, run
    from shim.bus.peer import PrivateSocketBusyError
    from shim.bus.session import SessionBusError

    try:
        settings = _settings(args)
    except Exception as e:  # ConfigError; pydantic is imported only for --config
        print(f"scopeshim: {e}", file=sys.stderr)
        return 2
    if args.user:
        if args.system:
            print("scopeshim: --user and --system exclude each other", file=sys.stderr)
            return 2
        problem = _user_settings(args, settings)
        if problem is not None:
            print(f"scopeshim: {problem}", file=sys.stderr)
            return 2
    _logging(str(settings["log_level"]), str(settings["log_target"]))
    state_dir = _state_dir(settings["state_dir"])
    root = settings["cgroup_root"]
    if root is None and settings["backend"] == "fake":
        root = state_dir / "fake-cgroupfs"
    try:
        backend = make_backend(str(settings["backend"]), None if root is None else str(root))
    except BackendError as e:
        print(f"scopeshim: {e}", file=sys.stderr)
        return 2
    address = settings["address"]
    from shim.core.policy import Policy

    policy = settings["policy"]
    if not isinstance(policy, Policy):
        # the fake backend changes nothing on the host: no mounts, no power actions
        policy = Policy.harmless(state_dir) if backend.name == "fake" else Policy()
    private = settings["private_socket"]
    if private is None and address is None:
        private = SYSTEM_PRIVATE_SOCKET  # what root's systemctl 257+ connects to
    options = Options(
        address=None if address is None else str(address),
        version=str(settings["version"]),
        policy=policy,
        state_dir=str(state_dir),
        booted_marker=BOOTED_MARKER if settings["mark_booted"] else None,
        exit_on_idle=_seconds(settings["exit_on_idle"]),
        reload=None if args.config is None else _reloader(args.config),
        private_socket=str(private) if private else None,
        # a user manager's private socket admits its user only (systemd --user's does too)
        private_uids=frozenset({os.getuid()}) if args.user else frozenset({0}),
        ready_fd=args.ready_fd,
        instance=settings.get("instance"),  # type: ignore[arg-type]
        notify_ready=args.notify_ready,
        # a user manager reads no unit files (the system's are not its own)
        unit_root=None if args.user else _unit_root(settings["unit_root"], backend.name, state_dir),
    )
    try:
        return asyncio.run(run(options, backend))
    except (NameTakenError, PrivateSocketBusyError, SessionBusError) as e:
        print(f"scopeshim: {e}", file=sys.stderr)
        return 1
    except (OSError, ConnectionError) as e:
        print(f"scopeshim: cannot connect to the bus: {e}", file=sys.stderr)
        return 1


def _reloader(path: str) -> Callable[[], Reloaded]:
    """SIGHUP's loader of PATH: the policy and log level, or ReloadError naming the key."""
    from shim.bus.daemon import Reloaded, ReloadError
    from shim.config import ConfigError, load

    def reload() -> Reloaded:
        try:
            settings = load(path)
        except ConfigError as e:
            raise ReloadError(str(e)) from None
        return Reloaded(settings["policy"], str(settings["log_level"]), path)

    return reload


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "zygote":
        from shim.zygote import serve_forever

        return serve_forever()
    if args.command == "replay":
        from shim.bus.replay import drive
        from shim.replay.command import run

        return run(args, drive)
    return 2


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
