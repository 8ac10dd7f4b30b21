"""The updater: the I/O shell that carries out `update_plan` for each operation.

Each step's "started" event is journaled (SQLite, synchronous) before the step acts;
its result is journaled after. On start, operations a crash interrupted are resumed
or rolled back (see update_plan), so the host ends on the old or the new release,
running. One operation per service at a time.

After each journaled step event the updater calls its fault points (manager/updates/
faults.py; none in production): tests crash or fail the manager there.

Before an update is accepted, the store is asked whether it has the package and its
SHA256SUMS (`fetch.probe`, bounded by STORE_CHECK_MAX): a missing release is NotFound,
an unreachable store Unavailable, and nothing is created or journaled.

Operator actions versus operations (`before_lifecycle`, called by the control layer for
every start, stop and restart): while an operation runs on the service the request is
refused (FailedPrecondition naming the operation), so an update never "rolls back and
restarts" a service the operator just stopped. With `force` the operation is cancelled
on purpose first: the cancel is journaled, a step that only waits (the download, the
health gate) is interrupted, the plan restores the previous release (left stopped for
a stop request, started for a start or restart) and ends `cancelled`; then the request
does what it asked. If that rollback fails (`rollback_failed`), a stop still goes ahead
(stopping never makes it worse), a start or restart is refused (ServiceFailed) naming
the operation: it would start whatever release the failed rollback left.

An operation on a service the operator stopped (desired "stopped") installs and switches
but leaves it stopped (`installed_stopped`), unless the request says `start_stopped`.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from backendai import package_store
from backendai.errors import (
    BackendAIError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotConfigured,
    NotFound,
    ServiceFailed,
    Unavailable,
)
from backendai.update_terms import OpKind, Outcome, Step, StepStatus, outcome_text, outcome_words
from backendai.validate import check_origin, check_version
from manager.config import ManagerConfig, ServiceConfig
from manager.statestore import StateStore
from manager.supervision.states import State, UpdateSummary
from manager.supervision.unit import ServiceUnit
from manager.updates import fetch as package_fetch
from manager.updates import plan as update_plan
from manager.updates import verify as package_verify
from manager.updates.extract import extract_release, remove_leftovers
from manager.updates.faults import NoFaults, UpdateFaults
from manager.updates.health_probe import ProbeSpec, health_gate
from manager.updates.journal import (
    EventRecord,
    OpRecord,
    UpdateJournal,
    check_operation_id,
    is_operation_id,
)
from manager.updates.release_dirs import ReleaseDirs
from manager.updates.results import (
    OperationReport,
    ReleaseInfo,
    RollbackStarted,
    UpdateStarted,
    report,
)

log = structlog.get_logger(__name__)

STORE_CHECK_MAX = 10.0  # seconds: the store check before an update is accepted
LIFECYCLE_REQUESTS = ("start", "stop", "restart")
# Steps that only wait (a download, a health gate): a cancel interrupts them at once;
# every other step is short and ends before the cancel acts.
INTERRUPTIBLE = (Step.DOWNLOAD, Step.HEALTH)
CANCEL_MARGIN = 30.0


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


def _skipped(why: str) -> StepDone:
    return StepDone(f"skipped: {why}", StepStatus.SKIPPED)


class _Interrupted(BackendAIError):
    """A waiting step was interrupted by a cancel."""


class _Op:
    """The I/O context of one running operation."""

    def __init__(self, rec: OpRecord, cfg: ServiceConfig, unit: ServiceUnit) -> None:
        self.rec = rec
        self.cfg = cfg
        self.unit = unit
        self.dirs = ReleaseDirs(cfg.install_root)
        self.work = self.dirs.download_dir(rec.id)
        self.health_pid = 0
        self.step: Step | None = None  # the step being carried out
        self.cancelled = asyncio.Event()  # a forced lifecycle request cancels it
        self.abort = threading.Event()  # the same, for the download thread
        self.finished = asyncio.Event()

    def starts_service(self, *, rollback: bool) -> bool:
        """Whether this operation starts the service (its start and health steps run):
        not when it was stopped before (leave_stopped); on the rollback after a cancel,
        as the cancelling request wants it (a stop leaves it stopped)."""
        rec = self.rec
        if rollback and rec.cancel_request:
            return rec.cancel_request != "stop"
        return not rec.leave_stopped


class Updater:
    def __init__(self, config: ManagerConfig, units: Mapping[str, ServiceUnit],
                 store: StateStore, *, faults: UpdateFaults | None = None) -> None:
        """faults: called at each step boundary (tests inject failures there)."""
        self.config = config
        self.units = dict(units)
        self.journal = UpdateJournal(store)
        self.faults: UpdateFaults = faults if faults is not None else NoFaults()
        self._running: dict[str, str] = {}      # service -> operation id
        self._live: dict[str, _Op] = {}         # service -> its running operation
        self._requests: dict[str, asyncio.Lock] = {}  # service -> one request at a time
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._tick = asyncio.Event()            # replaced after each journaled event
        self._stop = asyncio.Event()
        self.recovered = asyncio.Event()        # set once interrupted operations are known
        self._tg: asyncio.TaskGroup | None = None

    # ---- lifecycle ------------------------------------------------------------------

    def _updatable(self) -> list[ServiceConfig]:
        return [s for s in self.config.services if s.install_root and s.name in self.units]

    async def run(self) -> None:
        """Recover interrupted operations, then run operations until shutdown()."""
        for unit in self.units.values():  # the units re-adopt their services first
            await unit.ready.wait()  # (the daemon bounds this wait)
        interrupted = []
        for op in self.journal.running_ops():
            cfg = self.config.service(op.service)
            if cfg is None or not cfg.install_root or op.service not in self.units:
                # The config changed while the manager was down: nothing left to drive.
                self.journal.append(op.id, Step.DONE, StepStatus.FAILED, "interrupted, and the "
                                    "service is no longer configured for updates",
                                    final=True, outcome=Outcome.FAILED)
                log.warning("update.abandoned", op=op.id, service=op.service)
                continue
            interrupted.append(op)
            self._running[op.service] = op.id
        for cfg in self._updatable():
            dirs = ReleaseDirs(cfg.install_root)
            for name in remove_leftovers(dirs.releases):
                log.info("update.leftover_removed", service=cfg.name, path=name)
            dirs.remove_downloads(keep={op.id for op in interrupted})
            self._publish_version(cfg.name)
            self._publish_summary(cfg.name)
        self.recovered.set()
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            for op in interrupted:
                # the cancel event is not a step: the plan carries the cancel itself
                last = [e for e in self.journal.events(op.id) if e.step is not Step.CANCEL][-1]
                log.warning("update.recovering", op=op.id, service=op.service,
                            step=last.step.value, status=last.status.value,
                            cancel=op.cancel_request)
                self._launch(op, update_plan.Interrupted(last.step, last.status, last.message))
            await self._stop.wait()
            self._tg = None
            for task in list(self._tasks.values()):
                task.cancel()

    async def shutdown(self) -> None:
        self._stop.set()

    # ---- requests -------------------------------------------------------------------

    def _service(self, service: str, *, need_url: bool) -> tuple[ServiceConfig, ServiceUnit]:
        cfg = self.config.service(service)
        unit = self.units.get(service)
        if cfg is None or unit is None:
            raise NotFound(f"no service named {service!r}")
        if not cfg.install_root or (need_url and not cfg.update.package_url):
            raise NotConfigured(f"updates are not configured for service {service!r} "
                                "(set install_root and package_url)")
        return cfg, unit

    def _check_idle(self, service: str) -> None:
        running = self._running.get(service)
        if running:
            op = self.journal.op(running)
            what = f"{op.kind.value} to version {op.to_version}" if op else "an operation"
            raise FailedPrecondition(f"{what} is already running on service {service!r} "
                                     f"(operation {running}); wait for it to end")
        if self._tg is None:
            raise Unavailable("the manager is starting or stopping; try again")

    def _request_lock(self, service: str) -> asyncio.Lock:
        """Update and rollback requests of one service are decided one at a time (the
        store check awaits between the idle check and the operation's creation)."""
        return self._requests.setdefault(service, asyncio.Lock())

    def _leave_stopped(self, unit: ServiceUnit, start_stopped: bool) -> bool:
        """Whether the operation leaves the service stopped: the operator stopped it
        (desired "stopped"), or, where the backend does not know what was last asked,
        it is simply not running (Debian's try-restart). A failed service (BACKOFF,
        EXITED, FATAL) is started: the new release may be what fixes it."""
        if start_stopped:
            return False
        st = unit.status()
        if st.desired:
            return st.desired == "stopped"
        return st.state is State.STOPPED

    async def update(self, service: str, version: str, *, origin: str = "",
                     start_stopped: bool = False) -> UpdateStarted:
        version = check_version(version)
        origin = check_origin(origin)
        cfg, unit = self._service(service, need_url=True)
        async with self._request_lock(service):
            self._check_idle(service)
            current = ReleaseDirs(cfg.install_root).current_version()
            if current == version:
                return UpdateStarted("", version, f"already on version {version}")
            await self._check_store(cfg, version)
            self._check_idle(service)
            op = self._create(service, OpKind.UPDATE, current, version,
                              f"update {current or '(none)'} -> {version}", origin=origin,
                              leave_stopped=self._leave_stopped(unit, start_stopped))
        return UpdateStarted(op.id, version, f"update to version {version} started")

    async def _check_store(self, cfg: ServiceConfig, version: str) -> None:
        """The store has the package and its SHA256SUMS, or the update is refused with
        nothing created: NotFound with the URL looked at, Unavailable when the store
        does not answer, FailedPrecondition when it refuses us (credentials, TLS)."""
        url = package_store.expand_url(cfg.update.package_url, version)
        urls = (url, package_store.sibling_url(url, package_verify.SUMS_NAME))
        auth = self._credentials(cfg)
        policy = self._policy(cfg)
        limit = min(cfg.update.download_timeout, STORE_CHECK_MAX)
        try:
            async with asyncio.timeout(limit + 1.0):
                results = await asyncio.gather(
                    *(asyncio.to_thread(package_fetch.probe, u, policy, authorization=auth,
                                        timeout=limit) for u in urls),
                    return_exceptions=True)
        except TimeoutError:
            raise Unavailable(f"the package store did not answer within {limit:g}s "
                              f"({package_store.redact(url)}); nothing was changed") from None
        errors = [r for r in results if isinstance(r, BaseException)]
        for kind in (NotFound, Unavailable, BackendAIError):  # the most telling first
            for err in errors:
                if isinstance(err, kind):
                    self._refuse_store(err, version)
        for err in errors:
            raise err

    @staticmethod
    def _refuse_store(err: BackendAIError, version: str) -> None:
        if isinstance(err, NotFound):
            raise NotFound(f"version {version} is not in the package store: {err}; "
                           "nothing was changed") from None
        if isinstance(err, Unavailable):
            raise Unavailable(f"cannot check the package store for version {version}: {err}; "
                              "nothing was changed") from None
        raise FailedPrecondition(f"cannot check the package store for version {version}: "
                                 f"{err}; nothing was changed") from None

    async def rollback(self, service: str) -> RollbackStarted:
        cfg, unit = self._service(service, need_url=False)
        async with self._request_lock(service):
            self._check_idle(service)
            dirs = ReleaseDirs(cfg.install_root)
            current = dirs.current_version()
            target = self.journal.previous(service)
            if not target or target == current or not dirs.has(target):
                installed = self.journal.installed(service)
                others = sorted((v for v in dirs.on_disk() if v != current and dirs.has(v)),
                                key=lambda v: installed.get(v, 0.0), reverse=True)
                if not others:
                    raise FailedPrecondition(f"service {service!r} has no previous release "
                                             "on disk to roll back to")
                target = others[0]
            op = self._create(service, OpKind.ROLLBACK, current, target,
                              f"rollback {current or '(none)'} -> {target}",
                              leave_stopped=self._leave_stopped(unit, False))
        return RollbackStarted(op.id, target)

    # ---- operator actions versus running operations -----------------------------------

    def _describe_running(self, live: _Op) -> str:
        rec = live.rec
        step = live.step.value if live.step is not None else "validate"
        return (f"{rec.kind.value} {rec.from_version or '(none)'} -> {rec.to_version}, "
                f"operation {rec.id}, at step {step}")

    async def before_lifecycle(self, service: str, request: str, *,
                               force: bool) -> OpRecord | None:
        """Called before every start, stop and restart of `service`. Returns at once
        (None) when no operation runs on it. Otherwise refuses (FailedPrecondition
        naming the operation), or with `force` cancels the operation, waits for it to
        end and returns its record (see the module's docstring for a failed cancel)."""
        if request not in LIFECYCLE_REQUESTS:
            raise InvalidArgument(f"not a lifecycle request: {request!r}")
        live = self._live.get(service)
        if live is None:
            return None
        if not force:
            raise FailedPrecondition(
                f"{request} refused: service {service!r} is being updated "
                f"({self._describe_running(live)}); wait for the operation to end, or "
                f"repeat the {request} with force to cancel it first (the previous release "
                "is restored)")
        rec = await self._cancel(live, request)
        if rec is not None and rec.outcome is Outcome.ROLLBACK_FAILED and request != "stop":
            raise ServiceFailed(
                f"{request} not done: cancelling operation {rec.id} failed ({rec.message}); "
                f"service {service!r} is as the failed rollback left it; stop it, or roll "
                "back by hand")
        return rec

    async def _cancel(self, live: _Op, request: str) -> OpRecord | None:
        rec = live.rec
        if not rec.cancel_request:
            reason = f"cancelled by a {request} request (force)"
            self.journal.cancel(rec.id, request, reason)
            self.faults.after_journal(rec.id, Step.CANCEL, StepStatus.OK)
            live.rec = replace(rec, cancel_request=request, cancel_reason=reason)
            live.cancelled.set()
            live.abort.set()
            self._notify()
            self._publish_summary(rec.service)
            log.warning("update.cancelling", op=rec.id, service=rec.service, request=request,
                        step=live.step.value if live.step else "")
        limit = self._cancel_limit(live.cfg)
        try:
            async with asyncio.timeout(limit):
                await live.finished.wait()
        except TimeoutError:
            raise DeadlineExceeded(
                f"operation {rec.id} is still being cancelled after {limit:g}s; the "
                f"{request} was not done (follow the operation: GET /update/{rec.id})"
            ) from None
        return self.journal.op(rec.id)

    @staticmethod
    def _cancel_limit(cfg: ServiceConfig) -> float:
        """How long a forced request waits for the cancel: the interrupted step's wind-
        down (one network read), then the rollback's stop, start and health gate."""
        policy, gate = cfg.policy, cfg.health
        return (cfg.update.download_timeout + policy.stop_timeout + policy.start_secs
                + gate.healthy_deadline + gate.min_healthy_time + CANCEL_MARGIN)

    def releases(self, service: str) -> list[ReleaseInfo]:
        cfg, _unit = self._service(service, need_url=False)
        dirs = ReleaseDirs(cfg.install_root)
        current = dirs.current_version()
        previous = self.journal.previous(service)
        installed = self.journal.installed(service)
        out = []
        for v in dirs.on_disk():
            when = installed.get(v)
            if when is None:
                try:
                    when = (dirs.releases / v).stat().st_mtime
                except FileNotFoundError:  # pruned just now
                    continue
            out.append(ReleaseInfo(v, v == current, v == previous and v != current, when))
        return sorted(out, key=lambda r: r.installed, reverse=True)

    def operation(self, operation_id: str) -> OpRecord | None:
        return self.journal.op(operation_id) if is_operation_id(operation_id) else None

    def report(self, service: str, operation_id: str = "") -> OperationReport:
        """One operation with its steps: by id (of `service`, when one is named), else the
        service's running operation, else its last one."""
        if operation_id:
            check_operation_id(operation_id)
            rec = self.journal.op(operation_id)
            if rec is None:
                raise NotFound(f"no update operation {operation_id}")
            if service and rec.service != service:
                raise NotFound(f"operation {operation_id} is not an operation of service "
                               f"{service!r} (it is of {rec.service!r})")
        else:
            self._service(service, need_url=False)
            live = self._live.get(service)
            rec = live.rec if live is not None else self.journal.last_op(service)
            if rec is None:
                raise NotFound(f"no update has run on service {service!r} yet")
        live = self._live.get(rec.service)
        if live is not None and live.rec.id == rec.id:
            rec = self.journal.op(rec.id) or rec  # the journal has the cancel columns too
        return report(rec, self.journal.events(rec.id))

    async def watch(self, operation_id: str) -> AsyncIterator[EventRecord]:
        """Every event of an operation from its first to its final one (replayed if done)."""
        check_operation_id(operation_id)
        if self.journal.op(operation_id) is None:
            raise NotFound(f"no update operation {operation_id}")
        seq = -1
        while True:
            tick = self._tick
            for ev in self.journal.events(operation_id, seq):
                yield ev
                seq = ev.seq
                if ev.final:
                    return
            await tick.wait()

    # ---- running an operation ---------------------------------------------------------

    def _create(self, service: str, kind: OpKind, current: str, target: str,
                what: str, *, origin: str = "", leave_stopped: bool = False) -> OpRecord:
        op = OpRecord(id=uuid.uuid4().hex, service=service, kind=kind, from_version=current,
                      to_version=target, created=time.time(), origin=origin,
                      leave_stopped=leave_stopped)
        if leave_stopped:
            what += " (the service is stopped: it stays stopped)"
        self.journal.create_op(op, EventRecord(op.id, 0, Step.VALIDATE, StepStatus.OK, what,
                                               at=op.created))
        self._notify()
        self._running[service] = op.id
        log.info("update.accepted", op=op.id, service=service, kind=kind.value,
                 from_version=current, to_version=target, origin=origin,
                 leave_stopped=leave_stopped)
        self._launch(op, update_plan.Begin())
        return op

    def _launch(self, rec: OpRecord, first: update_plan.Event) -> None:
        assert self._tg is not None  # noqa: S101 - callers checked
        cfg = self.config.service(rec.service)
        assert cfg is not None  # noqa: S101 - operations name configured services
        live = _Op(rec, cfg, self.units[rec.service])
        if rec.cancel_request:  # a cancel the crash interrupted: it goes on as one
            live.cancelled.set()
            live.abort.set()
        self._running[rec.service] = rec.id
        self._live[rec.service] = live
        self._publish_summary(rec.service)
        task = self._tg.create_task(self._execute(live, first), name=f"update-{rec.id}")
        self._tasks[rec.id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(rec.id, None))

    async def _execute(self, op: _Op, first: update_plan.Event) -> None:
        rec = op.rec
        steps = update_plan.UPDATE_STEPS if rec.kind is OpKind.UPDATE else \
            update_plan.ROLLBACK_OP_STEPS
        plan, actions = update_plan.transition(
            update_plan.Plan(steps=steps, cancel=rec.cancel_reason, stopped=rec.leave_stopped),
            first)
        began = time.monotonic()
        try:
            while actions:
                action = actions[0]
                if isinstance(action, update_plan.Finish):
                    self._finish(op, action, time.monotonic() - began)
                    return
                step = action.step
                op.step = step
                self._record(op, step, StepStatus.STARTED)
                t0 = time.monotonic()
                event: update_plan.Event
                try:
                    done = await self._run_step(op, step, plan.phase)
                    message, status = done.message, done.status
                    event = update_plan.StepOk(step)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # every failure feeds the plan
                    message, status = describe(exc), StepStatus.FAILED
                    event = update_plan.StepFailed(step, message)
                    if not isinstance(exc, BackendAIError | OSError):
                        log.exception("update.step_error", op=rec.id, step=step)
                elapsed = time.monotonic() - t0
                self._record(op, step, status, message, elapsed)
                log.info("update.step", op=rec.id, service=rec.service, step=step.value,
                         status=status.value, elapsed=round(elapsed, 3), detail=message)
                if op.rec.cancel_reason:  # asked while the step ran: its result decides
                    plan = update_plan.cancel(plan, op.rec.cancel_reason)
                plan, actions = update_plan.transition(plan, event)
        finally:
            op.finished.set()

    async def _run_step(self, op: _Op, step: Step, phase: update_plan.Phase) -> StepDone:
        """Carry out one step; a step that only waits is interrupted by a cancel."""
        if step not in INTERRUPTIBLE or phase is not update_plan.Phase.FORWARD:
            return await self._do(op, step)
        if op.cancelled.is_set():
            raise _Interrupted(f"not run: {op.rec.cancel_reason}")
        work = asyncio.ensure_future(self._do(op, step))
        cancel = asyncio.ensure_future(op.cancelled.wait())
        try:
            await asyncio.wait({work, cancel}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            work.cancel()
            raise
        finally:
            cancel.cancel()
        if not work.done():
            work.cancel()
            await asyncio.wait({work})  # let it clean up; its result no longer matters
            raise _Interrupted(f"interrupted: {op.rec.cancel_reason}")
        return work.result()

    def _finish(self, op: _Op, fin: update_plan.Finish, elapsed: float) -> None:
        rec = op.rec
        outcome = fin.outcome
        match outcome:
            case Outcome.SUCCEEDED:
                message = f"{rec.kind.value} to version {rec.to_version} succeeded"
            case Outcome.INSTALLED_STOPPED:
                message = (f"{rec.kind.value} to version {rec.to_version} "
                           f"{outcome_words(outcome)}: the service was stopped and stays "
                           "stopped")
            case _ if fin.rolled_back:
                message = f"{fin.message} to version {rec.from_version or '(none)'}"
            case _:
                message = fin.message
        if fin.rolled_back and not op.starts_service(rollback=True) and rec.from_version:
            message += " (left stopped)"
        op.step = None
        package_fetch.remove_tree(op.work)
        op.dirs.remove_downloads(keep=set(self._running.values()) - {rec.id})
        ok = outcome in (Outcome.SUCCEEDED, Outcome.INSTALLED_STOPPED)
        self._record(op, Step.DONE, StepStatus.OK if ok else StepStatus.FAILED,
                     message, elapsed, final=True, outcome=outcome)
        self._running.pop(rec.service, None)
        self._live.pop(rec.service, None)
        log.info("update.finished", op=rec.id, service=rec.service, outcome=outcome.value,
                 detail=message, elapsed=round(elapsed, 3))
        self._publish_version(rec.service)
        self._publish_summary(rec.service)

    def _record(self, op: _Op, step: Step, status: StepStatus, message: str = "",
                elapsed: float = 0.0, *, final: bool = False,
                outcome: Outcome | None = None) -> None:
        op_id = op.rec.id
        self.journal.append(op_id, step, status, message, elapsed, final=final,
                            outcome=outcome)
        self._notify()
        if not final:
            self._publish_summary(op.rec.service)
        self.faults.after_journal(op_id, step, status)

    def _notify(self) -> None:
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()

    # ---- the steps --------------------------------------------------------------------

    async def _do(self, op: _Op, step: Step) -> StepDone:
        rec, unit, dirs = op.rec, op.unit, op.dirs
        match step:
            case Step.DOWNLOAD:
                return StepDone(await self._download(op))
            case Step.VERIFY:
                return StepDone(await self._verify(op))
            case Step.STAGE:
                package = self._package_path(op)
                await asyncio.to_thread(extract_release, package, dirs.releases,
                                        rec.to_version, op.cfg.update)
                return StepDone(f"staged in releases/{rec.to_version}")
            case Step.STOP | Step.ROLLBACK_STOP:
                st = await unit.stop()
                return StepDone(f"service {st.state.value.lower()}")
            case Step.SWITCH:
                await asyncio.to_thread(dirs.switch, rec.to_version)
                unit.set_version(rec.to_version)
                return StepDone(f"current -> releases/{rec.to_version}")
            case Step.START | Step.ROLLBACK_START:
                rollback = step is Step.ROLLBACK_START
                if rollback and not rec.from_version:
                    return _skipped("there was no release before")
                if not op.starts_service(rollback=rollback):
                    return _skipped(self._why_stopped(op, rollback=rollback))
                st = await unit.start(wait=True)
                op.health_pid = st.pid
                return StepDone(f"service running, pid {st.pid}")
            case Step.HEALTH:
                if not op.starts_service(rollback=False):
                    return _skipped("the service stays stopped")
                return StepDone(await self._health(op, rec.to_version))
            case Step.ROLLBACK_HEALTH:
                if not rec.from_version:
                    return _skipped("there was no release before")
                if not op.starts_service(rollback=True):
                    return _skipped("the service stays stopped")
                return StepDone(await self._health(op, rec.from_version))
            case Step.ROLLBACK_SWITCH:
                if rec.from_version:
                    await asyncio.to_thread(dirs.switch, rec.from_version)
                    unit.set_version(rec.from_version)
                    return StepDone(f"current -> releases/{rec.from_version}")
                await asyncio.to_thread(dirs.clear_current)
                return StepDone("current removed (there was no release before)")
            case Step.COMMIT:
                return StepDone(await self._commit(op))
        raise AssertionError(f"not a step the updater runs: {step.value}")

    @staticmethod
    def _why_stopped(op: _Op, *, rollback: bool) -> str:
        if rollback and op.rec.cancel_request:
            return "the stop request that cancelled the update leaves it stopped"
        return "the service was stopped before the update and stays stopped (start_stopped " \
            "starts it)"

    def _package_path(self, op: _Op) -> Path:
        url = package_store.expand_url(op.cfg.update.package_url, op.rec.to_version)
        return op.work / package_store.file_name(url)

    def _policy(self, cfg: ServiceConfig) -> package_fetch.FetchPolicy:
        return package_fetch.FetchPolicy(cfg.update)

    @staticmethod
    def _credentials(cfg: ServiceConfig) -> str | None:
        """The store's Authorization header value, from package_credentials_file."""
        if not cfg.update.package_credentials_file:
            return None
        try:
            return package_store.load_credentials(Path(cfg.update.package_credentials_file))
        except (OSError, ValueError) as exc:
            raise package_fetch.FetchFailed(
                f"cannot use package_credentials_file: {describe(exc)}") from None

    async def _download(self, op: _Op) -> str:
        cfg = op.cfg
        url = package_store.expand_url(cfg.update.package_url, op.rec.to_version)
        auth = self._credentials(cfg)
        policy = self._policy(cfg)
        await asyncio.to_thread(op.work.mkdir, parents=True, exist_ok=True)
        size = await asyncio.to_thread(package_fetch.fetch, url, self._package_path(op),
                                       policy, authorization=auth, abort=op.abort)
        sums_url = package_store.sibling_url(url, package_verify.SUMS_NAME)
        await asyncio.to_thread(package_fetch.fetch_small, sums_url,
                                op.work / package_verify.SUMS_NAME, policy,
                                authorization=auth, limit=package_verify.MAX_SUMS_BYTES,
                                abort=op.abort)
        signed = ""
        if cfg.update.package_public_key:
            sig = await asyncio.to_thread(
                package_fetch.fetch_small, package_store.sibling_url(
                    url, package_verify.SIG_NAME), op.work / package_verify.SIG_NAME,
                policy, authorization=auth, limit=package_verify.MAX_SIG_BYTES,
                missing_ok=True, abort=op.abort)
            signed = ", signature" if sig is not None else ", no signature"
        return f"{size} bytes from {package_store.redact(url)}{signed}"

    async def _verify(self, op: _Op) -> str:
        cfg = op.cfg
        package = self._package_path(op)
        sums = (op.work / package_verify.SUMS_NAME).read_bytes()
        sig_path = op.work / package_verify.SIG_NAME
        sig = sig_path.read_bytes() if sig_path.exists() else None
        key = None
        if cfg.update.package_public_key:
            try:
                key = package_verify.load_public_key(Path(cfg.update.package_public_key))
            except (OSError, ValueError) as exc:
                raise package_verify.VerifyFailed(
                    f"cannot load package_public_key: {describe(exc)}") from None
        digest = await asyncio.to_thread(package_verify.verify_package, package,
                                         package.name, sums, sig, key)
        return f"sha256 {digest[:16]}… ok" + ("; signature ok" if key else "")

    async def _health(self, op: _Op, expected: str) -> str:
        unit = op.unit
        pid = op.health_pid or unit.status().pid

        def down_reason() -> str | None:
            st = unit.status()
            if st.state != State.RUNNING:
                return f"service is {st.state.value}: {st.message or 'not running'}"
            if pid and st.pid != pid:
                return f"service restarted (pid {pid} -> {st.pid})"
            return None

        return await health_gate(ProbeSpec(op.cfg.health, op.cfg.env), expected,
                                 down_reason=down_reason)

    async def _commit(self, op: _Op) -> str:
        """Record the release and prune old ones. The journal is only touched from the
        event loop (one SQLite connection); deleting directories goes to a thread."""
        rec, dirs = op.rec, op.dirs
        self.journal.record_release(rec.service, rec.to_version)
        if rec.from_version and rec.from_version != rec.to_version:
            self.journal.set_previous(rec.service, rec.from_version)
        keep = {rec.to_version, self.journal.previous(rec.service)}
        installed = self.journal.installed(rec.service)
        newest = sorted(dirs.on_disk(), key=lambda v: installed.get(v, 0.0), reverse=True)
        removed = []
        for v in newest[op.cfg.update.keep_releases:]:
            if v in keep:
                continue
            try:
                await asyncio.to_thread(dirs.remove, v)
            except OSError as exc:
                log.warning("update.prune_failed", version=v, error=describe(exc))
                continue
            self.journal.forget_release(rec.service, v)
            removed.append(v)
        pruned = f"; pruned {', '.join(removed)}" if removed else ""
        return f"on version {rec.to_version}{pruned}"

    # ---- status -------------------------------------------------------------------------

    def _publish_version(self, service: str) -> None:
        cfg = self.config.service(service)
        if cfg is None or not cfg.install_root:
            return
        current = ReleaseDirs(cfg.install_root).current_version()
        self.units[service].set_version(current or cfg.version or "unknown")

    def summary(self, service: str) -> UpdateSummary:
        last = self.journal.last_done(service)
        live = self._live.get(service)
        running = live.rec if live is not None else None
        step = live.step.value if live is not None and live.step is not None else ""
        return UpdateSummary(
            running_operation_id=self._running.get(service, ""),
            last_operation_id=last.id if last else "",
            last_outcome=outcome_text(last.outcome) if last else "",
            last_message=last.message if last else "",
            last_version=last.to_version if last else "",
            running_origin=running.origin if running else "",
            last_origin=last.origin if last else "",
            running_version=running.to_version if running else "",
            running_step=step)

    def _publish_summary(self, service: str) -> None:
        self.units[service].set_update_summary(self.summary(service))
