"""The contract every backend's service unit fulfils (process, systemd, rcd).

The control layer (`control.py`) only talks to units through this protocol, so the
gRPC servicer and the HTTP shim behave the same whatever runs the service.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol

from manager.config import ServiceConfig
from manager.supervision.states import HealthView, ServiceStatus, UpdateSummary


class ServiceUnit(Protocol):
    config: ServiceConfig
    ready: asyncio.Event
    """Set by run() once the unit knows its service: the process backend after it
    re-adopted it or decided to start it, the polled backends after their first
    observation (a failed one too: the status then says why). The updater recovers,
    and the daemon opens its ports, only after every unit is ready."""

    @property
    def name(self) -> str: ...

    def status(self) -> ServiceStatus:
        """The current snapshot; never waits for a lifecycle operation."""
        ...

    async def start(self, *, wait: bool = True) -> ServiceStatus:
        """Start; with wait, return once RUNNING (raise ServiceFailed if it cannot)."""
        ...

    async def stop(self, *, timeout: float | None = None, force: bool = False) -> ServiceStatus:
        """Stop the service and everything it started; return once STOPPED."""
        ...

    async def restart(self) -> ServiceStatus: ...

    async def tail(self, lines: int) -> list[str]:
        """The last `lines` lines of the service's log, oldest first."""
        ...

    def follow(self, tail: int, *, follow: bool = True) -> AsyncIterator[list[str]]:
        """Batches of log lines: the last `tail` lines, then new lines as written."""
        ...

    def watch(self) -> AsyncIterator[ServiceStatus]:
        """The current status, then every change (slow readers get the latest)."""
        ...

    async def run(self) -> None:
        """Recover (re-adopt or autostart) and run background work until shutdown()."""
        ...

    async def shutdown(self) -> None:
        """Stop background work; leaves the service itself running. Idempotent."""
        ...

    def set_version(self, version: str) -> None:
        """The release version the service now runs (set by the updater)."""
        ...

    def set_update_summary(self, summary: UpdateSummary) -> None:
        """The update in progress and the last outcome, shown in status (updater)."""
        ...

    def set_health(self, health: HealthView) -> None:
        """What the health check found, shown in status (health_monitor.py)."""
        ...

    def unhealthy(self, pid: int, reason: str) -> None:
        """The health check says restart this process (`on_unhealthy = "restart"`)."""
        ...
