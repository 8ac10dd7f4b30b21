"""What the systemd and rcd backends share: a unit whose process is run by someone else
(systemd, an rc.d script), observed by polling.

A subclass says how to observe the service (`observe()` -> `Observed`) and how to carry
out lifecycle requests; this class keeps the published status, the WatchStatus feed,
the lock that serializes lifecycle requests, the background poll loop (every
`status_interval` seconds) and the updater hooks. `status()` never waits: it returns
the snapshot of the last observation. `ready` is set once the first background
observation is done (a failed one too: the status message then says why), so the
daemon opens its ports only when the status shows what the host's init reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from backendai.errors import BackendAIError, DeadlineExceeded, ServiceFailed
from backendai.feed import Feed
from manager.config import ServiceConfig
from manager.supervision.states import ServiceStatus, State, UpdateSummary
from manager.supervision.unit_hooks import UnitHooks, initial_health

log = structlog.get_logger(__name__)

WAIT_POLL = 0.05  # seconds between observations while a request waits for a state
WAIT_MARGIN = 30.0


@dataclass(frozen=True, slots=True)
class Observed:
    """One observation of the service, as the host's init reports it."""

    state: State
    pid: int = 0
    started_at: float = 0.0
    restarts: int = 0
    exit_code: int | None = None
    exit_signal: int | None = None
    message: str = ""
    exists: bool = True


def read_version(cfg: ServiceConfig) -> str:
    """current/VERSION under install_root, else the configured static version."""
    if cfg.install_root:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            text = (Path(cfg.install_root) / "current" / "VERSION").read_text().strip()
            if text and len(text) <= 128:
                return text
    return cfg.version or "unknown"


class PolledUnit(UnitHooks):
    backend = "polled"

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.update_summary = UpdateSummary()
        self._lock = asyncio.Lock()
        self._stopped = asyncio.Event()
        self._wake = asyncio.Event()  # shutdown() (and subclasses) cut a pause short
        self.ready = asyncio.Event()
        self._observed = Observed(State.STOPPED, message="not observed yet")
        self._state_since = time.time()
        self._version = read_version(config)
        # What was last asked through the manager ("running" | "stopped"); "" unknown.
        self.desired = ""
        self._asked = 0  # observations started / the newest one applied: a slow older
        self._applied = 0  # observation never overwrites a newer one
        self.health = initial_health(config)
        self._health_restart: asyncio.Task[None] | None = None
        self.feed: Feed[ServiceStatus] = Feed(self._snapshot())

    # ---- subclass hooks -----------------------------------------------------------------

    async def observe(self) -> Observed:
        raise NotImplementedError

    # ---- the ServiceUnit contract (shared part) ----------------------------------------

    @property
    def name(self) -> str:
        return self.config.name

    def status(self) -> ServiceStatus:
        return self.feed.value

    def watch(self) -> AsyncIterator[ServiceStatus]:
        return self.feed.subscribe()

    async def run(self) -> None:
        """Observe the service every status_interval seconds until shutdown()."""
        while not self._stopped.is_set():
            await self.poll()
            self.ready.set()
            await self.pause(self.config.status_interval)

    async def shutdown(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._wake.set()
        self.feed.close()

    # ---- the background loop's steps ---------------------------------------------------

    async def poll(self) -> Observed | None:
        """One background observation: None when it failed (the status says why) or a
        request in progress observes for itself."""
        if self._lock.locked():
            return None
        try:
            return await self.refresh()
        except BackendAIError:
            return None

    async def pause(self, seconds: float) -> None:
        """Wait `seconds`, or less when shutdown() (or a subclass) sets `_wake` meanwhile."""
        self._wake.clear()
        if self._stopped.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    # ---- the health monitor's hook (set_version and the rest: UnitHooks) ---------------

    def unhealthy(self, pid: int, reason: str) -> None:
        """The host's init runs the service: restart it through the backend (once at a
        time; a failed restart is logged)."""
        if self._health_restart is not None and not self._health_restart.done():
            return
        log.warning("service.health_restart", service=self.name, backend=self.backend,
                    pid=pid, reason=reason)
        self._health_restart = asyncio.get_running_loop().create_task(self._restart_quietly())

    async def _restart_quietly(self) -> None:
        try:
            await self.restart()  # type: ignore[attr-defined]
        except BackendAIError as exc:
            log.warning("service.health_restart_failed", service=self.name, error=str(exc))

    # ---- observation ------------------------------------------------------------------

    async def refresh(self) -> Observed:
        """Observe now and publish what changed. A failed observation is published too
        (the state stays, the message says why) and re-raised."""
        self._asked += 1
        seq = self._asked
        try:
            obs = await self.observe()
        except BackendAIError as exc:
            if seq > self._applied:
                self._applied = seq
                self._apply(replace(self._observed, message=str(exc)))
            raise
        if seq > self._applied:
            self._applied = seq
            self._apply(obs)
        return obs

    def _apply(self, obs: Observed) -> None:
        old = self._observed
        self._observed = obs
        if obs.state != old.state:
            self._state_since = time.time()
            log.info("service.state", service=self.name, backend=self.backend,
                     state=obs.state.value, previous=old.state.value, pid=obs.pid,
                     reason=obs.message)
        self._publish()

    def _snapshot(self) -> ServiceStatus:
        obs = self._observed
        cfg, health = self.config, self.health
        return ServiceStatus(
            name=self.name, state=obs.state, pid=obs.pid,
            started_at=obs.started_at if obs.pid else 0.0, restarts=obs.restarts,
            exit_code=obs.exit_code, exit_signal=obs.exit_signal, version=self._version,
            package=cfg.package, backend=self.backend, message=obs.message,
            state_since=self._state_since, update=self.update_summary,
            desired=self.last_asked(),
            health=health.health, health_message=health.message,
            health_since=health.since, health_failures=health.failures,
            instance_of=cfg.instance_of, instance=cfg.instance, after=cfg.after)

    def last_asked(self) -> str:
        """The `desired` the status reports (a subclass may know more)."""
        return self.desired

    def _publish(self) -> None:
        snap = self._snapshot()
        if snap != self.feed.value:
            self.feed.publish(snap)

    async def wait_running(self, before: Observed, what: str) -> ServiceStatus:
        """After a start request: return once the service has been RUNNING with the same
        pid for start_secs; raise ServiceFailed if it fails, restarts or stops meanwhile."""
        start_secs = self.config.policy.start_secs
        limit = start_secs + self.config.call_timeout + WAIT_MARGIN
        seen: int | None = None  # the pid first seen RUNNING
        seen_at = 0.0
        try:
            async with asyncio.timeout(limit):
                while True:
                    obs = await self.refresh()
                    if obs.restarts > before.restarts or (seen is not None and obs.pid != seen) or \
                            obs.state in (State.EXITED, State.FATAL, State.BACKOFF,
                                          State.STOPPED):
                        why = obs.message or obs.state.value
                        raise ServiceFailed(f"service {self.name!r} failed to {what}: {why}")
                    if obs.state == State.RUNNING:
                        now = time.monotonic()
                        if seen is None:
                            seen, seen_at = obs.pid, now
                        if now - seen_at >= start_secs:
                            return self.status()
                    await asyncio.sleep(WAIT_POLL)
        except TimeoutError:
            raise DeadlineExceeded(
                f"service {self.name!r} did not reach RUNNING within {limit:g}s") from None
