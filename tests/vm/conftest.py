"""The VM tier: one qemu boot per pytest session runs every check; skipped, with the reason,
where qemu or Debian's kernel cannot be had. SCOPESHIM_VM_KEEP=DIR keeps the guest's logs."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from tests.vm import harness

BOOT_TIMEOUT = 900  # seconds for the whole boot (TCG: about 4 minutes here)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The first test of the tier waits for the boot: the tier's own timeout, not 60 s."""
    for item in items:
        if "tests/vm/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.timeout(BOOT_TIMEOUT + 120))


@pytest.fixture(scope="session")
def vm() -> harness.Boot:
    try:
        return harness.boot(sys.executable, harness.HERE / "inside.py", timeout=BOOT_TIMEOUT)
    except harness.UnavailableError as e:
        pytest.skip(f"VM tier: {e}")


def result(vm: harness.Boot, check: str) -> dict[str, Any]:
    """What CHECK saw in the guest; a failure with the guest's logs when it did not finish."""
    record = vm.results.get(check)
    if record is None:
        pytest.fail(f"check {check} left no result\n{vm.describe()}")
    if "error" in record:
        pytest.fail(f"check {check} failed in the guest:\n{record['error']}")
    return record


def events(text: str | None) -> dict[str, int]:
    """A flat-keyed cgroup file (memory.events, cpu.stat, pids.events) as a dict."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        out[key] = int(value)
    return out
