"""compat.restart: systemd.service(5)'s clean exits and its Restart= table, row by row."""

from __future__ import annotations

import signal

import pytest

from compat.restart import clean_exit, should_restart, status_set

NONE = status_set(None)
# the man page's "exit causes" we can see: (killed, status)
CLEAN, CODE, SIGTERM, SIGKILL = (False, 0), (False, 3), (True, 15), (True, 9)


@pytest.mark.parametrize(
    ("policy", "restarted"),
    [
        # systemd.service(5) Restart=: the columns clean exit, unclean exit code, unclean signal
        ("no", (False, False, False)),
        ("always", (True, True, True)),
        ("on-success", (True, False, False)),
        ("on-failure", (False, True, True)),
        ("on-abnormal", (False, False, True)),
        ("on-abort", (False, False, True)),
        ("on-watchdog", (False, False, False)),
    ],
)
def test_the_restart_table(policy: str, restarted: tuple[bool, bool, bool]) -> None:
    got = []
    for killed, status in (CLEAN, CODE, SIGKILL):
        clean = clean_exit(killed, status, False, NONE)
        got.append(should_restart(policy, clean=clean, killed=killed, status=status))
    assert tuple(got) == restarted


def test_clean_exits() -> None:
    assert clean_exit(*CLEAN, False, NONE)
    assert not clean_exit(*CODE, False, NONE)
    # SIGHUP, SIGINT, SIGTERM, SIGPIPE are clean, except for Type=oneshot
    assert clean_exit(*SIGTERM, False, NONE) and not clean_exit(*SIGTERM, True, NONE)
    assert all(clean_exit(True, int(s), False, NONE) for s in (signal.SIGHUP, signal.SIGPIPE))
    assert not clean_exit(*SIGKILL, False, NONE)
    # SuccessExitStatus= adds exit codes and signals
    success = status_set([[3], [9]])
    assert clean_exit(*CODE, False, success) and clean_exit(*SIGKILL, True, success)
    assert not clean_exit(False, 9, False, success)  # status 9 is not signal 9


def test_prevent_and_force() -> None:
    # RestartPreventExitStatus= wins over Restart=; RestartForceExitStatus= over both
    assert not should_restart("always", clean=False, killed=False, status=3,
                              prevent=status_set([[3], []]))  # fmt: skip
    assert should_restart("no", clean=False, killed=True, status=9,
                          force=status_set([[], [9]]))  # fmt: skip
