"""shim/replay/systemd252.py is what its generator makes of systemd 252's introspection."""

from __future__ import annotations

import pytest

from shim.replay import systemd252
from shim.replay.signatures import Signatures


def test_table_is_what_the_generator_makes():
    from tests.replay import gen_signatures

    try:
        generated = gen_signatures.generate()
    except FileNotFoundError as e:
        pytest.skip(f"reference captures not found: {e}")
    ns: dict[str, object] = {}
    exec(generated, ns)
    assert ns["INTERFACES"] == systemd252.INTERFACES


def test_lookups():
    sigs = Signatures()
    assert sigs.method("org.freedesktop.systemd1.Manager", "StartTransientUnit") == (
        "ssa(sv)a(sa(sv))",
        "o",
    )
    assert sigs.method(None, "GetAll") == ("s", "a{sv}")
    assert sigs.signal("org.freedesktop.systemd1.Manager", "JobRemoved") == "uoss"
    assert sigs.prop("org.freedesktop.systemd1.Unit", "InvocationID") == "ay"
    assert sigs.prop("org.freedesktop.systemd1.Mount", "Where") == "s"
    assert sigs.prop("org.freedesktop.systemd1.Job", "State") == "s"
    assert sigs.settable("PIDs") == "au"
