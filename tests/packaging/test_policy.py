"""The installed system-bus policy on a private dbus-daemon that denies by default as the real
system bus does (the default policy of Debian's /usr/share/dbus-1/system.conf), with
Debian's own org.freedesktop.systemd1.conf included first when it exists, as the real
configuration includes /usr/share/dbus-1/system.d before /etc/dbus-1/system.d.

An unprivileged caller (nobody, through setpriv) is refused at the bus for every mutating
call but may read; root may do everything. Without scopeshim's file, Debian's alone lets
nobody's mutating calls through to the daemon (which refuses them itself): that is what the
installed file's precedence changes."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.packaging.conftest import DISTRO_POLICY, SYSTEMD1, Installed

pytestmark = pytest.mark.timeout(300)

# the default policy of /usr/share/dbus-1/system.conf (dbus 1.14), verbatim in substance
SYSTEM_DEFAULT = """
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
"""
MANAGER = "org.freedesktop.systemd1.Manager"
PATH = "/org/freedesktop/systemd1"
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
REJECTED = "org.freedesktop.DBus.Error.AccessDenied: Rejected send message"


@dataclass
class Setup:
    address: str
    top: Path


def gdbus(address: str, *call: str, as_nobody: bool = False) -> subprocess.CompletedProcess[str]:
    """`gdbus call` (it prints the error name and message), as root or as nobody."""
    return subprocess.run(
        [*(NOBODY if as_nobody else []), "gdbus", "call", "--address", address,
         "--dest", SYSTEMD1, *call],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip


def bus_with(installed: Installed, top: Path, ours: bool) -> Iterator[Setup]:
    if os.geteuid() != 0:
        pytest.skip("needs root (the daemon owns the name as root; setpriv switches to nobody)")
    for tool in ("dbus-daemon", "gdbus", "setpriv", "busctl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (make deps)")
    includes = []
    if DISTRO_POLICY.exists():
        includes.append(f"<include>{DISTRO_POLICY}</include>")
    elif not ours:
        pytest.skip(f"{DISTRO_POLICY} (Debian's systemd package) does not exist here")
    if ours:
        includes.append(f"<include>{installed.policy}</include>")
    socket = top / "bus.sock"
    (top / "bus.conf").write_text(
        '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"\n'
        ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n'
        f"<busconfig>\n  <type>system</type>\n  <listen>unix:path={socket}</listen>\n"
        f"  <auth>EXTERNAL</auth>\n{SYSTEM_DEFAULT}\n  {'  '.join(includes)}\n</busconfig>\n"
    )
    log = top / "dbus-daemon.log"
    with open(log, "wb") as err:
        bus = subprocess.Popen(
            ["dbus-daemon", f"--config-file={top / 'bus.conf'}", "--nofork", "--nopidfile",
             "--print-address=1"],
            stdout=subprocess.PIPE,
            stderr=err,
        )  # fmt: skip
    assert bus.stdout is not None
    address = bus.stdout.readline().decode().strip()
    bus.stdout.close()
    assert address, log.read_text()
    with open(top / "scopeshim.log", "wb") as shim_log:
        shim = subprocess.Popen(
            [str(installed.scopeshim), "serve", "--address", address, "--backend", "fake",
             "--cgroup-root", str(top / "cgroupfs"), "--state-dir", str(top / "state"),
             "--log-target", "stderr"],
            stderr=shim_log,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while gdbus(address, "--object-path", PATH, "--method",
                    "org.freedesktop.DBus.Peer.Ping").returncode != 0:  # fmt: skip
            assert shim.poll() is None, (top / "scopeshim.log").read_text()
            assert time.monotonic() < deadline, "scopeshim did not own the name"
            time.sleep(0.1)
        yield Setup(address, top)
    finally:
        shim.terminate()
        shim.wait(timeout=20)
        bus.terminate()
        bus.wait(timeout=10)


@pytest.fixture
def policy_bus(installed: Installed, open_tmp: Path) -> Iterator[Setup]:
    yield from bus_with(installed, open_tmp, ours=True)


@pytest.fixture
def distro_only_bus(installed: Installed, open_tmp: Path) -> Iterator[Setup]:
    yield from bus_with(installed, open_tmp, ours=False)


READS = [
    ["--object-path", PATH, "--method", "org.freedesktop.DBus.Properties.Get", MANAGER, "Version"],
    ["--object-path", PATH, "--method", "org.freedesktop.DBus.Properties.GetAll", MANAGER],
    ["--object-path", PATH, "--method", "org.freedesktop.DBus.Introspectable.Introspect"],
    ["--object-path", PATH, "--method", f"{MANAGER}.ListUnits"],
    ["--object-path", PATH, "--method", f"{MANAGER}.ListJobs"],
    ["--object-path", PATH, "--method", f"{MANAGER}.GetUnit", "'-.slice'"],
    ["--object-path", PATH, "--method", f"{MANAGER}.LoadUnit", "nothing.service"],
    ["--object-path", PATH, "--method", f"{MANAGER}.Subscribe"],
    ["--object-path", "/org/freedesktop/systemd1/unit/_2d_2eslice", "--method",
     "org.freedesktop.DBus.Properties.Get", "org.freedesktop.systemd1.Unit", "ActiveState"],
]  # fmt: skip
MUTATIONS = [
    ["--method", f"{MANAGER}.StartUnit", "user@65534.service", "replace"],
    ["--method", f"{MANAGER}.StopUnit", "'-.slice'", "fail"],
    ["--method", f"{MANAGER}.KillUnit", "'-.slice'", "all", "15"],
    ["--method", f"{MANAGER}.ResetFailed"],
    ["--method", f"{MANAGER}.AbandonScope", "x.scope"],
    ["--method", f"{MANAGER}.SetUnitProperties", "'-.slice'", "true", "[]"],
    ["--method", f"{MANAGER}.StartTransientUnit", "t.scope", "fail",
     "[('PIDs', <[uint32 1]>)]", "@a(sa(sv)) []"],
    ["--method", f"{MANAGER}.Reload"],
]  # fmt: skip


@pytest.mark.parametrize("call", READS, ids=[c[3].rsplit(".", 1)[-1] for c in READS])
def test_nobody_may_read(policy_bus: Setup, call: list[str]) -> None:
    r = gdbus(policy_bus.address, *call, as_nobody=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("call", MUTATIONS, ids=[c[1].rsplit(".", 1)[-1] for c in MUTATIONS])
def test_nobody_is_refused_at_the_bus(policy_bus: Setup, call: list[str]) -> None:
    r = gdbus(policy_bus.address, "--object-path", PATH, *call, as_nobody=True)
    assert r.returncode != 0
    assert REJECTED in r.stderr, r.stderr  # dbus-daemon's refusal, not the daemon's


def test_unit_methods_are_refused_at_the_bus_too(policy_bus: Setup) -> None:
    unit = "/org/freedesktop/systemd1/unit/_2d_2eslice"
    for method in ("org.freedesktop.systemd1.Unit.Stop", "org.freedesktop.systemd1.Unit.Start"):
        r = gdbus(policy_bus.address, "--object-path", unit, "--method", method, "fail",
                  as_nobody=True)  # fmt: skip
        assert REJECTED in r.stderr, r.stderr
    r = gdbus(policy_bus.address, "--object-path", unit, "--method",
              "org.freedesktop.DBus.Properties.Set", "org.freedesktop.systemd1.Unit",
              "Description", "<'x'>", as_nobody=True)  # fmt: skip
    assert REJECTED in r.stderr, r.stderr


def test_root_may_change_units(policy_bus: Setup) -> None:
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        r = gdbus(policy_bus.address, "--object-path", PATH, "--method",
                  f"{MANAGER}.StartTransientUnit", "policy-test.scope", "fail",
                  f"[('PIDs', <[uint32 {sleeper.pid}]>)]", "@a(sa(sv)) []")  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert "/org/freedesktop/systemd1/job/" in r.stdout
        deadline = time.monotonic() + 20
        while True:
            r = gdbus(policy_bus.address, "--object-path",
                      "/org/freedesktop/systemd1/unit/policy_2dtest_2escope", "--method",
                      "org.freedesktop.DBus.Properties.Get", "org.freedesktop.systemd1.Unit",
                      "ActiveState")  # fmt: skip
            if "'active'" in r.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert "'active'" in r.stdout, r.stdout + r.stderr
        r = gdbus(policy_bus.address, "--object-path", PATH, "--method", f"{MANAGER}.StopUnit",
                  "policy-test.scope", "replace")  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert sleeper.wait(timeout=30) != 0  # the stop job killed it
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
        sleeper.wait()


def test_without_scopeshim_s_policy_the_distro_s_lets_mutations_through(
    distro_only_bus: Setup,
) -> None:
    """The control: Debian's file alone passes nobody's StopUnit to the daemon, which then
    refuses it itself (no polkit here); with scopeshim's file the bus refuses it first."""
    r = gdbus(distro_only_bus.address, "--object-path", PATH, "--method",
              f"{MANAGER}.StopUnit", "'-.slice'", "fail", as_nobody=True)  # fmt: skip
    assert r.returncode != 0
    assert "Rejected send message" not in r.stderr, r.stderr
    assert "org.freedesktop.DBus.Error.AccessDenied: Permission denied" in r.stderr, r.stderr
