"""After every other end-to-end test (marker e2e_last): nothing of this test session is left
on the host. Every sandbox.sh run of the session carries the tag p<pytest's PID>
(conftest.TAG) in its cgroup subtree's and run directory's names and in its processes'
environment; the cgroup1 tests name their cgroups and hierarchies with pytest's PID.

Checked: no cgroup named scopeshim-test-* of this session in any hierarchy (cgroup2 and the
v1 controllers), no named v1 hierarchy of it still listed, no run directory, no process of a
sandbox (by cgroup or by environment), and no mount a sandbox made (they live in private
mount namespaces; one seen here would have leaked through propagation)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.conftest import TAG

PID = str(os.getpid())
SANDBOX_SOURCES = ("scopeshim-run", "scopeshim-cgroup", "scopeshim-varlib", "scopeshim-power",
                   "scopeshim-booted")  # fmt: skip


def ours(name: str) -> bool:
    """A scopeshim-test cgroup or hierarchy name made by this session."""
    return name.startswith("scopeshim-test") and (f"-{TAG}-" in name or f"-{PID}-" in name)


def mount_sources() -> list[tuple[str, str]]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        out.append((fields[sep + 2], fields[4]))
    return out


AT_START = set(mount_sources())


def leftover_cgroups() -> list[str]:
    base = Path("/sys/fs/cgroup")
    dirs = [base, *(p for p in base.iterdir() if p.is_dir())] if base.is_dir() else []
    found = []
    for d in dirs:
        try:
            found += [str(c) for c in d.iterdir() if c.is_dir() and ours(c.name)]
        except OSError:
            continue
    return found


def ancestors() -> set[int]:
    """This process and the ones that started it (they may carry the tag in their
    environment when it was set from outside)."""
    out, pid = set(), os.getpid()
    while pid > 0 and pid not in out:
        out.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat[stat.rfind(")") + 2 :].split()[1])
    return out


def leftover_processes() -> dict[int, str]:
    """Tagged processes still alive, but not this pytest's own live children: session-wide
    fixtures (the private dbus-daemon of the bus tests) end after this test, by design."""
    found = {}
    mine = ancestors()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in mine:
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            if int(stat[stat.rfind(")") + 2 :].split()[1]) == os.getpid():
                continue
            cgroup = Path(f"/proc/{entry}/cgroup").read_text()
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if f"scopeshim-test-e2e-{TAG}-" in cgroup or f"SCOPESHIM_E2E_TAG={TAG}".encode() in environ:
            found[int(entry)] = cmd.decode(errors="replace").strip()
    return found


@pytest.mark.e2e_last
def test_nothing_left_behind(request: pytest.FixtureRequest) -> None:
    request.node.user_properties.append(("case", "harness: no cgroup, mount or process left"))
    if os.geteuid() != 0:
        pytest.skip("needs root (the sandbox runs only as root)")
    left = {
        "cgroups": leftover_cgroups(),
        "named v1 hierarchies": [
            line for line in Path("/proc/self/cgroup").read_text().splitlines()
            if "name=scopeshim-test" in line and (f"-{PID}-" in line or f"-{TAG}-" in line)
        ],
        "run directories": [str(p) for p in Path("/tmp").glob(f"scopeshim-e2e.{TAG}-*")],
        "processes": leftover_processes(),
        "mounts": sorted(
            f"{source} on {target}"
            for source, target in set(mount_sources()) - AT_START
            if source in SANDBOX_SOURCES or target.startswith("/run/user/")
        ),
    }  # fmt: skip
    assert not any(left.values()), left
