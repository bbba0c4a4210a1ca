"""The code itself: ruff clean and mypy strict on shim, compat and backends."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (make venv installs it)")
    return found


def test_ruff():
    r = subprocess.run([tool("ruff"), "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_strict():
    r = subprocess.run([tool("mypy")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_only_shim_bus_imports_dbus_fast():
    offenders = []
    for path in [
        *ROOT.glob("shim/**/*.py"),
        *ROOT.glob("compat/**/*.py"),
        *ROOT.glob("backends/**/*.py"),
    ]:
        if "shim/bus/" in str(path):
            continue
        if "dbus_fast" in path.read_text():
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_compat_uses_the_standard_library_only():
    allowed = set(sys.stdlib_module_names) | {"compat", "__future__"}
    bad = []
    for path in ROOT.glob("compat/**/*.py"):
        for line in path.read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] in ("import", "from") and not line.startswith(" "):
                top = words[1].split(".")[0]
                if top not in allowed:
                    bad.append(f"{path.name}: {line}")
    assert bad == []
