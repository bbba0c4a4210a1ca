"""compat/readable.py matches the Introspect XML of the real systemd 252 (reference capture)."""

from __future__ import annotations

import pytest

from compat import readable
from compat.properties import PROPERTIES
from tests import systemd252


@pytest.fixture(scope="module")
def ifaces():
    try:
        return systemd252.interfaces()
    except FileNotFoundError as e:
        pytest.skip(f"reference captures not found: {e}")


def test_table_is_what_the_generator_makes(ifaces):
    from pathlib import Path

    generated = systemd252.generate()
    on_disk = (Path(readable.__file__)).read_text()
    # ruff may reformat the file; compare the data, not the text
    ns_generated: dict[str, object] = {}
    exec(generated, ns_generated)
    for key in (
        "MANAGER",
        "UNIT",
        "SCOPE",
        "SLICE",
        "SERVICE",
        "TARGET",
        "DEFAULTS",
        "MANAGER_METHODS",
    ):
        assert getattr(readable, key) == ns_generated[key], key
    assert on_disk


@pytest.mark.parametrize("short", ["Manager", "Unit", "Scope", "Slice", "Service", "Target"])
def test_signatures_match_systemd(ifaces, short):
    table = getattr(readable, short.upper())
    real = systemd252.properties(ifaces[f"org.freedesktop.systemd1.{short}"])
    assert list(table) == real


def test_settable_signatures_agree_with_readable_ones(ifaces):
    readable_sigs = {}
    for short in ("Unit", "Scope", "Slice"):
        for name, sig, _ in systemd252.properties(ifaces[f"org.freedesktop.systemd1.{short}"]):
            readable_sigs[name] = sig
    mismatched = {
        n: (s.signature, readable_sigs[n])
        for n, s in PROPERTIES.items()
        if n in readable_sigs and readable_sigs[n] != s.signature
    }
    assert mismatched == {}


def test_implemented_manager_methods_have_systemds_signatures(ifaces):
    from shim.bus.manager import MANAGER

    real = {n: (i, o) for n, i, o in systemd252.methods(ifaces["org.freedesktop.systemd1.Manager"])}
    # members of systemd 254+: held against systemd 262's XML in tests/bus/test_since252.py
    since_252 = {"GetUnitByPIDFD", "QueueSignalUnit"}
    for name, method in MANAGER.methods.items():
        if name not in since_252:
            assert real[name] == (method.in_sig, method.out_sig), name
    assert not since_252 & set(real)
