"""A minimal OCI bundle for runc: a rootfs holding Debian's static busybox (busybox-static)
and its applets, and runc's own default config.json (`runc spec`) with the process, the
cgroups path and the resources the caller asks for.

Usage (also a command): oci_bundle.py [--cgroups-path PATH] DIR [ARGS...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "sleep", "cat", "echo", "ls", "true", "grep")


def have_busybox() -> bool:
    """busybox-static's binary is there and statically linked (no PT_INTERP header: a
    dynamic one would need a libc inside the rootfs)."""
    try:
        data = Path(BUSYBOX).read_bytes()
    except OSError:
        return False
    if data[:5] != b"\x7fELF\x02":  # 64-bit ELF
        return False
    phoff = int.from_bytes(data[0x20:0x28], "little")
    size = int.from_bytes(data[0x36:0x38], "little")
    count = int.from_bytes(data[0x38:0x3A], "little")
    types = [int.from_bytes(data[phoff + i * size : phoff + i * size + 4], "little")
             for i in range(count)]  # fmt: skip
    return 3 not in types  # PT_INTERP


def build(
    bundle: Path,
    args: Sequence[str],
    *,
    cgroups_path: str | None = None,
    resources: dict[str, Any] | None = None,
    rootless: tuple[int, int] | None = None,
) -> Path:
    """Write BUNDLE/rootfs and BUNDLE/config.json; returns BUNDLE. ROOTLESS=(UID, GID): runc's
    rootless spec (`runc spec --rootless`: a user namespace, no resources) mapping root inside
    to UID:GID, the bundle owned by them."""
    rootfs = bundle / "rootfs"
    for d in ("bin", "proc", "dev", "sys", "tmp", "etc", "run"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in APPLETS:
        link = rootfs / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\n")
    config = bundle / "config.json"
    if config.exists():
        config.unlink()
    rootless_flag = ["--rootless"] if rootless else []
    subprocess.run(["runc", "spec", *rootless_flag, "--bundle", str(bundle)], check=True)
    spec = json.loads(config.read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = list(args)
    spec["root"] = {"path": "rootfs", "readonly": True}
    spec["hostname"] = "scopeshim-oci"
    linux = spec["linux"]
    if cgroups_path is not None:
        linux["cgroupsPath"] = cgroups_path
    if resources:
        linux.setdefault("resources", {}).update(resources)
    if rootless:
        # the mappings `runc spec --rootless` takes from its caller (here root), for the user
        linux["uidMappings"] = [{"containerID": 0, "hostID": rootless[0], "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": rootless[1], "size": 1}]
    config.write_text(json.dumps(spec, indent=1))
    if rootless:
        for path in [bundle, *bundle.rglob("*")]:
            os.lchown(path, *rootless)
    return bundle


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--cgroups-path")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    a = parser.parse_args()
    args = [x for x in a.args if x != "--"] or ["sleep", "600"]
    build(a.bundle, args, cgroups_path=a.cgroups_path)
    print(a.bundle)


if __name__ == "__main__":
    main()
