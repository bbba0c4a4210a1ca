"""What a replay does, prepared from the recording: the calls to re-send (a trace's required
traces first, as setup), the signals to wait for, the actions the bus does not show, and the
recording's symbol tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shim.replay.conversation import Conversation, Emitted, Exchange, MarkerError, select
from shim.replay.infer import World, infer
from shim.replay.normalize import NCall, Normalizer, NReply, NSignal
from shim.replay.rules import Action, MetaError, RuleSet, TraceMeta
from shim.replay.trace import Issue, Message, TraceError, load


@dataclass(slots=True)
class Step:
    index: int  # 1-based over the whole replay (setup steps first)
    number: int  # 1-based within its own trace: "call N" in reports and rules
    source: str
    setup: bool
    exchange: Exchange
    client: str  # client-N over the whole replay
    ncall: NCall
    nreply: NReply

    @property
    def call(self) -> Message:
        return self.exchange.call

    @property
    def line(self) -> int:
        return self.exchange.call.line


@dataclass(slots=True)
class ExpectedSignal:
    after: int  # global step index
    source: str
    setup: bool
    emitted: Emitted
    nsignal: NSignal

    @property
    def line(self) -> int:
        return self.emitted.msg.line


@dataclass(slots=True)
class Plan:
    trace: str
    meta: TraceMeta
    rules: RuleSet
    steps: list[Step] = field(default_factory=list)
    signals: list[ExpectedSignal] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)  # `after` is a global step index
    departures: list[tuple[int, str]] = field(default_factory=list)  # (after, client-N)
    markers: list[tuple[int, str]] = field(default_factory=list)
    clients: list[str] = field(default_factory=list)  # client-N labels
    client_pids: dict[str, int] = field(default_factory=dict)  # client-N -> recorded PID
    recorded: Normalizer = field(default_factory=Normalizer)
    issues: list[Issue] = field(default_factory=list)
    main_start: int = 0  # steps before this index are setup
    world: World | None = None  # what was inferred to exist before the first call
    owners: list[str] = field(default_factory=list)

    @property
    def compared_steps(self) -> list[Step]:
        return [s for s in self.steps if not s.setup]


def _chain(path: str, seen: tuple[str, ...] = ()) -> list[tuple[str, TraceMeta]]:
    from shim.replay.meta import load_meta

    key = str(Path(path).resolve())
    if key in seen:
        raise MetaError(f"{path}: `requires` makes a cycle")
    meta = load_meta(path)
    out: list[tuple[str, TraceMeta]] = []
    for req in meta.requires:
        if not Path(req).is_file():
            raise MetaError(f"{meta.path}: required trace {req} does not exist")
        for item in _chain(req, (*seen, key)):
            if all(str(Path(p).resolve()) != str(Path(item[0]).resolve()) for p, _ in out):
                out.append(item)
    out.append((path, meta))
    return out


def _in_order(conv: Conversation) -> list[Exchange | Emitted]:
    """Calls and signals in capture order."""
    items: list[tuple[int, int, Exchange | Emitted]] = [
        (ex.call.line, 0, ex) for ex in conv.exchanges
    ]
    items += [(e.msg.line, 1, e) for e in conv.signals]
    items.sort(key=lambda x: (x[0], x[1]))
    return [it for _, _, it in items]


def build(path: str, extra: RuleSet | None = None) -> Plan:
    """The plan to replay one trace; TraceError or MetaError when it cannot be made."""
    chain = _chain(path)
    meta = chain[-1][1]
    rules = RuleSet()
    rules.extend(meta.rules)
    if extra is not None:
        rules.extend(extra)
    plan = Plan(trace=path, meta=meta, rules=rules)
    ordered: list[tuple[str, bool, Exchange | Emitted, int]] = []  # (source, setup, item, base)
    clients_raw: list[str] = []
    pids_raw: dict[str, int] = {}
    owners: list[str] = []
    convs: list[tuple[str, TraceMeta, Conversation]] = []
    for p, m in chain:
        trace = load(p)
        plan.issues.extend(trace.issues)
        try:
            conv = select(
                trace,
                exclude_clients=m.exclude_clients,
                from_marker=m.from_marker,
                until_marker=m.until_marker,
            )
        except MarkerError as e:
            raise TraceError(p, 0, str(e)) from None
        convs.append((p, m, conv))
    # what the trace (with the traces it requires) needs to exist before its first call
    world = infer(path, [it for _, _, c in convs for it in _in_order(c)])
    plan.world = world
    base = len(world.calls)
    for n, (unique, call) in enumerate(world.calls, 1):
        ordered.append((path, True, Exchange(n, unique, call), 0))
    for n, (p, m, conv) in enumerate(convs):
        setup = n < len(chain) - 1
        for o in conv.owners:
            if o not in owners:
                owners.append(o)
        # client-N: the N-th caller of systemd1 over the replay, excluded callers counted,
        # so that for a trace without required traces it is the N-th caller in the trace
        for unique in conv.clients:
            if unique not in clients_raw:
                clients_raw.append(unique)
        for name, pid in conv.client_pids.items():
            pids_raw.setdefault(name, pid)
        for item in _in_order(conv):
            ordered.append((p, setup, item, base))
        for after, unique in conv.departures:
            plan.departures.append((after + base, unique))
        for after, name in conv.markers:
            plan.markers.append((after + base, name))
        if not setup:
            plan.main_start = base
            plan.actions = [Action(a.after + base, a.kill, a.signal, a.delay) for a in m.actions]
        base += len(conv.exchanges)
    plan.owners = owners
    for unique, _ in world.calls:  # the inferred world's own client comes last
        if unique not in clients_raw:
            clients_raw.append(unique)
    # only clients with a departure among the clients keep their departure
    plan.departures = [(a, u) for a, u in plan.departures if u in clients_raw]
    rec = Normalizer(rules.options(), owners=owners, clients=clients_raw, client_pids=pids_raw)
    plan.clients = [f"client-{n + 1}" for n in range(len(clients_raw))]
    plan.client_pids = {
        f"client-{clients_raw.index(u) + 1}": pid for u, pid in pids_raw.items() if u in clients_raw
    }
    plan.departures = [(a, f"client-{clients_raw.index(u) + 1}") for a, u in plan.departures]
    # learn every association first, then name in capture order
    for _, _, item, _ in ordered:
        if isinstance(item, Exchange):
            rec.learn(item.call)
            if item.reply is not None:
                rec.learn(item.reply, item.call)
        else:
            rec.learn(item.msg)
    for source, setup, item, b in ordered:
        if isinstance(item, Exchange):
            plan.steps.append(
                Step(
                    index=item.index + b,
                    number=item.index,
                    source=source,
                    setup=setup,
                    exchange=item,
                    client=f"client-{clients_raw.index(item.client) + 1}",
                    ncall=rec.call(item.call),
                    nreply=rec.reply(item.reply, item.call),
                )
            )
        else:
            plan.signals.append(
                ExpectedSignal(item.after + b, source, setup, item, rec.signal(item.msg))
            )
    plan.recorded = rec
    return plan
