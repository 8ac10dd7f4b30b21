"""The rollout state machine under random interleavings and hub crashes (pure, seeded).

A model fleet of managers with the Manager API's update semantics answers the engine's
actions the way the I/O shell would, with events delivered in random interleavings and
operations finishing at random moments. The "hub" crashes at random: every event not yet
applied is lost, and sometimes the actions of the last transition are lost too (a crash
after the state was written but before the calls were made); the restarted hub feeds
`Recover` and reconciles from the managers' own state. Whatever happens:

- no manager is asked to update (or roll back) a host twice;
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
    name: str
    fails: bool
    crashy: bool = False   # the update "succeeds", then the service crash-loops
    version: str = "1.0"
    previous: str = ""
    running: dict | None = None
    last_op: str = ""
    last_outcome: str = ""
    last_version: str = ""
    updates: int = 0
    rollbacks: int = 0
    ops: dict = field(default_factory=dict)

    def report(self) -> E.ManagerReport:
        return E.ManagerReport(self.version, self.running["id"] if self.running else "",
                               self.last_op, self.last_outcome, self.last_version)

    def start(self, kind: str, n: int) -> str:
        op = f"{self.name}-{kind}-{n}"
        self.running = {"id": op, "kind": kind}
        self.ops[op] = None
        return op

    def finish(self) -> tuple[str, str]:
        op = self.running
        assert op is not None
        if op["kind"] == "update":
            outcome = "rolled_back" if self.fails else "succeeded"
            if not self.fails:
                self.previous, self.version = self.version, TARGET
            self.last_version = TARGET
        else:
            outcome = "succeeded"
            self.version, self.previous = self.previous, self.version
            self.last_version = self.version
        self.running = None
        self.last_op, self.last_outcome = op["id"], outcome
        self.ops[op["id"]] = outcome
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

    def apply(self, event: E.Event) -> list[E.Action]:
        old = self.r
        self.r, notes, actions = E.transition(self.r, event, self.now)
        if self.r is not old:
            check_tally(old, self.r)
        self.notes += notes
        return actions

    def act(self, actions: list[E.Action]) -> None:
        for a in actions:
            m = self.managers.get(getattr(a, "host", ""))
            self.n += 1
            if isinstance(a, E.UpdateHost):
                if m.running:  # the shell reads Status first and adopts a running op
                    self.queue.append(E.Reconciled(a.host, m.report()))
                    continue
                if m.version == TARGET:
                    self.queue.append(E.UpdateAccepted(a.host, "", m.version))
                    continue
                m.updates += 1
                op = m.start("update", self.n)
                self.queue.append(E.UpdateAccepted(a.host, op, m.version))
                self.watching[a.host] = op
            elif isinstance(a, E.RollbackHost):
                m.rollbacks += 1
                op = m.start("rollback", self.n)
                self.queue.append(E.RollbackAccepted(a.host, op, m.previous))
                self.watching[a.host] = op
            elif isinstance(a, E.WatchOperation):
                self.watching[a.host] = a.operation_id
                done = m.ops.get(a.operation_id)
                if done is not None:
                    self.queue.append(E.OperationFinished(a.host, a.operation_id, done))
                    self.watching.pop(a.host)
            elif isinstance(a, E.ReconcileHost):
                self.queue.append(E.Reconciled(a.host, m.report()))
            elif isinstance(a, E.CancelHost):
                self.watching.pop(a.host, None)

    def observations(self) -> E.Tick:
        return E.Tick({n: E.Observation(True, not (m.crashy and m.version == TARGET),
                                        m.version) for n, m in self.managers.items()})

    def step(self) -> None:
        roll = self.rng.random()
        self.now += self.rng.uniform(0, 2)
        if self.controls and roll < 0.02:  # an operator command, allowed or not
            command = self.rng.choice(["pause", "resume", "promote", "abort", "retry_failed"])
            with contextlib.suppress(FailedPrecondition):
                self.act(self.apply(E.Control(command)))
        elif roll < 0.05:  # the hub crashes: undelivered events are gone
            self.crashes += 1
            self.queue.clear()
            self.watching.clear()
            self.act(self.apply(E.Recover()))
        elif roll < 0.35:  # some manager finishes its running operation
            busy = [m for m in self.managers.values() if m.running]
            if busy:
                m = self.rng.choice(busy)
                op, outcome = m.finish()
                if self.watching.get(m.name) == op:
                    self.watching.pop(m.name)
                    self.queue.append(E.OperationFinished(m.name, op, outcome))
        elif roll < 0.75 and self.queue:  # deliver one event (random host order)
            event = self.queue.pop(self.rng.randrange(len(self.queue))
                                   if self.rng.random() < 0.3 else 0)
            actions = self.apply(event)
            if self.rng.random() < 0.05:  # crash after writing, before acting
                self.crashes += 1
                self.queue.clear()
                self.watching.clear()
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
