"""`scopeshim zygote`: user managers forked from one pre-imported parent; each fork drops
to its user (uid, primary and supplementary groups, only the environment it was given)
before it serves, and says READY=1 through the zygote."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, start_bus

NOBODY = 65534


@pytest.fixture
def open_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="scopeshim-zygote-"))
    d.chmod(0o777)
    yield d
    shutil.rmtree(d)


@pytest.fixture
def bus(open_dir: Path) -> Iterator[str]:
    """A bus every user may use (the user manager may run as nobody)."""
    bus = start_bus(open_dir, everyone=True)
    yield bus.address
    bus.process.terminate()
    bus.process.wait(10)


def test_zygote_forks_a_user_manager_as_the_user(bus: str, open_dir: Path) -> None:
    uid = NOBODY if os.geteuid() == 0 else os.getuid()
    runtime = open_dir / "run"
    runtime.mkdir()
    os.chown(runtime, uid, uid if uid == NOBODY else os.getgid())
    zygote = subprocess.Popen(
        [sys.executable, "-m", "shim", "zygote"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert zygote.stdin is not None and zygote.stdout is not None
    child = None
    try:
        assert zygote.stdout.readline().strip() == "READY=1"
        request = {
            "argv": ["serve", "--user", "--backend", "fake", "--address", bus,
                     "--cgroup-root", str(runtime / "cg"), "--state-dir", str(runtime / "st"),
                     "--private-socket", "", "--notify-ready", "--log-level", "warning"],
            "env": {"XDG_RUNTIME_DIR": str(runtime), "HOME": str(runtime), "PATH": "/usr/bin:/bin",
                    "PYTHONPATH": str(ROOT)},
            "uid": uid, "gid": uid if uid == NOBODY else os.getgid(), "groups": [],
        }  # fmt: skip
        zygote.stdin.write(json.dumps(request) + "\n")
        zygote.stdin.flush()
        forked = json.loads(zygote.stdout.readline())
        assert forked["stage"] == "forked"
        zygote.stdin.write("go\n")
        zygote.stdin.flush()
        answer = json.loads(zygote.stdout.readline())
        child = int(answer["pid"])
        assert answer["ready"] is True, answer
        # the fork runs as the user, with only the environment it was given
        status = Path(f"/proc/{child}/status").read_text()
        uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
        assert uids == [str(uid)] * 4
        groups = next(line.split()[1:] for line in status.splitlines()
                      if line.startswith("Groups:"))  # fmt: skip
        assert groups == []
        out = subprocess.run(
            ["busctl", f"--address={bus}", "get-property", "org.freedesktop.systemd1",
             "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager", "ControlGroup"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert out.stdout.strip() == f's "/user.slice/user-{uid}.slice/user@{uid}.service"'
    finally:
        if child is not None:
            os.kill(child, signal.SIGTERM)
        zygote.stdin.close()
        zygote.wait(30)
        zygote.stdout.close()
