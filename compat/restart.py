"""systemd.service(5) exit rules: which main-process exits are clean (Result=success), and
whether Restart= starts the service again after one (pure functions over the settings)."""

from __future__ import annotations

import signal

from compat.enums import ServiceRestart

# systemd.service(5) SuccessExitStatus=: "exit code 0 ... for types other than Type=oneshot,
# the signals SIGHUP, SIGINT, SIGTERM and SIGPIPE" are a clean exit
CLEAN_SIGNALS = frozenset({signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE})

ExitStatusSet = tuple[frozenset[int], frozenset[int]]  # (exit codes, signals): (aiai)
NONE: ExitStatusSet = (frozenset(), frozenset())


def status_set(value: object) -> ExitStatusSet:
    """A (aiai) setting as two sets; unset reads empty."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return NONE
    codes, signals = value
    return frozenset(int(c) for c in codes), frozenset(int(s) for s in signals)


def in_set(killed: bool, status: int, which: ExitStatusSet) -> bool:
    """Whether an exit (a status, or with KILLED a signal number) is listed in WHICH."""
    return status in (which[1] if killed else which[0])


def clean_exit(killed: bool, status: int, oneshot: bool, success: ExitStatusSet) -> bool:
    """systemd.service(5): exit code 0, a listed SuccessExitStatus=, or (not Type=oneshot)
    death by SIGHUP, SIGINT, SIGTERM or SIGPIPE."""
    if not killed and status == 0:
        return True
    if killed and not oneshot and status in CLEAN_SIGNALS:
        return True
    return in_set(killed, status, success)


def should_restart(
    policy: str,
    *,
    clean: bool,
    killed: bool,
    status: int,
    prevent: ExitStatusSet = NONE,
    force: ExitStatusSet = NONE,
) -> bool:
    """systemd.service(5) Restart=, its table of "exit causes" (the main process's exit; no
    watchdog or timeout here), with RestartPreventExitStatus= and RestartForceExitStatus=."""
    # RestartPreventExitStatus=: "takes precedence over the Restart= setting"
    if in_set(killed, status, prevent):
        return False
    # RestartForceExitStatus=: restarted "regardless of the restart setting"
    if in_set(killed, status, force):
        return True
    if policy == ServiceRestart.ALWAYS:
        return True
    if policy == ServiceRestart.ON_SUCCESS:
        return clean
    if policy == ServiceRestart.ON_FAILURE:
        return not clean
    if policy in (ServiceRestart.ON_ABNORMAL, ServiceRestart.ON_ABORT):
        # "unclean signal": a signal that is not a clean exit
        return killed and not clean
    return False  # no, on-watchdog: no watchdog here
