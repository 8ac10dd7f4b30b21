"""Fault points of the updater. It calls `faults.after_journal(op_id, step, status)`
right after each step event is durably journaled: a step's STARTED before the step acts,
its result after. The default does nothing. Tests inject one that fails or crashes the
manager there (the idea of temporalio's WorkerFailureInjector: swap one dependency for
one that fails on demand; see tests/fixtures/crashing_manager.py). Nothing in the
shipped manager reads a test switch.
"""

from __future__ import annotations

from typing import Protocol

from backendai.update_terms import Step, StepStatus


class UpdateFaults(Protocol):
    def after_journal(self, op_id: str, step: Step, status: StepStatus) -> None: ...


class NoFaults:
    """The production fault points: none."""

    def after_journal(self, op_id: str, step: Step, status: StepStatus) -> None:
        return None
