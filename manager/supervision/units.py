"""The supervised services as one changeable set: each unit's background `run()` and
its health monitor run as tasks of the daemon's TaskGroup; a reload adds and removes
units while the manager runs. `units` is the one mapping the control layer and the
updater read (changed in place).

Start order (`after`, manager/start_order.py): a service starts only once the services
it starts after are up, that is RUNNING and, when they have a health check, healthy.
`start_many` starts a set of services so (in parallel where the order allows), and
`stop_many` stops one in reverse (what starts after a service stops before it). Both
serve an explicit start or stop of several (`web-*`) and a reload. At the manager's
start, services with `after` that autostart are started here, in order, once every
unit is ready; a manager that stops leaves its services running, so nothing is
stopped then.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

import structlog

from backendai.errors import BackendAIError, DeadlineExceeded, FailedPrecondition, ServiceFailed
from backendai.feed import Feed
from manager import start_order
from manager.config import ManagerConfig, ServiceConfig
from manager.supervision.states import ServiceStatus, State
from manager.supervision.unit import ServiceUnit

if TYPE_CHECKING:  # the daemon imports the health modules only when a check is set
    from manager.supervision.health_monitor import HealthMonitor

log = structlog.get_logger(__name__)

WAIT_MARGIN = 10.0


class Readiness(enum.Enum):
    """How a service stands for the services that start after it."""

    UP = "up"          # RUNNING, and healthy when it has a health check
    COMING = "coming"  # on its way up (starting, backing off, health not known yet)
    DOWN = "down"      # stopped, exited, FATAL, being stopped: nobody brings it up


def readiness(st: ServiceStatus, checked: bool) -> Readiness:
    """Pure: what `st` means for a dependent. `checked`: it has a health check."""
    if st.state is State.RUNNING:
        if not checked or st.health == "healthy":
            return Readiness.UP
        return Readiness.COMING
    if st.state in (State.STARTING, State.BACKOFF):
        return Readiness.COMING
    return Readiness.DOWN


def up_deadline(cfg: ServiceConfig) -> float:
    """How long a dependent waits for `cfg`'s service to come up once it is coming."""
    limit = cfg.policy.start_secs + cfg.policy.backoff_max + WAIT_MARGIN
    hc = cfg.health_check
    if hc is not None:
        limit += hc.start_period + hc.interval * hc.failures + hc.timeout
    return limit


MonitorFactory = Callable[[ServiceUnit], "HealthMonitor | None"]


class SupervisedUnits:
    def __init__(self, config: ManagerConfig, units: dict[str, ServiceUnit],
                 monitor_for: MonitorFactory) -> None:
        self.config = config
        self.units = units
        self.monitor_for = monitor_for
        self._tasks: dict[str, list[asyncio.Task[None]]] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._background: set[asyncio.Task[object]] = set()
        # The units as (name, unit) pairs, republished whenever a reload adds or removes
        # one (the dashboard's WS /api/services/ws follows it, manager/api/ws_routes.py).
        self.members: Feed[tuple[tuple[str, ServiceUnit], ...]] = Feed(tuple(units.items()))

    # ---- the units' tasks ---------------------------------------------------------------

    def launch(self, tg: asyncio.TaskGroup) -> None:
        """Run every unit (and its health monitor) in `tg`."""
        self._tg = tg
        for unit in self.units.values():
            self._run(unit)

    def _run(self, unit: ServiceUnit) -> None:
        assert self._tg is not None  # noqa: S101 - launch() came first
        tasks = [self._tg.create_task(unit.run(), name=f"unit-{unit.name}")]
        monitor = self.monitor_for(unit)
        if monitor is not None:
            tasks.append(self._tg.create_task(monitor.run(), name=f"health-{unit.name}"))
        self._tasks[unit.name] = tasks

    async def add(self, unit: ServiceUnit) -> None:
        """Supervise one more service (a reload); return once its unit is ready."""
        self.units[unit.name] = unit
        self._run(unit)
        self.members.publish(tuple(self.units.items()))
        await unit.ready.wait()

    async def remove(self, name: str) -> ServiceUnit | None:
        """Forget a service (a reload): its monitor and background work end; the caller
        stopped the service first."""
        unit = self.units.pop(name, None)
        if unit is not None:
            self.members.publish(tuple(self.units.items()))
        tasks = self._tasks.pop(name, [])
        for task in tasks[1:]:
            task.cancel()
        if unit is not None:
            await unit.shutdown()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return unit

    def restart_monitor(self, unit: ServiceUnit) -> None:
        """A reload changed the service's health check: a fresh monitor, or none."""
        tasks = self._tasks.get(unit.name, [])
        for task in tasks[1:]:
            task.cancel()
        del tasks[1:]
        monitor = self.monitor_for(unit)
        if monitor is not None and self._tg is not None:
            tasks.append(self._tg.create_task(monitor.run(), name=f"health-{unit.name}"))

    async def shutdown(self) -> None:
        """Stop the monitors and the units' background work; services keep running."""
        for task in self._background:
            task.cancel()
        for tasks in self._tasks.values():
            for task in tasks[1:]:
                task.cancel()
        for unit in self.units.values():
            await unit.shutdown()

    # ---- start order --------------------------------------------------------------------

    def graph(self) -> dict[str, tuple[str, ...]]:
        return {name: unit.config.after for name, unit in self.units.items()}

    def readiness(self, name: str) -> Readiness:
        unit = self.units[name]
        if getattr(unit, "autostart_pending", False):
            return Readiness.COMING
        return readiness(unit.status(), unit.config.health_check is not None)

    async def wait_up(self, name: str, *, limit: float | None = None) -> None:
        """Return once `name` is up; FailedPrecondition when it is down (or goes down),
        DeadlineExceeded after `limit` seconds (default: up_deadline)."""
        unit = self.units.get(name)
        if unit is None:
            raise FailedPrecondition(f"service {name!r} is not configured")
        limit = up_deadline(unit.config) if limit is None else limit
        try:
            async with asyncio.timeout(limit):
                async for _st in unit.watch():
                    match self.readiness(name):
                        case Readiness.UP:
                            return
                        case Readiness.DOWN:
                            st = unit.status()
                            raise FailedPrecondition(
                                f"service {name!r} is {st.state.value}"
                                + (f" ({st.message})" if st.message else ""))
        except TimeoutError:
            st = unit.status()
            what = f"{st.state.value}, health {st.health}" if st.health else st.state.value
            raise DeadlineExceeded(f"service {name!r} did not come up within {limit:g}s "
                                   f"({what})") from None
        raise FailedPrecondition(f"service {name!r} was removed")

    async def start_many(self, names: Iterable[str], *, wait: bool = True,
                         waiting_ok: bool = False) -> list[ServiceStatus]:
        """Start `names`, each once what it starts after is up. A service outside
        `names` that one starts after must be up or coming (else FailedPrecondition
        before anything starts), unless `waiting_ok` (autostart: wait for it).
        `wait=False`: return once the ones without pending dependencies are spawned;
        the rest start in the background, in order."""
        names = list(dict.fromkeys(names))
        chosen = set(names)
        graph = self.graph()
        if not waiting_ok:
            for name in names:
                for dep in graph.get(name, ()):
                    if dep not in chosen and self.readiness(dep) is Readiness.DOWN:
                        st = self.units[dep].status()
                        raise FailedPrecondition(
                            f"service {name!r} starts after {dep!r}, which is "
                            f"{st.state.value}; start {dep!r} first (or both together)")
        up: dict[str, asyncio.Event] = {n: asyncio.Event() for n in names}
        failed: dict[str, str] = {}

        async def one(name: str) -> ServiceStatus | None:
            unit = self.units[name]
            for dep in graph.get(name, ()):
                if dep in chosen:
                    await up[dep].wait()
                    if dep in failed:
                        failed[name] = f"not started: {dep!r} did not come up"
                        log.warning("service.start_failed", service=name, error=failed[name])
                        up[name].set()
                        return None
                try:
                    await self.wait_up(dep)
                except BackendAIError as exc:
                    failed[name] = f"not started: it starts after {dep!r}: {exc}"
                    log.warning("service.start_failed", service=name, error=failed[name])
                    up[name].set()
                    return None
            try:
                if hasattr(unit, "autostart_pending"):
                    unit.autostart_pending = False
                st = await unit.start(wait=True)
                if any(name in graph.get(n, ()) for n in names):
                    await self.wait_up(name)  # dependents wait for its health too
            except BackendAIError as exc:
                failed[name] = str(exc)
                log.warning("service.start_failed", service=name, error=str(exc))
                return None
            finally:
                up[name].set()
            return st

        tasks = {n: asyncio.get_running_loop().create_task(one(n), name=f"start-{n}")
                 for n in names}
        if not wait:
            for task in tasks.values():
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            ready = [n for n in names if not any(d in chosen for d in graph.get(n, ()))]
            await asyncio.gather(*(self._spawned(n) for n in ready))
            return [self.units[n].status() for n in names]
        results = await asyncio.gather(*tasks.values())
        if failed:
            first = next(iter(failed))
            more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
            raise ServiceFailed(f"{first}: {failed[first]}{more}")
        return [st for st in results if st is not None]

    async def _spawned(self, name: str) -> None:
        """Wait until `name` left STOPPED (its start was issued), briefly."""
        unit = self.units[name]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                async for st in unit.watch():
                    if st.state is not State.STOPPED or st.pid:
                        return

    async def stop_many(self, names: Iterable[str], *, timeout: float | None = None,
                        force: bool = False,
                        pausing: frozenset[str] = frozenset()) -> list[ServiceStatus]:
        """Stop `names`, each once the ones among them that start after it stopped.
        `pausing`: names stopped for a start that follows (the process backend keeps
        their desired state "running", see ProcessUnit.pause)."""
        names = list(dict.fromkeys(names))
        out: dict[str, ServiceStatus] = {}
        errors: list[str] = []

        def stop(name: str) -> Awaitable[ServiceStatus]:
            unit = self.units[name]
            pause = getattr(unit, "pause", None)
            if name in pausing and pause is not None:
                return pause()  # type: ignore[no-any-return]
            return unit.stop(timeout=timeout, force=force)

        for wave in start_order.stop_waves(names, self.graph()):
            results = await asyncio.gather(*(stop(n) for n in wave), return_exceptions=True)
            for name, res in zip(wave, results, strict=True):
                if isinstance(res, BaseException):
                    if not isinstance(res, BackendAIError):
                        raise res
                    errors.append(f"{name}: {res}")
                else:
                    out[name] = res
        if errors:
            raise ServiceFailed("; ".join(errors))
        return [out[n] for n in names]

    def autostart(self) -> None:
        """Start, in order and in the background, the services whose autostart waited
        for start order (set up by the units' recovery)."""
        pending = [n for n, u in self.units.items() if getattr(u, "autostart_pending", False)]
        if not pending:
            return
        task = asyncio.get_running_loop().create_task(self._autostart(pending),
                                                      name="autostart")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _autostart(self, names: list[str]) -> None:
        try:
            await self.start_many(names, waiting_ok=True)
        except BackendAIError as exc:
            log.warning("manager.autostart_incomplete", error=str(exc))
