"""The pure update plan: events in, actions out; no I/O."""

from __future__ import annotations

import pytest

from backendai.update_terms import Step, StepStatus
from manager.updates.plan import (
    ROLLBACK_OP_STEPS,
    ROLLBACK_STEPS,
    UPDATE_STEPS,
    Begin,
    Finish,
    Interrupted,
    Outcome,
    Phase,
    Plan,
    Run,
    StepFailed,
    StepOk,
    transition,
)

S = Step


def drive(plan: Plan, results: dict[Step, str | None]) -> tuple[list[Step], Finish]:
    """Run a plan to its end; results[step] = failure message, or None/absent for ok."""
    ran: list[Step] = []
    plan, actions = transition(plan, Begin())
    while True:
        (action,) = actions
        if isinstance(action, Finish):
            return ran, action
        assert isinstance(action, Run)
        ran.append(action.step)
        msg = results.get(action.step)
        ev = StepOk(action.step) if msg is None else StepFailed(action.step, msg)
        plan, actions = transition(plan, ev)


def test_happy_path_runs_every_step_in_order():
    ran, fin = drive(Plan(), {})
    assert ran == list(UPDATE_STEPS)
    assert fin.outcome is Outcome.SUCCEEDED


@pytest.mark.parametrize("step", ["download", "verify", "stage"])
def test_failure_before_stop_fails_without_touching_the_service(step):
    ran, fin = drive(Plan(), {Step(step): "boom"})
    assert ran == list(UPDATE_STEPS[:UPDATE_STEPS.index(Step(step)) + 1])
    assert fin.outcome is Outcome.FAILED
    assert fin.message == f"{step} failed: boom"


@pytest.mark.parametrize("step", ["stop", "switch", "start", "health", "commit"])
def test_failure_from_stop_on_rolls_back(step):
    ran, fin = drive(Plan(), {Step(step): "bad"})
    assert ran[-len(ROLLBACK_STEPS):] == list(ROLLBACK_STEPS)
    assert fin.outcome is Outcome.ROLLED_BACK
    assert f"{step} failed: bad" in fin.message


def test_failed_rollback_reports_both_failures():
    ran, fin = drive(Plan(), {S.HEALTH: "unhealthy", S.ROLLBACK_START: "crashed"})
    assert ran[-1] is S.ROLLBACK_START
    assert fin.outcome is Outcome.ROLLBACK_FAILED
    assert "health failed: unhealthy" in fin.message
    assert "rollback failed at rollback_start: crashed" in fin.message


def test_manual_rollback_operation_uses_its_own_steps():
    ran, fin = drive(Plan(steps=ROLLBACK_OP_STEPS), {})
    assert ran == list(ROLLBACK_OP_STEPS)
    assert fin.outcome is Outcome.SUCCEEDED
    ran, fin = drive(Plan(steps=ROLLBACK_OP_STEPS), {S.STOP: "x"})
    assert fin.outcome is Outcome.ROLLED_BACK


def test_stale_and_unexpected_events_change_nothing():
    plan, _ = transition(Plan(), Begin())
    assert transition(plan, StepOk(S.HEALTH)) == (plan, [])
    done, _ = transition(Plan(), Interrupted(S.DOWNLOAD, StepStatus.STARTED))
    assert done.phase is Phase.DONE
    assert transition(done, StepOk(S.DOWNLOAD)) == (done, [])


@pytest.mark.parametrize(("step", "status", "expect"), [
    ("validate", "ok", "failed"),
    ("download", "started", "failed"),
    ("verify", "ok", "failed"),
    ("stage", "started", "failed"),
    ("stage", "ok", "failed"),            # stop never began: nothing changed
    ("stop", "started", "rollback"),
    ("stop", "ok", "rollback"),
    ("switch", "started", "rollback"),
    ("start", "started", "rollback"),
    ("health", "started", "rollback"),
    ("health", "ok", "commit"),
    ("commit", "started", "commit"),
    ("commit", "ok", "succeeded"),
    ("rollback_stop", "started", "rollback"),
    ("rollback_start", "ok", "rollback"),
    ("health", "failed", "rollback"),
    ("verify", "failed", "failed"),
])
def test_recovery_after_a_crash_finishes_or_rolls_back(step, status, expect):
    """Steps and statuses as the journal stores them (the text older databases hold)."""
    plan, actions = transition(Plan(), Interrupted(Step(step), StepStatus(status), "why"))
    (action,) = actions
    if expect == "rollback":
        assert action == Run(ROLLBACK_STEPS[0])
        assert plan.phase is Phase.ROLLBACK
    elif expect == "commit":
        assert action == Run(S.COMMIT)
    else:
        assert isinstance(action, Finish)
        assert action.outcome.value == expect


def test_recovered_rollback_reports_the_interruption():
    plan, _ = transition(Plan(), Interrupted(S.START, StepStatus.STARTED))
    for step in ROLLBACK_STEPS[:-1]:
        plan, _ = transition(plan, StepOk(step))
    plan, (fin,) = transition(plan, StepOk(ROLLBACK_STEPS[-1]))
    assert isinstance(fin, Finish)
    assert fin.outcome is Outcome.ROLLED_BACK
    assert "interrupted by a manager restart during start" in fin.message
