"""The steps of an update operation, one at a time (`StepRunner.run`): fetch, verify and
stage the release, stop, switch `current`, start, health-gate and commit, and the
rollback steps. The updater (updater.py) journals each step around this call and feeds
the result to the plan. A service left stopped (the operator stopped it, or a stop
request cancelled the operation) has its start and health steps skipped here.

A service with `instances`: a forward step acts on the instance the plan's position
names (its message starts with the instance's name); the rollback steps act on all of
them (`_rollback_all`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from backendai import package_store
from backendai.update_terms import Step
from manager.config import ServiceConfig
from manager.supervision.process_unit import ProcessUnit
from manager.supervision.states import State
from manager.supervision.unit import ServiceUnit
from manager.updates import fetch as package_fetch
from manager.updates import verify as package_verify
from manager.updates.extract import extract_release
from manager.updates.health_probe import ProbeSpec, health_gate
from manager.updates.journal import UpdateJournal
from manager.updates.operation import Operation, StepDone, describe, skipped
from manager.updates.store_check import credentials

log = structlog.get_logger(__name__)


class StepRunner:
    def __init__(self, journal: UpdateJournal) -> None:
        self.journal = journal  # the commit step records the release

    async def run(self, op: Operation, step: Step) -> StepDone:
        """Carry out one step of an operation (raises when it fails)."""
        rec, dirs = op.rec, op.dirs
        if op.grouped and step in (Step.ROLLBACK_STOP, Step.ROLLBACK_SWITCH,
                                   Step.ROLLBACK_START, Step.ROLLBACK_HEALTH):
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
                _set_versions(op, rec.to_version)
                return StepDone(f"current -> releases/{rec.to_version}")
            case Step.START | Step.ROLLBACK_START:
                rollback = step is Step.ROLLBACK_START
                if rollback and not rec.from_version:
                    return skipped("there was no release before")
                if not op.starts_service(rollback=rollback):
                    return skipped(self._why_stopped(op, rollback=rollback))
                st = await unit.start(wait=True)
                op.health_pids[unit.name] = st.pid
                return StepDone(f"{prefix}service running, pid {st.pid}")
            case Step.HEALTH:
                if not op.starts_service(rollback=False):
                    return skipped("the service stays stopped")
                return StepDone(prefix + await self._health(op, cfg, unit, rec.to_version))
            case Step.ROLLBACK_HEALTH:
                if not rec.from_version:
                    return skipped("there was no release before")
                if not op.starts_service(rollback=True):
                    return skipped("the service stays stopped")
                return StepDone(await self._health(op, cfg, unit, rec.from_version))
            case Step.ROLLBACK_SWITCH:
                if rec.from_version:
                    await asyncio.to_thread(dirs.switch, rec.from_version)
                    _set_versions(op, rec.from_version)
                    return StepDone(f"current -> releases/{rec.from_version}")
                await asyncio.to_thread(dirs.clear_current)
                return StepDone("current removed (there was no release before)")
            case Step.COMMIT:
                return StepDone(await self._commit(op))
        raise AssertionError(f"not a step the updater runs: {step.value}")

    async def _rollback_all(self, op: Operation, step: Step) -> StepDone:
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
                    _set_versions(op, rec.from_version)
                    return StepDone(f"current -> releases/{rec.from_version}")
                await asyncio.to_thread(dirs.clear_current)
                return StepDone("current removed (there was no release before)")
            case Step.ROLLBACK_START:
                if not rec.from_version:
                    return skipped("there was no release before")
                if not op.starts_service(rollback=True):
                    return skipped(self._why_stopped(op, rollback=True))
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
                    return skipped("there was no release before")
                if not op.starts_service(rollback=True):
                    return skipped("the service stays stopped")
                done = [f"{unit.name}: " + await self._health(op, cfg, unit, rec.from_version)
                        for cfg, unit in op.members]
                return StepDone("; ".join(done))
        raise AssertionError(f"not a rollback step: {step.value}")

    @staticmethod
    def _why_stopped(op: Operation, *, rollback: bool) -> str:
        if rollback and op.rec.cancel_request:
            return "the stop request that cancelled the update leaves it stopped"
        return "the service was stopped before the update and stays stopped (start_stopped " \
            "starts it)"

    def _package_path(self, op: Operation) -> Path:
        url = package_store.expand_url(op.cfg.update.package_url, op.rec.to_version)
        return op.work / package_store.file_name(url)

    async def _download(self, op: Operation) -> str:
        cfg = op.cfg
        url = package_store.expand_url(cfg.update.package_url, op.rec.to_version)
        auth = credentials(cfg)
        policy = package_fetch.FetchPolicy(cfg.update)
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

    async def _verify(self, op: Operation) -> str:
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

    async def _health(self, op: Operation, cfg: ServiceConfig, unit: ServiceUnit,
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

    async def _commit(self, op: Operation) -> str:
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


def _set_versions(op: Operation, version: str) -> None:
    for _cfg, unit in op.members:
        unit.set_version(version)
