"""The VM tier's host side: Debian's kernel, a busybox initramfs, one qemu boot, its results.

The guest's root is the host's own root shared read-only over 9p (virtfs) with tmpfs on /tmp,
/run and /var/tmp, so it runs this checkout's venv python and the host's dbus-daemon as they
are. A second, writable 9p share carries the job in and the results out (one JSON line per
check). Two virtio disks: vda for the IO limits, vdb the swap area. Artefacts are cached under
${SCOPESHIM_CACHE:-/var/cache/scopeshim}/vm, rebuilt when missing; qemu runs under KVM where
it boots a stock kernel and under TCG otherwise; every boot ends in a poweroff or is killed at
its deadline, and its scratch directory is removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SKIP = 77
QEMU = "qemu-system-x86_64"
BUSYBOX = Path("/bin/busybox")
MARK = "scopeshim-vm:"  # the init's console lines start with it

INIT = r"""#!/bin/busybox sh
# PID 1 of the scopeshim VM tier (tests/vm/harness.py): host root over 9p, the job, poweroff
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "scopeshim-vm: init $(cat /proc/uptime)"
for m in $(cat /modules/order); do insmod /modules/$m || echo "scopeshim-vm: insmod $m failed"; done
o=trans=virtio,version=9p2000.L,msize=512000
fail() { echo "scopeshim-vm: $*"; poweroff -f; }
mount -t 9p -o $o,ro,cache=loose hostroot /newroot || fail no hostroot share
mount -t proc proc /newroot/proc
mount -t sysfs sys /newroot/sys
mount -t cgroup2 -o nsdelegate cgroup2 /newroot/sys/fs/cgroup
mount -t devtmpfs dev /newroot/dev
mount -t devpts devpts /newroot/dev/pts 2>/dev/null
mkdir -p /newroot/dev/shm
for d in /tmp /run /var/tmp /dev/shm; do mount -t tmpfs -o mode=1777 tmpfs /newroot$d; done
chmod 755 /newroot/run
mkdir -p /newroot/run/vm-out
mount -t 9p -o $o,cache=none out /newroot/run/vm-out || fail no out share
echo "scopeshim-vm: job $(cat /proc/uptime)"
chroot /newroot /bin/sh /run/vm-out/job.sh </dev/null >/newroot/run/vm-out/job.log 2>&1
echo $? >/newroot/run/vm-out/job.exit
sync
echo "scopeshim-vm: done $(cat /proc/uptime)"
umount /newroot/run/vm-out
poweroff -f
"""


class UnavailableError(Exception):
    """The VM cannot run on this machine (the reason is the message): the tier skips."""


def cache_dir() -> Path:
    return Path(os.environ.get("SCOPESHIM_CACHE", "/var/cache/scopeshim")) / "vm"


def kernel() -> Path:
    """Debian's kernel and modules (tests/vm/get-kernel.sh; a cache hit is instant)."""
    proc = subprocess.run(
        [str(HERE / "get-kernel.sh"), "--dir", str(cache_dir() / "kernel")],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode == SKIP:
        raise UnavailableError(proc.stderr.strip().splitlines()[-1])
    if proc.returncode != 0:
        raise RuntimeError(f"get-kernel.sh failed ({proc.returncode}):\n{proc.stderr}")
    return Path(proc.stdout.strip())


def _cpio(entries: list[tuple[str, int, bytes, int]]) -> bytes:
    """A newc cpio archive (the initramfs format, kernel's initramfs_buffer_format.rst) of
    (name, mode, data, rdev) entries."""
    out = bytearray()
    for ino, (name, mode, data, rdev) in enumerate([*entries, ("TRAILER!!!", 0, b"", 0)], 1):
        raw = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev >> 8, rdev & 0xFF, len(raw), 0]
        out += b"070701" + "".join(f"{v:08x}" for v in fields).encode() + raw
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def initramfs(kdir: Path) -> Path:
    """busybox, the modules and the init, built once per content into the cache."""
    if not BUSYBOX.is_file():
        raise UnavailableError(f"{BUSYBOX} is missing (apt-get install busybox-static)")
    order = (kdir / "modules" / "order").read_text().split()
    modules = [(m, (kdir / "modules" / m).read_bytes()) for m in order]
    busybox = BUSYBOX.read_bytes()
    digest = hashlib.sha256(INIT.encode() + busybox)
    for name, data in modules:
        digest.update(name.encode() + data)
    image = cache_dir() / f"initramfs-{digest.hexdigest()[:16]}.cpio"
    if image.is_file():
        return image
    d, f = 0o040755, 0o100644
    entries = [(n, d, b"", 0) for n in ("bin", "dev", "proc", "sys", "newroot", "modules")]
    entries += [
        ("dev/console", 0o020600, b"", (5 << 8) | 1),
        ("init", 0o100755, INIT.encode(), 0),
        ("bin/busybox", 0o100755, busybox, 0),
        ("modules/order", f, "\n".join(order).encode() + b"\n", 0),
        *((f"modules/{n}", f, data, 0) for n, data in modules),
    ]
    try:
        for old in cache_dir().glob("initramfs-*.cpio"):
            old.unlink(missing_ok=True)
        tmp = image.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(_cpio(entries))
        tmp.rename(image)
    except OSError as e:
        raise UnavailableError(f"cannot write the initramfs in {cache_dir()}: {e}") from None
    return image


def _qemu() -> str:
    path = shutil.which(QEMU)
    if path is None:
        raise UnavailableError(f"{QEMU} is not installed (make deps, as root: qemu-system-x86)")
    return path


@dataclass
class Boot:
    """One boot's outcome: the results by check, the console, the job's log, times."""

    accel: str
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    console: str = ""
    job_log: str = ""
    job_exit: int | None = None
    seconds: float = 0.0
    timed_out: bool = False

    def describe(self) -> str:
        return (
            f"accel {self.accel}, {self.seconds:.1f} s, job exit {self.job_exit}, "
            f"timed out {self.timed_out}\n--- console\n{self.console[-3000:]}\n"
            f"--- job log\n{self.job_log[-6000:]}"
        )


def _run(accel: str, kdir: Path, job: str, timeout: float, smp: int = 2) -> Boot:
    """Boot once under ACCEL, run JOB (sh text, in the guest's /run/vm-out), power off."""
    boot = Boot(accel=accel)
    with tempfile.TemporaryDirectory(prefix="scopeshim-vm.") as scratch:
        out = Path(scratch) / "out"
        out.mkdir()
        (out / "job.sh").write_text(job)
        disks = []
        for name, size in (("io.img", 64 << 20), ("swap.img", 256 << 20)):
            disk = Path(scratch) / name
            with open(disk, "wb") as f:
                f.truncate(size)
            disks += ["-drive", f"file={disk},if=virtio,format=raw,cache=unsafe"]
        console = Path(scratch) / "console.log"
        cmd = [
            _qemu(),
            *("-machine", "q35", "-accel", accel, "-cpu", "max" if accel == "tcg" else "host"),
            *("-m", "1024", "-smp", str(smp), "-nodefaults", "-no-user-config", "-no-reboot"),
            *("-display", "none", "-monitor", "none", "-serial", f"file:{console}"),
            *("-kernel", str(kdir / "vmlinuz"), "-initrd", str(initramfs(kdir))),
            "-append",
            "console=ttyS0 cgroup_no_v1=all panic=-1 rdinit=/init quiet loglevel=4",
            "-virtfs",
            "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
            "-virtfs",
            f"local,path={out},mount_tag=out,security_model=none,multidevs=remap",
            *disks,
        ]
        started = time.monotonic()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            qemu_out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            boot.timed_out = True
            proc.send_signal(signal.SIGKILL)
            qemu_out, _ = proc.communicate()
        finally:
            if proc.poll() is None:  # interrupted (pytest's timeout, ^C): no qemu left behind
                proc.kill()
                proc.wait()
        boot.seconds = time.monotonic() - started
        boot.console = (console.read_text(errors="replace") if console.exists() else "") + (
            qemu_out.decode(errors="replace")
        )
        log = out / "job.log"
        boot.job_log = log.read_text(errors="replace") if log.exists() else ""
        code = out / "job.exit"
        if code.exists():
            boot.job_exit = int(code.read_text().strip() or -1)
        keep = os.environ.get("SCOPESHIM_VM_KEEP")
        if keep:  # the guest's logs and results, for a look afterwards
            shutil.copytree(out, Path(keep) / f"boot-{int(time.time())}", dirs_exist_ok=True)
            (Path(keep) / "console.log").write_text(boot.console)
        results = out / "results.jsonl"
        if results.exists():
            for line in results.read_text().splitlines():
                record = json.loads(line)
                boot.results[record.pop("check")] = record
    return boot


def accelerator(kdir: Path) -> str:
    """kvm when it boots Debian's kernel here, else tcg; remembered per host kernel."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    memo = cache_dir() / f"accel-{os.uname().release}"
    if memo.is_file():
        return memo.read_text().split()[0]
    probe = _run("kvm", kdir, "echo ok > /run/vm-out/probe\n", timeout=60, smp=1)
    accel = "kvm" if probe.job_exit == 0 else "tcg"
    with contextlib.suppress(OSError):  # not remembered: probed again next time
        memo.write_text(f"{accel} (kvm probe: job exit {probe.job_exit}, {probe.seconds:.1f} s)\n")
    return accel


def boot(python: str, script: Path, timeout: float = 600, only: str = "") -> Boot:
    """Boot once and run SCRIPT with PYTHON inside, as root, from the checkout (ONLY: the
    checks to run, comma-separated; all when empty)."""
    kdir = kernel()
    _qemu()
    accel = accelerator(kdir)
    job = (
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        "export HOME=/root PYTHONDONTWRITEBYTECODE=1 SCOPESHIM_VM_OUT=/run/vm-out\n"
        f"export SCOPESHIM_VM_ONLY={shlex.quote(only)}\n"
        f"cd {shlex.quote(str(ROOT))}\n"
        f"exec {shlex.quote(python)} {shlex.quote(str(script))}\n"
    )
    return _run(accel, kdir, job, timeout)
