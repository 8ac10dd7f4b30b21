"""The updater: the I/O shell that carries out `update_plan` for each operation.

Each step's "started" event is journaled (SQLite, synchronous) before the step acts;
its result is journaled after. On start, operations a crash interrupted are resumed
or rolled back (see update_plan), so the host ends on the old or the new release,
running. One operation per service at a time.

After each journaled step event the updater calls its fault points (manager/updates/
faults.py; none in production): tests crash or fail the manager there.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from backendai import package_store
from backendai.errors import (
    BackendAIError,
    FailedPrecondition,
    NotConfigured,
    NotFound,
    Unavailable,
)
from backendai.update_terms import OpKind, Outcome, Step, StepStatus, outcome_text
from backendai.validate import check_version
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
from manager.updates.results import ReleaseInfo, RollbackStarted, UpdateStarted
from manager.updates.update_stats import UpdateStats

log = structlog.get_logger(__name__)



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


class _Op:
    """The I/O context of one operation."""

    def __init__(self, rec: OpRecord, cfg: ServiceConfig, unit: ServiceUnit) -> None:
        self.rec = rec
        self.cfg = cfg
        self.unit = unit
        self.dirs = ReleaseDirs(cfg.install_root)
        self.work = self.dirs.download_dir(rec.id)
        self.health_pid = 0


class Updater:
    def __init__(self, config: ManagerConfig, units: Mapping[str, ServiceUnit],
                 store: StateStore, *, faults: UpdateFaults | None = None) -> None:
        """faults: called at each step boundary (tests inject failures there)."""
        self.config = config
        self.units = dict(units)
        self.journal = UpdateJournal(store)
        self.faults: UpdateFaults = faults if faults is not None else NoFaults()
        self._running: dict[str, str] = {}      # service -> operation id
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._tick = asyncio.Event()            # replaced after each journaled event
        self._stop = asyncio.Event()
        self.recovered = asyncio.Event()        # set once interrupted operations are known
        self._tg: asyncio.TaskGroup | None = None
        self.stats = UpdateStats()              # for /metrics

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
                last = self.journal.events(op.id)[-1]
                log.warning("update.recovering", op=op.id, service=op.service,
                            step=last.step.value, status=last.status.value)
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

    async def update(self, service: str, version: str) -> UpdateStarted:
        version = check_version(version)
        cfg, _unit = self._service(service, need_url=True)
        self._check_idle(service)
        current = ReleaseDirs(cfg.install_root).current_version()
        if current == version:
            return UpdateStarted("", version, f"already on version {version}")
        op = self._create(service, OpKind.UPDATE, current, version,
                          f"update {current or '(none)'} -> {version}")
        return UpdateStarted(op.id, version, f"update to version {version} started")

    async def rollback(self, service: str) -> RollbackStarted:
        cfg, _unit = self._service(service, need_url=False)
        self._check_idle(service)
        dirs = ReleaseDirs(cfg.install_root)
        current = dirs.current_version()
        target = self.journal.previous(service)
        if not target or target == current or not dirs.has(target):
            installed = self.journal.installed(service)
            others = sorted((v for v in dirs.on_disk() if v != current and dirs.has(v)),
                            key=lambda v: installed.get(v, 0.0), reverse=True)
            if not others:
                raise FailedPrecondition(f"service {service!r} has no previous release on "
                                         "disk to roll back to")
            target = others[0]
        op = self._create(service, OpKind.ROLLBACK, current, target,
                          f"rollback {current or '(none)'} -> {target}")
        return RollbackStarted(op.id, target)

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
                what: str) -> OpRecord:
        op = OpRecord(id=uuid.uuid4().hex, service=service, kind=kind, from_version=current,
                      to_version=target, created=time.time())
        self.journal.create_op(op, EventRecord(op.id, 0, Step.VALIDATE, StepStatus.OK, what,
                                               at=op.created))
        self._notify()
        self._running[service] = op.id
        log.info("update.accepted", op=op.id, service=service, kind=kind.value,
                 from_version=current, to_version=target)
        self._launch(op, update_plan.Begin())
        return op

    def _launch(self, rec: OpRecord, first: update_plan.Event) -> None:
        assert self._tg is not None  # noqa: S101 - callers checked
        self._running[rec.service] = rec.id
        self._publish_summary(rec.service)
        task = self._tg.create_task(self._execute(rec, first), name=f"update-{rec.id}")
        self._tasks[rec.id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(rec.id, None))

    async def _execute(self, rec: OpRecord, first: update_plan.Event) -> None:
        cfg = self.config.service(rec.service)
        assert cfg is not None  # noqa: S101 - operations name configured services
        op = _Op(rec, cfg, self.units[rec.service])
        steps = update_plan.UPDATE_STEPS if rec.kind is OpKind.UPDATE else \
            update_plan.ROLLBACK_OP_STEPS
        plan, actions = update_plan.transition(update_plan.Plan(steps=steps), first)
        began = time.monotonic()
        while actions:
            action = actions[0]
            if isinstance(action, update_plan.Finish):
                self._finish(op, action, time.monotonic() - began)
                return
            step = action.step
            self._record(rec.id, step, StepStatus.STARTED)
            t0 = time.monotonic()
            event: update_plan.Event
            try:
                done = await self._do(op, step)
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
            self._record(rec.id, step, status, message, elapsed)
            log.info("update.step", op=rec.id, service=rec.service, step=step.value,
                     status=status.value, elapsed=round(elapsed, 3), detail=message)
            plan, actions = update_plan.transition(plan, event)

    def _finish(self, op: _Op, fin: update_plan.Finish, elapsed: float) -> None:
        rec = op.rec
        outcome = fin.outcome
        match outcome:
            case Outcome.SUCCEEDED:
                message = f"{rec.kind.value} to version {rec.to_version} succeeded"
            case Outcome.ROLLED_BACK:
                message = f"{fin.message} to version {rec.from_version or '(none)'}"
            case _:
                message = fin.message
        package_fetch.remove_tree(op.work)
        op.dirs.remove_downloads(keep=set(self._running.values()) - {rec.id})
        self._record(rec.id, Step.DONE,
                     StepStatus.OK if outcome is Outcome.SUCCEEDED else StepStatus.FAILED,
                     message, elapsed, final=True, outcome=outcome)
        self._running.pop(rec.service, None)
        self.stats.finished(rec.service, rec.kind, outcome)
        log.info("update.finished", op=rec.id, service=rec.service, outcome=outcome.value,
                 detail=message, elapsed=round(elapsed, 3))
        self._publish_version(rec.service)
        self._publish_summary(rec.service)

    def _record(self, op_id: str, step: Step, status: StepStatus, message: str = "",
                elapsed: float = 0.0, *, final: bool = False,
                outcome: Outcome | None = None) -> None:
        self.journal.append(op_id, step, status, message, elapsed, final=final,
                            outcome=outcome)
        self._notify()
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
                if step is Step.ROLLBACK_START and not rec.from_version:
                    return _skipped("there was no release before")
                st = await unit.start(wait=True)
                op.health_pid = st.pid
                return StepDone(f"service running, pid {st.pid}")
            case Step.HEALTH:
                return StepDone(await self._health(op, rec.to_version))
            case Step.ROLLBACK_HEALTH:
                if not rec.from_version:
                    return _skipped("there was no release before")
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

    def _package_path(self, op: _Op) -> Path:
        url = package_store.expand_url(op.cfg.update.package_url, op.rec.to_version)
        return op.work / package_store.file_name(url)

    def _policy(self, cfg: ServiceConfig) -> package_fetch.FetchPolicy:
        return package_fetch.FetchPolicy(cfg.update)

    async def _download(self, op: _Op) -> str:
        cfg = op.cfg
        url = package_store.expand_url(cfg.update.package_url, op.rec.to_version)
        auth = None
        if cfg.update.package_credentials_file:
            try:
                auth = package_store.load_credentials(Path(cfg.update.package_credentials_file))
            except (OSError, ValueError) as exc:
                raise package_fetch.FetchFailed(
                    f"cannot use package_credentials_file: {describe(exc)}") from None
        policy = self._policy(cfg)
        await asyncio.to_thread(op.work.mkdir, parents=True, exist_ok=True)
        size = await asyncio.to_thread(package_fetch.fetch, url, self._package_path(op),
                                       policy, authorization=auth)
        sums_url = package_store.sibling_url(url, package_verify.SUMS_NAME)
        await asyncio.to_thread(package_fetch.fetch_small, sums_url,
                                op.work / package_verify.SUMS_NAME, policy,
                                authorization=auth, limit=package_verify.MAX_SUMS_BYTES)
        signed = ""
        if cfg.update.package_public_key:
            sig = await asyncio.to_thread(
                package_fetch.fetch_small, package_store.sibling_url(
                    url, package_verify.SIG_NAME), op.work / package_verify.SIG_NAME,
                policy, authorization=auth, limit=package_verify.MAX_SIG_BYTES,
                missing_ok=True)
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
        return UpdateSummary(
            running_operation_id=self._running.get(service, ""),
            last_operation_id=last.id if last else "",
            last_outcome=outcome_text(last.outcome) if last else "",
            last_message=last.message if last else "",
            last_version=last.to_version if last else "")

    def _publish_summary(self, service: str) -> None:
        self.units[service].set_update_summary(self.summary(service))
