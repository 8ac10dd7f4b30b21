"""The rollout state machine under random interleavings and hub crashes (pure, seeded).

A model fleet of managers with the Manager API's update semantics answers the engine's
actions the way the I/O shell would, with events delivered in random interleavings and
operations finishing at random moments. The "hub" crashes at random: every event not yet
applied is lost, and sometimes the actions of the last transition are lost too (a crash
after the state was written but before the calls were made); the restarted hub feeds
`Recover` and reconciles from the managers' own state. Whatever happens:

- no manager is asked to update (or roll back) a host twice;
- no operation the hub did not start is taken as its own, and a rollback goes only to
  the version recorded before the hub's update (with operators updating hosts too);
- the rollout always ends;
- SUCCEEDED means every host runs the target version; ROLLED_BACK means none does;
- the event log has no gaps.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field, replace

import pytest

from backendai.errors import FailedPrecondition
from hub import rollout_engine as E
from hub.rollout_plan import make_strategy, plan_waves

TARGET = "2.0"


@dataclass
class Manager:
    """A manager as the Manager API defines it: one operation at a time, each recorded
    with its origin; Status names the running and the last one; GetUpdate finds one by
    id or origin; ListReleases names the previous release; Rollback refuses a target
    other than the one asked for."""

    name: str
    fails: bool
    crashy: bool = False   # the update "succeeds", then the service crash-loops
    version: str = "1.0"
    previous: str = ""
    running: dict | None = None
    last_op: str = ""
    updates: int = 0       # updates the hub issued (by origin)
    rollbacks: int = 0
    operator_ops: int = 0
    ops: dict = field(default_factory=dict)   # id -> {kind, origin, from, to, outcome}

    def report(self, row: E.HostRun | None = None) -> E.ManagerReport:
        """What the shell's reconcile gathers: Status, and for the host's own operation
        GetUpdate by its recorded id or origin, and ListReleases when rolling back."""
        run = self.running
        last = self.ops.get(self.last_op)
        own = None
        previous = None
        if row is not None:
            named = {run["id"] if run else "", self.last_op} - {""}
            found = None
            if row.operation_id and row.operation_id not in named:
                found = row.operation_id if row.operation_id in self.ops else None
            elif not row.operation_id and row.origin:
                mine = [i for i, o in self.ops.items() if o["origin"] == row.origin]
                found = mine[-1] if mine else None
            if found is not None:
                o = self.ops[found]
                own = E.OwnOperation(found, o["origin"], running=o["outcome"] is None,
                                     outcome=o["outcome"] or "", from_version=o["from"],
                                     to_version=o["to"])
            if row.state == E.HostState.ROLLING_BACK:
                previous = self.previous
        return E.ManagerReport(
            self.version, run["id"] if run else "", self.last_op,
            (last["outcome"] or "") if last else "", last["to"] if last else "",
            running_origin=run["origin"] if run else "",
            running_version=run["to"] if run else "",
            last_origin=last["origin"] if last else "", own=own, previous=previous)

    def start(self, kind: str, n: int, origin: str, to: str) -> str:
        op = f"{self.name}-{kind}-{n}"
        self.running = {"id": op, "kind": kind, "origin": origin, "to": to}
        self.ops[op] = {"kind": kind, "origin": origin, "from": self.version, "to": to,
                        "outcome": None}
        return op

    def finish(self) -> tuple[str, str]:
        op = self.running
        assert op is not None
        if op["kind"] == "update":
            outcome = "rolled_back" if self.fails and op["to"] == TARGET else "succeeded"
            if outcome == "succeeded":
                self.previous, self.version = self.version, op["to"]
        else:
            outcome = "succeeded"
            self.version, self.previous = op["to"], self.version
        self.running = None
        self.last_op = op["id"]
        self.ops[op["id"]]["outcome"] = outcome
        return op["id"], outcome


def check_tally(old: E.Rollout, new: E.Rollout) -> None:
    """The tally a transition carries forward equals the one counted afresh from the
    hosts, and the changed rows it names are exactly the rows that changed."""
    carried = new.tally
    assert carried is not None and carried.of is new.hosts
    fresh = E.tally_of(replace(new, tally=None))
    for name in ("order", "waves", "states", "wave_failed", "wave_done", "wave_pending",
                 "wave_busy"):
        assert getattr(carried, name) == getattr(fresh, name), name
    assert carried.first_pending <= fresh.first_pending
    scanned = [h for n, h in new.hosts.items() if old.hosts.get(n) is not h]
    assert E.changed_hosts(old, new) == scanned


class World:
    def __init__(self, seed: int, hosts: int, failing: int, **strategy) -> None:
        self.rng = random.Random(seed)
        names = [f"h{i}" for i in range(hosts)]
        bad = set(self.rng.sample(names, failing))
        crashy = {n for n in names if n not in bad and self.rng.random() < 0.1}
        self.managers = {n: Manager(n, n in bad, n in crashy) for n in names}
        s = make_strategy(**strategy)
        self.r, self.notes = E.new_rollout(rollout_id="r", version=TARGET, service="",
                                           strategy=s, plan=plan_waves(names, s, seed),
                                           now=0.0)
        self.now = 0.0
        self.queue: list[E.Event] = []
        self.watching: dict[str, str] = {}   # host -> op the hub is following
        self.crashes = 0
        self.n = 0
        self.controls = False
        self.operators = False     # someone else updates hosts at random moments
        self.refused = 0           # rollbacks the manager refused (a stale check)
        self.awaiting: dict[str, bool] = {}

    def apply(self, event: E.Event) -> list[E.Action]:
        old = self.r
        self.r, notes, actions = E.transition(self.r, event, self.now)
        if self.r is not old:
            check_tally(old, self.r)
        self.notes += notes
        for h in self.r.hosts.values():  # never someone else's operation as its own
            ops = self.managers[h.name].ops
            for op in (h.operation_id, h.update_op):
                assert not op or ops[op]["origin"].startswith("hub"), (h, ops[op])
        return actions

    def act(self, actions: list[E.Action]) -> None:
        for a in actions:
            m = self.managers.get(getattr(a, "host", ""))
            row = self.r.hosts.get(getattr(a, "host", ""))
            self.n += 1
            if isinstance(a, E.UpdateHost):
                if m.running:  # the shell reads Status first: the engine decides
                    self.queue.append(E.Reconciled(a.host, m.report()))
                    continue
                if m.version == TARGET:
                    self.queue.append(E.UpdateAccepted(a.host, "", m.version))
                    continue
                m.updates += 1
                op = m.start("update", self.n, row.origin, TARGET)
                self.queue.append(E.UpdateAccepted(a.host, op, m.version))
                self.watching[a.host] = op
                self.awaiting[a.host] = False
            elif isinstance(a, E.RollbackHost):
                # the request names the version it must go to; the manager refuses others
                assert row.from_version, row
                if m.running:
                    self.queue.append(E.CallFailed(a.host, False, "operation running"))
                    continue
                if m.previous != row.from_version:
                    self.refused += 1
                    self.queue.append(E.CallFailed(a.host, False, "would go elsewhere"))
                    continue
                m.rollbacks += 1
                op = m.start("rollback", self.n, row.origin, m.previous)
                self.queue.append(E.RollbackAccepted(a.host, op, m.previous))
                self.watching[a.host] = op
                self.awaiting[a.host] = False
            elif isinstance(a, E.WatchOperation | E.AwaitOperation):
                self.watching[a.host] = a.operation_id
                self.awaiting[a.host] = isinstance(a, E.AwaitOperation)
                done = m.ops.get(a.operation_id, {}).get("outcome")
                if done is not None:
                    self.queue.append(self._ended(a.host, a.operation_id, done))
                    self.watching.pop(a.host)
            elif isinstance(a, E.ReconcileHost):
                self.queue.append(E.Reconciled(a.host, m.report(row)))
            elif isinstance(a, E.CancelHost):
                self.watching.pop(a.host, None)

    def _ended(self, host: str, op: str, outcome: str) -> E.Event:
        """The final event of a watched operation, as the watching task reports it."""
        if self.awaiting.pop(host, False):
            return E.OperationEnded(host, op, outcome)
        return E.OperationFinished(host, op, outcome)

    def operator(self) -> None:
        """Someone else updates an idle host (to the target, or to another version)."""
        idle = [m for m in self.managers.values() if not m.running]
        if idle:
            m = self.rng.choice(idle)
            m.operator_ops += 1
            self.n += 1
            m.start("update", self.n, self.rng.choice(["", "deploy-bot"]),
                    self.rng.choice([TARGET, "1.5"]))

    def observations(self) -> E.Tick:
        return E.Tick({n: E.Observation(True, not (m.crashy and m.version == TARGET),
                                        m.version) for n, m in self.managers.items()})

    def step(self) -> None:
        roll = self.rng.random()
        self.now += self.rng.uniform(0, 2)
        if self.operators and roll > 0.92:
            self.operator()
            return
        if self.controls and roll < 0.02:  # an operator command, allowed or not
            command = self.rng.choice(["pause", "resume", "promote", "abort", "retry_failed"])
            with contextlib.suppress(FailedPrecondition):
                self.act(self.apply(E.Control(command)))
        elif roll < 0.05:  # the hub crashes: undelivered events are gone
            self.crashes += 1
            self.queue.clear()
            self.watching.clear()
            self.awaiting.clear()
            self.act(self.apply(E.Recover()))
        elif roll < 0.35:  # some manager finishes its running operation
            busy = [m for m in self.managers.values() if m.running]
            if busy:
                m = self.rng.choice(busy)
                op, outcome = m.finish()
                if self.watching.get(m.name) == op:
                    self.watching.pop(m.name)
                    self.queue.append(self._ended(m.name, op, outcome))
        elif roll < 0.75 and self.queue:  # deliver one event (random host order)
            event = self.queue.pop(self.rng.randrange(len(self.queue))
                                   if self.rng.random() < 0.3 else 0)
            actions = self.apply(event)
            if self.rng.random() < 0.05:  # crash after writing, before acting
                self.crashes += 1
                self.queue.clear()
                self.watching.clear()
                self.awaiting.clear()
                actions = self.apply(E.Recover())
            self.act(actions)
        else:
            self.act(self.apply(self.observations()))

    def run(self, limit: int = 20000) -> None:
        self.act(self.apply(E.Tick()))
        for i in range(limit):
            if self.r.state in E.TERMINAL:
                return
            if i > limit // 2:
                self.controls = False  # let it finish
            if self.r.state == E.RolloutState.PAUSED and not self.controls:
                self.act(self.apply(E.Control("resume")))
            if self.r.state == E.RolloutState.WAITING and self.r.awaiting_promote:
                self.act(self.apply(E.Control("promote")))
            self.step()
        raise AssertionError(f"did not end: {self.r.state} {E.counts(self.r)}")


@pytest.mark.parametrize("seed", range(200))
def test_random_crashes_never_update_twice_and_always_end(seed):
    rng = random.Random(seed)
    hosts = rng.randint(1, 12)
    world = World(seed, hosts, failing=rng.choice([0, 0, 1, 2]) if hosts > 2 else 0,
                  waves=rng.choice([["1", "100%"], ["1", "30%", "100%"], ["100%"]]),
                  max_parallel=rng.choice([0, 1, 3]),
                  max_failures_per_wave=rng.choice(["0", "1"]),
                  max_failures_total=rng.choice(["0", "1", "2"]),
                  pause_until_promote=rng.random() < 0.3)
    world.run()
    r = world.r
    for m in world.managers.values():
        assert m.updates <= 1, (m.name, world.crashes)
        assert m.rollbacks <= 1, (m.name, world.crashes)
    versions = {n: m.version for n, m in world.managers.items()}
    if r.state == E.RolloutState.SUCCEEDED:
        assert set(versions.values()) == {TARGET}
    if r.state == E.RolloutState.ROLLED_BACK:
        assert TARGET not in versions.values(), versions
    assert [n.index for n in world.notes] == list(range(r.next_event))
    c = E.counts(r)
    assert c.pending == 0 and c.in_progress == 0


@pytest.mark.parametrize("seed", range(100))
def test_random_operator_commands_with_crashes(seed):
    """Pause, resume, promote, abort and retry-failed at random moments, among crashes:
    a host is updated at most once per attempt the rollout made on it."""
    rng = random.Random(1000 + seed)
    world = World(1000 + seed, rng.randint(2, 10), failing=rng.choice([0, 1, 2]),
                  waves=["1", "50%", "100%"], max_failures_per_wave="1",
                  max_failures_total=rng.choice(["1", "3"]))
    world.controls = True
    world.run()
    for name, m in world.managers.items():
        assert m.updates <= world.r.hosts[name].attempts
        assert m.rollbacks <= 1
    assert world.r.state in E.TERMINAL
    versions = {m.version for m in world.managers.values()}
    if world.r.state == E.RolloutState.SUCCEEDED:
        assert versions == {TARGET}


@pytest.mark.parametrize("seed", range(150))
def test_operators_updating_hosts_meanwhile_are_never_adopted(seed):
    """Someone else updates hosts at random moments (to the target or another version),
    among hub crashes: the hub waits for their operations, never adopts one, updates
    each host at most once per attempt, rolls back only to the recorded version, and the
    rollout ends."""
    rng = random.Random(5000 + seed)
    hosts = rng.randint(1, 10)
    world = World(5000 + seed, hosts, failing=rng.choice([0, 0, 1]) if hosts > 1 else 0,
                  waves=rng.choice([["1", "100%"], ["100%"]]),
                  max_parallel=rng.choice([0, 2]), max_failures_per_wave="1",
                  max_failures_total=rng.choice(["0", "1"]), step_deadline_seconds=60)
    world.operators = True
    world.operator()  # one is already under way when the rollout starts
    world.run()
    r = world.r
    assert r.state in E.TERMINAL
    for name, m in world.managers.items():
        assert m.updates <= r.hosts[name].attempts, (name, world.crashes)
        assert m.rollbacks <= 1
    assert [n.index for n in world.notes] == list(range(r.next_event))
    c = E.counts(r)
    assert c.pending == 0 and c.in_progress == 0
    assert sum(m.operator_ops for m in world.managers.values()) > 0
