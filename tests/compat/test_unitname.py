"""compat.unitname: validity, instances, systemd-escape (vs the binary), cgroups, slices."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compat import unitname
from compat.unitname import ROOT_SLICE, UNIT_NAME_MAX, UnitType

SYSTEMD_ESCAPE = shutil.which("systemd-escape")
needs_binary = pytest.mark.skipif(
    SYSTEMD_ESCAPE is None,
    reason="systemd-escape not installed: comparison with the real binary skipped",
)

NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:-_.\\"
SUFFIXES = [t.value for t in UnitType]

# Strings without NUL (argv cannot carry it) and without lone surrogates.
texts = st.text(st.characters(exclude_characters="\0", exclude_categories=("Cs",)), max_size=24)
# Biased towards the characters the escaping rules treat specially.
tricky_texts = st.text(st.sampled_from("/.-_:\\x@ a1\tü€😀"), max_size=16)
any_texts = st.one_of(texts, tricky_texts)

name_prefixes = st.text(st.sampled_from(NAME_CHARS), min_size=1, max_size=40)
instances = st.text(st.sampled_from(NAME_CHARS + "@"), min_size=1, max_size=40)
suffixes = st.sampled_from(SUFFIXES)


# ---------------------------------------------------------------- types and validity


def test_unit_type_values():
    assert [t.value for t in UnitType] == [
        "service",
        "mount",
        "swap",
        "socket",
        "target",
        "device",
        "automount",
        "timer",
        "path",
        "slice",
        "scope",
    ]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("foo.service", UnitType.SERVICE),
        ("session-c1.scope", UnitType.SCOPE),
        ("a.b.c.slice", UnitType.SLICE),
        ("-.mount", UnitType.MOUNT),
        ("foo@bar.socket", UnitType.SOCKET),
        (".automount", UnitType.AUTOMOUNT),  # unit_type() reads the suffix only
        ("foo", None),
        ("foo.", None),
        ("foo.Service", None),
        ("foo.services", None),
        ("foo.service.bak", None),
        ("", None),
    ],
)
def test_unit_type(name, expected):
    assert unitname.unit_type(name) is expected


VALID_PLAIN = [
    "foo.service",
    "a.b.service",
    "-.slice",
    "-.mount",
    "dev-sda1.device",
    "a:b_c-d\\x2e.mount",
    "HOSTMNT.mount",
    "x" * (UNIT_NAME_MAX - len(".service")) + ".service",
]
VALID_TEMPLATE = ["foo@.service", "user-runtime-dir@.service", "a.b@.timer"]
VALID_INSTANCE = [
    "foo@bar.service",
    "user@1000.service",
    "modprobe@drm.service",
    "foo@bar@baz.service",  # the instance may itself contain "@"
    "foo@a.b.service",  # the instance runs up to the last dot
    "foo@@.service",  # instance "@"
    "getty@tty1.service",
    "systemd-fsck@dev-disk-by\\x2duuid-1234.service",
]
INVALID = [
    "",
    "foo",
    ".service",
    "foo.",
    "foo.bar",
    "foo.Service",
    "@foo.service",
    "@.service",
    "foo bar.service",
    "foo/bar.service",
    "fü.service",
    "foo\n.service",
    "foo.service\n",
    "foo@bar baz.service",
    "foo@bar/baz.service",
    "foo*.service",
    "x" * (UNIT_NAME_MAX - len(".service") + 1) + ".service",
]


@pytest.mark.parametrize("name", VALID_PLAIN)
def test_valid_plain(name):
    assert unitname.is_valid(name)
    assert unitname.is_valid(name, instance=False, template=False)
    assert not unitname.is_valid(name, plain=False)
    assert not unitname.is_template(name)
    assert not unitname.is_instance(name)


@pytest.mark.parametrize("name", VALID_TEMPLATE)
def test_valid_template(name):
    assert unitname.is_valid(name)
    assert unitname.is_valid(name, plain=False, instance=False)
    assert not unitname.is_valid(name, template=False)
    assert unitname.is_template(name)
    assert not unitname.is_instance(name)


@pytest.mark.parametrize("name", VALID_INSTANCE)
def test_valid_instance(name):
    assert unitname.is_valid(name)
    assert unitname.is_valid(name, plain=False, template=False)
    assert not unitname.is_valid(name, instance=False)
    assert unitname.is_instance(name)
    assert not unitname.is_template(name)


@pytest.mark.parametrize("name", INVALID)
def test_invalid(name):
    assert not unitname.is_valid(name)
    assert not unitname.is_template(name)
    assert not unitname.is_instance(name)
    with pytest.raises(ValueError):
        unitname.prefix_of(name)
    with pytest.raises(ValueError):
        unitname.instance_of(name)


def test_no_kind_allowed():
    assert not unitname.is_valid("foo.service", plain=False, instance=False, template=False)


def test_length_limit_is_255():
    assert unitname.is_valid("a" * 247 + ".service")
    assert len("a" * 247 + ".service") == 255
    assert not unitname.is_valid("a" * 248 + ".service")


@given(name_prefixes, suffixes)
def test_generated_plain_names_are_valid(prefix, suffix):
    name = f"{prefix}.{suffix}"
    assert unitname.is_valid(name, instance=False, template=False) == (len(name) <= 255)
    assert unitname.unit_type(name) == UnitType(suffix)


@given(name_prefixes, st.characters(exclude_characters=NAME_CHARS + "@"), suffixes)
def test_a_foreign_character_invalidates(prefix, bad, suffix):
    cut = len(prefix) // 2
    assert not unitname.is_valid(f"{prefix[:cut]}{bad}{prefix[cut:]}.{suffix}")


# ---------------------------------------------------------------- templates and instances


@pytest.mark.parametrize(
    ("name", "prefix", "instance"),
    [
        ("foo.service", "foo", None),
        ("a.b.service", "a.b", None),
        ("foo@.service", "foo", None),
        ("foo@bar.service", "foo", "bar"),
        ("user@1000.service", "user", "1000"),
        ("foo@bar@baz.service", "foo", "bar@baz"),
        ("foo@a.b.service", "foo", "a.b"),
        ("-.slice", "-", None),
    ],
)
def test_prefix_and_instance(name, prefix, instance):
    assert unitname.prefix_of(name) == prefix
    assert unitname.instance_of(name) == instance


def test_template_of():
    assert unitname.template_of("foo@bar.service") == "foo@.service"
    assert unitname.template_of("user-runtime-dir@1000.service") == "user-runtime-dir@.service"
    assert unitname.template_of("foo@a.b.timer") == "foo@.timer"
    assert unitname.template_of("foo@bar@baz.service") == "foo@.service"


@pytest.mark.parametrize("name", ["foo.service", "foo@.service", "foo", "@bar.service", ""])
def test_template_of_rejects_non_instances(name):
    with pytest.raises(ValueError):
        unitname.template_of(name)


def test_instantiate():
    assert unitname.instantiate("foo@.service", "bar") == "foo@bar.service"
    assert unitname.instantiate("user@.service", "1000") == "user@1000.service"
    assert unitname.instantiate("a.b@.timer", "x.y") == "a.b@x.y.timer"


@pytest.mark.parametrize(
    ("template", "instance"),
    [
        ("foo.service", "bar"),  # not a template
        ("foo@bar.service", "baz"),  # an instance, not a template
        ("foo@.service", ""),  # empty instance
        ("foo@.service", "a b"),  # not escaped
        ("foo@.service", "a/b"),
        ("foo@.service", "x" * 250),  # too long
    ],
)
def test_instantiate_rejects(template, instance):
    with pytest.raises(ValueError):
        unitname.instantiate(template, instance)


@given(name_prefixes, instances, suffixes)
def test_instance_round_trip(prefix, instance, suffix):
    template = f"{prefix}@.{suffix}"
    if len(template) + len(instance) > UNIT_NAME_MAX:
        with pytest.raises(ValueError):
            unitname.instantiate(template, instance)
        return
    name = unitname.instantiate(template, instance)
    assert unitname.is_instance(name)
    assert unitname.template_of(name) == template
    assert unitname.instance_of(name) == instance
    assert unitname.prefix_of(name) == unitname.prefix_of(template) == prefix
    assert unitname.unit_type(name) == UnitType(suffix)


# ---------------------------------------------------------------- systemd-escape


# Every expected value below was produced by /usr/bin/systemd-escape (systemd 252).
@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("a b-c/d", "a\\x20b\\x2dc-d"),
        (".hidden", "\\x2ehidden"),
        ("ü", "\\xc3\\xbc"),
        ("", ""),
        ("foo/.bar", "foo-.bar"),  # "." is escaped only as the very first character
        ("/.x", "-.x"),
        ("..", "\\x2e."),
        ("a..b", "a..b"),
        ("/a", "-a"),
        ("_x:y", "_x:y"),
        ("\\", "\\x5c"),
        ("-", "\\x2d"),
        ("@", "\\x40"),
        ("\t\n", "\\x09\\x0a"),
        ("A-Z", "A\\x2dZ"),
        ("😀", "\\xf0\\x9f\\x98\\x80"),
        # systemd-escape(1), EXAMPLES
        ("Hallöchen, Meister", "Hall\\xc3\\xb6chen\\x2c\\x20Meister"),
    ],
)
def test_escape_vectors(raw, escaped):
    assert unitname.escape(raw) == escaped


def test_escape_rejects_nul():
    with pytest.raises(ValueError):
        unitname.escape("a\0b")


@pytest.mark.parametrize(
    ("escaped", "raw"),
    [
        ("a-b", "a/b"),
        ("-", "/"),
        ("\\x2d", "-"),
        ("\\x2D\\x41", "-A"),  # upper-case hex digits are accepted
        ("\\x2f", "/"),
        ("a b", "a b"),  # characters that need no escape pass through
        ("ü", "ü"),
        ("", ""),
        ("\\xc3\\xbc", "ü"),
        ("\\xff", "\udcff"),  # not UTF-8: surrogateescape, like os.fsdecode()
    ],
)
def test_unescape_vectors(escaped, raw):
    assert unitname.unescape(escaped) == raw


@pytest.mark.parametrize(
    "escaped",
    [
        "\\",
        "\\x",
        "\\x4",
        "a\\x2",
        "\\xzz",
        "\\n",
        "\\\\",
        "\\X2d",
        "\\x+1",
        "\\x 1",
        "\\x\u0661\u0661",  # Arabic-Indic digits: int() would accept them
        "\\x00",
    ],
)
def test_unescape_rejects(escaped):
    with pytest.raises(ValueError):
        unitname.unescape(escaped)


@given(any_texts)
def test_escape_round_trip(s):
    escaped = unitname.escape(s)
    assert unitname.unescape(escaped) == s
    assert re.fullmatch(r"[A-Za-z0-9:_.\\-]*", escaped)
    assert not escaped.startswith(".")
    if s and len(escaped) <= UNIT_NAME_MAX - len(".service"):
        assert unitname.is_valid(escaped + ".service", instance=False, template=False)


@given(st.binary(max_size=24).filter(lambda b: b"\0" not in b))
def test_escape_round_trips_arbitrary_bytes(data):
    s = data.decode("utf-8", "surrogateescape")
    assert unitname.unescape(unitname.escape(s)).encode("utf-8", "surrogateescape") == data


@pytest.mark.parametrize(
    ("path", "escaped"),
    [
        ("/", "-"),
        ("/foo//bar/", "foo-bar"),
        ("//", "-"),
        ("", "-"),
        ("/.", "-"),
        ("/./", "-"),
        ("/.x", "\\x2ex"),
        ("/a/./b", "a-b"),
        ("/a/.", "a"),
        ("/a/..b", "a-..b"),
        ("/...", "\\x2e.."),
        ("/.a/.b", "\\x2ea-.b"),
        ("/-", "\\x2d"),
        ("/a b/-c", "a\\x20b-\\x2dc"),
        ("/dev/sda1", "dev-sda1"),
        ("foo", "foo"),  # relative: escaped anyway, as the binary does (with a warning)
        ("./a", "a"),
        # systemd-escape(1), EXAMPLES
        ("/tmp//waldi/foobar/", "tmp-waldi-foobar"),
    ],
)
def test_escape_path_vectors(path, escaped):
    assert unitname.escape_path(path) == escaped


@pytest.mark.parametrize("path", ["/a/../b", "/..", "..", "a/..", ".", "./", "/a\0"])
def test_escape_path_rejects(path):
    with pytest.raises(ValueError):
        unitname.escape_path(path)


@pytest.mark.parametrize(
    ("escaped", "path"),
    [
        ("-", "/"),
        ("a", "/a"),
        ("a-b", "/a/b"),
        ("\\x2ex", "/.x"),
        ("\\x2e\\x2e\\x2e", "/..."),
        ("x\\x2fy", "/x/y"),  # not canonical, but it unescapes to a normalized path
        ("dev-sda1", "/dev/sda1"),
    ],
)
def test_unescape_path_vectors(escaped, path):
    assert unitname.unescape_path(escaped) == path


@pytest.mark.parametrize(
    "escaped", ["", "a--b", "-a", "a-", "\\x2f", "\\x2e", "\\x2e\\x2e", "a-.-b", "--", "\\x"]
)
def test_unescape_path_rejects(escaped):
    with pytest.raises(ValueError):
        unitname.unescape_path(escaped)


path_components = st.text(
    st.characters(exclude_characters="/\0", exclude_categories=("Cs",)), min_size=1, max_size=8
).filter(lambda c: c not in (".", ".."))


@given(st.lists(path_components, max_size=5))
def test_escape_path_round_trip(components):
    path = "/" + "/".join(components)
    escaped = unitname.escape_path(path)
    assert unitname.unescape_path(escaped) == path
    # redundant slashes and "." components do not change the result
    assert unitname.escape_path("//" + "/./".join(components) + "/") == escaped


def _systemd_escape(*args: str) -> bytes | None:
    """stdout of systemd-escape without the final newline, or None if it failed."""
    assert SYSTEMD_ESCAPE is not None
    done = subprocess.run([SYSTEMD_ESCAPE, *args], capture_output=True, check=False)
    if done.returncode != 0:
        return None
    assert done.stdout.endswith(b"\n")
    return done.stdout[:-1]


def _ours(function, s: str) -> bytes | None:
    try:
        return function(s).encode("utf-8", "surrogateescape")
    except ValueError:
        return None


binary_settings = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
# Escaped-looking input for the unescape comparisons (no "\x00": the binary truncates there).
escaped_texts = st.lists(
    st.sampled_from(["\\x2d", "\\x2F", "\\xc3\\xbc", "\\xff", "\\x", "\\x4", "\\"])
    | st.sampled_from(list("-.a_:x2 ü")),
    max_size=8,
).map("".join)


@needs_binary
@binary_settings
@given(any_texts)
def test_escape_matches_binary(s):
    assert _ours(unitname.escape, s) == _systemd_escape("--", s)


@needs_binary
@binary_settings
@given(st.one_of(any_texts, st.text(st.sampled_from("/.a-"), max_size=10)))
def test_escape_path_matches_binary(s):
    assert _ours(unitname.escape_path, s) == _systemd_escape("--path", "--", s)


@needs_binary
@binary_settings
@given(st.one_of(escaped_texts, any_texts))
def test_unescape_matches_binary(s):
    assert _ours(unitname.unescape, s) == _systemd_escape("--unescape", "--", s)


@needs_binary
@binary_settings
@given(st.one_of(escaped_texts, any_texts))
def test_unescape_path_matches_binary(s):
    assert _ours(unitname.unescape_path, s) == _systemd_escape("--unescape", "--path", "--", s)


# ---------------------------------------------------------------- cgroup escaping


@pytest.mark.parametrize(
    ("name", "escaped"),
    [
        ("foo.scope", "foo.scope"),
        ("session-c1.scope", "session-c1.scope"),
        ("_foo.scope", "__foo.scope"),
        (".foo", "_.foo"),
        ("tasks", "_tasks"),
        ("notify_on_release", "_notify_on_release"),
        ("release_agent", "_release_agent"),
        ("tasks.scope", "tasks.scope"),
        ("cgroup.procs", "_cgroup.procs"),
        ("cgroup.slice", "_cgroup.slice"),
        ("cpu.slice", "_cpu.slice"),
        ("cpuset.scope", "_cpuset.scope"),
        ("io.service", "_io.service"),
        ("memory.max", "_memory.max"),
        ("pids.scope", "_pids.scope"),
        ("net_cls.slice", "_net_cls.slice"),
        ("misc.scope", "_misc.scope"),
        ("rdma.scope", "_rdma.scope"),
        ("cpux.slice", "cpux.slice"),
        ("cpu", "cpu"),
        ("xcpu.slice", "xcpu.slice"),
        ("bpf-firewall.scope", "bpf-firewall.scope"),
        ("systemd.slice", "systemd.slice"),
    ],
)
def test_cg_escape_vectors(name, escaped):
    assert unitname.cg_escape(name) == escaped
    assert unitname.cg_unescape(escaped) == name


@given(any_texts)
def test_cg_escape_round_trip(s):
    escaped = unitname.cg_escape(s)
    assert unitname.cg_unescape(escaped) == s
    assert escaped in (s, "_" + s)
    assert escaped not in ("tasks", "release_agent", "notify_on_release")
    assert not escaped.startswith((".", "cgroup.", "cpu.", "memory.", "io.", "pids."))


# ---------------------------------------------------------------- slices


@pytest.mark.parametrize(
    "name",
    [
        "-.slice",
        "a.slice",
        "a-b-c.slice",
        "user.slice",
        "user-1000.slice",
        "system-getty.slice",
        "machine-qemu\\x2d1\\x2dvm.slice",
        "a.b-c.slice",
    ],
)
def test_valid_slice_names(name):
    assert unitname.is_valid_slice_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a.service",
        "-.service",
        "-a.slice",
        "a-.slice",
        "a--b.slice",
        "--.slice",
        "foo@.slice",
        "foo@bar.slice",
        ".slice",
        "a b.slice",
        "slice",
    ],
)
def test_invalid_slice_names(name):
    assert not unitname.is_valid_slice_name(name)
    with pytest.raises(ValueError):
        unitname.slice_parent(name)
    with pytest.raises(ValueError):
        unitname.slice_ancestors(name)
    with pytest.raises(ValueError):
        unitname.slice_path(name)


@pytest.mark.parametrize(
    ("name", "parent", "ancestors", "path"),
    [
        ("-.slice", None, [], "/"),
        ("a.slice", ROOT_SLICE, ["a.slice"], "/a.slice"),
        ("a-b.slice", "a.slice", ["a.slice", "a-b.slice"], "/a.slice/a-b.slice"),
        (
            "a-b-c.slice",
            "a-b.slice",
            ["a.slice", "a-b.slice", "a-b-c.slice"],
            "/a.slice/a-b.slice/a-b-c.slice",
        ),
        (
            "user-1000.slice",
            "user.slice",
            ["user.slice", "user-1000.slice"],
            "/user.slice/user-1000.slice",
        ),
        ("cpu-x.slice", "cpu.slice", ["cpu.slice", "cpu-x.slice"], "/_cpu.slice/cpu-x.slice"),
    ],
)
def test_slice_tree(name, parent, ancestors, path):
    assert unitname.slice_parent(name) == parent
    assert unitname.slice_ancestors(name) == ancestors
    assert unitname.slice_path(name) == path


slice_parts = st.text(st.sampled_from(NAME_CHARS.replace("-", "")), min_size=1, max_size=6)


@given(st.lists(slice_parts, min_size=1, max_size=6))
def test_slice_chain_invariants(parts):
    name = "-".join(parts) + ".slice"
    assert unitname.is_valid_slice_name(name)
    chain = unitname.slice_ancestors(name)
    assert len(chain) == len(parts)
    assert chain[-1] == name
    assert unitname.slice_parent(chain[0]) == ROOT_SLICE
    for parent, child in itertools.pairwise(chain):
        assert unitname.slice_parent(child) == parent
    components = unitname.slice_path(name).split("/")
    assert components[0] == ""
    assert [unitname.cg_unescape(c) for c in components[1:]] == chain


@pytest.mark.parametrize(
    ("unit", "slice_name", "path"),
    [
        ("session-c1.scope", "user-1000.slice", "/user.slice/user-1000.slice/session-c1.scope"),
        ("foo.scope", "-.slice", "/foo.scope"),
        ("foo.scope", None, "/foo.scope"),
        # real systemd 252 (lab captures): ControlGroup of lab-run1.service and lab2.scope
        ("lab-run1.service", "system.slice", "/system.slice/lab-run1.service"),
        ("lab2.scope", "system.slice", "/system.slice/lab2.scope"),
        ("user@1000.service", "user-1000.slice", "/user.slice/user-1000.slice/user@1000.service"),
        ("_x.scope", "system.slice", "/system.slice/__x.scope"),
        ("cpu.scope", None, "/_cpu.scope"),
        # a slice's cgroup follows from its own name
        ("user-1000.slice", "user.slice", "/user.slice/user-1000.slice"),
        ("user-1000.slice", None, "/user.slice/user-1000.slice"),
        ("-.slice", None, "/"),
    ],
)
def test_cgroup_path(unit, slice_name, path):
    assert unitname.cgroup_path(unit, slice_name) == path


@pytest.mark.parametrize(
    ("unit", "slice_name"),
    [
        ("foo", None),
        ("foo@.service", "system.slice"),
        ("foo.scope", "system.service"),
        ("foo.scope", "a--b.slice"),
        ("a--b.slice", None),
    ],
)
def test_cgroup_path_rejects(unit, slice_name):
    with pytest.raises(ValueError):
        unitname.cgroup_path(unit, slice_name)
