"""`make install` into a temporary DESTDIR, once per session, and helpers to run what it
installed: on private dbus-daemons, and as root inside tests/e2e/sandbox.sh (where the staged
tree is mounted at its real paths, /usr/local and /etc, in a private mount namespace)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SANDBOX = ROOT / "tests" / "e2e" / "sandbox.sh"
SKIP = 77
PREFIX = "/usr/local"
SYSTEMD1 = "org.freedesktop.systemd1"
# the distribution's files scopeshim's must take precedence over (Debian's systemd package)
DISTRO_SERVICE = Path("/usr/share/dbus-1/system-services/org.freedesktop.systemd1.service")
DISTRO_POLICY = Path("/usr/share/dbus-1/system.d/org.freedesktop.systemd1.conf")


@dataclass
class Installed:
    """A `make install DESTDIR=... PREFIX=/usr/local` tree."""

    destdir: Path
    output: str

    def path(self, installed: str) -> Path:
        """Where the file installed as INSTALLED (an absolute path) is in the staging tree."""
        return self.destdir / installed.lstrip("/")

    @property
    def scopeshim(self) -> Path:
        return self.path(f"{PREFIX}/sbin/scopeshim")

    @property
    def config(self) -> Path:
        return self.path("/etc/scopeshim/scopeshim.toml")

    @property
    def activation_file(self) -> Path:
        return self.path(f"/usr/local/share/dbus-1/system-services/{SYSTEMD1}.service")

    @property
    def policy(self) -> Path:
        return self.path("/etc/dbus-1/system.d/scopeshim.conf")

    def manifest(self) -> list[str]:
        """The installed paths install-manifest lists."""
        lines = self.path(f"{PREFIX}/lib/scopeshim/install-manifest").read_text().splitlines()
        return [line.split()[-1] for line in lines]


# pip's words when it cannot reach an index or find a distribution (offline machines)
OFFLINE = ("No matching distribution found", "Could not find a version", "NewConnectionError",
           "Temporary failure in name resolution", "Network is unreachable")  # fmt: skip


def make_install(destdir: Path, *variables: str) -> str:
    """`make install` into DESTDIR. SCOPESHIM_PIP_ARGS, if set, is passed as PIP_INSTALL_ARGS
    (e.g. "--no-index --find-links DIR" on a machine without PyPI); without either, a pip
    that cannot download the dependencies skips the tests with its message."""
    if not Path("/usr/bin/python3").exists():
        pytest.skip("/usr/bin/python3 (the installed daemon's interpreter) does not exist")
    pip_args = os.environ.get("SCOPESHIM_PIP_ARGS")
    proc = subprocess.run(
        ["make", "-s", "install", f"DESTDIR={destdir}", f"PREFIX={PREFIX}", *variables,
         *([f"PIP_INSTALL_ARGS={pip_args}"] if pip_args else [])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    if proc.returncode != 0 and any(m in proc.stderr for m in OFFLINE):
        last = [line for line in proc.stderr.splitlines() if not line.startswith("WARNING")]
        pytest.skip("make install: pip cannot download the dependencies (offline? set "
                    f"SCOPESHIM_PIP_ARGS): {' '.join(last[-2:])}")  # fmt: skip
    assert proc.returncode == 0, f"make install failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="session")
def installed() -> Iterator[Installed]:
    """One `make install` (sysvinit, the default INIT) for the whole session. The tree is in
    a 0755 directory of its own so that other users (messagebus, nobody) can reach it."""
    top = Path(tempfile.mkdtemp(prefix="scopeshim-install."))
    top.chmod(0o755)
    destdir = top / "dest"
    try:
        yield Installed(destdir, make_install(destdir))
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temporary directory other users can traverse (pytest's tmp_path is 0700)."""
    d = Path(tempfile.mkdtemp(prefix="scopeshim-pkg."))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def run_in_sandbox(
    *command: str, timeout: int = 120
) -> tuple[list[dict[str, Any]], subprocess.CompletedProcess[str]]:
    """COMMAND as root in tests/e2e/sandbox.sh; the JSON lines it printed, and the process.
    Skipped, with the sandbox's reason, where the sandbox cannot run."""
    if os.geteuid() != 0:
        pytest.skip("the sandbox needs root")
    proc = subprocess.run(
        [str(SANDBOX), "--timeout", str(timeout), "--", *command],
        capture_output=True,
        text=True,
        timeout=timeout + 30,
    )
    if proc.returncode == SKIP:
        pytest.skip(proc.stderr.strip() or "the sandbox cannot run here")
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return events, proc


def by_step(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["step"]: e for e in events if "step" in e}
