"""D-Bus object paths of systemd1: the manager, units (sd-bus label escaping) and jobs."""

from __future__ import annotations

import re

MANAGER_PATH = "/org/freedesktop/systemd1"
UNIT_PATH_PREFIX = "/org/freedesktop/systemd1/unit/"
JOB_PATH_PREFIX = "/org/freedesktop/systemd1/job/"

UINT32_MAX = 2**32 - 1

_LETTERS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_DIGITS = frozenset(b"0123456789")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_JOB_ID_RE = re.compile(r"[1-9][0-9]{0,9}")
_ESCAPED = tuple(chr(b) if b in _LETTERS or b in _DIGITS else f"_{b:02x}" for b in range(256))


def label_escape(s: str) -> str:
    """Escape `s` into one valid object path element, as sd-bus does for unit paths.

    "" -> "_"; every byte (UTF-8, surrogateescape) that is not an ASCII letter, and a digit in
    first position, becomes "_" plus two lowercase hex digits. "-.slice" -> "_2d_2eslice".
    """
    # sd_bus_path_encode(3): the identifier "may be the empty string, and has no restrictions"
    if not s:
        return "_"
    data = s.encode("utf-8", "surrogateescape")
    # one table look-up per byte (this runs for every unit of every list a client asks for)
    head = f"_{data[0]:02x}" if data[0] in _DIGITS else _ESCAPED[data[0]]
    return head + "".join(map(_ESCAPED.__getitem__, data[1:]))


def label_unescape(s: str) -> str:
    """Undo label_escape(): "_" -> ""; "_xx" (two hex digits, either case) -> that byte.

    Lenient: a "_" not followed by two hex digits is kept literally, and so is any other
    character. Bytes that are not valid UTF-8 decode with surrogateescape, so this never raises
    and label_unescape(label_escape(s)) == s for every string label_escape() accepts.
    """
    if s == "_":
        return ""
    out = bytearray()
    i = 0
    while i < len(s):
        digits = s[i + 1 : i + 3]
        if s[i] == "_" and len(digits) == 2 and _HEX_DIGITS.issuperset(digits):
            out.append(int(digits, 16))
            i += 3
        else:
            out += s[i].encode("utf-8", "surrogateescape")
            i += 1
    return out.decode("utf-8", "surrogateescape")


def unit_path(name: str) -> str:
    """The object path of unit `name`: "foo.scope" -> ".../unit/foo_2escope"."""
    return UNIT_PATH_PREFIX + label_escape(name)


def unit_name_from_path(path: str) -> str | None:
    """The unit name a unit object path stands for; not checked for being a valid unit name.

    None if `path` is not one element below the unit prefix or the name would be empty.
    """
    if not path.startswith(UNIT_PATH_PREFIX):
        return None
    label = path[len(UNIT_PATH_PREFIX) :]
    if not label or "/" in label:
        return None
    return label_unescape(label) or None


def job_path(job_id: int) -> str:
    """The object path of job `job_id` (decimal); ValueError unless 1 <= job_id <= 2**32-1."""
    if isinstance(job_id, bool) or not 0 < job_id <= UINT32_MAX:
        raise ValueError(f"job id out of range: {job_id!r}")
    return f"{JOB_PATH_PREFIX}{job_id}"


def job_id_from_path(path: str) -> int | None:
    """The job id in a job object path; None unless a decimal u32 > 0, no sign, no leading 0."""
    if not path.startswith(JOB_PATH_PREFIX):
        return None
    tail = path[len(JOB_PATH_PREFIX) :]
    if _JOB_ID_RE.fullmatch(tail) is None:
        return None
    job_id = int(tail)
    return job_id if job_id <= UINT32_MAX else None
