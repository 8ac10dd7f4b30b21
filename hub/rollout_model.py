"""The rollout engine's values: states, per-host rows, the rollout, the events that go
into the state machine, the actions that come out, and the notes it records. Plain
frozen dataclasses and enums (persisted by hub/store.py, converted by hub/pb_convert.py)."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from backendai.update_terms import Outcome
from hub.rollout_plan import Strategy


class RolloutState(enum.Enum):
    PLANNED = "PLANNED"
    UPDATING_HUB = "UPDATING_HUB"
    RUNNING = "RUNNING"
    WAITING = "WAITING"
    PAUSED = "PAUSED"
    HALTING = "HALTING"
    ROLLING_BACK = "ROLLING_BACK"
    ABORTING = "ABORTING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    ROLLED_BACK = "ROLLED_BACK"
    ABORTED = "ABORTED"


class HostState(enum.Enum):
    PENDING = "PENDING"
    UPDATING = "UPDATING"
    VERIFYING = "VERIFYING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    UNREACHABLE = "UNREACHABLE"
    ROLLING_BACK = "ROLLING_BACK"
    ROLLED_BACK = "ROLLED_BACK"
    ROLLBACK_FAILED = "ROLLBACK_FAILED"
    SKIPPED = "SKIPPED"


TERMINAL = frozenset({RolloutState.SUCCEEDED, RolloutState.FAILED, RolloutState.ROLLED_BACK,
                      RolloutState.ABORTED})
IN_FLIGHT = frozenset({HostState.UPDATING, HostState.VERIFYING, HostState.ROLLING_BACK})
HOST_DONE = frozenset({HostState.SUCCEEDED, HostState.FAILED, HostState.UNREACHABLE,
                       HostState.ROLLED_BACK, HostState.ROLLBACK_FAILED, HostState.SKIPPED})
# a rollback of a stopped service switches back and leaves it stopped: that is done too
ROLLBACK_OK = frozenset({Outcome.SUCCEEDED, Outcome.ROLLED_BACK, Outcome.INSTALLED_STOPPED})


@dataclass(frozen=True, slots=True)
class HostRun:
    name: str
    wave: int
    state: HostState = HostState.PENDING
    from_version: str = ""
    operation_id: str = ""
    message: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    deadline: float = 0.0          # step deadline (UPDATING, ROLLING_BACK) or healthy deadline
    healthy_since: float = 0.0     # VERIFYING: first observation running on the target version
    attempts: int = 0
    moved: bool = False            # the host switched to the target version (rollback candidate)
    failed: bool = False           # counts against the failure budget
    lost: bool = False             # the last contact with its manager failed
    step: str = ""
    op_events: int = 0             # step events recorded for operation_id (to skip replays)
    update_op: str = ""            # the update's operation (kept while rolling back)
    rollback_sent: bool = False    # the rollout's auto-rollback took this host back
    # Why a host failed, was unreachable or was rolled back, for the operator: the step
    # that failed (a manager's update step, or the hub's own: "update request",
    # "health gate", ...) and the reason in words (the manager's message).
    failed_step: str = ""
    reason: str = ""
    # The origin the hub sends with its Update (or Rollback) to this host, recorded in the
    # same write as the state that issues it: an operation is adopted only if it is the
    # one recorded in operation_id or carries this origin (hub/rollout_adopt.py).
    origin: str = ""
    waiting_for: str = ""          # an operation this rollout did not start (its id)
    waiting_origin: str = ""       # ... and the origin its manager reports ("": an operator's)
    stopped: bool = False          # installed but left stopped (the operator had stopped it)


@dataclass(frozen=True, slots=True)
class PackageCheck:
    """Whether the store has the release for one package of the targets (asked of one
    manager per package before a rollout starts; hub/release_check.py)."""

    service: str
    package: str
    url: str
    available: bool
    checked: bool                # False: no manager of these hosts could be asked
    message: str = ""
    hosts: tuple[str, ...] = ()
    asked: str = ""              # the host whose manager answered


HOST_STATES = tuple(HostState)
STATE_INDEX = {s: i for i, s in enumerate(HOST_STATES)}


@dataclass(frozen=True, slots=True, eq=False)
class Tally:
    """What the engine asks about a rollout's hosts as a whole (how many in each state,
    failures and finished hosts per wave, where the next pending host is), kept in step
    with every host change, so a transition costs what it changes rather than the
    fleet's size (hub/rollout_engine.py). Derived, never stored: it describes the hosts
    mapping `of` only, and is rebuilt from the hosts for any other (`tally_of`)."""

    of: Mapping[str, HostRun]            # the hosts mapping it describes
    order: tuple[str, ...]               # plan order (the mapping's insertion order)
    waves: tuple[tuple[str, ...], ...]   # each wave's hosts in plan order
    states: tuple[int, ...]              # hosts per HostState (HOST_STATES order)
    wave_failed: tuple[int, ...]         # hosts counted against the budget, per wave
    wave_done: tuple[int, ...]           # hosts in HOST_DONE, per wave
    wave_pending: tuple[int, ...]
    wave_busy: tuple[int, ...]           # hosts IN_FLIGHT, per wave
    first_pending: int                   # no host before this index of `order` is PENDING
    position: Mapping[str, int]          # name -> index in `order` (never changes)
    parent: Mapping[str, HostRun] | None = None  # the hosts the transition started from
    changed: tuple[str, ...] = ()        # the hosts that transition replaced

    def count(self, *states: HostState) -> int:
        return sum(self.states[STATE_INDEX[s]] for s in states)


@dataclass(frozen=True, slots=True)
class Rollout:
    id: str
    version: str
    service: str
    strategy: Strategy
    seed: int
    specs: tuple[str, ...]
    hosts: Mapping[str, HostRun]     # insertion order = plan order
    state: RolloutState = RolloutState.RUNNING
    current_wave: int = -1
    created_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float = 0.0
    message: str = ""
    resume_at: float = 0.0
    awaiting_promote: bool = False
    paused_from: RolloutState | None = None
    halted: bool = False
    next_event: int = 0
    include_hub: bool = False
    description: str = ""
    target_labels: Mapping[str, str] = field(default_factory=dict)
    target_hosts: tuple[str, ...] = ()
    start_stopped: bool = False      # start a service the operator had stopped, too
    issuer: str = ""                 # "hub:<hub id>" of the hub leading it (origins)
    # the store check made at the start; answered by StartRollout, not stored
    packages: tuple[PackageCheck, ...] = ()
    tally: Tally | None = field(default=None, compare=False, repr=False)  # derived, not stored

    @property
    def wave_count(self) -> int:
        return len(self.specs)

    def wave_hosts(self, wave: int) -> list[HostRun]:
        names = tally_of(self).waves
        return [self.hosts[n] for n in names[wave]] if 0 <= wave < len(names) else []

    @property
    def active(self) -> bool:
        return self.state not in TERMINAL and self.state != RolloutState.PLANNED


@dataclass(frozen=True, slots=True)
class Counts:
    total: int = 0
    pending: int = 0
    in_progress: int = 0
    succeeded: int = 0
    failed: int = 0
    unreachable: int = 0
    rolled_back: int = 0
    rollback_failed: int = 0
    skipped: int = 0


def tally_of(r: Rollout) -> Tally:
    """The rollout's tally: the one it carries when that describes its hosts, else
    counted afresh (a rollout loaded from the store, or built by hand)."""
    t = r.tally
    if t is not None and t.of is r.hosts:
        return t
    order = tuple(r.hosts)
    n_waves = max(len(r.specs), max((h.wave + 1 for h in r.hosts.values()), default=0))
    waves: list[list[str]] = [[] for _ in range(n_waves)]
    states = [0] * len(HOST_STATES)
    failed, done, pending, busy = ([0] * n_waves for _ in range(4))
    first_pending = len(order)
    for i, name in enumerate(order):
        h = r.hosts[name]
        waves[h.wave].append(name)
        states[STATE_INDEX[h.state]] += 1
        failed[h.wave] += h.failed
        done[h.wave] += h.state in HOST_DONE
        busy[h.wave] += h.state in IN_FLIGHT
        if h.state == HostState.PENDING:
            pending[h.wave] += 1
            first_pending = min(first_pending, i)
    return Tally(of=r.hosts, order=order, waves=tuple(tuple(w) for w in waves),
                 states=tuple(states), wave_failed=tuple(failed), wave_done=tuple(done),
                 wave_pending=tuple(pending), wave_busy=tuple(busy),
                 first_pending=first_pending,
                 position={name: i for i, name in enumerate(order)})


def counts(r: Rollout) -> Counts:
    return counts_of(tally_of(r).states, len(r.hosts))


def counts_of(c: tuple[int, ...] | list[int], total: int) -> Counts:
    """Counts from hosts per HostState (HOST_STATES order)."""
    return Counts(total=total, pending=c[STATE_INDEX[HostState.PENDING]],
                  in_progress=sum(c[STATE_INDEX[s]] for s in IN_FLIGHT),
                  succeeded=c[STATE_INDEX[HostState.SUCCEEDED]],
                  failed=c[STATE_INDEX[HostState.FAILED]],
                  unreachable=c[STATE_INDEX[HostState.UNREACHABLE]],
                  rolled_back=c[STATE_INDEX[HostState.ROLLED_BACK]],
                  rollback_failed=c[STATE_INDEX[HostState.ROLLBACK_FAILED]],
                  skipped=c[STATE_INDEX[HostState.SKIPPED]])


def changed_hosts(old: Rollout, new: Rollout) -> list[HostRun]:
    """The host rows `new` holds that `old` did not (what a save must write): read off
    the tally when `new` came from `old` by one transition, else compared one by one."""
    t = new.tally
    if t is not None and t.of is new.hosts and t.parent is old.hosts:
        return [new.hosts[n] for n in t.changed]
    return [h for name, h in new.hosts.items() if old.hosts.get(name) is not h]


# ------------------------------------------------------------------ events in

@dataclass(frozen=True, slots=True)
class Observation:
    """What the hub's live view says about a host (from the manager's WatchStatus)."""

    reachable: bool
    running: bool
    version: str


@dataclass(frozen=True, slots=True)
class Tick:
    observations: Mapping[str, Observation] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Recover:
    """The hub (re)started, or another hub took the lead, with this rollout active."""

    reason: str = "hub restarted"


@dataclass(frozen=True, slots=True)
class UpdateAccepted:
    host: str
    operation_id: str     # "" = already on that version
    from_version: str


@dataclass(frozen=True, slots=True)
class RollbackAccepted:
    host: str
    operation_id: str
    to_version: str


@dataclass(frozen=True, slots=True)
class CallFailed:
    host: str
    unreachable: bool
    message: str


@dataclass(frozen=True, slots=True)
class OperationStep:
    host: str
    operation_id: str
    step: str
    status: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class OperationFinished:
    host: str
    operation_id: str
    outcome: str          # as the manager said it (backendai.update_terms.Outcome values)
    message: str = ""


@dataclass(frozen=True, slots=True)
class ConnectionLost:
    host: str
    message: str


@dataclass(frozen=True, slots=True)
class OwnOperation:
    """An operation the manager reported when asked for this host's own (GetUpdate by
    the recorded operation id or origin)."""

    operation_id: str
    origin: str
    running: bool
    outcome: str = ""     # when done, as the manager said it
    message: str = ""
    from_version: str = ""
    to_version: str = ""


@dataclass(frozen=True, slots=True)
class ManagerReport:
    """Manager.Status (and, when asked, GetUpdate and ListReleases) as the reconcile
    step sees it."""

    version: str
    running_operation_id: str
    last_operation_id: str
    last_outcome: str     # as the manager said it; "" before any operation
    last_version: str
    last_message: str = ""
    running_origin: str = ""
    running_version: str = ""
    running_step: str = ""
    last_origin: str = ""
    own: OwnOperation | None = None     # the host's own operation, looked up by id/origin
    previous: str | None = None         # the manager's previous release (None: not asked)


@dataclass(frozen=True, slots=True)
class Reconciled:
    host: str
    report: ManagerReport


@dataclass(frozen=True, slots=True)
class OperationEnded:
    """An operation this rollout waited for (one it did not start) ended."""

    host: str
    operation_id: str
    outcome: str = ""


@dataclass(frozen=True, slots=True)
class Control:
    """Operator request: pause | resume | promote | abort | retry_failed."""

    command: str
    reason: str = ""


Event = (Tick | Recover | UpdateAccepted | RollbackAccepted | CallFailed | OperationStep
         | OperationFinished | ConnectionLost | Reconciled | OperationEnded | Control)

# ------------------------------------------------------------------ actions out


@dataclass(frozen=True, slots=True)
class UpdateHost:
    """Update the host (a running operation is reported, not doubled: the manager refuses
    the Update, and its Status says whose operation runs). The shell sends the origin
    recorded in the host's row, which this transition wrote."""

    host: str
    version: str
    service: str


@dataclass(frozen=True, slots=True)
class RollbackHost:
    """Send Manager.Rollback with the host row's origin (the target was checked first)."""

    host: str
    service: str


@dataclass(frozen=True, slots=True)
class WatchOperation:
    host: str
    operation_id: str
    skip: int = 0          # events of the stream already recorded (the manager replays them)


@dataclass(frozen=True, slots=True)
class ReconcileHost:
    """Ask the manager what it did (Status; GetUpdate for the row's operation id or
    origin; ListReleases for a host rolling back) and report it (Reconciled)."""

    host: str
    service: str


@dataclass(frozen=True, slots=True)
class AwaitOperation:
    """Follow an operation this rollout did not start until it ends (OperationEnded)."""

    host: str
    operation_id: str


@dataclass(frozen=True, slots=True)
class CancelHost:
    host: str


Action = (UpdateHost | RollbackHost | WatchOperation | ReconcileHost | AwaitOperation
          | CancelHost)


@dataclass(frozen=True, slots=True)
class Note:
    """One recorded event (WatchRollout). `index` is assigned in order, no gaps."""

    index: int
    at: float
    kind: str
    state: RolloutState
    host: str = ""
    wave: int = -1
    message: str = ""
    host_state: HostState | None = None
    counts: Counts = field(default_factory=Counts)
    final: bool = False


def as_dict(obj: object) -> object:
    """Plain-data form of engine values (for the store)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: as_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Mapping):
        return {k: as_dict(v) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return [as_dict(v) for v in obj]
    return obj


def as_dict_fields(obj: object, skip: frozenset[str] = frozenset()) -> dict[str, object]:
    """`as_dict` of a dataclass instance without the `skip` fields, typed as a dict."""
    return {f.name: as_dict(getattr(obj, f.name))
            for f in dataclasses.fields(obj)  # type: ignore[arg-type]  # callers pass dataclass instances
            if f.name not in skip}


HOST_FIELDS = tuple(f.name for f in dataclasses.fields(HostRun))
COUNT_FIELDS = tuple(f.name for f in dataclasses.fields(Counts))


def host_row(h: HostRun) -> dict[str, object]:
    """A host row as plain data (the hot path of every save: no generic recursion)."""
    row = {name: getattr(h, name) for name in HOST_FIELDS}
    row["state"] = h.state.value
    return row


def note_row(n: Note) -> dict[str, object]:
    return {"index": n.index, "at": n.at, "kind": n.kind, "state": n.state.value,
            "host": n.host, "wave": n.wave, "message": n.message,
            "host_state": n.host_state.value if n.host_state else None,
            "counts": {name: getattr(n.counts, name) for name in COUNT_FIELDS},
            "final": n.final}
