"""What the updater answers: the results the service layer passes on to both transports."""

from __future__ import annotations

from dataclasses import dataclass

from backendai.update_terms import Step, StepStatus
from manager.updates.journal import EventRecord, OpRecord


@dataclass(frozen=True, slots=True)
class UpdateStarted:
    operation_id: str  # empty when the service already runs that version
    version: str
    message: str
    from_version: str = ""  # what the service ran when the request was decided

    @property
    def started(self) -> bool:
        """False: nothing to do (already on that version)."""
        return bool(self.operation_id)


@dataclass(frozen=True, slots=True)
class RollbackStarted:
    operation_id: str
    version: str  # the release switched back to


@dataclass(frozen=True, slots=True)
class ReleaseInfo:
    version: str
    current: bool
    previous: bool
    installed: float  # unix time


@dataclass(frozen=True, slots=True)
class StepReport:
    """One step of an operation as GetUpdate / GET /update report it."""

    step: str
    status: str           # "started" (still running) | "ok" | "failed" | "skipped"
    message: str = ""
    started: float = 0.0  # unix time
    elapsed: float = 0.0  # seconds, once done


@dataclass(frozen=True, slots=True)
class OperationReport:
    op: OpRecord
    steps: tuple[StepReport, ...]
    step: str  # the step it is at ("" once done)


def report(op: OpRecord, events: list[EventRecord]) -> OperationReport:
    """An operation and its journaled events as one entry per step, in order (a step
    that ran twice, such as a rollback step after a restart, appears twice)."""
    steps: list[StepReport] = []
    open_at: dict[Step, int] = {}  # step -> index of its entry still "started"
    for ev in events:
        if ev.step is Step.DONE:
            continue
        i = open_at.pop(ev.step, None)
        if i is None:
            steps.append(StepReport(ev.step.value, ev.status.value, ev.message, ev.at,
                                    ev.elapsed))
            if ev.status is StepStatus.STARTED:
                open_at[ev.step] = len(steps) - 1
        else:
            steps[i] = StepReport(ev.step.value, ev.status.value, ev.message or steps[i].message,
                                  steps[i].started, ev.elapsed)
    current = ""
    if op.state == "running" and steps:
        current = steps[max(open_at.values())].step if open_at else steps[-1].step
    return OperationReport(op, tuple(steps), current)
