"""One running update operation as the updater's shell holds it (`Operation`: its
journal record, its service's processes — one, or each instance of a service with
`instances` —, the events that cancel it), and what a step answers."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from pathlib import Path

from backendai.errors import BackendAIError
from backendai.update_terms import OpKind, Step, StepStatus
from manager.config import ServiceConfig
from manager.supervision.unit import ServiceUnit
from manager.updates import plan as update_plan
from manager.updates.journal import OpRecord
from manager.updates.release_dirs import ReleaseDirs


def describe(exc: BaseException) -> str:
    """A clear, one-line reason for an error, without internals or secrets."""
    if isinstance(exc, BackendAIError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f": {Path(exc.filename).name}" if exc.filename else ""
        return f"{exc.strerror or type(exc).__name__}{where}"
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True, slots=True)
class StepDone:
    """What a step did: the message journaled with it, and whether it had nothing to do."""

    message: str
    status: StepStatus = StepStatus.OK


def skipped(why: str) -> StepDone:
    return StepDone(f"skipped: {why}", StepStatus.SKIPPED)


class Interrupted(BackendAIError):
    """A waiting step was interrupted by a cancel."""


class Operation:
    """The I/O context of one running operation."""

    def __init__(self, rec: OpRecord, members: list[tuple[ServiceConfig, ServiceUnit]],
                 *, recovering: bool = False) -> None:
        self.rec = rec
        self.members = members
        self.cfg, self.unit = members[0]  # the update source and install_root all share
        base = update_plan.UPDATE_STEPS if rec.kind is OpKind.UPDATE else \
            update_plan.ROLLBACK_OP_STEPS
        self.steps = update_plan.rolling_steps(len(members), base)
        self.dirs = ReleaseDirs(self.cfg.install_root)
        self.work = self.dirs.download_dir(rec.id)
        self.health_pids: dict[str, int] = {}
        self.position = -1  # of the forward step being carried out; -1 in the rollback
        # instances a forward step may have stopped or restarted (after a crash: any)
        self.touched: set[str] = {u.name for _c, u in members} if recovering else set()
        self.step: Step | None = None  # the step being carried out
        self.cancelled = asyncio.Event()  # a forced lifecycle request cancels it
        self.abort = threading.Event()  # the same, for the download thread
        self.finished = asyncio.Event()

    @property
    def grouped(self) -> bool:
        """A service with instances: per-instance steps, rollback steps on all of them."""
        return len(self.members) > 1

    def member(self) -> tuple[ServiceConfig, ServiceUnit]:
        """The instance the current forward step acts on (the first in the rollback)."""
        return self.members[update_plan.instance_at(self.steps, self.position)]

    def starts_service(self, *, rollback: bool) -> bool:
        """Whether this operation starts the service (its start and health steps run):
        not when it was stopped before (leave_stopped); on the rollback after a cancel,
        as the cancelling request wants it (a stop leaves it stopped)."""
        rec = self.rec
        if rollback and rec.cancel_request:
            return rec.cancel_request != "stop"
        return not rec.leave_stopped
