"""tests/e2e/get-logind.sh: each fetched version's logind and clients run through the wrappers
it writes (nothing installed on the host), and bad usage is refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import HERE
from tests.e2e.test_logind import fetch_logind

TOOLS = ("systemctl", "systemd-run", "loginctl", "busctl", "systemd-cgls")


@pytest.mark.timeout(900)
@pytest.mark.parametrize("version", ["254", "257", "262"])
def test_logind_and_clients_of_the_version_run(version: str) -> None:
    logind, why = fetch_logind(version)
    if logind is None:
        pytest.skip(why)
    runner = Path(logind)
    for program in (runner, *(runner.parent / "bin" / t for t in TOOLS)):
        out = subprocess.run([program, "--version"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, (program, out.stderr)
        assert out.stdout.startswith(f"systemd {version} ("), (program, out.stdout)
    packages = (runner.parent / "PACKAGES").read_text().split("\n")
    assert any(line.startswith(f"systemd {version}.") for line in packages), packages
    if version != "254":  # their own pam_systemd (257 and 262 from trixie and sid)
        assert list((runner.parent / "root").glob("**/security/pam_systemd.so")), version


@pytest.mark.parametrize("args", [["253"], [], ["257", "262"], ["--bogus", "262"]])
def test_bad_usage_exits_2(args: list[str]) -> None:
    out = subprocess.run([HERE / "get-logind.sh", *args], capture_output=True, text=True,
                         timeout=30)  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert out.stdout == "", out.stdout
