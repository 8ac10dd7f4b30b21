"""The rollout state machine (pure): `transition(rollout, event, now)` returns the new
rollout, the events to record (for WatchRollout) and the actions for the I/O shell.

No I/O and no clock reads here: `now` is wall-clock seconds passed in (deadlines must
survive a hub restart, so they are wall-clock), observations of the fleet arrive in
`Tick`, manager answers arrive as events. The shell persists the result of every
transition BEFORE it carries out the actions, so a hub killed at any moment restarts
from a state that names every action it may have started; `Recover` then reconciles
in-flight hosts with the managers' own update state instead of re-issuing updates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from backendai.errors import FailedPrecondition
from backendai.update_terms import Outcome, StepStatus, outcome_text
from hub.rollout_adopt import foreign, own_operation, rollback_refusal, whose
from hub.rollout_model import (
    HOST_DONE,
    IN_FLIGHT,
    ROLLBACK_OK,
    STATE_INDEX,
    TERMINAL,
    Action,
    AwaitOperation,
    CallFailed,
    CancelHost,
    ConnectionLost,
    Control,
    Counts,
    Event,
    HostRun,
    HostState,
    ManagerReport,
    Note,
    Observation,
    OperationEnded,
    OperationFinished,
    OperationStep,
    OwnOperation,
    Reconciled,
    ReconcileHost,
    Recover,
    RollbackAccepted,
    RollbackHost,
    Rollout,
    RolloutState,
    Tally,
    Tick,
    UpdateAccepted,
    UpdateHost,
    WatchOperation,
    as_dict,
    as_dict_fields,
    changed_hosts,
    counts,
    counts_of,
    tally_of,
)
from hub.rollout_plan import HUB_WAVE_SPEC, Plan, Strategy, budget

# The values live in hub/rollout_model.py; they are re-exported so callers can use one
# namespace (`from hub import rollout_engine as E`).
__all__ = [
    "HOST_DONE",
    "IN_FLIGHT",
    "ROLLBACK_OK",
    "TERMINAL",
    "Action",
    "AwaitOperation",
    "CallFailed",
    "CancelHost",
    "ConnectionLost",
    "Control",
    "Counts",
    "Event",
    "HostRun",
    "HostState",
    "ManagerReport",
    "Note",
    "Observation",
    "OperationEnded",
    "OperationFinished",
    "OperationStep",
    "OwnOperation",
    "ReconcileHost",
    "Reconciled",
    "Recover",
    "RollbackAccepted",
    "RollbackHost",
    "Rollout",
    "RolloutState",
    "Tick",
    "UpdateAccepted",
    "UpdateHost",
    "WatchOperation",
    "as_dict",
    "as_dict_fields",
    "changed_hosts",
    "counts",
    "new_rollout",
    "origin",
    "transition",
    "transition_batch",
]


# ------------------------------------------------------------------ the machine


class _Step:
    """Mutable scratch for one transition; the rollout itself stays immutable. It keeps
    the rollout's Tally in step with each host it changes, so what the machine asks about
    the whole fleet (budgets, counts, is the wave done, the next pending host) costs the
    number of waves, not the number of hosts: a transition costs what it changes."""

    def __init__(self, r: Rollout, now: float) -> None:
        self.r = r
        self.now = now
        self.hosts = dict(r.hosts)
        self.notes: list[tuple[str, str, int, str, HostState | None]] = []
        self.actions: list[Action] = []
        t = self.tally = tally_of(r)
        self.states = list(t.states)
        self.wave_failed = list(t.wave_failed)
        self.wave_done = list(t.wave_done)
        self.wave_pending = list(t.wave_pending)
        self.wave_busy = list(t.wave_busy)
        self.first_pending = t.first_pending
        self.changed: dict[str, None] = {}  # names, in the order first changed

    def set(self, **changes: object) -> None:
        self.r = replace(self.r, **changes)  # type: ignore[arg-type]  # dataclass fields

    def host(self, name: str, kind: str | None = None, note: str = "",
             **changes: object) -> HostRun:
        """Change a host; `kind` records an event, `note` is its message (and the
        host's message unless one is given)."""
        if note and "message" not in changes:
            changes["message"] = note
        if changes.get("waiting_for") == "":
            changes.setdefault("waiting_origin", "")  # no longer waiting: no origin either
        old = self.hosts[name]
        h = replace(old, **changes)  # type: ignore[arg-type]  # dataclass fields
        self.hosts[name] = h
        self._count(old, -1)
        self._count(h, 1)
        if h.state == HostState.PENDING:
            self.first_pending = min(self.first_pending, self.tally.position[name])
        self.changed[name] = None
        if kind:
            self.notes.append((kind, name, h.wave, note or h.message, h.state))
        return h

    def _count(self, h: HostRun, sign: int) -> None:
        w = h.wave
        self.states[STATE_INDEX[h.state]] += sign
        self.wave_failed[w] += sign * h.failed
        if h.state in HOST_DONE:
            self.wave_done[w] += sign
        elif h.state in IN_FLIGHT:
            self.wave_busy[w] += sign
        else:  # PENDING
            self.wave_pending[w] += sign

    def reached(self, wave: int) -> int:
        """Hosts in waves 0..wave."""
        return sum(len(names) for names in self.tally.waves[:wave + 1])

    def busy(self) -> bool:
        return any(self.wave_busy)

    def new_tally(self) -> Tally:
        t = self.tally
        return Tally(of=self.hosts, order=t.order, waves=t.waves, states=tuple(self.states),
                     wave_failed=tuple(self.wave_failed), wave_done=tuple(self.wave_done),
                     wave_pending=tuple(self.wave_pending), wave_busy=tuple(self.wave_busy),
                     first_pending=self.first_pending, position=t.position,
                     parent=t.of, changed=tuple(sorted(self.changed, key=t.position.__getitem__)))

    def note(self, kind: str, message: str = "", wave: int = -1) -> None:
        self.notes.append((kind, "", wave, message, None))


def origin(r: Rollout, host: str, what: str, n: int) -> str:
    """The origin the hub sends with an Update ("attempt") or Rollback ("rollback"):
    unique per rollout, host and attempt, at most 200 characters (the manager's limit)."""
    return f"{r.issuer or 'hub'}/rollout/{r.id}/host/{host}/{what}/{n}"[:200]


def new_rollout(*, rollout_id: str, version: str, service: str, strategy: Strategy,
                plan: Plan, now: float, include_hub: bool = False, description: str = "",
                target_labels: Mapping[str, str] | None = None,
                target_hosts: tuple[str, ...] = (), start_stopped: bool = False,
                issuer: str = "", dry_run: bool = False) -> tuple[Rollout, list[Note]]:
    hosts = {name: HostRun(name=name, wave=w) for w, wave in enumerate(plan.waves)
             for name in wave}
    r = Rollout(id=rollout_id, version=version, service=service, strategy=strategy,
                seed=plan.seed, specs=plan.specs, hosts=hosts,
                state=RolloutState.PLANNED if dry_run else RolloutState.RUNNING,
                created_at=now, updated_at=now, include_hub=include_hub,
                description=description, target_labels=dict(target_labels or {}),
                target_hosts=target_hosts, start_stopped=start_stopped, issuer=issuer)
    if dry_run:
        return r, []
    step = _Step(r, now)
    step.note("rollout.created", f"version {version} to {len(hosts)} hosts in "
              f"{len(plan.waves)} waves (seed {plan.seed})")
    r2, notes, _ = _finish(step)
    return r2, notes


def transition(r: Rollout, event: Event, now: float) -> tuple[Rollout, list[Note], list[Action]]:
    """Apply one event. Raises FailedPrecondition for a control request the current
    state forbids (nothing changes then)."""
    if r.state in TERMINAL and not (isinstance(event, Control)
                                    and event.command == "retry_failed"):
        if isinstance(event, Control):
            raise FailedPrecondition(f"rollout {r.id} is {r.state.value.lower()}; "
                                     f"{event.command} needs an active rollout")
        return r, [], []
    step = _Step(r, now)
    if isinstance(event, Control):
        _control(step, event)
    else:
        _dispatch(step, event)
    _advance(step)
    return _finish(step)


def transition_batch(r: Rollout, events: list[Event],
                     now: float) -> tuple[Rollout, list[Note], list[Action]]:
    """Apply several non-control events at the same `now`, then one progress pass: the
    same result as one at a time for host events, at a fraction of the cost on a big
    fleet (the shell drains its queue into one batch)."""
    if r.state in TERMINAL:
        return r, [], []
    step = _Step(r, now)
    for event in events:
        if isinstance(event, Control):
            raise TypeError("control requests go through transition()")
        _dispatch(step, event)
    _advance(step)
    return _finish(step)


def _dispatch(step: _Step, event: Event) -> None:
    if isinstance(event, Tick):
        _observe(step, event.observations)
    elif isinstance(event, Recover):
        for h in step.hosts.values():
            if h.state in (HostState.UPDATING, HostState.ROLLING_BACK):
                step.actions.append(ReconcileHost(h.name, step.r.service))
        step.note("rollout.recovered", f"{event.reason}; reconciling in-flight hosts")
    else:
        _host_event(step, event)


def _finish(step: _Step) -> tuple[Rollout, list[Note], list[Action]]:
    r = replace(step.r, hosts=step.hosts, updated_at=step.now, tally=step.new_tally())
    c = counts_of(step.states, len(step.hosts))
    notes = []
    for i, (kind, host, wave, message, host_state) in enumerate(step.notes):
        notes.append(Note(index=r.next_event + i, at=step.now, kind=kind, state=r.state,
                          host=host, wave=wave, message=message, host_state=host_state,
                          counts=c))
    if notes and r.state in TERMINAL:
        notes[-1] = replace(notes[-1], final=True)
    r = replace(r, next_event=r.next_event + len(notes))
    return r, notes, step.actions


# ------------------------------------------------------------------ operator control

def _control(step: _Step, ev: Control) -> None:
    r = step.r
    cmd = ev.command
    why = f": {ev.reason}" if ev.reason else ""
    if cmd == "pause":
        if r.state not in (RolloutState.RUNNING, RolloutState.WAITING,
                           RolloutState.UPDATING_HUB):
            raise FailedPrecondition(f"cannot pause a rollout that is {r.state.value.lower()}")
        step.set(paused_from=r.state, state=RolloutState.PAUSED)
        step.note("rollout.paused", "paused; in-flight hosts finish" + why)
    elif cmd == "resume":
        if r.state != RolloutState.PAUSED:
            raise FailedPrecondition(f"cannot resume a rollout that is {r.state.value.lower()}")
        step.set(state=r.paused_from or RolloutState.RUNNING, paused_from=None)
        step.note("rollout.resumed", "resumed" + why)
    elif cmd == "promote":
        if r.state != RolloutState.WAITING:
            raise FailedPrecondition("promote needs a rollout waiting between waves; it is "
                                     + r.state.value.lower())
        step.set(state=RolloutState.RUNNING, awaiting_promote=False, resume_at=0.0)
        step.note("rollout.promoted", "promoted to the next wave" + why)
        _start_wave(step, r.current_wave + 1)
    elif cmd == "abort":
        if r.state in (RolloutState.ROLLING_BACK, RolloutState.ABORTING):
            raise FailedPrecondition(f"rollout is already {r.state.value.lower()}")
        step.set(state=RolloutState.ABORTING, halted=False, message="aborted" + why)
        step.note("rollout.aborting", "aborted; in-flight hosts finish" + why)
        _skip_pending(step, "aborted")
    elif cmd == "retry_failed":
        _retry(step, why)
    else:
        raise FailedPrecondition(f"unknown command {cmd!r}")


def _retry(step: _Step, why: str) -> None:
    r = step.r
    if r.state not in (RolloutState.RUNNING, RolloutState.WAITING, RolloutState.PAUSED,
                       RolloutState.FAILED):
        raise FailedPrecondition(f"retry-failed needs a running or failed rollout; it is "
                                 f"{r.state.value.lower()}")
    again = {HostState.FAILED, HostState.UNREACHABLE}
    if r.state == RolloutState.FAILED:
        again.add(HostState.SKIPPED)
    names = [h.name for h in step.hosts.values()
             if h.state in again or (h.failed and h.state in HOST_DONE)]
    if not names:
        raise FailedPrecondition("no failed hosts to retry")
    for name in names:
        step.host(name, "host.retry", "will retry" + why, state=HostState.PENDING,
                  failed=False, lost=False, message="", operation_id="", step="",
                  waiting_for="", stopped=False, failed_step="", reason="")
    if r.state == RolloutState.FAILED:
        step.set(state=RolloutState.RUNNING, halted=False, finished_at=0.0, message="")
        step.note("rollout.state", f"retrying {len(names)} hosts")


# ------------------------------------------------------------------ host events

def _host_event(step: _Step, ev: Event) -> None:
    name = getattr(ev, "host", "")
    h = step.hosts.get(name)
    if h is None:
        return
    target = step.r.version
    if isinstance(ev, UpdateAccepted) and h.state == HostState.UPDATING:
        if h.waiting_for:
            h = step.host(name, None, waiting_for="")
        if not ev.operation_id:
            step.host(name, "host.verifying", f"already on {target}",
                      state=HostState.VERIFYING, moved=h.moved,
                      from_version=h.from_version if h.moved else ev.from_version,
                      deadline=step.now + step.r.strategy.healthy_deadline_seconds)
        else:
            step.host(name, "host.accepted", f"update {ev.operation_id} from "
                      f"{ev.from_version or '?'}", operation_id=ev.operation_id,
                      update_op=ev.operation_id, from_version=ev.from_version, lost=False,
                      op_events=0)
    elif isinstance(ev, RollbackAccepted) and h.state == HostState.ROLLING_BACK:
        step.host(name, "host.rollback_accepted",
                  f"rollback {ev.operation_id} to {ev.to_version}",
                  operation_id=ev.operation_id, lost=False, op_events=0)
    elif isinstance(ev, CallFailed):
        if h.state == HostState.UPDATING:
            st = HostState.UNREACHABLE if ev.unreachable else HostState.FAILED
            step.host(name, "host." + st.value.lower(), state=st, failed=True,
                      lost=ev.unreachable, message=ev.message, finished_at=step.now,
                      failed_step=h.step or "update request", reason=ev.message)
        elif h.state == HostState.ROLLING_BACK:
            step.host(name, "host.rollback_failed", state=HostState.ROLLBACK_FAILED,
                      message=ev.message, finished_at=step.now,
                      failed_step=h.failed_step or "rollback request",
                      reason=_both(h.reason, "rollback request failed: " + ev.message))
    elif isinstance(ev, OperationStep):
        if h.state in (HostState.UPDATING, HostState.ROLLING_BACK) \
                and ev.operation_id == h.operation_id:
            first_failure = ev.status == StepStatus.FAILED.value and not h.failed_step
            blame = {"failed_step": ev.step, "reason": ev.message} if first_failure else {}
            step.host(name, "host.step", f"{ev.step} {ev.status} {ev.message}".strip(),
                      step=ev.step, op_events=h.op_events + 1, **blame)
    elif isinstance(ev, OperationFinished):
        if ev.operation_id == h.operation_id:
            _finished(step, h, Outcome.parse(ev.outcome), ev.message)
    elif isinstance(ev, ConnectionLost):
        if h.state in (HostState.UPDATING, HostState.ROLLING_BACK):
            step.host(name, "host.lost", ev.message, lost=True)
            step.actions.append(ReconcileHost(name, step.r.service))
    elif isinstance(ev, OperationEnded):
        if h.state in (HostState.UPDATING, HostState.ROLLING_BACK) \
                and h.waiting_for == ev.operation_id:
            step.host(name, "host.wait_over", f"operation {ev.operation_id}, which this "
                      f"rollout did not start, ended {ev.outcome or '(no outcome)'}; going on",
                      waiting_for="")
            step.actions.append(ReconcileHost(name, step.r.service))
    elif isinstance(ev, Reconciled):
        _reconciled(step, h, ev.report)


def _finished(step: _Step, h: HostRun, outcome: Outcome | None, message: str) -> None:
    """`outcome`: what the manager reported; None when it reported none this hub knows
    (a failure)."""
    now = step.now
    if h.state == HostState.UPDATING:
        if outcome is Outcome.SUCCEEDED:
            step.host(h.name, "host.verifying", message or "updated; checking health",
                      state=HostState.VERIFYING, moved=h.from_version != step.r.version,
                      healthy_since=0.0, lost=False,
                      deadline=now + step.r.strategy.healthy_deadline_seconds)
        elif outcome is Outcome.INSTALLED_STOPPED:
            why = (f"installed {step.r.version} but left stopped: its service had been "
                   "stopped by an operator (start it, or roll out with start_stopped)")
            step.host(h.name, "host.skipped", why, state=HostState.SKIPPED, stopped=True,
                      moved=h.from_version != step.r.version, lost=False, finished_at=now,
                      reason=why)
        elif outcome is Outcome.ROLLED_BACK:
            step.host(h.name, "host.rolled_back", "update failed; manager rolled back: "
                      + message, state=HostState.ROLLED_BACK, failed=True, finished_at=now,
                      **_blame(h, message))
        elif outcome is Outcome.ROLLBACK_FAILED:
            step.host(h.name, "host.rollback_failed", "update and rollback failed: "
                      + message, state=HostState.ROLLBACK_FAILED, failed=True, finished_at=now,
                      **_blame(h, message))
        else:
            why = message or outcome_text(outcome) or "no outcome reported"
            step.host(h.name, "host.failed", "update failed: " + why,
                      state=HostState.FAILED, failed=True, finished_at=now,
                      **_blame(h, why))
    elif h.state == HostState.ROLLING_BACK:
        if outcome in ROLLBACK_OK:
            step.host(h.name, "host.rolled_back", message or "rolled back",
                      state=HostState.ROLLED_BACK, moved=False, finished_at=now)
        else:
            step.host(h.name, "host.rollback_failed", "rollback failed: " + message,
                      state=HostState.ROLLBACK_FAILED, finished_at=now,
                      failed_step=h.failed_step or h.step or "rollback",
                      reason=_both(h.reason, "rollback failed: " + message))


def _blame(h: HostRun, message: str) -> dict[str, object]:
    """A failed update's step and reason: the first step the manager reported failed
    (else the last step it reported) and its final message, which says which step and
    check failed and what the rollback did."""
    return {"failed_step": h.failed_step or h.step or "update",
            "reason": message or h.reason or "the manager reported no reason"}


def _both(first: str, then: str) -> str:
    return f"{first}; then {then}" if first else then


def _reconciled(step: _Step, h: HostRun, rep: ManagerReport) -> None:
    """What the manager reports, for a host this rollout is updating or rolling back
    (after a hub restart, a broken watch, a foreign operation ended, or before a
    rollback): adopt only the host's own operation (hub/rollout_adopt.py), wait for a
    foreign one, and never issue a call the manager may already have run."""
    if h.state not in (HostState.UPDATING, HostState.ROLLING_BACK):
        return
    target = step.r.version
    updating = h.state == HostState.UPDATING
    own = own_operation(h, rep)
    other = foreign(h, rep)
    if own is not None and own.running:
        seen = h.op_events if own.operation_id == h.operation_id else 0
        adopt = {"update_op": own.operation_id} if updating else {}
        if updating and not h.operation_id and own.from_version:
            adopt["from_version"] = own.from_version
        step.host(h.name, "host.reconciled", f"operation {own.operation_id} still running; "
                  "watching it", operation_id=own.operation_id, lost=False, op_events=seen,
                  waiting_for="", **adopt)
        step.actions.append(WatchOperation(h.name, own.operation_id, seen))
    elif own is not None:
        changes: dict[str, object] = {"operation_id": own.operation_id, "lost": False,
                                      "waiting_for": ""}
        if updating:
            changes["update_op"] = own.operation_id
            if not h.operation_id and own.from_version:  # the hub went down before
                changes["from_version"] = own.from_version  # recording the answer
        step.host(h.name, "host.reconciled", f"operation {own.operation_id} ended "
                  f"{own.outcome or '(no outcome)'}", **changes)
        _finished(step, step.hosts[h.name], Outcome.parse(own.outcome),
                  own.message or "after reconcile")
    elif other:
        _wait(step, h, rep.running_operation_id, rep.running_origin, other)
    elif h.operation_id and updating:
        why = f"operation {h.operation_id} unknown to the manager"
        step.host(h.name, "host.failed", why, state=HostState.FAILED, failed=True,
                  finished_at=step.now, lost=False, failed_step=h.step or "reconcile",
                  reason=why + " (after the hub lost track of it)")
    elif h.operation_id:
        why = f"rollback {h.operation_id} unknown to the manager"
        step.host(h.name, "host.rollback_failed", why, state=HostState.ROLLBACK_FAILED,
                  finished_at=step.now, lost=False,
                  failed_step=h.failed_step or "rollback", reason=_both(h.reason, why))
    elif updating and rep.version == target:
        step.host(h.name, "host.reconciled", f"already on {rep.version}", lost=False,
                  from_version=h.from_version or target, waiting_for="")
        _finished(step, step.hosts[h.name], Outcome.SUCCEEDED, f"on {rep.version} (reconciled)")
    elif updating:
        # Recorded as UPDATING, but no update of ours reached the manager: issue it now.
        step.host(h.name, "host.reconciled", "update not started; issuing it", lost=False,
                  waiting_for="")
        step.actions.append(UpdateHost(h.name, target, step.r.service))
    else:
        _rollback_checked(step, h, rep)


def _wait(step: _Step, h: HostRun, op: str, origin: str, what: str) -> None:
    """A foreign operation runs on the host: follow it until it ends (the step deadline
    bounds the wait), then look again."""
    if h.waiting_for != op:
        step.host(h.name, "host.waiting", f"waiting for {what}, which this rollout did not "
                  "start", waiting_for=op, waiting_origin=origin, lost=False)
    else:
        step.host(h.name, None, lost=False)
    step.actions.append(AwaitOperation(h.name, op))


def _rollback_checked(step: _Step, h: HostRun, rep: ManagerReport) -> None:
    """A host to roll back, no rollback of ours on record: send it only when the
    manager's rollback goes to the recorded from_version (rep.previous was asked)."""
    if rep.version == h.from_version and h.from_version:
        step.host(h.name, "host.rolled_back", f"already on {rep.version}",
                  state=HostState.ROLLED_BACK, moved=False, finished_at=step.now,
                  lost=False, waiting_for="")
        return
    if rep.previous is None:  # the releases were not asked: ask again
        step.actions.append(ReconcileHost(h.name, step.r.service))
        return
    why = rollback_refusal(h, rep, step.r.version)
    if why:
        step.host(h.name, "host.rollback_failed", why, state=HostState.ROLLBACK_FAILED,
                  finished_at=step.now, lost=False, waiting_for="",
                  failed_step=h.failed_step or "rollback check", reason=_both(h.reason, why))
        return
    step.host(h.name, "host.rollback_started", f"rolling back to {h.from_version}",
              lost=False, waiting_for="")
    step.actions.append(RollbackHost(h.name, step.r.service))


def _observe(step: _Step, observations: Mapping[str, Observation]) -> None:
    now = step.now
    s = step.r.strategy
    if not step.busy():
        return  # nothing is being verified, updated or rolled back
    for h in list(step.hosts.values()):
        if h.state == HostState.VERIFYING:
            obs = observations.get(h.name)
            if obs is not None and obs.reachable and obs.running \
                    and obs.version == step.r.version:
                since = h.healthy_since or now
                if now - since >= s.min_healthy_seconds:
                    step.host(h.name, "host.succeeded", f"healthy on {step.r.version}",
                              state=HostState.SUCCEEDED, healthy_since=since,
                              finished_at=now, message="")
                    continue
                if not h.healthy_since:
                    step.host(h.name, None, healthy_since=since)
            elif obs is not None and h.healthy_since:
                step.host(h.name, "host.unhealthy", "unhealthy again; health timer restarts",
                          healthy_since=0.0)
            if now >= step.hosts[h.name].deadline and \
                    step.hosts[h.name].state == HostState.VERIFYING:
                seen = (f"running {obs.version}" if obs and obs.running else
                        "not running") if obs else "no status"
                why = (f"not healthy on {step.r.version} within "
                       f"{s.healthy_deadline_seconds:g}s ({seen})")
                step.host(h.name, "host.failed", why, state=HostState.FAILED, failed=True,
                          finished_at=now, failed_step="health gate",
                          reason="the hub's health gate: " + why)
        elif h.state in (HostState.UPDATING, HostState.ROLLING_BACK) and now >= h.deadline:
            step.actions.append(CancelHost(h.name))
            if h.state == HostState.ROLLING_BACK:
                why = "rollback step deadline exceeded" + (
                    f" waiting for operation {h.waiting_for} ({whose(h.waiting_origin)}), "
                    "which this rollout did not start" if h.waiting_for else "")
                step.host(h.name, "host.rollback_failed", why,
                          state=HostState.ROLLBACK_FAILED, finished_at=now,
                          failed_step=h.failed_step or h.step or "rollback",
                          reason=_both(h.reason, why))
            else:
                st = HostState.UNREACHABLE if h.lost else HostState.FAILED
                if h.waiting_for and not h.lost:
                    where = (f" waiting for operation {h.waiting_for} "
                             f"({whose(h.waiting_origin)}), which this rollout did not start "
                             "(the host was not updated)")
                else:
                    where = " (manager unreachable)" if h.lost else f" at {h.step or 'start'}"
                why = f"step deadline of {s.step_deadline_seconds:g}s exceeded" + where
                step.host(h.name, "host." + st.value.lower(), why, state=st, failed=True,
                          finished_at=now, failed_step=h.step or (
                              "waiting for another operation" if h.waiting_for
                              else "update request"),
                          reason=why + (f"; last contact: {h.message}" if h.lost and h.message
                                        else ""))


# ------------------------------------------------------------------ progress

def _advance(step: _Step) -> None:
    r = step.r
    if r.state in (RolloutState.RUNNING, RolloutState.UPDATING_HUB, RolloutState.WAITING,
                   RolloutState.PAUSED) and _over_budget(step):
        return
    if r.state == RolloutState.WAITING and not r.awaiting_promote and step.now >= r.resume_at:
        step.set(state=RolloutState.RUNNING, resume_at=0.0)
        step.note("rollout.state", "pause over")
        _start_wave(step, r.current_wave + 1)
    elif r.state in (RolloutState.RUNNING, RolloutState.UPDATING_HUB):
        if r.current_wave < 0:
            _start_wave(step, 0)
        _progress(step)
    elif r.state in (RolloutState.HALTING, RolloutState.ABORTING):
        if not _busy(step):
            _drained(step)
    elif r.state == RolloutState.ROLLING_BACK and not _busy(step):
        bad = [h for h in step.hosts.values() if h.state == HostState.ROLLBACK_FAILED
               and h.rollback_sent]
        _end(step, RolloutState.FAILED if bad else RolloutState.ROLLED_BACK,
             step.r.message + (f"; {len(bad)} hosts failed to roll back" if bad else
                               "; moved hosts rolled back"))


def _busy(step: _Step) -> bool:
    return step.busy()


def _drained(step: _Step) -> None:
    r = step.r
    if r.state == RolloutState.ABORTING:
        _end(step, RolloutState.ABORTED, r.message)
        return
    # moved: on the new release, healthy or not (a host that updated but then failed
    # the hub's own health check is on it too)
    # (and one installed but left stopped: it is on the new release too)
    moved = [h for h in step.hosts.values() if h.moved
             and (h.state in (HostState.SUCCEEDED, HostState.FAILED)
                  or (h.state == HostState.SKIPPED and h.stopped))
             and step.r.specs[h.wave] != HUB_WAVE_SPEC]
    if not r.strategy.auto_rollback:
        _end(step, RolloutState.FAILED, r.message)
    elif not moved:
        _end(step, RolloutState.ROLLED_BACK, r.message + "; no host had moved")
    else:
        step.set(state=RolloutState.ROLLING_BACK)
        step.note("rollout.rolling_back", f"rolling back {len(moved)} hosts")
        deadline = step.now + r.strategy.step_deadline_seconds
        for h in moved:
            if not h.from_version:  # never a guess: no recorded version, no rollback
                why = rollback_refusal(h, _NO_REPORT, "")
                step.host(h.name, "host.rollback_failed", why,
                          state=HostState.ROLLBACK_FAILED, finished_at=step.now,
                          rollback_sent=True, failed_step=h.failed_step or "rollback",
                          reason=_both(h.reason, why))
                continue
            step.host(h.name, "host.rollback_started", f"back to {h.from_version}",
                      state=HostState.ROLLING_BACK, operation_id="", started_at=step.now,
                      deadline=deadline, step="", rollback_sent=True, waiting_for="",
                      origin=origin(r, h.name, "rollback", h.attempts),
                      reason=h.reason or f"the rollout {r.message}; sent back to "
                                         f"{h.from_version}")
            # the manager is asked first where its rollback would go (rollout_adopt.py)
            step.actions.append(ReconcileHost(h.name, r.service))
        if not _busy(step):
            _advance(step)


_NO_REPORT = ManagerReport("", "", "", "", "")


def _end(step: _Step, state: RolloutState, message: str) -> None:
    step.set(state=state, finished_at=step.now, message=message, awaiting_promote=False)
    step.note("rollout.finished", message or state.value.lower())


def _over_budget(step: _Step) -> bool:
    r = step.r
    s = r.strategy
    total_failed = 0
    for w in range(r.wave_count):
        failed = step.wave_failed[w]
        total_failed += failed
        allowed = 0 if r.specs[w] == HUB_WAVE_SPEC else budget(s.max_failures_per_wave,
                                                               len(step.tally.waves[w]))
        if failed > allowed:
            _halt(step, f"wave {w} ({r.specs[w]}): {failed} failed hosts exceed the budget "
                  f"of {allowed}")
            return True
    allowed_total = budget(s.max_failures_total, len(r.hosts))
    if total_failed > allowed_total:
        _halt(step, f"{total_failed} failed hosts exceed the rollout budget of {allowed_total}")
        return True
    return False


def _halt(step: _Step, why: str) -> None:
    step.set(state=RolloutState.HALTING, halted=True, message="halted: " + why,
             awaiting_promote=False, paused_from=None)
    step.note("rollout.halting", "halted: " + why)
    _skip_pending(step, "halted")
    if not _busy(step):
        _drained(step)


def _skip_pending(step: _Step, why: str) -> None:
    for h in list(step.hosts.values()):
        if h.state == HostState.PENDING:
            step.host(h.name, "host.skipped", why, state=HostState.SKIPPED,
                      finished_at=step.now)


def _start_wave(step: _Step, wave: int) -> None:
    r = step.r
    if wave >= r.wave_count:
        return
    hub = r.specs[wave] == HUB_WAVE_SPEC
    step.set(current_wave=wave,
             state=RolloutState.UPDATING_HUB if hub else RolloutState.RUNNING)
    step.note("wave.started", f"wave {wave} ({r.specs[wave]}): "
              f"{len(step.tally.waves[wave])} hosts", wave=wave)
    _progress(step)


def _progress(step: _Step) -> None:
    """Start pending hosts of the waves reached, then move on when the wave is done."""
    while True:
        r = step.r
        if r.state not in (RolloutState.RUNNING, RolloutState.UPDATING_HUB):
            return
        cw = r.current_wave
        reached = step.reached(cw)
        busy = sum(step.wave_busy[:cw + 1])
        limit = r.strategy.max_parallel or reached
        if busy < limit and any(step.wave_pending[:cw + 1]):
            _start_pending(step, limit - busy)
        if sum(step.wave_done[:cw + 1]) < reached:
            return
        step.note("wave.done", f"wave {r.current_wave} done", wave=r.current_wave)
        if r.current_wave + 1 >= r.wave_count:
            # a host installed but left stopped (its operator stopped it) is skipped,
            # not a failure: it has the release, and starts on it when started
            stopped = sum(1 for h in step.hosts.values()
                          if h.state == HostState.SKIPPED and h.stopped)
            bad = [h for h in step.hosts.values() if h.state != HostState.SUCCEEDED
                   and not (h.state == HostState.SKIPPED and h.stopped)]
            if bad:
                _end(step, RolloutState.FAILED, f"{len(bad)} of {len(step.hosts)} hosts "
                     f"are not on {r.version}")
            else:
                _end(step, RolloutState.SUCCEEDED, f"all {len(step.hosts)} hosts on "
                     f"{r.version}" + (f" ({stopped} installed but left stopped)"
                                        if stopped else ""))
            return
        was_hub = r.specs[r.current_wave] == HUB_WAVE_SPEC
        if not was_hub and r.strategy.pause_until_promote:
            step.set(state=RolloutState.WAITING, awaiting_promote=True)
            step.note("rollout.waiting", "waiting for promote")
            return
        if not was_hub and r.strategy.pause_seconds > 0:
            step.set(state=RolloutState.WAITING,
                     resume_at=step.now + r.strategy.pause_seconds)
            step.note("rollout.waiting", f"pausing {r.strategy.pause_seconds:g}s")
            return
        nxt = r.current_wave + 1
        hub = r.specs[nxt] == HUB_WAVE_SPEC
        step.set(current_wave=nxt,
                 state=RolloutState.UPDATING_HUB if hub else RolloutState.RUNNING)
        step.note("wave.started", f"wave {nxt} ({r.specs[nxt]}): "
                  f"{len(step.tally.waves[nxt])} hosts", wave=nxt)


def _start_pending(step: _Step, room: int) -> None:
    """Start up to `room` pending hosts of the waves reached, in plan order, from the
    first host that may be pending (no host before `first_pending` is)."""
    r = step.r
    cw = r.current_wave
    order = step.tally.order
    left = sum(step.wave_pending[:cw + 1])
    i = step.first_pending
    prefix = True  # every host before i is known not to be pending
    while room > 0 and left > 0 and i < len(order):
        h = step.hosts[order[i]]
        if h.state == HostState.PENDING:
            if h.wave <= cw:
                room -= 1
                left -= 1
                step.host(h.name, "host.started", f"updating to {r.version}",
                          state=HostState.UPDATING, attempts=h.attempts + 1,
                          started_at=step.now, finished_at=0.0, operation_id="",
                          deadline=step.now + r.strategy.step_deadline_seconds,
                          healthy_since=0.0, step="", message="", waiting_for="",
                          stopped=False, failed_step="", reason="",
                          origin=origin(r, h.name, "attempt", h.attempts + 1))
                step.actions.append(UpdateHost(h.name, r.version, r.service))
            else:
                prefix = False  # a later wave's pending host: the cursor stays here
        i += 1
        if prefix:
            step.first_pending = i
