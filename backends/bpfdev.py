"""DevicePolicy=/DeviceAllow= on cgroup v2: a BPF_PROG_TYPE_CGROUP_DEVICE program per unit.

The unified hierarchy has no devices controller. The kernel asks the BPF_CGROUP_DEVICE
programs attached to a process's cgroup and to its ancestors instead, and every one of them
must allow the access (cgroup-v2.rst "Device controller"). As systemd 252
(src/core/bpf-devices.c) and runc (libcontainer/cgroups/devices) do, a unit's settings are
compiled into one hand-assembled eBPF program, loaded with bpf(2) and attached to the unit's
cgroup directory with BPF_F_ALLOW_MULTI; a change attaches the new program in place of the
old one (BPF_F_REPLACE), so the unit is never without a filter in between.

Standard library and ctypes only: the bpf(2) syscall goes through libc's syscall(). The layout
of every structure used here is the kernel's uapi (include/uapi/linux/bpf.h).

Semantics (systemd.resource-control(5)):
  - DevicePolicy=auto without DeviceAllow=: no filter at all;
  - auto with DeviceAllow= entries, and closed: everything is denied but the entries and the
    standard pseudo devices (/dev/null, /dev/zero, /dev/full, /dev/random, /dev/urandom,
    /dev/tty, /dev/ptmx with rwm, and /dev/pts/* read/write);
  - strict: only the entries.
A DeviceAllow= entry is a device node (stat(2); /dev/char/MAJ:MIN and /dev/block/MAJ:MIN are
parsed without touching the disk, as systemd does, since runc names its devices so), or
char-NAME/block-NAME: every major of that type /proc/devices names NAME (a glob), a numeric
major, or "*" for the whole type. Access is a combination of r (read), w (write), m (mknod);
a request is allowed when its access is a subset of an entry's.

Program ids and fds: the daemon keeps one fd per attached program (closed on remove() and
close()). close() does not detach: units outlive the daemon (SIGTERM leaves them), and a
restarted daemon adopts the programs it finds attached under its program name.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import errno
import logging
import os
import re
import resource
import struct
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from backends import resources
from backends.base import BackendError

log = logging.getLogger(__name__)

# -- uapi/linux/bpf.h --------------------------------------------------------------------------

# enum bpf_cmd
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_PROG_QUERY = 16
_COMMANDS = {
    BPF_PROG_LOAD: "BPF_PROG_LOAD",
    BPF_PROG_ATTACH: "BPF_PROG_ATTACH",
    BPF_PROG_DETACH: "BPF_PROG_DETACH",
    BPF_PROG_GET_FD_BY_ID: "BPF_PROG_GET_FD_BY_ID",
    BPF_OBJ_GET_INFO_BY_FD: "BPF_OBJ_GET_INFO_BY_FD",
    BPF_PROG_QUERY: "BPF_PROG_QUERY",
}
BPF_PROG_TYPE_CGROUP_DEVICE = 15  # enum bpf_prog_type
BPF_CGROUP_DEVICE = 6  # enum bpf_attach_type
BPF_F_ALLOW_MULTI = 1 << 1  # attach flags
BPF_F_REPLACE = 1 << 2  # (Linux 5.6) replace_bpf_fd names the program to replace
BPF_OBJ_NAME_LEN = 16

# struct bpf_cgroup_dev_ctx { __u32 access_type; __u32 major; __u32 minor; };
# access_type is (BPF_DEVCG_ACC_* << 16) | BPF_DEVCG_DEV_*
CTX_ACCESS_TYPE, CTX_MAJOR, CTX_MINOR = 0, 4, 8
BPF_DEVCG_ACC_MKNOD, BPF_DEVCG_ACC_READ, BPF_DEVCG_ACC_WRITE = 1, 2, 4
BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_DEV_CHAR = 1, 2
ACCESS_BITS = {"r": BPF_DEVCG_ACC_READ, "w": BPF_DEVCG_ACC_WRITE, "m": BPF_DEVCG_ACC_MKNOD}
ACCESS_ALL = BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE | BPF_DEVCG_ACC_MKNOD
DEVICE_TYPES = {"c": BPF_DEVCG_DEV_CHAR, "b": BPF_DEVCG_DEV_BLOCK}

# instruction classes, sizes, modes, operations and sources (uapi/linux/bpf_common.h, bpf.h)
BPF_LDX, BPF_JMP, BPF_ALU, BPF_ALU64 = 0x01, 0x05, 0x04, 0x07
BPF_W, BPF_MEM = 0x00, 0x60
BPF_K, BPF_X = 0x00, 0x08
BPF_AND, BPF_RSH, BPF_MOV = 0x50, 0x70, 0xB0
BPF_JA, BPF_JNE, BPF_EXIT = 0x00, 0x50, 0x90
R0, R1, R2, R3, R4, R5 = range(6)

# systemd's devnum-util.h DEVICE_MAJOR_VALID / DEVICE_MINOR_VALID
MAJOR_LIMIT, MINOR_LIMIT = 1 << 12, 1 << 20
PROGRAM_NAME = "scopeshim_dev"  # what a restarted daemon recognises as its own
LICENSE = b"GPL"
LOG_SIZE = 64 * 1024

# __NR_bpf per architecture (os.uname().machine) and the pointer size of its ABI
SYSCALL_NUMBERS: dict[str, tuple[int, int]] = {
    "x86_64": (321, 8),  # arch/x86/entry/syscalls/syscall_64.tbl
    "i386": (357, 4),  # arch/x86/entry/syscalls/syscall_32.tbl
    "i686": (357, 4),
    "aarch64": (280, 8),  # include/uapi/asm-generic/unistd.h
    "riscv64": (280, 8),
    "loongarch64": (280, 8),
    "armv7l": (386, 4),  # arch/arm/tools/syscall.tbl
    "armv6l": (386, 4),
    "ppc64le": (361, 8),  # arch/powerpc/kernel/syscalls/syscall.tbl
    "ppc64": (361, 8),
    "s390x": (351, 8),  # arch/s390/kernel/syscalls/syscall.tbl
}


class BpfError(BackendError):
    """A bpf(2) command failed; `errno` is the kernel's, `log` the verifier's message."""

    def __init__(self, message: str, errno: int | None = None, log: str = "") -> None:
        super().__init__(message, errno)
        self.log = log


def syscall_number(machine: str, pointer_size: int = struct.calcsize("P")) -> int:
    """bpf(2)'s number on MACHINE; BpfError(ENOSYS) where it is not known here."""
    entry = SYSCALL_NUMBERS.get(machine)
    if entry is None:
        known = ", ".join(sorted(SYSCALL_NUMBERS))
        raise BpfError(
            f"the bpf(2) syscall number of architecture {machine!r} is not known to scopeshim "
            f"(known: {known})",
            errno.ENOSYS,
        )
    number, size = entry
    if size != pointer_size:
        raise BpfError(
            f"a {pointer_size * 8}-bit Python on a {machine} kernel: bpf(2) is not supported",
            errno.ENOSYS,
        )
    return number


# -- instructions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Insn:
    """struct bpf_insn: u8 code; u8 dst_reg:4, src_reg:4; s16 off; s32 imm."""

    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0

    def encode(self, byteorder: str = sys.byteorder) -> bytes:
        # the register byte is a C bitfield: dst_reg takes the low nibble on little-endian
        # machines and the high one on big-endian ones
        little = byteorder == "little"
        regs = (self.src << 4 | self.dst) if little else (self.dst << 4 | self.src)
        return struct.pack("<BBhi" if little else ">BBhi", self.code, regs, self.off, self.imm)


# the kernel's macros (include/linux/filter.h), for the few instructions the filter uses
def ldx_mem_w(dst: int, src: int, off: int) -> Insn:
    """dst = *(u32 *)(src + off)"""
    return Insn(BPF_LDX | BPF_W | BPF_MEM, dst, src, off)


def alu32_imm(op: int, dst: int, imm: int) -> Insn:
    """wDST op= imm (32-bit; the upper half of DST becomes 0)"""
    return Insn(BPF_ALU | op | BPF_K, dst, 0, 0, imm)


def mov32_reg(dst: int, src: int) -> Insn:
    """wDST = wSRC"""
    return Insn(BPF_ALU | BPF_MOV | BPF_X, dst, src)


def mov64_imm(dst: int, imm: int) -> Insn:
    """DST = imm"""
    return Insn(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm)


def jmp_reg(op: int, dst: int, src: int, off: int) -> Insn:
    """if (DST op SRC) goto pc + 1 + off"""
    return Insn(BPF_JMP | op | BPF_X, dst, src, off)


def jmp_imm(op: int, dst: int, imm: int, off: int) -> Insn:
    """if (DST op imm) goto pc + 1 + off"""
    return Insn(BPF_JMP | op | BPF_K, dst, 0, off, imm)


def exit_insn() -> Insn:
    return Insn(BPF_JMP | BPF_EXIT)


def assemble(program: Sequence[Insn], byteorder: str = sys.byteorder) -> bytes:
    return b"".join(insn.encode(byteorder) for insn in program)


# -- rules -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """One allowed class of accesses; None matches anything."""

    kind: str | None  # "c" (character), "b" (block)
    major: int | None
    minor: int | None
    access: str  # a subset of "rwm", in that order

    def __str__(self) -> str:  # the v1 devices.allow form (cgroup-v1/devices.rst)
        number = f"{'*' if self.major is None else self.major}:"
        number += "*" if self.minor is None else str(self.minor)
        return f"{self.kind or 'a'} {number} {self.access}"


DeviceNumber = Callable[[str], tuple[int, int] | None]
DeviceMajors = Callable[[str, str], list[int]]


@dataclass(frozen=True, slots=True)
class Resolver:
    """How names become device numbers (backends/resources.py's helpers by default)."""

    char_number: DeviceNumber = resources.char_device_number
    block_number: DeviceNumber = resources.block_device_number
    majors: DeviceMajors = resources.proc_device_majors


_DEVNUM = re.compile(r"([0-9]+):([0-9]+)")
# systemd's device_path_parse_major_minor(): never goes to the disk for these
_INACCESSIBLE = {"/run/systemd/inaccessible/chr": "c", "/run/systemd/inaccessible/blk": "b"}


def canonical_access(access: str) -> str | None:
    """ACCESS as "rwm" in order; "" means all (systemd); None when it holds anything else."""
    if any(c not in ACCESS_BITS for c in access):
        return None
    return "".join(c for c in "rwm" if c in access) or "rwm"


def node_rule(path: str, access: str, resolver: Resolver) -> Rule | str:
    """The rule for a device node PATH, or why there is none."""
    kind = _INACCESSIBLE.get(path)
    number: tuple[int, int] | None = (0, 0) if kind else None
    for prefix, k in (("/dev/char/", "c"), ("/dev/block/", "b")):
        if path.startswith(prefix):
            m = _DEVNUM.fullmatch(path[len(prefix) :])
            if m is None:
                return f"{path} is not {prefix}MAJOR:MINOR"
            kind, number = k, (int(m[1]), int(m[2]))
    if number is None:
        kind, number = "c", resolver.char_number(path)
    if number is None:
        kind, number = "b", resolver.block_number(path)
    if number is None:
        return f"{path} is not a device node here"
    if not (0 <= number[0] < MAJOR_LIMIT and 0 <= number[1] < MINOR_LIMIT):
        return f"{path}: device number out of range"
    return Rule(kind, number[0], number[1], access)


def pattern_rules(kind: str, name: str, access: str, resolver: Resolver) -> list[Rule] | str:
    """The rules for char-NAME/block-NAME (systemd's bpf_devices_allow_list_major())."""
    if name == "*":
        return [Rule(kind, None, None, access)]  # the whole type
    if name.isascii() and name.isdigit():
        if int(name) >= MAJOR_LIMIT:
            return f"major {name} out of range"
        return [Rule(kind, int(name), None, access)]
    majors = resolver.majors(kind, name)
    if not majors:
        return f"no {'character' if kind == 'c' else 'block'} device {name!r} in /proc/devices"
    return [Rule(kind, major, None, access) for major in majors]


def entry_rules(path: str, access: str, resolver: Resolver) -> list[Rule] | str:
    """The rules for one DeviceAllow= entry, or why it allows nothing (a note)."""
    canonical = canonical_access(access)
    if canonical is None:
        return f"access {access!r} is not a combination of r, w and m"
    if path.startswith("/dev/"):
        rule = node_rule(path, canonical, resolver)
        return [rule] if isinstance(rule, Rule) else rule
    for prefix, kind in (("char-", "c"), ("block-", "b")):
        if path.startswith(prefix):
            return pattern_rules(kind, path[len(prefix) :], canonical, resolver)
    # systemd 252 cgroup_apply_devices(): "Ignoring device ... while writing cgroup attribute"
    return "not a /dev/ node, char-* or block-* pattern"


def standard_rules(resolver: Resolver) -> list[Rule]:
    """closed's pseudo devices (systemd 252 bpf_devices_allow_list_static())."""
    rules: list[Rule] = []
    for path in resources.CLOSED_DEVICES:
        rule = node_rule(path, "rwm", resolver)
        if isinstance(rule, Rule):
            rules.append(rule)
    found = pattern_rules("c", "pts", "rw", resolver)  # /dev/pts/*: used, never mknod-ed
    return rules + (found if isinstance(found, list) else [])


def mentions_devices(settings: Mapping[str, object]) -> bool:
    return "DevicePolicy" in settings or "DeviceAllow" in settings


def wants_filter(settings: Mapping[str, object]) -> bool:
    """Whether the settings call for a filter (all but DevicePolicy=auto without entries)."""
    allow = settings.get("DeviceAllow")
    return str(settings.get("DevicePolicy") or "auto") != "auto" or bool(allow)


def device_rules(
    settings: Mapping[str, object], resolver: Resolver | None = None
) -> tuple[list[Rule] | None, list[str]]:
    """(the allowed rules, or None for no filter at all; notes for entries that allow nothing).

    An empty rule list is a filter that denies everything."""
    if not wants_filter(settings):
        return None, []
    resolver = resolver or Resolver()
    policy = str(settings.get("DevicePolicy") or "auto")
    allow = settings.get("DeviceAllow")
    entries = [(str(p), str(a)) for p, a in allow] if isinstance(allow, list) else []
    notes: list[str] = []
    rules = standard_rules(resolver) if policy in ("closed", "auto") else []
    for path, access in entries:
        found = entry_rules(path, access, resolver)
        if isinstance(found, str):
            notes.append(f"DeviceAllow: {path} {access} ignored: {found}")
        else:
            rules.extend(found)
    return list(dict.fromkeys(rules)), notes  # duplicates dropped, first place kept


# -- the compiler --------------------------------------------------------------------------------

# r2 = device type, r3 = requested access, r4 = major, r5 = minor (systemd's and runc's
# register use); r1 (the context) is free afterwards and holds the access check
PROLOGUE = (
    ldx_mem_w(R2, R1, CTX_ACCESS_TYPE),
    alu32_imm(BPF_AND, R2, 0xFFFF),
    ldx_mem_w(R3, R1, CTX_ACCESS_TYPE),
    alu32_imm(BPF_RSH, R3, 16),
    ldx_mem_w(R4, R1, CTX_MAJOR),
    ldx_mem_w(R5, R1, CTX_MINOR),
)
ALLOW = (mov64_imm(R0, 1), exit_insn())
DENY = (mov64_imm(R0, 0), exit_insn())


def access_mask(access: str) -> int:
    return sum(ACCESS_BITS[c] for c in set(access))


def rule_block(rule: Rule) -> list[Insn]:
    """Instructions that return 1 when the request matches RULE and fall through otherwise."""
    # each check: the instructions before its conditional jump, and the jump (offset 0 here)
    checks: list[tuple[list[Insn], Insn]] = []
    mask = access_mask(rule.access)
    if mask != ACCESS_ALL:
        # (requested & allowed) != requested: something requested is not allowed
        before = [mov32_reg(R1, R3), alu32_imm(BPF_AND, R1, mask)]
        checks.append((before, jmp_reg(BPF_JNE, R1, R3, 0)))
    if rule.kind is not None:
        checks.append(([], jmp_imm(BPF_JNE, R2, DEVICE_TYPES[rule.kind], 0)))
    if rule.major is not None:
        checks.append(([], jmp_imm(BPF_JNE, R4, rule.major, 0)))
    if rule.minor is not None:
        checks.append(([], jmp_imm(BPF_JNE, R5, rule.minor, 0)))
    length = sum(len(before) + 1 for before, _ in checks) + len(ALLOW)
    block: list[Insn] = []
    for before, jump in checks:
        block.extend(before)
        # a mismatch goes to the first instruction after this block's ALLOW
        block.append(dataclasses.replace(jump, off=length - len(block) - 1))
    return [*block, *ALLOW]


def compile_rules(rules: Sequence[Rule]) -> list[Insn]:
    """The program: 1 (allow) when any rule matches the request, else 0 (deny)."""
    program = list(PROLOGUE)
    for rule in rules:
        block = rule_block(rule)
        program.extend(block)
        if len(block) == len(ALLOW):
            return program  # an unconditional allow: the verifier refuses unreachable code
    return [*program, *DENY]


# -- bpf(2) ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProgramInfo:
    """From struct bpf_prog_info."""

    type: int
    id: int
    name: str


class BpfKernel(Protocol):
    """The bpf(2) commands DeviceFilters uses (a fake stands in for it in the unit tests)."""

    def prog_load(self, code: bytes, name: str) -> int: ...

    def prog_attach(
        self, target_fd: int, prog_fd: int, flags: int, replace_fd: int = 0
    ) -> None: ...

    def prog_detach(self, target_fd: int, prog_fd: int) -> None: ...

    def prog_query(self, target_fd: int) -> list[int]: ...

    def prog_fd_by_id(self, prog_id: int) -> int: ...

    def prog_info(self, prog_fd: int) -> ProgramInfo: ...

    def close(self, fd: int) -> None: ...


class Kernel:
    """bpf(2) through libc's syscall(); every structure laid out as uapi/linux/bpf.h has it."""

    def __init__(self, machine: str | None = None) -> None:
        self.number = syscall_number(machine or os.uname().machine)
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._syscall = libc.syscall
        self._syscall.restype = ctypes.c_long

    def _bpf(self, cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
        ret = self._syscall(
            ctypes.c_long(self.number),
            ctypes.c_long(cmd),
            ctypes.c_void_p(ctypes.addressof(attr)),
            ctypes.c_long(len(attr)),
        )
        if ret < 0:
            err = ctypes.get_errno()
            raise BpfError(f"bpf({_COMMANDS.get(cmd, cmd)}): {os.strerror(err)}", err)
        return int(ret)

    def _load(self, code: bytes, name: str, log_buf: ctypes.Array[ctypes.c_char] | None) -> int:
        insns = ctypes.create_string_buffer(code, len(code))
        license_ = ctypes.create_string_buffer(LICENSE)
        attr = ctypes.create_string_buffer(72)
        # prog_type, insn_cnt, insns, license, log_level, log_size, log_buf, kern_version,
        # prog_flags, prog_name[16], prog_ifindex, expected_attach_type
        struct.pack_into(
            "=IIQQIIQII16sII", attr, 0, BPF_PROG_TYPE_CGROUP_DEVICE, len(code) // 8,
            ctypes.addressof(insns), ctypes.addressof(license_),
            0 if log_buf is None else 1, 0 if log_buf is None else len(log_buf),
            0 if log_buf is None else ctypes.addressof(log_buf), 0, 0,
            name.encode()[: BPF_OBJ_NAME_LEN - 1], 0, 0,
        )  # fmt: skip
        return self._bpf(BPF_PROG_LOAD, attr)

    def prog_load(self, code: bytes, name: str = PROGRAM_NAME) -> int:
        """Load CODE as a BPF_PROG_TYPE_CGROUP_DEVICE program; its fd (close-on-exec)."""
        try:
            return self._load(code, name, None)
        except BpfError as e:
            first = e
        if first.errno == errno.EPERM and _raise_memlock():
            try:  # kernels before 5.11 charge programs to RLIMIT_MEMLOCK
                return self._load(code, name, None)
            except BpfError as e:
                first = e
        # again with a log buffer, for the verifier's reason (a log buffer that is too small
        # fails even a good program, with ENOSPC, so it is not passed the first time)
        log_buf = ctypes.create_string_buffer(LOG_SIZE)
        try:
            return self._load(code, name, log_buf)
        except BpfError:
            text = log_buf.value.decode(errors="replace").strip()
            message = str(first) + (f"; verifier: {text[-1500:]}" if text else "")
            raise BpfError(message, first.errno, text) from None

    def prog_attach(self, target_fd: int, prog_fd: int, flags: int, replace_fd: int = 0) -> None:
        attr = ctypes.create_string_buffer(20)
        # target_fd, attach_bpf_fd, attach_type, attach_flags, replace_bpf_fd
        struct.pack_into("=IIIII", attr, 0, target_fd, prog_fd, BPF_CGROUP_DEVICE, flags,
                         replace_fd)  # fmt: skip
        self._bpf(BPF_PROG_ATTACH, attr)

    def prog_detach(self, target_fd: int, prog_fd: int) -> None:
        attr = ctypes.create_string_buffer(20)
        struct.pack_into("=III", attr, 0, target_fd, prog_fd, BPF_CGROUP_DEVICE)
        self._bpf(BPF_PROG_DETACH, attr)

    def prog_query(self, target_fd: int) -> list[int]:
        """The ids of the programs attached to the cgroup itself (not its ancestors')."""
        count = 64
        for _ in range(8):
            ids = (ctypes.c_uint32 * count)()
            attr = ctypes.create_string_buffer(32)
            # target_fd, attach_type, query_flags, attach_flags, prog_ids, prog_cnt
            struct.pack_into("=IIIIQI", attr, 0, target_fd, BPF_CGROUP_DEVICE, 0, 0,
                             ctypes.addressof(ids), count)  # fmt: skip
            try:
                self._bpf(BPF_PROG_QUERY, attr)
            except BpfError as e:
                if e.errno != errno.ENOSPC:
                    raise
                count = struct.unpack_from("=I", attr, 24)[0]  # what there is
                continue
            found = struct.unpack_from("=I", attr, 24)[0]
            return [int(i) for i in ids[:found]]
        raise BpfError("bpf(BPF_PROG_QUERY): the list kept growing", errno.EAGAIN)

    def prog_fd_by_id(self, prog_id: int) -> int:
        attr = ctypes.create_string_buffer(12)
        struct.pack_into("=III", attr, 0, prog_id, 0, 0)  # prog_id, next_id, open_flags
        return self._bpf(BPF_PROG_GET_FD_BY_ID, attr)

    def prog_info(self, prog_fd: int) -> ProgramInfo:
        info = ctypes.create_string_buffer(80)  # struct bpf_prog_info up to name[16]
        attr = ctypes.create_string_buffer(16)
        struct.pack_into("=IIQ", attr, 0, prog_fd, len(info), ctypes.addressof(info))
        self._bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
        kind, prog_id = struct.unpack_from("=II", info, 0)
        name = info.raw[64:80].split(b"\0", 1)[0].decode(errors="replace")
        return ProgramInfo(kind, prog_id, name)

    def close(self, fd: int) -> None:
        os.close(fd)


def _raise_memlock() -> bool:
    """Lift RLIMIT_MEMLOCK (to infinity where allowed, as systemd does, else to the hard
    limit); whether that changed anything."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    except (OSError, ValueError):
        return False
    for wanted in ((resource.RLIM_INFINITY, resource.RLIM_INFINITY), (hard, hard)):
        if wanted == (soft, hard):
            return False
        try:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, wanted)
            return True
        except (OSError, ValueError):
            continue
    return False


_probed: tuple[Kernel | None, str] | None = None


def probe() -> tuple[Kernel | None, str]:
    """(a Kernel, "") when this machine loads BPF_PROG_TYPE_CGROUP_DEVICE programs, else
    (None, why). Tried once per process, with a trivial allow-all program (as systemd's
    bpf_devices_supported() does)."""
    global _probed
    if _probed is not None:
        return _probed
    try:
        kernel = Kernel()
        kernel.close(kernel.prog_load(assemble(ALLOW), PROGRAM_NAME))
    except BpfError as e:
        _probed = (None, str(e))
    except OSError as e:  # no libc to load
        _probed = (None, f"bpf(2) unavailable: {e}")
    else:
        _probed = (kernel, "")
        log.debug("BPF device filters available (bpf(2) is syscall %d)", kernel.number)
    if _probed[0] is None:
        log.info("DevicePolicy=/DeviceAllow= cannot be enforced on cgroup2: %s", _probed[1])
    return _probed


# -- per-cgroup filters ------------------------------------------------------------------------


@dataclass(slots=True)
class Installed:
    """The programs of one cgroup that are ours: fds[0] the current one; more only when an
    older one could not be detached (each is retried on the next change)."""

    fds: list[int] = field(default_factory=list)
    code: bytes | None = None  # what fds[0] runs; None for an adopted program


class DeviceFilters:
    """The device filters of a cgroup2 backend, by cgroup path."""

    def __init__(self, kernel: BpfKernel, resolver: Resolver | None = None) -> None:
        self.kernel = kernel
        self.resolver = resolver or Resolver()
        self._installed: dict[str, Installed] = {}

    def programs(self, path: str) -> list[int]:
        """The fds of the programs attached to PATH by this daemon."""
        entry = self._installed.get(path)
        return list(entry.fds) if entry else []

    def apply(self, path: str, directory: str | os.PathLike[str], settings: Mapping[str, object]
              ) -> list[str]:  # fmt: skip
        """Make PATH's filter what SETTINGS say; notes for what could not be done. Whatever
        fails, the cgroup keeps a whole filter: the new one, or else the one it had."""
        entry = self._installed.get(path)
        if entry is None and not mentions_devices(settings):
            return []  # none of ours can be there: the unit never had device settings
        rules, notes = device_rules(settings, self.resolver)
        code = None if rules is None else assemble(compile_rules(rules))
        if entry is not None and code is not None and entry.code == code and len(entry.fds) == 1:
            return notes  # unchanged
        if rules is not None:
            log.debug("%s: device filter: %s", path, ", ".join(map(str, rules)) or "deny all")
        try:
            dirfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            return [*notes, f"device filter not applied: {directory}: {e.strerror}"]
        try:
            if entry is None:
                entry = Installed(self._adopt(dirfd, notes))
                if entry.fds:
                    self._installed[path] = entry
            if code is None:
                notes.extend(self._remove(path, dirfd, entry))
            else:
                notes.extend(self._replace(path, dirfd, entry, code))
        finally:
            os.close(dirfd)
        return notes

    def _adopt(self, dirfd: int, notes: list[str]) -> list[int]:
        """Our programs a previous run of the daemon attached to this cgroup."""
        try:
            ids = self.kernel.prog_query(dirfd)
        except BpfError as e:
            notes.append(f"attached device filters not listed: {e}")
            return []
        fds: list[int] = []
        for prog_id in ids:
            try:
                fd = self.kernel.prog_fd_by_id(prog_id)
            except BpfError:
                continue  # gone meanwhile, or not ours to see
            try:
                info = self.kernel.prog_info(fd)
            except BpfError:
                info = None
            if info is not None and info.name == PROGRAM_NAME:
                fds.append(fd)
            else:
                self.kernel.close(fd)
        if fds:
            log.info("adopted %d device filter program(s) of an earlier run", len(fds))
        return fds

    def _replace(self, path: str, dirfd: int, entry: Installed, code: bytes) -> list[str]:
        try:
            fd = self.kernel.prog_load(code, PROGRAM_NAME)
        except BpfError as e:
            return [f"device filter not loaded ({self._kept(entry)}): {e}"]
        replaced: int | None = None
        try:
            if entry.fds:
                try:
                    flags = BPF_F_ALLOW_MULTI | BPF_F_REPLACE
                    self.kernel.prog_attach(dirfd, fd, flags, entry.fds[0])
                    replaced = entry.fds[0]
                except BpfError as e:
                    # ENOENT: it is not attached any more (runc replaces filters with its
                    # own); EINVAL: a kernel before 5.6, without BPF_F_REPLACE
                    if e.errno not in (errno.ENOENT, errno.EINVAL):
                        raise
            if replaced is None:
                self.kernel.prog_attach(dirfd, fd, BPF_F_ALLOW_MULTI)
        except BpfError as e:
            self.kernel.close(fd)
            return [f"device filter not attached ({self._kept(entry)}): {e}"]
        notes: list[str] = []
        stuck = self._detach(dirfd, [f for f in entry.fds if f != replaced], notes)
        if replaced is not None:
            self.kernel.close(replaced)
        self._installed[path] = Installed([fd, *stuck], code)
        return notes

    def _remove(self, path: str, dirfd: int, entry: Installed) -> list[str]:
        notes: list[str] = []
        stuck = self._detach(dirfd, entry.fds, notes)
        if stuck:
            self._installed[path] = Installed(stuck, None)
        else:
            self._installed.pop(path, None)
        return notes

    def _detach(self, dirfd: int, fds: list[int], notes: list[str]) -> list[int]:
        """Detach and close FDS; those the kernel would not detach stay open (returned)."""
        stuck: list[int] = []
        for fd in fds:
            try:
                self.kernel.prog_detach(dirfd, fd)
            except BpfError as e:
                if e.errno != errno.ENOENT:  # ENOENT: not attached (any more)
                    notes.append(f"old device filter not detached: {e}")
                    stuck.append(fd)
                    continue
            self.kernel.close(fd)
        return stuck

    @staticmethod
    def _kept(entry: Installed) -> str:
        return "the previous filter stays" if entry.fds else "no filter"

    def forget(self, path: str, exists: Callable[[str], bool]) -> None:
        """PATH and the cgroups below it were removed (those that no longer exist): the kernel
        detached their programs on rmdir (cgroup_bpf_release), so close our fds."""
        prefix = path.rstrip("/") + "/"
        for p in [p for p in self._installed if p == path or p.startswith(prefix)]:
            if not exists(p):
                for fd in self._installed.pop(p).fds:
                    self.kernel.close(fd)

    def close(self) -> None:
        """Close every fd; the programs stay attached (the units outlive the daemon)."""
        for entry in self._installed.values():
            for fd in entry.fds:
                self.kernel.close(fd)
        self._installed.clear()


def not_enforced(settings: Mapping[str, object]) -> list[str]:
    """The note for device settings where no filter can be installed."""
    if not wants_filter(settings):
        return []
    return ["DevicePolicy=/DeviceAllow= not enforced: no BPF device filter on this machine"]


def attached(directory: str | os.PathLike[str], kernel: BpfKernel | None = None
             ) -> list[ProgramInfo]:  # fmt: skip
    """The BPF_CGROUP_DEVICE programs attached to a cgroup directory (for checks and tests)."""
    kernel = kernel or Kernel()
    dirfd = os.open(Path(directory), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        out: list[ProgramInfo] = []
        for prog_id in kernel.prog_query(dirfd):
            fd = kernel.prog_fd_by_id(prog_id)
            try:
                out.append(kernel.prog_info(fd))
            finally:
                kernel.close(fd)
        return out
    finally:
        os.close(dirfd)
