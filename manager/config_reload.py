"""A live config reload (SIGHUP, gRPC Reload, POST /reload): re-read the whole config
file and the secrets, then bring the supervised services in line with the file.

All or nothing: the file is read and validated first (in a worker thread), keys a
running manager cannot change are refused (manager/config_diff.py), and the token and
certificate files are re-read (all or nothing themselves) before anything changes; any
error there changes nothing and is returned (INVALID_ARGUMENT naming the key) and
logged. Then, by name (config_diff.diff):

- removed services, and changed ones that are up, are stopped, in reverse start order
  (what starts after another stops first); removed ones are then forgotten (their
  state record too; their log files stay);
- changed ones get their new spec (the process backend keeps its unit, so a status
  watch goes on; another backend's unit is replaced), and the ones that were up, with
  the added ones that autostart, are started in start order;
- unchanged ones are not touched (same process).

The answer comes once the stops are done and the starts are issued; services that
start after others come up in the background, in order. A start that fails shows in
that service's status, not as a failed reload.

Reloads run one at a time. A reload while an update runs is refused (FAILED_PRECONDITION
naming the operation): it never interleaves with one; while a reload runs, a new update
is refused (UNAVAILABLE, "try again").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import structlog

from backendai.daemon_support import Secrets
from backendai.errors import BackendAIError, ConfigError, FailedPrecondition
from manager import config as config_mod
from manager.api.control import ManagerControl, ReloadResult
from manager.config import ManagerConfig, ServiceConfig
from manager.config_diff import diff, fixed_change
from manager.statestore import StateStore
from manager.supervision.states import State
from manager.supervision.unit import ServiceUnit
from manager.supervision.units import SupervisedUnits

log = structlog.get_logger(__name__)


class UpdateGate(Protocol):
    """What a reload needs from the updater (manager/updates/updater.py)."""

    def running_operations(self) -> dict[str, str]: ...

    def hold(self, reason: str) -> None: ...

    def release(self) -> None: ...

    def configure(self, config: ManagerConfig) -> None: ...


class ConfigReloader:
    def __init__(self, path: Path, *, supervised: SupervisedUnits, control: ManagerControl,
                 secrets: Secrets, store: StateStore,
                 make_unit: Callable[[ServiceConfig], ServiceUnit],
                 updates: Callable[[ManagerConfig | None], UpdateGate | None]) -> None:
        """`updates(None)`: the updater, if any; `updates(config)`: the updater for that
        config (the daemon starts one when a reload adds the first updatable service)."""
        self.path = path
        self.supervised = supervised
        self.control = control
        self.secrets = secrets
        self.store = store
        self.make_unit = make_unit
        self.updates = updates
        self._lock = asyncio.Lock()

    async def reload(self) -> ReloadResult:
        async with self._lock:
            log.info("manager.reloading", config=str(self.path))
            try:
                new = await asyncio.to_thread(config_mod.load, self.path)
            except ConfigError as exc:
                log.warning("daemon.reload_failed", error=str(exc))
                raise
            problem = fixed_change(self.supervised.config, new)
            if problem:
                log.warning("daemon.reload_failed", error=problem)
                raise ConfigError(problem)
            gate = self.updates(None)
            if gate is not None:
                busy = gate.running_operations()
                if busy:
                    service, op_id = next(iter(busy.items()))
                    error = (f"an update of service {service!r} is running (operation "
                             f"{op_id}); reload once it has ended")
                    log.warning("daemon.reload_failed", error=error)
                    raise FailedPrecondition(error)
                gate.hold("a config reload is in progress")
            try:
                if not await asyncio.to_thread(self.secrets.reload):
                    error = self.secrets.error or "the token or certificate files are unusable"
                    raise ConfigError(f"{error}; nothing changed")
                return await self._apply(new)
            finally:
                if gate is not None:
                    gate.release()

    async def _apply(self, new: ManagerConfig) -> ReloadResult:
        supervised = self.supervised
        old = supervised.config
        d = diff(old, new)
        wanted = [n for n in d.changed if self._wanted_up(n)]
        problems: list[str] = []
        try:
            await supervised.stop_many([*d.removed, *wanted], pausing=frozenset(wanted))
        except BackendAIError as exc:
            problems.append(f"stop: {exc}")
        for name in d.removed:
            await supervised.remove(name)
            self.store.forget_service(name)
            log.info("service.removed", service=name)
        supervised.config = self.control.config = new
        gate = self.updates(new)
        if gate is not None:
            gate.configure(new)
        configs = {s.name: s for s in new.services}
        for name in d.changed:
            await self._change(configs[name])
        for name in d.added:
            unit = self.make_unit(configs[name])
            if hasattr(unit, "defer_autostart"):
                unit.defer_autostart = True  # started below, in start order
            await supervised.add(unit)
            log.info("service.added", service=name)
        starting = wanted + [n for n in d.added
                             if getattr(supervised.units[n], "autostart_pending", False)]
        order = {s.name: i for i, s in enumerate(new.services)}
        starting.sort(key=order.__getitem__)
        try:
            await supervised.start_many(starting, wait=False, waiting_ok=True)
        except BackendAIError as exc:
            problems.append(f"start: {exc}")
        parts = [f"{len(d.added)} added", f"{len(d.removed)} removed",
                 f"{len(d.changed)} changed", f"{len(d.unchanged)} unchanged"]
        message = "reloaded: " + ", ".join(parts) if not d.empty else \
            "reloaded: no service changed"
        if problems:
            message += "; " + "; ".join(problems)
        log.info("manager.reloaded", added=d.added, removed=d.removed, changed=d.changed,
                 unchanged=len(d.unchanged), problems=problems)
        return ReloadResult(d.added, d.removed, d.changed, d.unchanged, message)

    def _wanted_up(self, name: str) -> bool:
        """Whether a changed service should run again after it got its new spec."""
        unit = self.supervised.units[name]
        if getattr(unit, "autostart_pending", False):
            return True
        state = unit.status().state
        return state.is_up or state is State.BACKOFF

    async def _change(self, cfg: ServiceConfig) -> None:
        supervised = self.supervised
        unit = supervised.units[cfg.name]
        reconfigure = getattr(unit, "reconfigure", None)
        if reconfigure is not None and unit.config.backend == cfg.backend:
            reconfigure(cfg)
            supervised.restart_monitor(unit)
        else:
            await supervised.remove(cfg.name)
            fresh = self.make_unit(cfg)
            if hasattr(fresh, "defer_autostart"):
                fresh.defer_autostart = True
            with contextlib.suppress(BackendAIError):
                await supervised.add(fresh)
        log.info("service.changed", service=cfg.name)
