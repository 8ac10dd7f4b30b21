"""The I/O shell of a service's health check: runs the checks of `[services.health]`
(health_probes.py) while the service is RUNNING, feeds the results to the pure
health_state.py, publishes the health in the service's status and hands an unhealthy
restart to the unit (the process backend's supervisor takes it as an event).

One task per checked service, one check in flight at a time: the next check starts
`interval` after the previous one started, or when it ended if it took longer. A
change of the service's state or pid (watched on its status feed) wakes the loop, so a
new process is checked as soon as it is RUNNING.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Mapping

import structlog

from manager.health_config import HealthCheck
from manager.supervision import health_state as hs
from manager.supervision.health_probes import GrpcChecker, run_check
from manager.supervision.states import HealthView, State
from manager.supervision.unit import ServiceUnit

log = structlog.get_logger(__name__)


class HealthMonitor:
    def __init__(self, unit: ServiceUnit, check: HealthCheck, *,
                 env: Mapping[str, str] | None = None, cwd: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.unit = unit
        self.check = check
        self.env = env
        self.cwd = cwd
        self.clock = clock
        self.core = hs.HealthCore()
        self._wake = asyncio.Event()
        self._last_start: float | None = None
        self._last_end: float | None = None
        self._view = HealthView(hs.Health.UNKNOWN.value, self.core.message, time.time())

    async def run(self) -> None:
        """Check until cancelled."""
        watcher = asyncio.create_task(self._watch(), name=f"health-watch-{self.unit.name}")
        grpc = GrpcChecker(self.check.grpc, self.check.grpc_service) \
            if self.check.kind == "grpc" else None
        try:
            self.unit.set_health(self._view)
            while True:
                self._wake.clear()
                st = self.unit.status()
                if st.state is not State.RUNNING:
                    self._feed(hs.ProcessDown(f"not checked: service is {st.state.value}"))
                    await self._wake.wait()
                    continue
                now = self.clock()
                self._feed(hs.ProcessUp(st.pid, now))
                up_since = self.core.up_since if self.core.up_since is not None else now
                delay = hs.next_check(self._last_start, self._last_end, self.check.interval,
                                      up_since) - now
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._wake.wait()
                    continue
                self._last_start = now
                result = await run_check(self.check, env=self.env, cwd=self.cwd, grpc=grpc)
                self._last_end = self.clock()
                self._feed(hs.Checked(st.pid, result.ok, result.message, self._last_end))
        finally:
            watcher.cancel()
            if grpc is not None:
                with contextlib.suppress(Exception):
                    await grpc.close()

    async def _watch(self) -> None:
        """Wake the loop when the service's state or pid changes."""
        seen: tuple[State, int] | None = None
        async for st in self.unit.watch():
            key = (st.state, st.pid)
            if key != seen:
                seen = key
                self._wake.set()

    def _feed(self, event: hs.Event) -> None:
        old = self.core
        self.core, actions = hs.transition(old, event, self.check)
        core = self.core
        if core.health is not old.health:
            log.info("service.health", service=self.unit.name, health=core.health.value,
                     previous=old.health.value, pid=core.pid, message=core.message)
        view = HealthView(core.health.value, core.message,
                          time.time() if core.health is not old.health else self._view.since,
                          core.failures)
        if view != self._view:
            self._view = view
            self.unit.set_health(view)
        for action in actions:
            log.warning("service.unhealthy_restart", service=self.unit.name, pid=action.pid,
                        reason=action.reason)
            self.unit.unhealthy(action.pid, action.reason)


def for_unit(unit: ServiceUnit) -> HealthMonitor | None:
    """The monitor of a service with `[services.health]`, else None. An exec check runs
    with the service's environment and in its working directory."""
    check = unit.config.health_check
    if check is None:
        return None
    environment = getattr(unit, "environment", None)
    if environment is not None:  # the process backend: exactly what the service gets
        env = environment()
        cwd = unit.resolve_command()[0]  # type: ignore[attr-defined]
    else:
        env = {**os.environ, **unit.config.env}
        cwd = unit.config.working_directory or None
    return HealthMonitor(unit, check, env=env, cwd=cwd)
