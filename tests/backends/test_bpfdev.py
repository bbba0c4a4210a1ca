"""The BPF device filter (backends/bpfdev.py) without a kernel: instruction encoding against
struct bpf_insn, hand-checked programs, DeviceAllow= parsing, the program's meaning (run by a
small interpreter of the instructions the compiler emits, which also checks what the kernel's
verifier insists on), and the attach/replace/detach bookkeeping against a fake bpf(2).
The real kernel is exercised in tests/e2e/test_devices_cgroup2.py."""

from __future__ import annotations

import errno
import fnmatch
import os
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backends import bpfdev
from backends.base import Capability
from backends.bpfdev import (
    ALLOW,
    BPF_F_ALLOW_MULTI,
    BPF_F_REPLACE,
    BPF_PROG_TYPE_CGROUP_DEVICE,
    PROGRAM_NAME,
    BpfError,
    DeviceFilters,
    Insn,
    ProgramInfo,
    Resolver,
    Rule,
    assemble,
    compile_rules,
    device_rules,
    entry_rules,
    syscall_number,
)
from backends.cgroup2 import Cgroup2Backend
from backends.resources import parse_proc_devices

CHAR = {
    "/dev/null": (1, 3),
    "/dev/zero": (1, 5),
    "/dev/full": (1, 7),
    "/dev/random": (1, 8),
    "/dev/urandom": (1, 9),
    "/dev/tty": (5, 0),
    "/dev/ptmx": (5, 2),
    "/dev/nvidia0": (195, 0),
}
BLOCK = {"/dev/sda": (8, 0), "/dev/loop0": (7, 0)}
PROC_DEVICES = parse_proc_devices(
    "Character devices:\n  1 mem\n  4 tty\n  4 ttyS\n136 pts\n195 nvidia-frontend\n"
    "226 drm\n\nBlock devices:\n  7 loop\n  8 sd\n259 blkext\n"
)


def majors(kind: str, pattern: str) -> list[int]:
    return sorted({m for m, n in PROC_DEVICES[kind] if fnmatch.fnmatchcase(n, pattern)})


RESOLVER = Resolver(CHAR.get, BLOCK.get, majors)
CLOSED = [
    Rule("c", 1, 3, "rwm"),
    Rule("c", 1, 5, "rwm"),
    Rule("c", 1, 7, "rwm"),
    Rule("c", 1, 8, "rwm"),
    Rule("c", 1, 9, "rwm"),
    Rule("c", 5, 0, "rwm"),
    Rule("c", 5, 2, "rwm"),
    Rule("c", 0, 0, "rwm"),  # /run/systemd/inaccessible/chr
    Rule("b", 0, 0, "rwm"),  # /run/systemd/inaccessible/blk
    Rule("c", 136, None, "rw"),  # char-pts
]


def rules(settings: dict[str, object]) -> list[Rule] | None:
    found, _notes = device_rules(settings, RESOLVER)
    return found


# -- encoding ------------------------------------------------------------------------------


def test_instruction_layout_is_struct_bpf_insn():
    # u8 code; u8 dst_reg:4 (low nibble on little-endian), src_reg:4; s16 off; s32 imm
    assert Insn(0x61, dst=2, src=1, off=4, imm=0).encode("little") == bytes.fromhex(
        "61 12 0400 00000000"
    )
    assert Insn(0x55, dst=4, off=-2, imm=-1).encode("little") == bytes.fromhex(
        "55 04 feff ffffffff"
    )
    # big-endian: the bitfield's first member takes the high nibble, numbers are big-endian
    assert Insn(0x61, dst=2, src=1, off=4, imm=7).encode("big") == bytes.fromhex(
        "61 21 0004 00000007"
    )
    assert len(assemble(ALLOW)) == 16


def test_the_kernel_macros():
    # include/linux/filter.h: BPF_LDX_MEM(BPF_W, ...) = BPF_LDX|BPF_W|BPF_MEM = 0x61, ...
    assert bpfdev.ldx_mem_w(5, 1, 8) == Insn(0x61, 5, 1, 8, 0)
    assert bpfdev.alu32_imm(bpfdev.BPF_AND, 2, 0xFFFF) == Insn(0x54, 2, 0, 0, 0xFFFF)
    assert bpfdev.alu32_imm(bpfdev.BPF_RSH, 3, 16) == Insn(0x74, 3, 0, 0, 16)
    assert bpfdev.mov32_reg(1, 3) == Insn(0xBC, 1, 3, 0, 0)
    assert bpfdev.mov64_imm(0, 1) == Insn(0xB7, 0, 0, 0, 1)
    assert bpfdev.jmp_reg(bpfdev.BPF_JNE, 1, 3, 5) == Insn(0x5D, 1, 3, 5, 0)
    assert bpfdev.jmp_imm(bpfdev.BPF_JNE, 2, 2, 4) == Insn(0x55, 2, 0, 4, 2)
    assert bpfdev.exit_insn() == Insn(0x95)


# DevicePolicy=strict, DeviceAllow=/dev/char/1:3 rw, assembled by hand
STRICT_NULL_RW = """
61 12 0000 00000000   r2 = *(u32 *)(r1 + 0)     access_type
54 02 0000 ffff0000   w2 &= 0xffff              device type
61 13 0000 00000000   r3 = *(u32 *)(r1 + 0)
74 03 0000 10000000   w3 >>= 16                 requested access
61 14 0400 00000000   r4 = *(u32 *)(r1 + 4)     major
61 15 0800 00000000   r5 = *(u32 *)(r1 + 8)     minor
bc 31 0000 00000000   w1 = w3
54 01 0000 06000000   w1 &= 6                   read|write
5d 31 0500 00000000   if r1 != r3 goto +5       asked for more than rw
55 02 0400 02000000   if r2 != 2 goto +4        not a character device
55 04 0300 01000000   if r4 != 1 goto +3
55 05 0200 03000000   if r5 != 3 goto +2
b7 00 0000 01000000   r0 = 1
95 00 0000 00000000   exit
b7 00 0000 00000000   r0 = 0
95 00 0000 00000000   exit
"""


def hexbytes(listing: str) -> bytes:
    return b"".join(bytes.fromhex(" ".join(line.split()[:4])) for line in listing.splitlines()
                    if line.strip())  # fmt: skip


def test_a_hand_checked_program():
    found = rules({"DevicePolicy": "strict", "DeviceAllow": [("/dev/char/1:3", "rw")]})
    assert found == [Rule("c", 1, 3, "rw")]
    assert assemble(compile_rules(found), "little") == hexbytes(STRICT_NULL_RW)


def test_rwm_needs_no_access_check_and_wildcards_skip_their_compare():
    program = compile_rules([Rule("b", 7, None, "rwm"), Rule("c", None, None, "m")])
    assert program[6:] == [
        Insn(0x55, 2, 0, 3, 1),  # if r2 != BLOCK goto next
        Insn(0x55, 4, 0, 2, 7),  # if r4 != 7 goto next
        *ALLOW,
        Insn(0xBC, 1, 3),
        Insn(0x54, 1, 0, 0, 1),  # w1 &= MKNOD
        Insn(0x5D, 1, 3, 3),
        Insn(0x55, 2, 0, 2, 2),  # if r2 != CHAR goto deny
        *ALLOW,
        *bpfdev.DENY,
    ]


def test_deny_all_and_allow_all():
    assert compile_rules([]) == [*bpfdev.PROLOGUE, *bpfdev.DENY]
    # an unconditional allow ends the program: the verifier refuses unreachable instructions
    program = compile_rules([Rule(None, None, None, "rwm"), Rule("c", 1, 3, "r")])
    assert program == [*bpfdev.PROLOGUE, *ALLOW]


def test_syscall_numbers():
    assert syscall_number("x86_64", 8) == 321
    assert syscall_number("aarch64", 8) == 280
    assert syscall_number("i686", 4) == 357
    with pytest.raises(BpfError, match="'mips64' is not known") as e:
        syscall_number("mips64", 8)
    assert e.value.errno == errno.ENOSYS
    with pytest.raises(BpfError, match="32-bit Python on a x86_64"):
        syscall_number("x86_64", 4)
    with pytest.raises(BpfError):
        bpfdev.Kernel("sparc64")


# -- DeviceAllow= entries and policies -----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "access", "expected"),
    [
        ("/dev/null", "rw", [Rule("c", 1, 3, "rw")]),
        ("/dev/sda", "r", [Rule("b", 8, 0, "r")]),
        ("/dev/null", "mwr", [Rule("c", 1, 3, "rwm")]),  # stored as flags
        ("/dev/null", "", [Rule("c", 1, 3, "rwm")]),  # systemd: empty is rwm
        ("/dev/char/10:200", "rwm", [Rule("c", 10, 200, "rwm")]),  # runc's form; no stat
        ("/dev/block/259:3", "r", [Rule("b", 259, 3, "r")]),
        ("char-*", "m", [Rule("c", None, None, "m")]),  # runc's "c *:* m"
        ("block-*", "m", [Rule("b", None, None, "m")]),
        ("char-pts", "rwm", [Rule("c", 136, None, "rwm")]),
        ("char-tty*", "w", [Rule("c", 4, None, "w")]),  # fnmatch over /proc/devices names
        ("char-195", "r", [Rule("c", 195, None, "r")]),  # numeric major
        ("block-loop", "r", [Rule("b", 7, None, "r")]),
    ],
)
def test_entries(path, access, expected):
    assert entry_rules(path, access, RESOLVER) == expected


@pytest.mark.parametrize(
    ("path", "access", "why"),
    [
        ("/dev/gone", "r", "/dev/gone is not a device node here"),
        ("/dev/char/1:x", "r", "/dev/char/1:x is not /dev/char/MAJOR:MINOR"),
        ("/dev/char/4096:0", "r", "device number out of range"),
        ("/dev/block/8:1048576", "r", "device number out of range"),
        ("char-4096", "r", "major 4096 out of range"),
        ("char-nosuch", "r", "no character device 'nosuch' in /proc/devices"),
        ("block-pts", "r", "no block device 'pts' in /proc/devices"),
        ("/dev/null", "rwx", "access 'rwx' is not a combination of r, w and m"),
        # systemd 252 ignores anything but /dev/, char- and block- when it builds the filter
        ("/run/systemd/inaccessible/chr", "r", "not a /dev/ node, char-* or block-* pattern"),
    ],
)
def test_entries_that_allow_nothing(path, access, why):
    assert isinstance(found := entry_rules(path, access, RESOLVER), str)
    assert why in found


def test_auto_without_entries_is_no_filter():
    assert device_rules({}) == (None, [])
    assert rules({"DevicePolicy": "auto"}) is None
    assert rules({"DevicePolicy": "auto", "DeviceAllow": []}) is None


def test_closed_allows_the_pseudo_devices_and_auto_with_entries_is_closed():
    assert rules({"DevicePolicy": "closed"}) == CLOSED
    extra = [("/dev/nvidia0", "rw")]
    assert rules({"DevicePolicy": "closed", "DeviceAllow": extra}) == [
        *CLOSED,
        Rule("c", 195, 0, "rw"),
    ]
    assert rules({"DeviceAllow": extra}) == [*CLOSED, Rule("c", 195, 0, "rw")]


def test_strict_allows_only_the_entries():
    assert rules({"DevicePolicy": "strict"}) == []  # a filter that denies everything
    found, notes = device_rules(
        {
            "DevicePolicy": "strict",
            "DeviceAllow": [("/dev/null", "rw"), ("/dev/gone", "r"), ("/dev/char/1:3", "rw")],
        },
        RESOLVER,
    )
    assert found == [Rule("c", 1, 3, "rw")]  # the duplicate dropped
    assert notes == ["DeviceAllow: /dev/gone r ignored: /dev/gone is not a device node here"]


# what runc 1.1.5 sends for runc spec's default devices (tests/e2e/test_clients_runc.py)
RUNC = [
    ("char-pts", "rwm"),
    ("/dev/char/10:200", "rwm"),
    ("/dev/char/5:2", "rwm"),
    ("/dev/char/5:0", "rwm"),
    ("/dev/char/1:9", "rwm"),
    ("/dev/char/1:8", "rwm"),
    ("/dev/char/1:7", "rwm"),
    ("/dev/char/1:5", "rwm"),
    ("/dev/char/1:3", "rwm"),
    ("char-*", "m"),
    ("block-*", "m"),
]


# -- what the programs mean ------------------------------------------------------------------


class VerifierError(Exception):
    pass


def decode(code: bytes) -> list[Insn]:
    out = []
    for i in range(0, len(code), 8):
        op, regs, off, imm = struct.unpack_from("<BBhi", code, i)
        out.append(Insn(op, regs & 0xF, regs >> 4, off, imm))
    return out


def verify(program: list[Insn]) -> None:
    """What the kernel's verifier checks that this compiler could get wrong: jumps inside the
    program, no unreachable instruction, no fall off the end, registers written before they
    are read, R0 set at every exit, the context only read at its three u32 fields."""
    n = len(program)
    seen: set[int] = set()
    todo = [(0, frozenset({1, 10}), True)]  # R1: the context, R10: the frame pointer
    visited: set[tuple[int, frozenset[int], bool]] = set()
    while todo:
        state = todo.pop()
        if state in visited:
            continue
        visited.add(state)
        pc, init, ctx = state
        if not 0 <= pc < n:
            raise VerifierError(f"jump out of range to {pc}")
        seen.add(pc)
        i = program[pc]
        if i.code == 0x95:
            if 0 not in init:
                raise VerifierError(f"R0 !read_ok at exit {pc}")
            continue
        if i.code == 0x61:
            if i.src != 1 or not ctx or i.off not in (0, 4, 8):
                raise VerifierError(f"invalid context access at {pc}")
            todo.append((pc + 1, init | {i.dst}, ctx and i.dst != 1))
        elif i.code in (0x54, 0x74):
            if i.dst not in init:
                raise VerifierError(f"R{i.dst} !read_ok at {pc}")
            todo.append((pc + 1, init, ctx and i.dst != 1))
        elif i.code in (0xBC, 0xB7):
            if i.code == 0xBC and i.src not in init:
                raise VerifierError(f"R{i.src} !read_ok at {pc}")
            todo.append((pc + 1, init | {i.dst}, ctx and i.dst != 1))
        elif i.code in (0x5D, 0x55):
            if i.dst not in init or (i.code == 0x5D and i.src not in init):
                raise VerifierError(f"uninitialised register compared at {pc}")
            todo += [(pc + 1, init, ctx), (pc + 1 + i.off, init, ctx)]
        elif i.code == 0x05:
            todo.append((pc + 1 + i.off, init, ctx))
        else:
            raise VerifierError(f"unexpected opcode {i.code:#x} at {pc}")
    if seen != set(range(n)):
        raise VerifierError(f"unreachable insn {min(set(range(n)) - seen)}")


def run(program: list[Insn], kind: int, access: int, major: int, minor: int) -> int:
    """Execute PROGRAM on one struct bpf_cgroup_dev_ctx (64-bit registers, as the kernel)."""
    mask = (1 << 64) - 1
    ctx = struct.pack("<III", access << 16 | kind, major, minor)
    reg = [0] * 11
    pc = 0
    for _ in range(10_000):
        i = program[pc]
        pc += 1
        if i.code == 0x61:
            reg[i.dst] = struct.unpack_from("<I", ctx, i.off)[0]
        elif i.code == 0x54:
            reg[i.dst] = reg[i.dst] & i.imm & 0xFFFFFFFF
        elif i.code == 0x74:
            reg[i.dst] = (reg[i.dst] & 0xFFFFFFFF) >> i.imm
        elif i.code == 0xBC:
            reg[i.dst] = reg[i.src] & 0xFFFFFFFF
        elif i.code == 0xB7:
            reg[i.dst] = i.imm & mask
        elif i.code == 0x5D:
            pc += i.off if reg[i.dst] != reg[i.src] else 0
        elif i.code == 0x55:
            pc += i.off if reg[i.dst] != i.imm & mask else 0
        elif i.code == 0x05:
            pc += i.off
        elif i.code == 0x95:
            return reg[0]
        else:
            raise AssertionError(f"opcode {i.code:#x}")
    raise AssertionError("no exit")


R, W, M = bpfdev.BPF_DEVCG_ACC_READ, bpfdev.BPF_DEVCG_ACC_WRITE, bpfdev.BPF_DEVCG_ACC_MKNOD
C, B = bpfdev.BPF_DEVCG_DEV_CHAR, bpfdev.BPF_DEVCG_DEV_BLOCK


def allowed(settings: dict[str, object], kind: int, access: int, major: int, minor: int) -> bool:
    found = rules(settings)
    if found is None:
        return True
    program = decode(assemble(compile_rules(found), "little"))
    verify(program)
    return run(program, kind, access, major, minor) == 1


def test_closed_with_dev_null_rw():
    s = {"DevicePolicy": "closed", "DeviceAllow": [("/dev/null", "rw")]}
    assert allowed(s, C, R, 1, 3) and allowed(s, C, R | W, 1, 3) and allowed(s, C, M, 1, 3)
    assert allowed(s, C, R, 1, 5)  # /dev/zero, one of closed's
    assert allowed(s, C, R | W, 136, 7)  # /dev/pts/7
    assert not allowed(s, C, M, 136, 7)  # pts: read/write only
    assert not allowed(s, C, R, 10, 237)  # /dev/loop-control
    assert not allowed(s, B, R, 1, 3)  # a block device with /dev/null's numbers
    assert not allowed(s, C, R, 1, 1)  # /dev/mem


def test_strict_and_runc_defaults():
    strict = {"DevicePolicy": "strict", "DeviceAllow": [("/dev/null", "r")]}
    assert allowed(strict, C, R, 1, 3)
    assert not allowed(strict, C, W, 1, 3) and not allowed(strict, C, R | W, 1, 3)
    assert not allowed(strict, C, R, 1, 5)  # strict: no pseudo devices
    runc = {"DevicePolicy": "strict", "DeviceAllow": RUNC}
    assert allowed(runc, C, R | W, 10, 200)  # /dev/net/tun
    assert allowed(runc, C, M, 4095, 1) and allowed(runc, B, M, 8, 0)  # "c *:* m", "b *:* m"
    assert not allowed(runc, B, R, 8, 0) and not allowed(runc, C, R, 4, 1)
    assert allowed(runc, C, R | W, 136, 0)
    assert allowed({"DevicePolicy": "strict", "DeviceAllow": []}, C, R, 1, 3) is False
    assert allowed({}, B, R | W | M, 8, 0)  # no filter


rule_strategy = st.builds(
    Rule,
    st.sampled_from(["c", "b"]),
    st.one_of(st.none(), st.integers(0, 5), st.integers(0, 4095)),
    st.one_of(st.none(), st.integers(0, 5), st.integers(0, (1 << 20) - 1)),
    st.sampled_from(["r", "w", "m", "rw", "rm", "wm", "rwm"]),
)


@given(
    st.lists(rule_strategy, max_size=12),
    st.sampled_from([C, B]),
    st.sampled_from([R, W, M, R | W, R | W | M]),
    st.one_of(st.integers(0, 5), st.integers(0, 4095)),
    st.one_of(st.integers(0, 5), st.integers(0, (1 << 20) - 1)),
)
def test_the_program_means_the_rules(found, kind, access, major, minor):
    program = decode(assemble(compile_rules(found), "little"))
    assert program == compile_rules(found)  # the encoding round-trips
    verify(program)

    def matches(r: Rule) -> bool:
        return (
            bpfdev.DEVICE_TYPES[r.kind or "c"] == kind
            and r.major in (None, major)
            and r.minor in (None, minor)
            and access & ~bpfdev.access_mask(r.access) == 0
        )

    assert run(program, kind, access, major, minor) == int(any(map(matches, found)))


# -- attach, replace, detach (a fake bpf(2)) ---------------------------------------------------


class FakeKernel:
    """bpf(2) as far as DeviceFilters uses it: programs by id, fds, attachments per cgroup
    directory (by inode), BPF_F_REPLACE and detach semantics as kernel/bpf/cgroup.c has them."""

    def __init__(self) -> None:
        self.programs: dict[int, tuple[bytes, str]] = {}
        self.fds: dict[int, int] = {}  # fd -> program id
        self.attached: dict[int, list[int]] = {}  # directory inode -> program ids
        self.calls: list[str] = []
        self.fail: dict[str, int] = {}  # command -> errno, once
        self._fd, self._id = 100, 0

    def _maybe_fail(self, command: str) -> None:
        self.calls.append(command)
        err = self.fail.pop(command, None)
        if err is not None:
            raise BpfError(f"bpf({command}): {os.strerror(err)}", err)

    def _new(self, code: bytes, name: str) -> int:
        self._id += 1
        self.programs[self._id] = (code, name)
        return self._id

    def _open(self, prog_id: int) -> int:
        self._fd += 1
        self.fds[self._fd] = prog_id
        return self._fd

    def on(self, directory: Path) -> list[int]:
        return self.attached.setdefault(directory.stat().st_ino, [])

    def prog_load(self, code: bytes, name: str) -> int:
        self._maybe_fail("load")
        return self._open(self._new(code, name))

    def prog_attach(self, target_fd: int, prog_fd: int, flags: int, replace_fd: int = 0) -> None:
        self._maybe_fail("attach")
        assert flags & BPF_F_ALLOW_MULTI
        progs = self.attached.setdefault(os.fstat(target_fd).st_ino, [])
        prog = self.fds[prog_fd]
        if prog in progs:
            raise BpfError("attached twice", errno.EINVAL)
        if flags & BPF_F_REPLACE:
            old = self.fds[replace_fd]
            if old not in progs:
                raise BpfError("bpf(BPF_PROG_ATTACH): No such file or directory", errno.ENOENT)
            progs[progs.index(old)] = prog
        else:
            progs.append(prog)

    def prog_detach(self, target_fd: int, prog_fd: int) -> None:
        self._maybe_fail("detach")
        progs = self.attached.setdefault(os.fstat(target_fd).st_ino, [])
        if self.fds[prog_fd] not in progs:
            raise BpfError("bpf(BPF_PROG_DETACH): No such file or directory", errno.ENOENT)
        progs.remove(self.fds[prog_fd])

    def prog_query(self, target_fd: int) -> list[int]:
        self._maybe_fail("query")
        return list(self.attached.get(os.fstat(target_fd).st_ino, []))

    def prog_fd_by_id(self, prog_id: int) -> int:
        self._maybe_fail("fd_by_id")
        if prog_id not in self.programs:
            raise BpfError("gone", errno.ENOENT)
        return self._open(prog_id)

    def prog_info(self, prog_fd: int) -> ProgramInfo:
        prog_id = self.fds[prog_fd]
        return ProgramInfo(BPF_PROG_TYPE_CGROUP_DEVICE, prog_id, self.programs[prog_id][1])

    def close(self, fd: int) -> None:
        del self.fds[fd]

    def code(self, prog_id: int) -> bytes:
        return self.programs[prog_id][0]


CLOSED_NULL = {"DevicePolicy": "closed", "DeviceAllow": [("/dev/null", "rw")]}
STRICT_NULL = {"DevicePolicy": "strict", "DeviceAllow": [("/dev/null", "rw")]}


def code_of(settings: dict[str, object]) -> bytes:
    found = rules(settings)
    assert found is not None
    return assemble(compile_rules(found))


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    d = tmp_path / "u.scope"
    d.mkdir()
    return d


def test_attach_once_replace_on_change_detach_when_unset(unit):
    k = FakeKernel()
    f = DeviceFilters(k, RESOLVER)
    assert f.apply("/u.scope", unit, {"CPUWeight": 10}) == []
    assert k.calls == []  # no device settings, nothing asked of the kernel
    assert f.apply("/u.scope", unit, CLOSED_NULL) == []
    assert k.calls == ["query", "load", "attach"]  # first: is one of ours there already?
    (first,) = k.on(unit)
    assert k.code(first) == code_of(CLOSED_NULL) and k.programs[first][1] == PROGRAM_NAME
    assert list(k.fds.values()) == [first] and f.programs("/u.scope") == list(k.fds)
    assert f.apply("/u.scope", unit, {**CLOSED_NULL, "CPUWeight": 10}) == []
    assert len(k.calls) == 3  # the same program: left as it is
    f.apply("/u.scope", unit, STRICT_NULL)
    assert k.calls[3:] == ["load", "attach"]  # one attach with BPF_F_REPLACE
    (second,) = k.on(unit)
    assert second != first and k.code(second) == code_of(STRICT_NULL)
    assert list(k.fds.values()) == [second]  # the old fd closed
    f.apply("/u.scope", unit, {"DevicePolicy": "auto"})
    assert k.calls[5:] == ["detach"] and k.on(unit) == [] and k.fds == {}
    assert f.programs("/u.scope") == []


def test_a_filter_replaced_by_someone_else_is_attached_beside_theirs(unit):
    """runc attaches its own filter in place of the manager's; a later change attaches ours
    again (BPF_F_REPLACE finds nothing: ENOENT) and leaves theirs, as systemd does."""
    k = FakeKernel()
    f = DeviceFilters(k, RESOLVER)
    f.apply("/u.scope", unit, CLOSED_NULL)
    theirs = k._new(b"runc", "")
    k.on(unit)[:] = [theirs]
    assert f.apply("/u.scope", unit, STRICT_NULL) == []
    assert k.calls[3:] == ["load", "attach", "attach", "detach"]
    assert k.on(unit)[0] == theirs and len(k.on(unit)) == 2
    assert k.code(k.on(unit)[1]) == code_of(STRICT_NULL) and len(k.fds) == 1


def test_a_kernel_without_bpf_f_replace(unit):
    k = FakeKernel()
    f = DeviceFilters(k, RESOLVER)
    f.apply("/u.scope", unit, CLOSED_NULL)
    k.fail["attach"] = errno.EINVAL  # before Linux 5.6
    assert f.apply("/u.scope", unit, STRICT_NULL) == []
    assert k.calls[3:] == ["load", "attach", "attach", "detach"]
    assert [k.code(p) for p in k.on(unit)] == [code_of(STRICT_NULL)] and len(k.fds) == 1


@pytest.mark.parametrize("command", ["load", "attach"])
def test_a_failure_keeps_the_whole_previous_filter(unit, command):
    k = FakeKernel()
    f = DeviceFilters(k, RESOLVER)
    f.apply("/u.scope", unit, CLOSED_NULL)
    before = list(k.on(unit))
    k.fail[command] = errno.EPERM
    notes = f.apply("/u.scope", unit, STRICT_NULL)
    assert len(notes) == 1 and "the previous filter stays" in notes[0], notes
    assert "Operation not permitted" in notes[0]
    assert k.on(unit) == before and list(k.fds.values()) == before  # nothing leaked
    # the next change tries again
    assert f.apply("/u.scope", unit, STRICT_NULL) == []
    assert [k.code(p) for p in k.on(unit)] == [code_of(STRICT_NULL)]


def test_a_failure_on_a_new_unit_leaves_no_filter(unit):
    k = FakeKernel()
    f = DeviceFilters(k, RESOLVER)
    k.fail["attach"] = errno.EBADF
    (note,) = f.apply("/u.scope", unit, CLOSED_NULL)
    assert note.startswith("device filter not attached (no filter): ")
    assert k.on(unit) == [] and k.fds == {} and f.programs("/u.scope") == []


def test_an_old_filter_that_will_not_detach_is_kept_and_retried(unit):
    k = FakeKernel()
    f = DeviceFilters(k, RESOLVER)
    f.apply("/u.scope", unit, CLOSED_NULL)
    k.fail["detach"] = errno.EPERM
    assert f.apply("/u.scope", unit, {}) == [
        "old device filter not detached: bpf(detach): Operation not permitted"
    ]
    assert len(k.on(unit)) == 1 and len(f.programs("/u.scope")) == 1
    assert f.apply("/u.scope", unit, {}) == [] and k.on(unit) == [] and k.fds == {}


def test_a_restarted_daemon_adopts_its_programs_by_name(unit):
    k = FakeKernel()
    ours = k._new(code_of(CLOSED_NULL), PROGRAM_NAME)  # attached by the previous run
    theirs = k._new(b"other", "other_filter")
    k.on(unit)[:] = [theirs, ours]
    f = DeviceFilters(k, RESOLVER)
    assert f.apply("/u.scope", unit, STRICT_NULL) == []
    assert k.calls == ["query", "fd_by_id", "fd_by_id", "load", "attach"]
    assert k.on(unit)[0] == theirs and k.code(k.on(unit)[1]) == code_of(STRICT_NULL)
    assert len(k.fds) == 1  # the foreign program's fd closed again, ours replaced
    # and a unit going back to no filter detaches an adopted program too
    k2 = FakeKernel()
    k2.on(unit)[:] = [k2._new(b"old", PROGRAM_NAME)]
    f2 = DeviceFilters(k2, RESOLVER)
    assert f2.apply("/u.scope", unit, {"DevicePolicy": "auto"}) == []
    assert k2.on(unit) == [] and k2.fds == {}


def test_forget_and_close(unit, tmp_path):
    k = FakeKernel()
    f = DeviceFilters(k, RESOLVER)
    sub = unit / "sub"
    sub.mkdir()
    f.apply("/u.scope", unit, CLOSED_NULL)
    f.apply("/u.scope/sub", sub, STRICT_NULL)
    f.apply("/u.scope-other", unit, STRICT_NULL)  # a prefix that is not a parent
    assert len(k.fds) == 3
    sub.rmdir()
    f.forget("/u.scope", lambda p: (tmp_path / p.lstrip("/")).is_dir())
    assert len(k.fds) == 2  # the removed cgroup's fd; the one still there keeps its filter
    unit.rmdir()
    f.forget("/u.scope", lambda p: (tmp_path / p.lstrip("/")).is_dir())
    assert len(k.fds) == 1 and f.programs("/u.scope-other")
    f.close()
    assert k.fds == {} and f.programs("/u.scope-other") == []


def test_a_missing_directory_is_a_note(tmp_path):
    f = DeviceFilters(FakeKernel(), RESOLVER)
    (note,) = f.apply("/gone.scope", tmp_path / "gone.scope", CLOSED_NULL)
    assert note.endswith("gone.scope: No such file or directory")


# -- the cgroup2 backend ---------------------------------------------------------------------


def test_cgroup2_without_a_cgroup2_mount_does_not_offer_devices(tmp_path):
    b = Cgroup2Backend(tmp_path)  # a plain directory: no bpf(2) is tried
    assert Capability.DEVICES not in b.capabilities
    b.create("/u.scope")
    assert b.apply_resources("/u.scope", {"DevicePolicy": "auto"}) == []
    assert b.apply_resources("/u.scope", CLOSED_NULL) == [
        "DevicePolicy=/DeviceAllow= not enforced: no BPF device filter on this machine"
    ]


def test_cgroup2_applies_removes_and_closes_filters(tmp_path):
    k = FakeKernel()
    (tmp_path / "cgroup.controllers").write_text("memory\n")
    b = Cgroup2Backend(tmp_path)
    b._devices = DeviceFilters(k, RESOLVER)
    b.create("/s.slice/u.scope")
    b.create("/s.slice/v.scope")
    d = tmp_path / "s.slice/u.scope"
    assert b.apply_resources("/s.slice/u.scope", {"MemoryMax": 4096, **CLOSED_NULL}) == []
    assert (d / "memory.max").read_text() == "4096\n"  # the other settings as before
    assert [k.code(p) for p in k.on(d)] == [code_of(CLOSED_NULL)]
    b.apply_resources("/s.slice/v.scope", STRICT_NULL)
    (d / "cgroup.procs").write_text("4242\n")
    with pytest.raises(bpfdev.BackendError):
        b.remove("/s.slice/u.scope")  # populated: the filter stays
    assert len(k.fds) == 2
    for f in ("cgroup.procs", "memory.max"):  # files a real cgroupfs makes go by itself
        (d / f).unlink()
    b.remove("/s.slice/u.scope")
    assert len(k.fds) == 1  # rmdir detached it (the kernel does); our fd is closed
    b.close()
    assert k.fds == {}


def test_out_of_range_numbers_from_stat_are_notes():
    huge = Resolver(lambda p: (5000, 1) if p == "/dev/odd" else None, BLOCK.get, majors)
    assert entry_rules("/dev/odd", "r", huge) == "/dev/odd: device number out of range"


class RefusingKernel:
    def __init__(self) -> None:
        raise BpfError("bpf(BPF_PROG_LOAD): Operation not permitted", errno.EPERM)


@pytest.mark.parametrize("works", [True, False])
def test_devices_is_offered_on_a_cgroup2_mount_when_the_probe_loads(tmp_path, monkeypatch, works):
    """DevicePolicy=/DeviceAllow= are accepted on cgroup2 only where a program loads; where
    bpf(2) is refused the manager keeps answering PropertyReadOnly."""
    from types import SimpleNamespace

    from compat import errors
    from compat.properties import parse_assignments
    from compat.unitname import UnitType
    from shim.core.manager import Manager

    monkeypatch.setattr("backends.cgroup2._mount_root_of", lambda _root: "/")
    monkeypatch.setattr(bpfdev, "_probed", None)
    fake = FakeKernel()
    fake.number = 321
    monkeypatch.setattr(bpfdev, "Kernel", (lambda: fake) if works else RefusingKernel)
    b = Cgroup2Backend(tmp_path)
    assert (Capability.DEVICES in b.capabilities) is works
    if works:
        assert bpfdev.probe() == (fake, "")
        assert fake.calls == ["load"] and fake.fds == {}  # the trivial program, closed again
    else:
        assert bpfdev.probe() == (None, "bpf(BPF_PROG_LOAD): Operation not permitted")
    assignments = parse_assignments(
        UnitType.SCOPE, [("DevicePolicy", "s", "closed")], transient=True
    )
    check = Manager._check_backend_support
    if works:
        check(SimpleNamespace(backend=b, instance=SimpleNamespace(user=False)), assignments)
    else:
        with pytest.raises(errors.PropertyReadOnly, match="Cannot set property DevicePolicy"):
            check(SimpleNamespace(backend=b, instance=SimpleNamespace(user=False)), assignments)
