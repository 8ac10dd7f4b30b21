"""The update operation as a pure state machine: events in, a new plan and actions out.

No I/O and no clock here; `updater.py` journals each step before it acts, carries the
actions out and feeds the results back. The sequence of an update:

    download -> verify -> stage -> stop -> switch -> start -> health -> commit

Validation happens before the operation exists. A failure before `stop` ends the
operation as `failed` with the service untouched. Any failure from `stop` on rolls
back: rollback_stop -> rollback_switch -> rollback_start -> rollback_health, ending
`rolled_back` (or `rollback_failed` if a rollback step fails). A manual rollback is the
same machine with the steps `stop, switch, start, health, commit` towards the previous
release. After a manager crash, `Interrupted` with the last journaled event decides:
before `stop` -> failed (nothing changed); `commit` -> finish it; otherwise roll back.

A lifecycle request with `force` cancels the operation (`cancel(plan, reason)` marks the
plan; the shell interrupts a step that only waits, such as the download or the health
gate). The plan then ends at the next step result: before anything changed ->
`cancelled`; after the service was touched -> the rollback steps restore the previous
release, then `cancelled` (`rollback_failed` if they fail); once `commit` began, the
release is kept (`succeeded`). A cancel during the rollback of a failed update lets the
rollback finish (`rolled_back`). A crash during a cancel resumes as the same cancel.

`stopped`: the service was stopped when the operation was asked for (and the request did
not say `start_stopped`); the shell skips starting it and its health gate, and a
successful operation ends `installed_stopped`.

A service with `instances` is updated one instance at a time (`rolling_steps`): after
stage, for each instance stop -> (switch, once, before the first start) -> start ->
health, then one commit. The sequence then repeats steps, so the plan keeps its
position in it, and recovery is told the position of the last journaled step (the
updater counts the forward steps it journaled): only a `health: ok` of the last
instance leads to commit. The rollback steps act on every instance (stop what was
touched, switch back, then restart each one at a time and gate its health), so a
failure or a crash at any instance rolls all of them back.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from backendai.update_terms import Outcome, Step, StepStatus

UPDATE_STEPS = (Step.DOWNLOAD, Step.VERIFY, Step.STAGE, Step.STOP, Step.SWITCH, Step.START,
                Step.HEALTH, Step.COMMIT)
ROLLBACK_OP_STEPS = (Step.STOP, Step.SWITCH, Step.START, Step.HEALTH, Step.COMMIT)
ROLLBACK_STEPS = (Step.ROLLBACK_STOP, Step.ROLLBACK_SWITCH, Step.ROLLBACK_START,
                  Step.ROLLBACK_HEALTH)
FIRST_DESTRUCTIVE = Step.STOP


class Phase(enum.Enum):
    FORWARD = "forward"
    ROLLBACK = "rollback"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class Plan:
    steps: tuple[Step, ...] = UPDATE_STEPS
    phase: Phase = Phase.FORWARD
    current: Step | None = None  # the step being carried out
    failure: str = ""          # why the forward sequence failed (kept for the final report)
    outcome: Outcome | None = None
    cancel: str = ""           # why a forced lifecycle request cancelled it ("" if none)
    stopped: bool = False      # the service is left stopped (installed_stopped)
    position: int = -1         # index of `current` in the phase's sequence

    @property
    def cancelled(self) -> bool:
        """The forward sequence was ended by the cancel (not by a failure of its own)."""
        return bool(self.cancel) and self.failure == self.cancel


def rolling_steps(instances: int, steps: tuple[Step, ...] = UPDATE_STEPS) -> tuple[Step, ...]:
    """The forward sequence for a service with `instances`: the per-process steps
    (stop, switch, start, health) once per instance, switch only for the first."""
    if instances <= 1 or FIRST_DESTRUCTIVE not in steps:
        return steps
    first = steps.index(FIRST_DESTRUCTIVE)
    per = [s for s in steps[first:] if s is not Step.COMMIT]
    out = list(steps[:first])
    for i in range(instances):
        out += [s for s in per if s is not Step.SWITCH or i == 0]
    return (*out, *steps[first + len(per):])


def instance_at(steps: tuple[Step, ...], position: int) -> int:
    """Which instance (0-based) the forward step at `position` acts on."""
    return max(0, sum(1 for s in steps[:position + 1] if s is FIRST_DESTRUCTIVE) - 1)


# ---- events -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Begin:
    pass


@dataclass(frozen=True, slots=True)
class StepOk:
    step: Step


@dataclass(frozen=True, slots=True)
class StepFailed:
    step: Step
    message: str


@dataclass(frozen=True, slots=True)
class Interrupted:
    """Recovery after a manager crash: the last journaled event of the operation."""

    step: Step     # Step.VALIDATE if nothing ran after validation
    status: StepStatus
    message: str = ""
    position: int | None = None  # forward steps journaled - 1 (None: the step's first)


Event = Begin | StepOk | StepFailed | Interrupted


# ---- actions ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Run:
    step: Step


@dataclass(frozen=True, slots=True)
class Finish:
    outcome: Outcome
    message: str
    rolled_back: bool = False  # the previous release was restored (message: "... to X")


Action = Run | Finish


def _destructive(steps: tuple[Step, ...], step: Step) -> bool:
    """Whether the step may have changed the host (it is `stop` or later)."""
    if FIRST_DESTRUCTIVE not in steps or step not in steps:
        return step in ROLLBACK_STEPS
    return steps.index(step) >= steps.index(FIRST_DESTRUCTIVE)


def _run(plan: Plan, step: Step, position: int | None = None) -> tuple[Plan, list[Action]]:
    seq = plan.steps if plan.phase is Phase.FORWARD else ROLLBACK_STEPS
    at = seq.index(step) if position is None else position
    return replace(plan, current=step, position=at), [Run(step)]


def _finish(plan: Plan, outcome: Outcome, message: str, *,
            rolled_back: bool = False) -> tuple[Plan, list[Action]]:
    return (replace(plan, phase=Phase.DONE, current=None, outcome=outcome),
            [Finish(outcome, message, rolled_back)])


def _fail_forward(plan: Plan, step: Step, message: str) -> tuple[Plan, list[Action]]:
    failure = plan.cancel or f"{step.value} failed: {message}"
    if not _destructive(plan.steps, step):
        return _nothing_changed(replace(plan, failure=failure))
    return _roll_back(plan, failure)


def _nothing_changed(plan: Plan) -> tuple[Plan, list[Action]]:
    if plan.cancelled:
        return _finish(plan, Outcome.CANCELLED, f"{plan.cancel}; the service was not touched")
    return _finish(plan, Outcome.FAILED, plan.failure)


def _roll_back(plan: Plan, failure: str) -> tuple[Plan, list[Action]]:
    return _run(replace(plan, phase=Phase.ROLLBACK, failure=failure), ROLLBACK_STEPS[0])


def _succeed(plan: Plan) -> tuple[Plan, list[Action]]:
    return _finish(plan, Outcome.INSTALLED_STOPPED if plan.stopped else Outcome.SUCCEEDED, "")


def cancel(plan: Plan, reason: str) -> Plan:
    """Mark the plan cancelled by a forced lifecycle request; the next step result ends
    the forward sequence (see the module's docstring). A second cancel changes nothing."""
    if plan.phase is Phase.DONE or plan.cancel:
        return plan
    return replace(plan, cancel=reason)


def _next(steps: tuple[Step, ...], position: int) -> tuple[Step | None, int]:
    i = position + 1
    return (steps[i], i) if i < len(steps) else (None, i)


def transition(plan: Plan, event: Event) -> tuple[Plan, list[Action]]:
    if plan.phase is Phase.DONE:
        return plan, []
    match event:
        case Begin():
            return _run(plan, plan.steps[0])
        case StepOk(step=step) if step == plan.current:
            if plan.phase is Phase.FORWARD:
                nxt, at = _next(plan.steps, plan.position)
                if nxt is None:
                    return _succeed(plan)
                if plan.cancel:  # ends here: restore what changed, if anything did
                    if _destructive(plan.steps, step):
                        return _roll_back(plan, plan.cancel)
                    return _nothing_changed(replace(plan, failure=plan.cancel))
                return _run(plan, nxt, at)
            nxt, at = _next(ROLLBACK_STEPS, plan.position)
            if nxt is not None:
                return _run(plan, nxt, at)
            outcome = Outcome.CANCELLED if plan.cancelled else Outcome.ROLLED_BACK
            return _finish(plan, outcome, f"{plan.failure}; rolled back", rolled_back=True)
        case StepFailed(step=step, message=msg) if step == plan.current:
            if plan.phase is Phase.FORWARD:
                return _fail_forward(plan, step, msg)
            return _finish(plan, Outcome.ROLLBACK_FAILED,
                           f"{plan.failure}; rollback failed at {step.value}: {msg}")
        case Interrupted(step=step, status=status, message=msg, position=position):
            return _recover(plan, step, status, msg, position)
    return plan, []  # a stale or unexpected event changes nothing


def _recover(plan: Plan, step: Step, status: StepStatus, msg: str,
             position: int | None = None) -> tuple[Plan, list[Action]]:
    """After a crash: `step`/`status` is the last journaled step event (a `cancel` event
    is not one: the plan already carries the cancel)."""
    why = "interrupted by a manager restart"
    failed = status is StepStatus.FAILED
    if step in ROLLBACK_STEPS or (failed and _destructive(plan.steps, step)):
        failure = plan.cancel or plan.failure or (
            f"{step.value} failed: {msg}" if failed else f"{why} during {step.value}")
        # Every rollback step is idempotent: start the rollback over from its beginning.
        return _roll_back(plan, failure)
    if failed:
        return _nothing_changed(replace(plan, failure=plan.cancel or
                                        f"{step.value} failed: {msg}"))
    if step not in plan.steps:  # nothing ran after validation
        return _nothing_changed(replace(plan, failure=plan.cancel or
                                        f"{why} before the download; nothing changed"))
    if status in (StepStatus.OK, StepStatus.SKIPPED):
        if not _destructive(plan.steps, step):  # the next step never began
            return _nothing_changed(replace(plan, failure=plan.cancel or
                                            f"{why} after {step.value}; nothing changed"))
        at = plan.steps.index(step) if position is None else position
        nxt, at = _next(plan.steps, at)
        if nxt is None:
            return _succeed(plan)
        if plan.cancel:  # as if the cancel had ended it at this step's result
            return _roll_back(plan, plan.cancel)
        step = nxt
        position = at
    if step == plan.steps[-1] and (position is None or position == len(plan.steps) - 1):
        # commit: the release is healthy (every instance of it), finish recording it
        return _run(plan, step, len(plan.steps) - 1)
    if not _destructive(plan.steps, step):
        return _nothing_changed(replace(plan, failure=plan.cancel or
                                        f"{why} during {step.value}; nothing changed"))
    return _roll_back(plan, plan.cancel or f"{why} during {step.value}")
