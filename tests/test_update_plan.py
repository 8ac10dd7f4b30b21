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
    cancel,
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


# ---- cancels (a forced lifecycle request) and a service left stopped --------------------

WHY = "cancelled by a stop request (force)"


def drive_cancel(plan: Plan, at: Step, *, interrupted: bool = False,
                 results: dict[Step, str | None] | None = None) -> tuple[list[Step], Finish]:
    """Run a plan; the cancel arrives while `at` runs (interrupted: `at` then fails)."""
    results = dict(results or {})
    ran: list[Step] = []
    plan, actions = transition(plan, Begin())
    while True:
        (action,) = actions
        if isinstance(action, Finish):
            return ran, action
        assert isinstance(action, Run)
        ran.append(action.step)
        msg = results.get(action.step)
        if action.step is at and not plan.cancel:
            plan = cancel(plan, WHY)
            if interrupted:
                msg = f"interrupted: {WHY}"
        ev = StepOk(action.step) if msg is None else StepFailed(action.step, msg)
        plan, actions = transition(plan, ev)


@pytest.mark.parametrize("step", ["download", "verify", "stage"])
@pytest.mark.parametrize("interrupted", [False, True])
def test_cancel_before_stop_ends_at_once_with_the_service_untouched(step, interrupted):
    ran, fin = drive_cancel(Plan(), Step(step), interrupted=interrupted)
    assert ran[-1] is Step(step) and S.STOP not in ran
    assert fin.outcome is Outcome.CANCELLED and not fin.rolled_back
    assert fin.message == f"{WHY}; the service was not touched"


@pytest.mark.parametrize("step", ["stop", "switch", "start", "health"])
@pytest.mark.parametrize("interrupted", [False, True])
def test_cancel_after_the_service_was_touched_rolls_back(step, interrupted):
    ran, fin = drive_cancel(Plan(), Step(step), interrupted=interrupted)
    assert ran[ran.index(Step(step)) + 1:] == list(ROLLBACK_STEPS)
    assert fin.outcome is Outcome.CANCELLED and fin.rolled_back
    assert fin.message == f"{WHY}; rolled back"


def test_cancel_during_commit_is_too_late():
    ran, fin = drive_cancel(Plan(), S.COMMIT)
    assert ran == list(UPDATE_STEPS) and fin.outcome is Outcome.SUCCEEDED


def test_cancel_of_a_manual_rollback_restores_what_it_was_leaving():
    ran, fin = drive_cancel(Plan(steps=ROLLBACK_OP_STEPS), S.SWITCH)
    assert ran == [S.STOP, S.SWITCH, *ROLLBACK_STEPS] and fin.outcome is Outcome.CANCELLED


def test_cancel_whose_rollback_fails_is_rollback_failed():
    _ran, fin = drive_cancel(Plan(), S.HEALTH, results={S.ROLLBACK_SWITCH: "gone"})
    assert fin.outcome is Outcome.ROLLBACK_FAILED
    assert fin.message == f"{WHY}; rollback failed at rollback_switch: gone"


def test_cancel_during_the_rollback_of_a_failure_lets_it_finish_as_rolled_back():
    _ran, fin = drive_cancel(Plan(), S.ROLLBACK_SWITCH, results={S.HEALTH: "unhealthy"})
    assert fin.outcome is Outcome.ROLLED_BACK and "health failed: unhealthy" in fin.message


def test_a_second_cancel_and_a_cancel_of_a_finished_plan_change_nothing():
    plan = cancel(Plan(), WHY)
    assert cancel(plan, "cancelled by a restart request (force)") == plan
    done, _ = transition(Plan(), Interrupted(S.DOWNLOAD, StepStatus.STARTED))
    assert cancel(done, WHY) == done


@pytest.mark.parametrize(("step", "status", "expect"), [
    ("validate", "ok", "cancelled"),
    ("download", "started", "cancelled"),
    ("download", "failed", "cancelled"),
    ("stage", "ok", "cancelled"),
    ("stop", "started", "rollback"),
    ("health", "started", "rollback"),
    ("health", "failed", "rollback"),
    ("health", "ok", "rollback"),      # without a cancel this would commit
    ("commit", "started", "commit"),
    ("rollback_switch", "started", "rollback"),
])
def test_recovery_of_a_cancel_finishes_the_same_cancel(step, status, expect):
    plan, (action,) = transition(Plan(cancel=WHY),
                                 Interrupted(Step(step), StepStatus(status), "why"))
    if expect == "rollback":
        assert action == Run(ROLLBACK_STEPS[0])
        for s in ROLLBACK_STEPS:
            plan, (action,) = transition(plan, StepOk(s))
        assert isinstance(action, Finish) and action.outcome is Outcome.CANCELLED
        assert action.message == f"{WHY}; rolled back"
    elif expect == "commit":
        assert action == Run(S.COMMIT)
    else:
        assert isinstance(action, Finish) and action.outcome is Outcome.CANCELLED


def test_a_stopped_service_ends_installed_stopped():
    ran, fin = drive(Plan(stopped=True), {})
    assert ran == list(UPDATE_STEPS)  # the shell skips start and health itself
    assert fin.outcome is Outcome.INSTALLED_STOPPED
    _ran, fin = drive(Plan(steps=ROLLBACK_OP_STEPS, stopped=True), {})
    assert fin.outcome is Outcome.INSTALLED_STOPPED
    _ran, fin = drive(Plan(stopped=True), {S.SWITCH: "x"})
    assert fin.outcome is Outcome.ROLLED_BACK
    _plan, (action,) = transition(Plan(stopped=True), Interrupted(S.COMMIT, StepStatus.OK))
    assert isinstance(action, Finish) and action.outcome is Outcome.INSTALLED_STOPPED
