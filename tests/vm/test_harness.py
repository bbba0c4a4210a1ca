"""The VM harness's own parts that need no qemu: the initramfs archive, the skip reason."""

from __future__ import annotations

import stat

import pytest

from tests.vm import harness


def parse_newc(data: bytes) -> dict[str, tuple[int, bytes, int]]:
    """name -> (mode, data, rdev) of a newc cpio archive (initramfs_buffer_format.rst)."""
    out, i = {}, 0
    while True:
        assert data[i : i + 6] == b"070701"
        fields = [int(data[i + 6 + 8 * k : i + 14 + 8 * k], 16) for k in range(13)]
        mode, size, rmajor, rminor, namesize = (
            fields[1], fields[6], fields[9], fields[10], fields[11],
        )  # fmt: skip
        i += 110
        name = data[i : i + namesize - 1].decode()
        i += namesize + (-(110 + namesize) % 4)
        body = data[i : i + size]
        i += size + (-size % 4)
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, body, (rmajor << 8) | rminor)


def test_the_archive_holds_what_the_kernel_unpacks() -> None:
    archive = harness._cpio([
        ("dev", 0o040755, b"", 0),
        ("dev/console", 0o020600, b"", (5 << 8) | 1),
        ("init", 0o100755, b"#!/bin/busybox sh\n", 0),
        ("odd", 0o100644, b"12345", 0),
    ])  # fmt: skip
    assert len(archive) % 4 == 0
    entries = parse_newc(archive)
    assert list(entries) == ["dev", "dev/console", "init", "odd"]
    assert stat.S_ISDIR(entries["dev"][0])
    mode, _, rdev = entries["dev/console"]
    assert stat.S_ISCHR(mode) and rdev == (5 << 8) | 1
    assert entries["init"] == (0o100755, b"#!/bin/busybox sh\n", 0)
    assert entries["odd"][1] == b"12345"


def test_no_qemu_is_a_skip_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "QEMU", "qemu-system-none-such")
    with pytest.raises(harness.UnavailableError, match="qemu-system-none-such is not installed"):
        harness._qemu()


def test_an_unwritable_cache_is_a_skip_reason(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    kdir = tmp_path / "kernel"
    (kdir / "modules").mkdir(parents=True)
    (kdir / "modules" / "order").write_text("")
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setattr(harness, "cache_dir", lambda: blocker / "vm")
    with pytest.raises(harness.UnavailableError, match="cannot write the initramfs"):
        harness.initramfs(kdir)
