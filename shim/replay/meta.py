"""Per-trace metadata and rules files: the pydantic model (imported only when a trace is
replayed or a rules file is read).

A trace `X.log` (or `.pcap`, `.bin`) has its metadata in `X.log.meta.toml` or `X.meta.toml`
next to it (shared by the text and pcap captures of one run). `scopeshim replay --rules FILE`
adds a rules file of the same shape (only `include`, `normalize`, `allow`,
`known-differences`, `polls` count there).

    [provenance]                 # where the trace comes from
    systemd = "252.38-1~deb12u1"
    distro = "Debian 12"
    command = "systemd-run --scope --unit=lab1 -p MemoryMax=100M sleep 1"
    captured_with = "shared/lab/real-systemd.sh --capture DIR -- ..."
    synthetic = false            # true: written by hand, not captured

    include = ["../real-systemd-252.rules.toml"]   # rules files, relative to this file

    [conversation]
    exclude_clients = ["client-1"]   # harness clients (client-N: N-th caller of systemd1)
    exclude_reason = "the lab's runner"
    from_marker = "open-session"     # lab.Marker phases that cut the trace
    until_marker = "end"
    requires = ["real-logind-open-session.log"]   # replayed first (setup), not compared

    [normalize]
    replace = [{ pattern = "/run/scopeshim-lab\\b", replace = "<lab>" }]
    varying = ["Tasks"]          # more properties whose value differs per run
    times = []                   # more properties holding a timestamp

    [replay]
    compare = true               # false: the trace is only parsed (a format sample)
    signal_timeout = 2.0         # seconds to wait for the signals the recording shows
    [[replay.actions]]           # events the bus does not show, at the right moment
    after = 1                    # after call 1 was answered
    kill = "pid:session-c1.scope"  # a PID symbol (see shim/replay/normalize.py)
    signal = "TERM"
    delay = 0.0                  # seconds after that call's reply

    [[allow]]                    # a difference the real systemd and scopeshim may have
    id = "unmodelled-units"
    reason = "the real PID 1 has mount units; scopeshim models none"
    what = ["missing-signal"]    # missing-signal, unexpected-signal, signal, reply, any
    units = ["*.mount"]          # patterns (* and ?) of the unit concerned
    not_units = []               # ... and of units it does not apply to
    members = ["*"]              # signal or call members
    properties = ["*"]           # for value differences: property (or field) names
    calls = []                   # call numbers of this trace (1-based), empty: any
    interfaces = ["*"]           # the call's or signal's interface; for PropertiesChanged
                                 # the interface whose properties changed

    [[known-differences]]        # same shape: a behavioural difference of scopeshim that
    id = "..."                   # its owner is to fix; listed in every report
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shim.replay.rules import Action, MetaError, Rule, RuleSet, TraceMeta

WHAT = Literal["missing-signal", "unexpected-signal", "signal", "reply", "not-sent", "any"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Provenance(_Strict):
    systemd: str = ""
    distro: str = ""
    command: str = ""
    captured_with: str = ""
    synthetic: bool = False
    notes: str = ""


class ConversationModel(_Strict):
    exclude_clients: list[str] = Field(default_factory=list)
    exclude_reason: str = ""
    from_marker: str | None = None
    until_marker: str | None = None
    requires: list[str] = Field(default_factory=list)


class ReplaceModel(_Strict):
    pattern: str
    replace: str

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        import re

        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a regular expression: {e}") from None
        return v


class NormalizeModel(_Strict):
    replace: list[ReplaceModel] = Field(default_factory=list)
    varying: list[str] = Field(default_factory=list)
    times: list[str] = Field(default_factory=list)


class ActionModel(_Strict):
    after: int = Field(ge=0)
    kill: str
    signal: Literal["TERM", "KILL", "HUP", "INT"] = "TERM"
    delay: float = Field(default=0.0, ge=0, le=60)


class ReplayModel(_Strict):
    compare: bool = True
    signal_timeout: float = Field(default=2.0, gt=0, le=60)
    actions: list[ActionModel] = Field(default_factory=list)


class RuleModel(_Strict):
    id: str
    reason: str
    what: list[WHAT] = Field(default_factory=lambda: list[WHAT](["any"]))
    units: list[str] = Field(default_factory=lambda: ["*"])
    members: list[str] = Field(default_factory=lambda: ["*"])
    properties: list[str] = Field(default_factory=lambda: ["*"])
    calls: list[int] = Field(default_factory=list)
    interfaces: list[str] = Field(default_factory=lambda: ["*"])
    not_units: list[str] = Field(default_factory=list)
    owner: str = ""  # known differences: who is to fix it


class PollModel(_Strict):
    interface: str
    property: str


class RulesModel(_Strict):
    include: list[str] = Field(default_factory=list)
    normalize: NormalizeModel = Field(default_factory=NormalizeModel)
    allow: list[RuleModel] = Field(default_factory=list)
    known_differences: list[RuleModel] = Field(default_factory=list, alias="known-differences")
    polls: list[PollModel] = Field(default_factory=list)


class MetaModel(RulesModel):
    provenance: Provenance = Field(default_factory=Provenance)
    conversation: ConversationModel = Field(default_factory=ConversationModel)
    replay: ReplayModel = Field(default_factory=ReplayModel)


def _read(path: Path, model: type[RulesModel]) -> RulesModel:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise MetaError(f"{path}: cannot read: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise MetaError(f"{path}: {e}") from None
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        raise MetaError(f"{path}: {problems}") from None


def _rules(model: RulesModel, source: Path, seen: set[Path]) -> RuleSet:
    rules = RuleSet()
    for inc in model.include:
        target = (source.parent / inc).resolve()
        if target in seen:
            raise MetaError(f"{source}: include cycle through {inc}")
        inner = _read(target, RulesModel)
        rules.extend(_rules(inner, target, seen | {target}))
    own = RuleSet()
    for r in model.allow:
        own.allow.append(_rule(r, "allow", source))
    for r in model.known_differences:
        own.known.append(_rule(r, "known-differences", source))
    for rep in model.normalize.replace:
        own.replace.append((rep.pattern, rep.replace))
    own.varying.extend(model.normalize.varying)
    own.times.extend(model.normalize.times)
    own.polls.extend((p.interface, p.property) for p in model.polls)
    rules.extend(own)
    return rules


def _rule(r: RuleModel, section: str, source: Path) -> Rule:
    return Rule(
        id=r.id,
        reason=r.reason,
        section=section,
        what=tuple(r.what),
        units=tuple(r.units),
        members=tuple(r.members),
        properties=tuple(r.properties),
        calls=tuple(r.calls),
        interfaces=tuple(r.interfaces),
        not_units=tuple(r.not_units),
        owner=r.owner,
        source=str(source),
    )


def load_rules(path: str | Path) -> RuleSet:
    """A rules file (`--rules`)."""
    p = Path(path).resolve()
    return _rules(_read(p, RulesModel), p, {p})


def meta_path(trace: str | Path) -> Path | None:
    """The metadata file of a trace, if it has one."""
    p = Path(trace)
    for candidate in (p.with_name(p.name + ".meta.toml"), p.with_name(p.stem + ".meta.toml")):
        if candidate.is_file():
            return candidate
    return None


def load_meta(trace: str | Path) -> TraceMeta:
    """The metadata of a trace (defaults when it has no file)."""
    path = meta_path(trace)
    if path is None:
        return TraceMeta(path=None)
    p = path.resolve()
    model = _read(p, MetaModel)
    assert isinstance(model, MetaModel)
    conv = model.conversation
    return TraceMeta(
        path=str(path),
        provenance=model.provenance.model_dump(),
        exclude_clients=tuple(conv.exclude_clients),
        exclude_reason=conv.exclude_reason,
        from_marker=conv.from_marker,
        until_marker=conv.until_marker,
        requires=tuple(str(p.parent / r) for r in conv.requires),
        compare=model.replay.compare,
        signal_timeout=model.replay.signal_timeout,
        actions=tuple(Action(a.after, a.kill, a.signal, a.delay) for a in model.replay.actions),
        rules=_rules(model, p, {p}),
    )
