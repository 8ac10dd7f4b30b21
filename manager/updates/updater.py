"""The updater: the I/O shell that carries out `update_plan` for each operation.

Each step's "started" event is journaled (SQLite, synchronous) before the step acts;
its result is journaled after. On start, operations a crash interrupted are resumed
or rolled back (see update_plan), so the host ends on the old or the new release,
running. One operation per service at a time.

After each journaled step event the updater calls its fault points (manager/updates/
faults.py; none in production): tests crash or fail the manager there.

Before an update is accepted, the store is asked whether it has the package and its
SHA256SUMS (store_check.py): a missing release is NotFound,
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

A service with `instances` (NAME-1 ... NAME-N sharing one install_root) is updated as
one operation named NAME: its instances are stopped, started and health-gated one at a
time (plan.rolling_steps); a failure at any of them rolls all of them back. Each
per-instance step's "started" event names the instance. It stays stopped only if all
of its instances were stopped.

While a config reload runs (`hold`), no operation starts; a reload is refused while an
operation runs (manager/config_reload.py): the two never interleave.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace

import structlog

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
from manager.updates.extract import remove_leftovers
from manager.updates.faults import NoFaults, UpdateFaults
from manager.updates.journal import (
    EventRecord,
    OpRecord,
    UpdateJournal,
    check_operation_id,
    is_operation_id,
)
from manager.updates.operation import Interrupted, Operation, StepDone, describe
from manager.updates.release_dirs import ReleaseDirs
from manager.updates.results import (
    OperationReport,
    ReleaseInfo,
    RollbackStarted,
    UpdateStarted,
    report,
)
from manager.updates.steps import StepRunner
from manager.updates.store_check import ReleaseCheck, check_store, release_check
from manager.updates.update_stats import UpdateStats

log = structlog.get_logger(__name__)

LIFECYCLE_REQUESTS = ("start", "stop", "restart")
# Steps that only wait (a download, a health gate): a cancel interrupts them at once;
# every other step is short and ends before the cancel acts.
INTERRUPTIBLE = (Step.DOWNLOAD, Step.HEALTH)
CANCEL_MARGIN = 30.0


class Updater:
    def __init__(self, config: ManagerConfig, units: Mapping[str, ServiceUnit],
                 store: StateStore, *, faults: UpdateFaults | None = None) -> None:
        """faults: called at each step boundary (tests inject failures there)."""
        self.config = config
        self.units = units  # the daemon's live mapping: a reload changes it in place
        self.journal = UpdateJournal(store)
        self.steps = StepRunner(self.journal)
        self.faults: UpdateFaults = faults if faults is not None else NoFaults()
        self._running: dict[str, str] = {}      # service -> operation id
        self._live: dict[str, Operation] = {}         # service -> its running operation
        self._requests: dict[str, asyncio.Lock] = {}  # service -> one request at a time
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._tick = asyncio.Event()            # replaced after each journaled event
        self._stop = asyncio.Event()
        self.recovered = asyncio.Event()        # set once interrupted operations are known
        self._tg: asyncio.TaskGroup | None = None
        self.stats = UpdateStats()              # for /metrics
        self._held = ""                         # why no operation may start (a reload)

    # ---- lifecycle ------------------------------------------------------------------

    def _updatable(self) -> list[ServiceConfig]:
        """One config per updatable service (the first instance of one with instances)."""
        out: dict[str, ServiceConfig] = {}
        for s in self.config.services:
            if s.install_root and s.name in self.units:
                out.setdefault(s.instance_of or s.name, s)
        return list(out.values())

    def _members(self, service: str) -> list[tuple[ServiceConfig, ServiceUnit]]:
        """The configs and units an operation on `service` acts on (its instances)."""
        return [(c, self.units[c.name]) for c in self.config.members(service)
                if c.name in self.units]

    # ---- a config reload ----------------------------------------------------------------

    def running_operations(self) -> dict[str, str]:
        """service -> the id of its running operation."""
        return dict(self._running)

    def hold(self, reason: str) -> None:
        """Refuse new operations (with `reason`) until release()."""
        self._held = reason

    def release(self) -> None:
        self._held = ""

    def configure(self, config: ManagerConfig) -> None:
        """A reload's new config (no operation runs meanwhile)."""
        self.config = config
        for cfg in self._updatable():
            self._publish_version(cfg.instance_of or cfg.name)
            self._publish_summary(cfg.instance_of or cfg.name)

    async def run(self) -> None:
        """Recover interrupted operations, then run operations until shutdown()."""
        for unit in self.units.values():  # the units re-adopt their services first
            await unit.ready.wait()  # (the daemon bounds this wait)
        interrupted = []
        for op in self.journal.running_ops():
            members = self._members(op.service)
            if not members or not members[0][0].install_root:
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
            self._publish_version(cfg.instance_of or cfg.name)
            self._publish_summary(cfg.instance_of or cfg.name)
        self.recovered.set()
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            for op in interrupted:
                # the cancel event is not a step: the plan carries the cancel itself
                events = [e for e in self.journal.events(op.id) if e.step is not Step.CANCEL]
                last = events[-1]
                # each forward step journals its "started" once, before it acts
                position = sum(1 for e in events if e.status is StepStatus.STARTED
                               and e.step not in update_plan.ROLLBACK_STEPS) - 1
                log.warning("update.recovering", op=op.id, service=op.service,
                            step=last.step.value, status=last.status.value,
                            cancel=op.cancel_request)
                self._launch(op, update_plan.Interrupted(last.step, last.status, last.message,
                                                         position if position >= 0 else None),
                             recovering=True)
            await self._stop.wait()
            self._tg = None
            for task in list(self._tasks.values()):
                task.cancel()

    async def shutdown(self) -> None:
        self._stop.set()

    # ---- requests -------------------------------------------------------------------

    def _service(self, service: str, *, need_url: bool) -> tuple[ServiceConfig, ServiceUnit]:
        """The service's config (its first instance's) and unit (likewise)."""
        members = self._members(service)
        if not members:
            raise NotFound(f"no service named {service!r}")
        cfg, unit = members[0]
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
        if self._held:
            raise Unavailable(f"{self._held}; try again")

    def _request_lock(self, service: str) -> asyncio.Lock:
        """Update and rollback requests of one service are decided one at a time (the
        store check awaits between the idle check and the operation's creation)."""
        return self._requests.setdefault(service, asyncio.Lock())

    def _leave_stopped(self, service: str, start_stopped: bool) -> bool:
        """Whether the operation leaves the service stopped: the operator stopped it
        (desired "stopped"; with instances: all of them), or, where the backend does
        not know what was last asked, it is simply not running (Debian's try-restart).
        A failed service (BACKOFF, EXITED, FATAL) is started: the new release may be
        what fixes it."""
        if start_stopped:
            return False

        def stopped(unit: ServiceUnit) -> bool:
            st = unit.status()
            if st.desired:
                return st.desired == "stopped"
            return st.state is State.STOPPED

        return all(stopped(unit) for _cfg, unit in self._members(service))

    async def update(self, service: str, version: str, *, origin: str = "",
                     start_stopped: bool = False) -> UpdateStarted:
        version = check_version(version)
        origin = check_origin(origin)
        cfg, _unit = self._service(service, need_url=True)
        async with self._request_lock(service):
            self._check_idle(service)
            current = ReleaseDirs(cfg.install_root).current_version()
            if current == version:
                return UpdateStarted("", version, f"already on version {version}",
                                     from_version=version)
            await check_store(cfg, version)
            self._check_idle(service)
            op = self._create(service, OpKind.UPDATE, current, version,
                              f"update {current or '(none)'} -> {version}", origin=origin,
                              leave_stopped=self._leave_stopped(service, start_stopped))
        return UpdateStarted(op.id, version, f"update to version {version} started",
                             from_version=current)

    async def check_release(self, service: str, version: str) -> ReleaseCheck:
        """Whether the store has `version` for `service` (the check `update` makes first;
        nothing is created)."""
        version = check_version(version)
        cfg, _unit = self._service(service, need_url=True)
        return await release_check(cfg, version)

    async def rollback(self, service: str, *, origin: str = "",
                       expect: str = "") -> RollbackStarted:
        """expect: refuse unless the rollback goes to exactly this version."""
        origin = check_origin(origin)
        if expect:
            expect = check_version(expect)
        cfg, _unit = self._service(service, need_url=False)
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
            if expect and target != expect:
                raise FailedPrecondition(
                    f"rollback of service {service!r} refused: it would go to version "
                    f"{target}, not {expect} as asked (current {current or '(none)'}); "
                    "nothing was changed")
            op = self._create(service, OpKind.ROLLBACK, current, target,
                              f"rollback {current or '(none)'} -> {target}", origin=origin,
                              leave_stopped=self._leave_stopped(service, False))
        return RollbackStarted(op.id, target)

    # ---- operator actions versus running operations -----------------------------------

    def _describe_running(self, live: Operation) -> str:
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

    async def _cancel(self, live: Operation, request: str) -> OpRecord | None:
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
        # a service with instances rolls each of them back in turn
        limit = self._cancel_limit(live.cfg) * len(live.members)
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

    def report(self, service: str, operation_id: str = "",
               origin: str = "") -> OperationReport:
        """One operation with its steps: by id (of `service`, when one is named), by
        origin (the service's newest operation issued with it), else the service's
        running operation, else its last one."""
        rec: OpRecord | None
        if origin:
            self._service(service, need_url=False)
            found = self.journal.last_with_origin(service, origin)
            if found is None:
                raise NotFound(f"no update operation of service {service!r} was issued "
                               f"with origin {origin!r}")
            rec = found
        elif operation_id:
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

    def _launch(self, rec: OpRecord, first: update_plan.Event, *,
                recovering: bool = False) -> None:
        assert self._tg is not None  # noqa: S101 - callers checked
        members = self._members(rec.service)
        assert members  # noqa: S101 - operations name configured services
        live = Operation(rec, members, recovering=recovering)
        if rec.cancel_request:  # a cancel the crash interrupted: it goes on as one
            live.cancelled.set()
            live.abort.set()
        self._running[rec.service] = rec.id
        self._live[rec.service] = live
        self._publish_summary(rec.service)
        task = self._tg.create_task(self._execute(live, first), name=f"update-{rec.id}")
        self._tasks[rec.id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(rec.id, None))

    async def _execute(self, op: Operation, first: update_plan.Event) -> None:
        rec = op.rec
        plan, actions = update_plan.transition(
            update_plan.Plan(steps=op.steps, cancel=rec.cancel_reason,
                             stopped=rec.leave_stopped), first)
        began = time.monotonic()
        try:
            while actions:
                action = actions[0]
                if isinstance(action, update_plan.Finish):
                    self._finish(op, action, time.monotonic() - began)
                    return
                step = action.step
                op.step = step
                forward = plan.phase is update_plan.Phase.FORWARD
                op.position = plan.position if forward else -1
                per_instance = op.grouped and forward and \
                    step in (Step.STOP, Step.START, Step.HEALTH)
                self._record(op, step, StepStatus.STARTED,
                             op.member()[1].name if per_instance else "")
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
                self.stats.step_done(step, elapsed)
                self._record(op, step, status, message, elapsed)
                log.info("update.step", op=rec.id, service=rec.service, step=step.value,
                         status=status.value, elapsed=round(elapsed, 3), detail=message)
                if op.rec.cancel_reason:  # asked while the step ran: its result decides
                    plan = update_plan.cancel(plan, op.rec.cancel_reason)
                plan, actions = update_plan.transition(plan, event)
        finally:
            op.finished.set()

    async def _run_step(self, op: Operation, step: Step, phase: update_plan.Phase) -> StepDone:
        """Carry out one step; a step that only waits is interrupted by a cancel."""
        if step not in INTERRUPTIBLE or phase is not update_plan.Phase.FORWARD:
            return await self.steps.run(op, step)
        if op.cancelled.is_set():
            raise Interrupted(f"not run: {op.rec.cancel_reason}")
        work = asyncio.ensure_future(self.steps.run(op, step))
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
            raise Interrupted(f"interrupted: {op.rec.cancel_reason}")
        return work.result()

    def _finish(self, op: Operation, fin: update_plan.Finish, elapsed: float) -> None:
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
        self.stats.finished(rec.service, rec.kind, outcome)
        log.info("update.finished", op=rec.id, service=rec.service, outcome=outcome.value,
                 detail=message, elapsed=round(elapsed, 3))
        self._publish_version(rec.service)
        self._publish_summary(rec.service)

    def _record(self, op: Operation, step: Step, status: StepStatus, message: str = "",
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

    # ---- status -------------------------------------------------------------------------

    def _publish_version(self, service: str) -> None:
        members = self._members(service)
        if not members or not members[0][0].install_root:
            return
        current = ReleaseDirs(members[0][0].install_root).current_version()
        for cfg, unit in members:
            unit.set_version(current or cfg.version or "unknown")

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
        summary = self.summary(service)
        for _cfg, unit in self._members(service):
            unit.set_update_summary(summary)
