"""Unit names as strings: validity, templates and instances, escaping, slices, cgroup paths."""

from __future__ import annotations

import enum
import re

# systemd.unit(5): "The total length of the unit name [...] must not exceed 255 characters"
UNIT_NAME_MAX = 255

# systemd.slice(5): "The root slice is named -.slice"
ROOT_SLICE = "-.slice"


class UnitType(enum.StrEnum):
    """Unit types; the value is the name suffix without its dot."""

    # systemd.unit(5): "The unit type suffix must be one of ".service", ".socket", [...] ".scope"
    SERVICE = "service"
    MOUNT = "mount"
    SWAP = "swap"
    SOCKET = "socket"
    TARGET = "target"
    DEVICE = "device"
    AUTOMOUNT = "automount"
    TIMER = "timer"
    PATH = "path"
    SLICE = "slice"
    SCOPE = "scope"


_TYPES: dict[str, UnitType] = {t.value: t for t in UnitType}

# systemd.unit(5): "valid characters (ASCII letters, digits, ":", "-", "_", ".", and "\")"
_PREFIX_RE = re.compile(r"[A-Za-z0-9:_.\\-]+")
# The instance runs from the first "@" to the type suffix and may itself contain "@".
_INSTANCE_RE = re.compile(r"[A-Za-z0-9:_.\\@-]+")

# systemd.unit(5): escaping keeps "ASCII alphanumerics, ":", "_" or ".""; everything else is "\xNN"
_SAFE_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789:_.")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")

# cgroupfs files that live next to child cgroups (cgroup v1 and v2). Only real kernel controllers
# are listed: a child named "<controller>.<anything>" could clash with that controller's files.
_CG_RESERVED = frozenset({"notify_on_release", "release_agent", "tasks"})
_CG_CONTROLLERS = (
    "cpu",
    "cpuacct",
    "cpuset",
    "io",
    "blkio",
    "memory",
    "devices",
    "pids",
    "freezer",
    "net_cls",
    "net_prio",
    "perf_event",
    "hugetlb",
    "rdma",
    "misc",
)
_CG_RESERVED_PREFIXES = ("_", ".", "cgroup.", *(c + "." for c in _CG_CONTROLLERS))


class _Kind(enum.Enum):
    PLAIN = enum.auto()  # foo.service
    TEMPLATE = enum.auto()  # foo@.service
    INSTANCE = enum.auto()  # foo@bar.service


def _classify(name: str) -> _Kind | None:
    """The kind of a valid unit name, or None if the name is not valid."""
    if not name or len(name) > UNIT_NAME_MAX:
        return None
    prefix, dot, suffix = name.rpartition(".")
    if not dot or not prefix or suffix not in _TYPES:
        return None
    head, at, instance = prefix.partition("@")
    # An empty head (an "@" at position 0) fails the match too.
    if _PREFIX_RE.fullmatch(head) is None:
        return None
    if not at:
        return _Kind.PLAIN
    # systemd.unit(5): "A template unit must have a single "@" at the end of the unit name prefix"
    if not instance:
        return _Kind.TEMPLATE
    if _INSTANCE_RE.fullmatch(instance) is None:
        return None
    return _Kind.INSTANCE


def _classify_or_raise(name: str) -> _Kind:
    kind = _classify(name)
    if kind is None:
        raise ValueError(f"invalid unit name: {name!r}")
    return kind


def unit_type(name: str) -> UnitType | None:
    """The type named by the suffix after the last dot; None if there is no known suffix."""
    _, dot, suffix = name.rpartition(".")
    return _TYPES.get(suffix) if dot else None


def is_valid(
    name: str, *, plain: bool = True, instance: bool = True, template: bool = True
) -> bool:
    """Whether `name` is a valid unit name whose kind is among the allowed ones."""
    kind = _classify(name)
    if kind is _Kind.PLAIN:
        return plain
    if kind is _Kind.INSTANCE:
        return instance
    if kind is _Kind.TEMPLATE:
        return template
    return False


def is_template(name: str) -> bool:
    """Whether `name` is a valid template name such as "foo@.service"."""
    return _classify(name) is _Kind.TEMPLATE


def is_instance(name: str) -> bool:
    """Whether `name` is a valid instance name such as "foo@bar.service"."""
    return _classify(name) is _Kind.INSTANCE


def prefix_of(name: str) -> str:
    """The part before the first "@", or before the suffix; ValueError if the name is invalid."""
    _classify_or_raise(name)
    return name.rpartition(".")[0].partition("@")[0]


def instance_of(name: str) -> str | None:
    """The instance of "foo@bar.service" ("bar"); None for plain and template names.

    Raises ValueError if the name is invalid.
    """
    if _classify_or_raise(name) is not _Kind.INSTANCE:
        return None
    return name.rpartition(".")[0].partition("@")[2]


def template_of(name: str) -> str:
    """The template an instance comes from: "foo@bar.service" -> "foo@.service".

    Raises ValueError unless `name` is a valid instance name.
    """
    if _classify(name) is not _Kind.INSTANCE:
        raise ValueError(f"not an instance unit name: {name!r}")
    prefix, _, suffix = name.rpartition(".")
    return f"{prefix.partition('@')[0]}@.{suffix}"


def instantiate(template: str, instance: str) -> str:
    """Instantiate a template: ("foo@.service", "bar") -> "foo@bar.service"; no escaping.

    Raises ValueError if `template` is not a template or the result is not a valid instance name.
    """
    if _classify(template) is not _Kind.TEMPLATE:
        raise ValueError(f"not a template unit name: {template!r}")
    head, _, suffix = template.rpartition(".")
    name = f"{head}{instance}.{suffix}"
    if _classify(name) is not _Kind.INSTANCE:
        raise ValueError(f"invalid instance {instance!r} for template {template!r}")
    return name


def escape(s: str) -> str:
    """Escape a string for use in a unit name, like `systemd-escape STRING`.

    Text is encoded as UTF-8 (with surrogateescape, so os.fsdecode()d bytes round-trip).
    Raises ValueError on NUL, or on a lone surrogate that surrogateescape cannot encode.
    """
    # systemd.unit(5): escaping maps "strings containing arbitrary byte values (except NUL)"
    if "\0" in s:
        raise ValueError("cannot escape a string containing NUL")
    out: list[str] = []
    for i, byte in enumerate(s.encode("utf-8", "surrogateescape")):
        if byte == 0x2F:
            # systemd.unit(5): "any "/" character is replaced by "-""
            out.append("-")
        # systemd.unit(5): "." is escaped "when it would appear as the first character"
        elif byte in _SAFE_BYTES and not (i == 0 and byte == 0x2E):
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)


def unescape(s: str) -> str:
    """Undo escape(), like `systemd-escape --unescape`: "-" -> "/", "\\xNN" -> byte.

    Hex digits may be upper or lower case; other characters pass through unchanged. Bytes that
    are not valid UTF-8 decode with surrogateescape. Raises ValueError on a backslash that does
    not start "\\x" plus two hex digits, and on "\\x00" (the binary would silently truncate).
    """
    out = bytearray()
    i = 0
    while i < len(s):
        c = s[i]
        if c == "-":
            out += b"/"
            i += 1
        elif c == "\\":
            digits = s[i + 2 : i + 4]
            if s[i + 1 : i + 2] != "x" or len(digits) != 2 or not _HEX_DIGITS.issuperset(digits):
                raise ValueError(f"malformed escape at offset {i} in {s!r}")
            byte = int(digits, 16)
            if byte == 0:
                raise ValueError(f"escaped NUL at offset {i} in {s!r}")
            out.append(byte)
            i += 4
        else:
            out += c.encode("utf-8", "surrogateescape")
            i += 1
    return out.decode("utf-8", "surrogateescape")


def escape_path(path: str) -> str:
    """Escape a file system path, like `systemd-escape --path PATH`.

    Empty and "." components are dropped (so leading, trailing and repeated "/" vanish) and the
    root maps to "-". Like the binary, a relative path is escaped as if it were absolute, and the
    empty string gives "-". Raises ValueError for a ".." component and for a relative path that
    names no component at all ("." or "./"), which the binary refuses too.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"path is not normalized: {path!r}")
    if not parts:
        if path and not path.startswith("/"):
            raise ValueError(f"not a path: {path!r}")
        # systemd.unit(5): "the path to the root directory "/" is encoded as single dash "-""
        return "-"
    # systemd.unit(5): "any leading, trailing or duplicate "/" characters are removed"
    return escape("/".join(parts))


def unescape_path(s: str) -> str:
    """Undo escape_path(), like `systemd-escape --unescape --path`: "-" -> "/", "a-b" -> "/a/b".

    Raises ValueError unless the result is a normalized absolute path (no empty, "." or ".."
    components), as the binary does.
    """
    if s == "-":
        return "/"
    path = "/" + unescape(s)
    if any(p in ("", ".", "..") for p in path[1:].split("/")):
        raise ValueError(f"{s!r} does not unescape to a normalized absolute path")
    return path


def cg_escape(component: str) -> str:
    """The cgroup directory name for a unit name: "_" prepended when it could clash with cgroupfs.

    A leading "_" is always escaped, so cg_unescape() is exact.
    """
    # systemd CGROUP_DELEGATION.md: "prefixing names that might collide [...] with an underscore"
    if component in _CG_RESERVED or component.startswith(_CG_RESERVED_PREFIXES):
        return "_" + component
    return component


def cg_unescape(s: str) -> str:
    """Undo cg_escape(): strip one leading "_"."""
    return s[1:] if s.startswith("_") else s


def is_valid_slice_name(name: str) -> bool:
    """Whether `name` names a slice: "-.slice", or a plain "a-b-c.slice" with no empty part."""
    if name == ROOT_SLICE:
        return True
    # systemd.slice(5): "Note that slice units cannot be templated"
    if unit_type(name) is not UnitType.SLICE or not is_valid(name, instance=False, template=False):
        return False
    # systemd.slice(5): "The name consists of a dash-separated series of names"
    prefix = name.rpartition(".")[0]
    return not (prefix.startswith("-") or prefix.endswith("-") or "--" in prefix)


def _slice_parts(name: str) -> list[str]:
    """The dash-separated parts of a slice name ([] for the root); ValueError if invalid."""
    if not is_valid_slice_name(name):
        raise ValueError(f"invalid slice name: {name!r}")
    if name == ROOT_SLICE:
        return []
    return name.rpartition(".")[0].split("-")


def slice_parent(name: str) -> str | None:
    """The slice containing slice `name`: "a-b.slice" -> "a.slice" -> "-.slice" -> None."""
    # systemd.slice(5): "foo-bar.slice is a slice that is located within foo.slice"
    parts = _slice_parts(name)
    if not parts:
        return None
    if len(parts) == 1:
        return ROOT_SLICE
    return "-".join(parts[:-1]) + ".slice"


def slice_ancestors(name: str) -> list[str]:
    """The slices from below the root down to `name` itself: "a-b.slice" -> [a, a-b]."""
    parts = _slice_parts(name)
    return ["-".join(parts[: i + 1]) + ".slice" for i in range(len(parts))]


def slice_path(name: str) -> str:
    """The cgroup of a slice: "a-b.slice" -> "/a.slice/a-b.slice"; "-.slice" -> "/"."""
    # systemd CGROUP_DELEGATION.md: "foo-bar-baz.slice maps to [...] /foo.slice/foo-bar.slice/"
    return "/" + "/".join(cg_escape(s) for s in slice_ancestors(name))


def cgroup_path(unit: str, slice_name: str | None) -> str:
    """A unit's ControlGroup: a slice's own path, else its slice's path plus the unit's name.

    `slice_name` is ignored for slice units (their parent follows from the name) and defaults to
    "-.slice" otherwise. Raises ValueError for an invalid unit name or slice name.
    """
    if unit_type(unit) is UnitType.SLICE:
        return slice_path(unit)
    if not is_valid(unit, template=False):
        raise ValueError(f"invalid unit name: {unit!r}")
    # systemd CGROUP_DELEGATION.md: "quux.service [...] maps to the cgroup [...]/quux.service/"
    parent = slice_path(slice_name or ROOT_SLICE)
    return parent.rstrip("/") + "/" + cg_escape(unit)


# the descriptions systemd's own slice units carry (units/*.slice, user-.slice.d/10-defaults.conf)
_SLICE_DESCRIPTIONS = {
    ROOT_SLICE: "Root Slice",
    "system.slice": "System Slice",
    "user.slice": "User and Session Slice",
    "machine.slice": "Virtual Machine and Container Slice",
}


def slice_description(name: str) -> str:
    """The Description= of a slice loaded without a unit file: the well-known ones', "User
    Slice of UID N" for user-N.slice, else "Slice /a/b" for a-b.slice (systemd 252's
    slice_set_default_description(), observed as "Slice /clients")."""
    if name in _SLICE_DESCRIPTIONS:
        return _SLICE_DESCRIPTIONS[name]
    prefix = name.removesuffix(".slice")
    if prefix.startswith("user-") and prefix[5:].isdigit():
        return f"User Slice of UID {prefix[5:]}"
    return "Slice /" + "/".join(unescape(p) for p in prefix.split("-"))
