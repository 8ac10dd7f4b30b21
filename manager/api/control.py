"""The service layer: the one code path behind both the gRPC servicer and the HTTP shim.

It resolves and validates what a request names, then delegates to the service's unit.
A request is validated before the manager's capabilities are checked: a bad version is
INVALID_ARGUMENT / 400 whether or not updates are configured here. No transport details
here, and no business logic in the transports. Every operator action is audited here,
once for every transport (`@audited`: who, through what, the result).
"""

from __future__ import annotations

import builtins
import contextlib
import fnmatch
import math
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from backendai import __version__
from backendai.errors import BackendAIError, InvalidArgument, NotConfigured, NotFound
from backendai.events.audit import audited
from backendai.events.log import EventLog
from backendai.events.model import Event, EventFilter, Page, PageRequest, cut
from backendai.validate import check_version, is_service_name
from manager.config import ManagerConfig
from manager.supervision.states import ServiceStatus
from manager.supervision.unit import ServiceUnit
from manager.updates.journal import EventRecord, OpRecord, check_operation_id
from manager.updates.results import ReleaseInfo, RollbackStarted, UpdateStarted

DEFAULT_LOG_LINES = 100
MAX_LOG_LINES = 100_000
MAX_PATTERN_LEN = 200
MAX_STOP_TIMEOUT = 3600.0


@dataclass(frozen=True, slots=True)
class VersionInfo:
    service: str
    version: str
    name: str  # package name, as the seeds' GET /version reports it
    manager_version: str


class Updater(Protocol):
    """What the control layer needs from the updater (see updater.py)."""

    async def update(self, service: str, version: str) -> UpdateStarted: ...

    async def rollback(self, service: str) -> RollbackStarted: ...

    def releases(self, service: str) -> builtins.list[ReleaseInfo]: ...

    def watch(self, operation_id: str) -> AsyncIterator[EventRecord]: ...

    def operation(self, operation_id: str) -> OpRecord | None: ...



def validate_lines(lines: int, *, allow_zero: bool = True) -> int:
    """A log line count: 0 means the default; 1..MAX_LOG_LINES otherwise."""
    if isinstance(lines, bool) or not isinstance(lines, int):
        raise InvalidArgument("lines must be an integer")
    if lines == 0 and allow_zero:
        return DEFAULT_LOG_LINES
    if not 1 <= lines <= MAX_LOG_LINES:
        raise InvalidArgument(f"lines must be between 1 and {MAX_LOG_LINES}, got {lines}")
    return lines


def validate_timeout(timeout: float | None) -> float | None:
    """A stop timeout in seconds; None or 0 means the service's configured stop_timeout."""
    if timeout is None or timeout == 0:
        return None
    if not math.isfinite(timeout) or not 0 < timeout <= MAX_STOP_TIMEOUT:
        raise InvalidArgument(
            f"timeout must be between 0 and {MAX_STOP_TIMEOUT:g} seconds, got {timeout!r}")
    return float(timeout)


def service_subject(control: ManagerControl, name: object = "", *args: object,
                    **kwargs: object) -> str:
    """What an audited action on a service is about: `service/NAME` (the primary for an
    empty name; an unknown or invalid name as given, cut short)."""
    if isinstance(name, str):
        with contextlib.suppress(BackendAIError):
            return f"service/{control.unit(name).name}"
    return f"service/{cut(str(name), 64)}"


def _version_asked(control: ManagerControl, name: object = "", version: object = "",
                   *args: object, **kwargs: object) -> dict[str, object]:
    return {"version": cut(str(version), 64)}


class ManagerControl:
    def __init__(self, config: ManagerConfig, units: Mapping[str, ServiceUnit],
                 updater: Updater | None = None, events: EventLog | None = None) -> None:
        self.config = config
        self.units = dict(units)
        self.updater = updater
        self.events = events
        self.manager_version = __version__
        self.working_directory = os.getcwd()

    @property
    def role(self) -> str:
        return self.config.role

    @property
    def primary(self) -> str:
        return self.config.primary.name

    def unit(self, name: str) -> ServiceUnit:
        """The unit a request names; empty names the primary service."""
        if not isinstance(name, str):
            raise InvalidArgument("service must be a string")
        if name == "":
            name = self.primary
        unit = self.units.get(name)
        if unit is None:
            if not is_service_name(name):
                raise InvalidArgument("service name must be 1-64 characters of "
                                      "letters, digits, '.', '_', '@', '-'")
            raise NotFound(f"no service named {name!r} (known: {', '.join(self.units)})")
        return unit

    def status(self, name: str = "") -> ServiceStatus:
        return self.unit(name).status()

    def list(self, pattern: str = "") -> builtins.list[ServiceStatus]:
        """Services whose name matches a glob pattern (all when empty), in config order."""
        if not isinstance(pattern, str) or len(pattern) > MAX_PATTERN_LEN or "\x00" in pattern:
            raise InvalidArgument(f"pattern must be a glob of at most {MAX_PATTERN_LEN} chars")
        return [u.status() for n, u in self.units.items()
                if not pattern or fnmatch.fnmatchcase(n, pattern)]

    @audited("start", service_subject)
    async def start(self, name: str = "", *, wait: bool = True) -> ServiceStatus:
        return await self.unit(name).start(wait=wait)

    @audited("stop", service_subject)
    async def stop(self, name: str = "", *, timeout: float | None = None,
                   force: bool = False) -> ServiceStatus:
        unit = self.unit(name)
        return await unit.stop(timeout=validate_timeout(timeout), force=force)

    @audited("restart", service_subject)
    async def restart(self, name: str = "") -> ServiceStatus:
        return await self.unit(name).restart()

    def version(self, name: str = "") -> VersionInfo:
        unit = self.unit(name)
        st = unit.status()
        return VersionInfo(service=unit.name, version=st.version, name=unit.config.package,
                           manager_version=self.manager_version)

    async def logs(self, name: str = "", lines: int = DEFAULT_LOG_LINES) -> builtins.list[str]:
        unit = self.unit(name)
        return await unit.tail(validate_lines(lines))

    def follow_logs(self, name: str = "", tail: int = 0, *,
                    follow: bool = True) -> AsyncIterator[builtins.list[str]]:
        unit = self.unit(name)
        if isinstance(tail, bool) or not isinstance(tail, int) or not 0 <= tail <= MAX_LOG_LINES:
            raise InvalidArgument(f"tail_lines must be between 0 and {MAX_LOG_LINES}")
        return unit.follow(tail, follow=follow)

    def watch(self, name: str = "") -> AsyncIterator[ServiceStatus]:
        return self.unit(name).watch()

    def require_updater(self) -> Updater:
        if self.updater is None:
            raise NotConfigured("updates are not configured on this manager "
                                "(no service has install_root and package_url)")
        return self.updater

    @audited("update", service_subject, request=_version_asked,
             detail=lambda r: {"operation": r.operation_id or None})
    async def update(self, name: str, version: str) -> UpdateStarted:
        unit = self.unit(name)
        version = check_version(version)
        return await self.require_updater().update(unit.name, version)

    @audited("rollback", service_subject,
             detail=lambda r: {"operation": r.operation_id, "version": r.version})
    async def rollback(self, name: str) -> RollbackStarted:
        unit = self.unit(name)
        return await self.require_updater().rollback(unit.name)

    def releases(self, name: str) -> builtins.list[ReleaseInfo]:
        unit = self.unit(name)
        return self.require_updater().releases(unit.name)

    def watch_update(self, operation_id: str) -> AsyncIterator[EventRecord]:
        check_operation_id(operation_id)
        return self.require_updater().watch(operation_id)

    # ---- the event history ----------------------------------------------------------

    def require_events(self) -> EventLog:
        if self.events is None:
            raise NotConfigured("this manager keeps no event history")
        return self.events

    async def list_events(self, req: PageRequest) -> Page:
        """One page of the history (the request is validated by backendai.events.model)."""
        return await self.require_events().page(req)

    def watch_events(self, flt: EventFilter, *, after_id: int = 0,
                     from_now: bool = False) -> AsyncIterator[Event]:
        return self.require_events().watch(flt, after_id=after_id, from_now=from_now)
