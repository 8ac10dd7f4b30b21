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

A service with `instances` is updated one instance at a time (`rolling_steps`): after
stage, for each instance stop -> (switch, once, before the first start) -> start ->
health, then one commit. The sequence then repeats steps, so the plan keeps its
position in it, and recovery is told the position of the last journaled step (the
updater counts the forward steps it journaled). The rollback steps act on every
instance (stop what was touched, switch back, then restart each one at a time and gate
its health), so a failure or a crash at any instance rolls all of them back.
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
    position: int = -1         # index of `current` in the phase's sequence


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


def _finish(plan: Plan, outcome: Outcome, message: str) -> tuple[Plan, list[Action]]:
    return (replace(plan, phase=Phase.DONE, current=None, outcome=outcome),
            [Finish(outcome, message)])


def _fail_forward(plan: Plan, step: Step, message: str) -> tuple[Plan, list[Action]]:
    failure = f"{step.value} failed: {message}"
    if not _destructive(plan.steps, step):
        return _finish(replace(plan, failure=failure), Outcome.FAILED, failure)
    return _run(replace(plan, phase=Phase.ROLLBACK, failure=failure), ROLLBACK_STEPS[0])


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
            seq = plan.steps if plan.phase is Phase.FORWARD else ROLLBACK_STEPS
            nxt, at = _next(seq, plan.position)
            if nxt is not None:
                return _run(plan, nxt, at)
            if plan.phase is Phase.FORWARD:
                return _finish(plan, Outcome.SUCCEEDED, "")
            return _finish(plan, Outcome.ROLLED_BACK, f"{plan.failure}; rolled back")
        case StepFailed(step=step, message=msg) if step == plan.current:
            if plan.phase is Phase.FORWARD:
                return _fail_forward(plan, step, msg)
            return _finish(plan, Outcome.ROLLBACK_FAILED,
                           f"{plan.failure}; rollback failed at {step.value}: {msg}")
        case Interrupted(step=step, status=status, message=msg, position=position):
            return _recover(plan, step, status, msg, position)
    return plan, []  # a stale or unexpected event changes nothing


def _recover(plan: Plan, step: Step, status: StepStatus, msg: str,
             position: int | None) -> tuple[Plan, list[Action]]:
    why = "interrupted by a manager restart"
    failed = status is StepStatus.FAILED
    if step in ROLLBACK_STEPS or (failed and _destructive(plan.steps, step)):
        failure = plan.failure or (f"{step.value} failed: {msg}" if failed
                                   else f"{why} during {step.value}")
        # Every rollback step is idempotent: start the rollback over from its beginning.
        return _run(replace(plan, phase=Phase.ROLLBACK, failure=failure), ROLLBACK_STEPS[0])
    if failed:
        return _finish(plan, Outcome.FAILED, f"{step.value} failed: {msg}")
    if step not in plan.steps:  # nothing ran after validation
        return _finish(plan, Outcome.FAILED, f"{why} before the download; nothing changed")
    if status in (StepStatus.OK, StepStatus.SKIPPED):
        if not _destructive(plan.steps, step):  # the next step never began
            return _finish(plan, Outcome.FAILED, f"{why} after {step.value}; nothing changed")
        at = plan.steps.index(step) if position is None else position
        nxt, at = _next(plan.steps, at)
        if nxt is None:
            return _finish(plan, Outcome.SUCCEEDED, "")
        step = nxt
        position = at
    if step == plan.steps[-1] and (position is None or position == len(plan.steps) - 1):
        # commit: the release is healthy (every instance of it), finish recording it
        return _run(plan, step, len(plan.steps) - 1)
    if not _destructive(plan.steps, step):
        return _finish(plan, Outcome.FAILED, f"{why} during {step.value}; nothing changed")
    return _run(replace(plan, phase=Phase.ROLLBACK, failure=f"{why} during {step.value}"),
                ROLLBACK_STEPS[0])
