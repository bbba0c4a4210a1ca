"""compat.enums: exact bus spellings, the sub-state maps, parse_enum, and real captures."""

from __future__ import annotations

import enum
import re

import pytest
from hypothesis import find, given
from hypothesis import strategies as st

from compat import enums
from compat.enums import (
    SCOPE_ACTIVE_STATE,
    SLICE_ACTIVE_STATE,
    ActiveState,
    CollectMode,
    DevicePolicy,
    ExitType,
    FreezerState,
    JobMode,
    JobResult,
    JobState,
    JobType,
    KillMode,
    KillWho,
    LoadState,
    OOMPolicy,
    ScopeResult,
    ScopeState,
    ServiceRestart,
    ServiceState,
    ServiceType,
    SliceState,
    TargetState,
    TimerState,
    parse_enum,
)

SPELLINGS: dict[type[enum.StrEnum], str] = {
    LoadState: "stub loaded not-found bad-setting error merged masked",
    ActiveState: "active reloading inactive failed activating deactivating maintenance",
    ScopeState: "dead start-chown running abandoned stop-sigterm stop-sigkill failed",
    SliceState: "dead active",
    ServiceState: "dead start running exited stop stop-sigterm stop-sigkill failed auto-restart",
    TargetState: "dead active",
    # systemd.timer(5) / timer.c's state names as `systemctl show -p SubState` printed them
    TimerState: "dead waiting running elapsed failed",
    JobType: "start verify-active stop reload reload-or-start restart try-restart try-reload nop",
    JobState: "waiting running",
    JobMode: "fail replace replace-irreversibly isolate flush ignore-dependencies "
    "ignore-requirements triggering restart-dependencies",
    JobResult: "done canceled timeout failed dependency skipped invalid assert unsupported "
    "collected once frozen",
    KillWho: "main control all main-fail control-fail all-fail",
    KillMode: "control-group process mixed none",
    CollectMode: "inactive inactive-or-failed",
    # systemd.service(5)
    ServiceType: "simple exec forking oneshot dbus notify notify-reload idle",
    ExitType: "main cgroup",
    ServiceRestart: "no on-success on-failure on-abnormal on-watchdog on-abort always",
    OOMPolicy: "continue stop kill",
    DevicePolicy: "auto closed strict",
    ScopeResult: "success resources timeout oom-kill",
    FreezerState: "running freezing frozen thawing",
}


@pytest.mark.parametrize("cls", list(SPELLINGS), ids=lambda c: c.__name__)
def test_spellings(cls):
    assert [m.value for m in cls] == SPELLINGS[cls].split()


@pytest.mark.parametrize("cls", list(SPELLINGS), ids=lambda c: c.__name__)
def test_member_names_follow_values(cls):
    for member in cls:
        assert member.name == member.value.upper().replace("-", "_")
        assert str(member) == member.value
        assert f"{member}" == member.value


def test_every_enum_of_the_module_is_covered():
    defined = {
        obj
        for obj in vars(enums).values()
        if isinstance(obj, type) and issubclass(obj, enum.StrEnum) and obj is not enum.StrEnum
    }
    assert defined == set(SPELLINGS)


def test_scope_active_state():
    assert {k.value: v.value for k, v in SCOPE_ACTIVE_STATE.items()} == {
        "dead": "inactive",
        "start-chown": "activating",
        "running": "active",
        "abandoned": "active",
        "stop-sigterm": "deactivating",
        "stop-sigkill": "deactivating",
        "failed": "failed",
    }


def test_slice_active_state():
    assert {k.value: v.value for k, v in SLICE_ACTIVE_STATE.items()} == {
        "dead": "inactive",
        "active": "active",
    }


@pytest.mark.parametrize("cls", list(SPELLINGS), ids=lambda c: c.__name__)
def test_parse_enum_known(cls):
    for member in cls:
        assert parse_enum(cls, member.value) is member


@pytest.mark.parametrize(
    ("cls", "value"),
    [
        (ActiveState, "Active"),
        (ActiveState, "ACTIVE"),
        (ActiveState, " active"),
        (ActiveState, ""),
        (LoadState, "not_found"),
        (LoadState, "NOT_FOUND"),
        (JobMode, "replace_irreversibly"),
        (KillWho, "main_fail"),
        (ScopeState, "stop_sigterm"),
    ],
)
def test_parse_enum_unknown(cls, value):
    assert parse_enum(cls, value) is None


_ALL_SPELLINGS = sorted({v for text in SPELLINGS.values() for v in text.split()})
# every spelling of every enum (each valid for its own class, unknown to most others), the
# same with a changed case or a stray space (unknown everywhere: the bus spelling is exact),
# and arbitrary text
_ENUM_TEXT = st.one_of(
    st.sampled_from(_ALL_SPELLINGS),
    st.sampled_from(_ALL_SPELLINGS).flatmap(
        lambda v: st.sampled_from([v.upper(), v.title(), f" {v}", f"{v} ", v.replace("-", "_")])
    ),
    st.text(max_size=20),
)


@given(_ENUM_TEXT)
def test_parse_enum_agrees_with_values(value):
    for cls in SPELLINGS:
        parsed = parse_enum(cls, value)
        if value in SPELLINGS[cls].split():
            assert parsed is not None
            assert parsed.value == value
        else:
            assert parsed is None


def test_enum_text_reaches_both_branches():
    """The strategy above draws known spellings as well as unknown text (both branches run)."""
    # hypothesis.find raises NoSuchExample when no drawn value satisfies the condition
    assert find(_ENUM_TEXT, lambda v: v in _ALL_SPELLINGS) in _ALL_SPELLINGS
    assert find(_ENUM_TEXT, lambda v: v.strip() in _ALL_SPELLINGS and v not in _ALL_SPELLINGS)


# ---------------------------------------------------------------- real systemd 252 captures


def _capture_texts() -> list[str]:
    try:
        from tests.systemd252 import captures_dir

        directory = captures_dir()
    except (ImportError, FileNotFoundError):
        pytest.skip("no real-systemd-252 captures found")
    return [p.read_text() for p in sorted(directory.glob("*.log"))]


# ListUnits entries: name, description, load, active, sub, following, unit path
LIST_UNITS_ENTRY = re.compile(
    r'struct \{\n\s+string "([^"]*)"\n\s+string "[^"]*"\n\s+string "([^"]*)"\n'
    r'\s+string "([^"]*)"\n\s+string "([^"]*)"\n\s+string "[^"]*"\n\s+object path'
)


def test_states_listed_by_real_systemd():
    entries = {m.groups() for text in _capture_texts() for m in LIST_UNITS_ENTRY.finditer(text)}
    assert len(entries) > 20
    scopes = slices = 0
    for name, load, active, sub in entries:
        assert parse_enum(LoadState, load) is not None, load
        active_state = parse_enum(ActiveState, active)
        assert active_state is not None, active
        if name.endswith(".scope"):
            scope_state = parse_enum(ScopeState, sub)
            assert scope_state is not None, sub
            assert SCOPE_ACTIVE_STATE[scope_state] is active_state
            scopes += 1
        elif name.endswith(".slice"):
            slice_state = parse_enum(SliceState, sub)
            assert slice_state is not None, sub
            assert SLICE_ACTIVE_STATE[slice_state] is active_state
            slices += 1
    assert scopes and slices


def test_job_results_of_real_systemd():
    # JobRemoved(u id, o job, s unit, s result)
    signal = re.compile(
        r"member=JobRemoved\n\s+uint32 \d+\n\s+object path \"[^\"]*\"\n\s+string \"[^\"]*\"\n"
        r"\s+string \"([^\"]*)\""
    )
    results = {m.group(1) for text in _capture_texts() for m in signal.finditer(text)}
    assert results
    for result in results:
        assert parse_enum(JobResult, result) is not None, result


def test_scope_properties_of_real_systemd():
    try:
        from tests.systemd252 import getall_values

        values = getall_values()
    except (ImportError, FileNotFoundError, StopIteration):
        pytest.skip("no GetAll capture of a real scope found")
    assert values["Id"].endswith(".scope")
    checks: dict[str, type[enum.StrEnum]] = {
        "LoadState": LoadState,
        "ActiveState": ActiveState,
        "SubState": ScopeState,
        "Result": ScopeResult,
        "KillMode": KillMode,
        "CollectMode": CollectMode,
        "OOMPolicy": OOMPolicy,
        "DevicePolicy": DevicePolicy,
        "FreezerState": FreezerState,
    }
    for prop, cls in checks.items():
        assert parse_enum(cls, values[prop]) is not None, (prop, values[prop])
    assert SCOPE_ACTIVE_STATE[ScopeState(values["SubState"])] == values["ActiveState"]
