"""pystemd's run() (the real library, if installed: it builds against libsystemd-dev) against
scopeshim on a private bus: a transient service, waited for through BecomeMonitor."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, Client, Daemon

pytest.importorskip("pystemd", reason="pystemd is not installed (pip install pystemd, which "
                                      "needs libsystemd-dev and a C compiler)")  # fmt: skip

SCRIPT = """
import sys
import pystemd.run
unit = pystemd.run(
    [b"/bin/sh", b"-c", b'echo "$A $(pwd)" > "$OUT"; exit 5'],
    address=sys.argv[1], user_mode=False, wait=True, name=b"pystemd-t.service",
    env={"A": "from-pystemd", "OUT": sys.argv[2]}, cwd=b"/tmp",
)
print(unit.Unit.ActiveState.decode(), unit.Service.Result.decode(),
      unit.Service.ExecMainCode, unit.Service.ExecMainStatus)
"""


@pytest.mark.skipif(os.getuid() != 0, reason="BecomeMonitor on the test bus needs its owner")
async def test_pystemd_run_waits_for_the_exit(
    daemon: Daemon, client: Client, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", SCRIPT, daemon.address, str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["failed", "exit-code", "1", "5"]
    assert out.read_text() == "from-pystemd /tmp\n"
