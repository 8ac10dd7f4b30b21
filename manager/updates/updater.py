"""The updater: the I/O shell that carries out `update_plan` for each operation.

Each step's "started" event is journaled (SQLite, synchronous) before the step acts;
its result is journaled after. On start, operations a crash interrupted are resumed
or rolled back (see update_plan), so the host ends on the old or the new release,
running. One operation per service at a time.

After each journaled step event the updater calls its fault points (manager/updates/
faults.py; none in production): tests crash or fail the manager there.

A service with `instances` (NAME-1 ... NAME-N sharing one install_root) is updated as
one operation named NAME: its instances are stopped, started and health-gated one at a
time (plan.rolling_steps); a failure at any of them rolls all of them back. Each
per-instance step's "started" event names the instance.

While a config reload runs (`hold`), no operation starts; a reload is refused while an
operation runs (manager/config_reload.py): the two never interleave.
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
from manager.supervision.process_unit import ProcessUnit
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
    """The I/O context of one operation: the service's processes (one, or each instance
    of a service with `instances`) and where it stands among them."""

    def __init__(self, rec: OpRecord, members: list[tuple[ServiceConfig, ServiceUnit]],
                 steps: tuple[Step, ...], *, recovering: bool = False) -> None:
        self.rec = rec
        self.members = members
        self.cfg = members[0][0]  # the update source and install_root all share
        self.steps = steps
        self.dirs = ReleaseDirs(self.cfg.install_root)
        self.work = self.dirs.download_dir(rec.id)
        self.health_pids: dict[str, int] = {}
        self.position = -1  # of the forward step being carried out
        # instances a forward step may have stopped or restarted (after a crash: any)
        self.touched: set[str] = {u.name for _c, u in members} if recovering else set()

    @property
    def grouped(self) -> bool:
        return len(self.members) > 1

    def member(self) -> tuple[ServiceConfig, ServiceUnit]:
        """The instance the current forward step acts on."""
        return self.members[update_plan.instance_at(self.steps, self.position)]


class Updater:
    def __init__(self, config: ManagerConfig, units: Mapping[str, ServiceUnit],
                 store: StateStore, *, faults: UpdateFaults | None = None) -> None:
        """faults: called at each step boundary (tests inject failures there)."""
        self.config = config
        self.units = units  # the daemon's live mapping: a reload changes it in place
        self.journal = UpdateJournal(store)
        self.faults: UpdateFaults = faults if faults is not None else NoFaults()
        self._running: dict[str, str] = {}      # service -> operation id
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._tick = asyncio.Event()            # replaced after each journaled event
        self._stop = asyncio.Event()
        self.recovered = asyncio.Event()        # set once interrupted operations are known
        self._tg: asyncio.TaskGroup | None = None
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
                events = self.journal.events(op.id)
                last = events[-1]
                # each forward step journals its "started" once, before it acts
                position = sum(1 for e in events if e.status is StepStatus.STARTED
                               and e.step not in update_plan.ROLLBACK_STEPS) - 1
                log.warning("update.recovering", op=op.id, service=op.service,
                            step=last.step.value, status=last.status.value)
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

    def _launch(self, rec: OpRecord, first: update_plan.Event, *,
                recovering: bool = False) -> None:
        assert self._tg is not None  # noqa: S101 - callers checked
        self._running[rec.service] = rec.id
        self._publish_summary(rec.service)
        task = self._tg.create_task(self._execute(rec, first, recovering),
                                    name=f"update-{rec.id}")
        self._tasks[rec.id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(rec.id, None))

    async def _execute(self, rec: OpRecord, first: update_plan.Event,
                       recovering: bool = False) -> None:
        members = self._members(rec.service)
        assert members  # noqa: S101 - operations name configured services
        base = update_plan.UPDATE_STEPS if rec.kind is OpKind.UPDATE else \
            update_plan.ROLLBACK_OP_STEPS
        steps = update_plan.rolling_steps(len(members), base)
        op = _Op(rec, members, steps, recovering=recovering)
        plan, actions = update_plan.transition(update_plan.Plan(steps=steps), first)
        began = time.monotonic()
        while actions:
            action = actions[0]
            if isinstance(action, update_plan.Finish):
                self._finish(op, action, time.monotonic() - began)
                return
            step = action.step
            op.position = plan.position if plan.phase is update_plan.Phase.FORWARD else -1
            per_instance = op.grouped and plan.phase is update_plan.Phase.FORWARD and \
                step in (Step.STOP, Step.START, Step.HEALTH)
            self._record(rec.id, step, StepStatus.STARTED,
                         op.member()[1].name if per_instance else "")
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
        rec, dirs = op.rec, op.dirs
        if op.grouped and step in update_plan.ROLLBACK_STEPS:
            return await self._rollback_all(op, step)
        cfg, unit = op.member()
        prefix = f"{unit.name}: " if op.grouped else ""
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
                op.touched.add(unit.name)
                st = await unit.stop()
                return StepDone(f"{prefix}service {st.state.value.lower()}")
            case Step.SWITCH:
                await asyncio.to_thread(dirs.switch, rec.to_version)
                self._set_versions(op, rec.to_version)
                return StepDone(f"current -> releases/{rec.to_version}")
            case Step.START | Step.ROLLBACK_START:
                if step is Step.ROLLBACK_START and not rec.from_version:
                    return _skipped("there was no release before")
                st = await unit.start(wait=True)
                op.health_pids[unit.name] = st.pid
                return StepDone(f"{prefix}service running, pid {st.pid}")
            case Step.HEALTH:
                return StepDone(prefix + await self._health(op, cfg, unit, rec.to_version))
            case Step.ROLLBACK_HEALTH:
                if not rec.from_version:
                    return _skipped("there was no release before")
                return StepDone(await self._health(op, cfg, unit, rec.from_version))
            case Step.ROLLBACK_SWITCH:
                if rec.from_version:
                    await asyncio.to_thread(dirs.switch, rec.from_version)
                    self._set_versions(op, rec.from_version)
                    return StepDone(f"current -> releases/{rec.from_version}")
                await asyncio.to_thread(dirs.clear_current)
                return StepDone("current removed (there was no release before)")
            case Step.COMMIT:
                return StepDone(await self._commit(op))
        raise AssertionError(f"not a step the updater runs: {step.value}")

    def _set_versions(self, op: _Op, version: str) -> None:
        for _cfg, unit in op.members:
            unit.set_version(version)

    async def _rollback_all(self, op: _Op, step: Step) -> StepDone:
        """A rollback step of a service with instances, on every instance: stop the ones
        an update step touched (all of them after a crash), switch back, then restart
        each instance one at a time (an untouched one may have restarted on the new
        release meanwhile) and gate its health."""
        rec, dirs = op.rec, op.dirs
        match step:
            case Step.ROLLBACK_STOP:
                stopped = []
                for _cfg, unit in reversed(op.members):
                    if unit.name in op.touched:
                        await unit.stop()
                        stopped.append(unit.name)
                return StepDone(f"stopped {', '.join(reversed(stopped)) or 'none'}")
            case Step.ROLLBACK_SWITCH:
                if rec.from_version:
                    await asyncio.to_thread(dirs.switch, rec.from_version)
                    self._set_versions(op, rec.from_version)
                    return StepDone(f"current -> releases/{rec.from_version}")
                await asyncio.to_thread(dirs.clear_current)
                return StepDone("current removed (there was no release before)")
            case Step.ROLLBACK_START:
                if not rec.from_version:
                    return _skipped("there was no release before")
                pids = []
                for _cfg, unit in op.members:
                    if unit.status().state.is_up:
                        await unit.stop()
                    st = await unit.start(wait=True)
                    op.health_pids[unit.name] = st.pid
                    pids.append(f"{unit.name} pid {st.pid}")
                return StepDone(f"running: {', '.join(pids)}")
            case Step.ROLLBACK_HEALTH:
                if not rec.from_version:
                    return _skipped("there was no release before")
                done = [f"{unit.name}: " + await self._health(op, cfg, unit, rec.from_version)
                        for cfg, unit in op.members]
                return StepDone("; ".join(done))
        raise AssertionError(f"not a rollback step: {step.value}")

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

    async def _health(self, op: _Op, cfg: ServiceConfig, unit: ServiceUnit,
                      expected: str) -> str:
        pid = op.health_pids.get(unit.name) or unit.status().pid

        def down_reason() -> str | None:
            st = unit.status()
            if st.state != State.RUNNING:
                return f"service is {st.state.value}: {st.message or 'not running'}"
            if pid and st.pid != pid:
                return f"service restarted (pid {pid} -> {st.pid})"
            return None

        cwd = unit.resolve_command()[0] if isinstance(unit, ProcessUnit) else None
        spec = ProbeSpec(cfg.health, cfg.env, cfg.health_check, cwd)
        return await health_gate(spec, expected, down_reason=down_reason)

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
        members = self._members(service)
        if not members or not members[0][0].install_root:
            return
        current = ReleaseDirs(members[0][0].install_root).current_version()
        for cfg, unit in members:
            unit.set_version(current or cfg.version or "unknown")

    def summary(self, service: str) -> UpdateSummary:
        last = self.journal.last_done(service)
        return UpdateSummary(
            running_operation_id=self._running.get(service, ""),
            last_operation_id=last.id if last else "",
            last_outcome=outcome_text(last.outcome) if last else "",
            last_message=last.message if last else "",
            last_version=last.to_version if last else "")

    def _publish_summary(self, service: str) -> None:
        summary = self.summary(service)
        for _cfg, unit in self._members(service):
            unit.set_update_summary(summary)
