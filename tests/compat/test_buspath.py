"""compat.buspath: sd-bus label escaping, unit and job object paths, held against real captures."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compat import buspath, unitname
from compat.buspath import JOB_PATH_PREFIX, MANAGER_PATH, UNIT_PATH_PREFIX

# D-Bus specification: path elements "may contain only the ASCII characters [A-Z][a-z][0-9]_";
# sd-bus label escaping also keeps a digit out of the first position.
PATH_ELEMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

any_texts = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=24),
    st.text(st.sampled_from("_-.@0123456789abcfAF/ü"), max_size=16),
)


def test_constants():
    assert MANAGER_PATH == "/org/freedesktop/systemd1"
    assert UNIT_PATH_PREFIX == MANAGER_PATH + "/unit/"
    assert JOB_PATH_PREFIX == MANAGER_PATH + "/job/"


LABELS = [
    ("session-c1.scope", "session_2dc1_2escope"),
    ("user@0.service", "user_400_2eservice"),
    ("user@1000.service", "user_401000_2eservice"),
    ("user-1000.slice", "user_2d1000_2eslice"),
    ("user-runtime-dir@1000.service", "user_2druntime_2ddir_401000_2eservice"),
    ("-.slice", "_2d_2eslice"),
    ("1foo.service", "_31foo_2eservice"),
    ("foo.scope", "foo_2escope"),
    ("", "_"),
    ("_", "_5f"),
    ("a1", "a1"),
    ("ü", "_c3_bc"),
    # seen on the bus of a real systemd 252 (lab captures)
    ("HOSTMNT.mount", "HOSTMNT_2emount"),
    ("modprobe@drm.service", "modprobe_40drm_2eservice"),
    ("dev-null.mount", "dev_2dnull_2emount"),
    ("-.mount", "_2d_2emount"),
    ("systemd-logind.service", "systemd_2dlogind_2eservice"),
]


@pytest.mark.parametrize(("name", "label"), LABELS)
def test_label_vectors(name, label):
    assert buspath.label_escape(name) == label
    assert buspath.label_unescape(label) == name


@pytest.mark.parametrize(
    ("label", "name"),
    [
        ("_", ""),
        ("a_", "a_"),  # lenient: "_" without two hex digits stays
        ("_2", "_2"),
        ("_zz", "_zz"),
        ("a_g1b", "a_g1b"),
        ("_2D_2E", "-."),  # upper-case hex digits are accepted
        ("__2d", "_-"),
        ("_ff", "\udcff"),  # not UTF-8: surrogateescape
        ("_c3_bc", "ü"),
        ("self", "self"),
    ],
)
def test_label_unescape_vectors(label, name):
    assert buspath.label_unescape(label) == name


@given(any_texts)
def test_label_round_trip(s):
    label = buspath.label_escape(s)
    assert PATH_ELEMENT.fullmatch(label)
    assert buspath.label_unescape(label) == s


@given(st.binary(max_size=24))
def test_label_round_trips_arbitrary_bytes(data):
    s = data.decode("utf-8", "surrogateescape")
    assert (
        buspath.label_unescape(buspath.label_escape(s)).encode("utf-8", "surrogateescape") == data
    )


@given(any_texts)
def test_label_unescape_never_raises(s):
    assert isinstance(buspath.label_unescape(s), str)


def test_unit_path():
    assert buspath.unit_path("foo.scope") == "/org/freedesktop/systemd1/unit/foo_2escope"
    assert buspath.unit_path("-.slice") == "/org/freedesktop/systemd1/unit/_2d_2eslice"


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/org/freedesktop/systemd1/unit/session_2dc1_2escope", "session-c1.scope"),
        ("/org/freedesktop/systemd1/unit/_2d_2eslice", "-.slice"),
        ("/org/freedesktop/systemd1/unit/self", "self"),  # not validated as a unit name
        ("/org/freedesktop/systemd1/unit/_", None),  # unescapes to ""
        ("/org/freedesktop/systemd1/unit/", None),
        ("/org/freedesktop/systemd1/unit", None),
        ("/org/freedesktop/systemd1/unit/a/b", None),
        ("/org/freedesktop/systemd1", None),
        ("/org/freedesktop/systemd1/job/1", None),
        ("/org/freedesktop/systemd2/unit/foo_2escope", None),
        ("", None),
    ],
)
def test_unit_name_from_path(path, name):
    assert buspath.unit_name_from_path(path) == name


@given(any_texts.filter(bool))
def test_unit_path_round_trip(name):
    path = buspath.unit_path(name)
    assert path.startswith(UNIT_PATH_PREFIX)
    assert buspath.unit_name_from_path(path) == name


def test_job_path():
    assert buspath.job_path(1) == "/org/freedesktop/systemd1/job/1"
    assert buspath.job_path(4294967295) == "/org/freedesktop/systemd1/job/4294967295"


@pytest.mark.parametrize("job_id", [0, -1, 2**32, True])
def test_job_path_rejects(job_id):
    with pytest.raises(ValueError):
        buspath.job_path(job_id)


@pytest.mark.parametrize(
    ("path", "job_id"),
    [
        ("/org/freedesktop/systemd1/job/1", 1),
        ("/org/freedesktop/systemd1/job/25", 25),
        ("/org/freedesktop/systemd1/job/4294967295", 4294967295),
        ("/org/freedesktop/systemd1/job/4294967296", None),
        ("/org/freedesktop/systemd1/job/99999999999", None),
        ("/org/freedesktop/systemd1/job/0", None),
        ("/org/freedesktop/systemd1/job/01", None),
        ("/org/freedesktop/systemd1/job/+1", None),
        ("/org/freedesktop/systemd1/job/-1", None),
        ("/org/freedesktop/systemd1/job/ 1", None),
        ("/org/freedesktop/systemd1/job/1a", None),
        ("/org/freedesktop/systemd1/job/1_000", None),
        ("/org/freedesktop/systemd1/job/\u0661", None),  # a Unicode digit
        ("/org/freedesktop/systemd1/job/", None),
        ("/org/freedesktop/systemd1/job/1/x", None),
        ("/org/freedesktop/systemd1/unit/1", None),
        ("/org/freedesktop/systemd1", None),
    ],
)
def test_job_id_from_path(path, job_id):
    assert buspath.job_id_from_path(path) == job_id


@given(st.integers(min_value=1, max_value=2**32 - 1))
def test_job_path_round_trip(job_id):
    path = buspath.job_path(job_id)
    assert path == JOB_PATH_PREFIX + str(job_id)
    assert buspath.job_id_from_path(path) == job_id


# ---------------------------------------------------------------- real systemd 252 captures


def _capture_texts() -> list[str]:
    try:
        from tests.systemd252 import captures_dir

        directory = captures_dir()
    except (ImportError, FileNotFoundError):
        pytest.skip("no real-systemd-252 captures found")
    return [p.read_text() for p in sorted(directory.glob("*.log"))]


# ListUnits entries: name, description, load, active, sub, following, unit path, ...
LIST_UNITS_ENTRY = re.compile(
    r'struct \{\n\s+string "([^"]*)"\n\s+string "[^"]*"\n(?:\s+string "[^"]*"\n){4}'
    r'\s+object path "([^"]*)"'
)


def test_unit_paths_of_real_systemd():
    pairs = {m.groups() for text in _capture_texts() for m in LIST_UNITS_ENTRY.finditer(text)}
    assert len(pairs) > 20
    for name, path in pairs:
        assert unitname.is_valid(name)
        assert buspath.unit_path(name) == path
        assert buspath.unit_name_from_path(path) == name


def test_every_real_unit_label_is_canonical():
    labels = {
        m.group(1)
        for text in _capture_texts()
        for m in re.finditer(r"/org/freedesktop/systemd1/unit/([A-Za-z0-9_]+)", text)
    }
    assert len(labels) > 20
    for label in labels:
        assert buspath.label_escape(buspath.label_unescape(label)) == label


def test_job_paths_of_real_systemd():
    paths = {
        m.group(0)
        for text in _capture_texts()
        for m in re.finditer(r"/org/freedesktop/systemd1/job/[0-9]+", text)
    }
    assert paths
    for path in paths:
        job_id = buspath.job_id_from_path(path)
        assert job_id is not None
        assert buspath.job_path(job_id) == path
