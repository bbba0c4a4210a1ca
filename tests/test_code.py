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


def _imports(path: Path) -> set[str]:
    """Every module PATH imports, at any depth (function-level and TYPE_CHECKING included)."""
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


# The layers point down: cli -> bus -> core -> backends/compat; replay beside core.
FORBIDDEN = {
    "shim/core": ("shim.bus", "shim.cli", "shim.config", "shim.replay"),
    "shim/replay": ("shim.bus", "shim.cli", "shim.config", "shim.core"),
    "shim/bus": ("shim.cli", "shim.config"),
    "backends": ("shim",),
    "compat": ("shim", "backends"),
}


def test_layers_point_down():
    bad = []
    for folder, banned in FORBIDDEN.items():
        for path in ROOT.glob(f"{folder}/**/*.py"):
            for name in _imports(path):
                if any(name == b or name.startswith(b + ".") for b in banned):
                    bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert bad == []


def test_no_import_cycles_in_the_bus_layer():
    """shim/bus's modules form a DAG: interface modules never import the service back."""
    modules = {_module(p): p for p in ROOT.glob("shim/bus/*.py")}
    graph = {m: {n for n in _imports(p) if n in modules and n != m} for m, p in modules.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(" -> ".join([*stack[stack.index(n) :], n]))
            elif n not in state:
                visit(n, [*stack, n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []
