"""The service layer: the one code path behind both the gRPC servicer and the HTTP shim.

It resolves and validates what a request names, then delegates to the service's unit.
A request is validated before the manager's capabilities are checked: a bad version is
INVALID_ARGUMENT / 400 whether or not updates are configured here. No transport details
here, and no business logic in the transports. Every operator action is audited here,
once for every transport (`@audited`: who, through what, the result).

Every start, stop and restart asks the updater first (`before_lifecycle`): while an
update or rollback of the service runs, the request is refused (FAILED_PRECONDITION /
409 naming the operation), or with `force` the operation is cancelled on purpose
before the request is carried out (manager/updates/updater.py says how).
"""

from __future__ import annotations

import builtins
import contextlib
import fnmatch
import math
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from backendai import __version__
from backendai.errors import BackendAIError, InvalidArgument, NotConfigured, NotFound
from backendai.events.audit import audited
from backendai.events.log import EventLog
from backendai.events.model import Event, EventFilter, Page, PageRequest, cut
from backendai.feed import with_keepalive
from backendai.validate import check_origin, check_version, is_service_name
from manager.config import ManagerConfig
from manager.supervision.states import ServiceStatus, count_states
from manager.supervision.unit import ServiceUnit
from manager.supervision.units import SupervisedUnits

if TYPE_CHECKING:  # the updates wing loads only where updates are configured
    from manager.updates.journal import EventRecord, OpRecord
    from manager.updates.results import (
        OperationReport,
        ReleaseInfo,
        RollbackStarted,
        UpdateStarted,
    )
    from manager.updates.store_check import ReleaseCheck
    from manager.updates.update_stats import UpdateStats

DEFAULT_LOG_LINES = 100
MAX_LOG_LINES = 100_000
MAX_PATTERN_LEN = 200
MAX_STOP_TIMEOUT = 3600.0
MIN_KEEPALIVE = 1.0     # WatchStatus keepalive_seconds
MAX_KEEPALIVE = 3600.0
GLOB_CHARS = frozenset("*?[")


def is_pattern(name: object) -> bool:
    """A glob (`web-*`) rather than a name: service names never hold * ? [."""
    return isinstance(name, str) and not GLOB_CHARS.isdisjoint(name)


@dataclass(frozen=True, slots=True)
class ServiceList:
    """The services a pattern matched, with their counts by state (seed 003's Count)."""

    services: builtins.list[ServiceStatus]
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return len(self.services)


@dataclass(frozen=True, slots=True)
class ReloadResult:
    added: builtins.list[str]
    removed: builtins.list[str]
    changed: builtins.list[str]
    unchanged: builtins.list[str]
    message: str


class Reloader(Protocol):
    """What the control layer needs from the config reload (manager/config_reload.py)."""

    @audited("reload", lambda self: "manager")
    async def reload(self) -> ReloadResult: ...


@dataclass(frozen=True, slots=True)
class VersionInfo:
    service: str
    version: str
    name: str  # package name, as the seeds' GET /version reports it
    manager_version: str


class Updater(Protocol):
    """What the control layer needs from the updater (see updater.py)."""

    stats: UpdateStats  # what /metrics reports of updates

    async def update(self, service: str, version: str, *, origin: str = "",
                     start_stopped: bool = False) -> UpdateStarted: ...

    async def rollback(self, service: str, *, origin: str = "",
                       expect: str = "") -> RollbackStarted: ...

    async def check_release(self, service: str, version: str) -> ReleaseCheck: ...

    async def before_lifecycle(self, service: str, request: str, *,
                               force: bool) -> OpRecord | None: ...

    def report(self, service: str, operation_id: str = "",
               origin: str = "") -> OperationReport: ...

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
    empty name; a glob, an unknown or an invalid name as given, cut short)."""
    if isinstance(name, str):
        with contextlib.suppress(BackendAIError):
            return f"service/{control.unit(name).name}"
    return f"service/{cut(str(name), 64)}"


def update_subject(control: ManagerControl, name: object = "", *args: object,
                   **kwargs: object) -> str:
    """What an update or rollback is about: the service (with `instances`, NAME)."""
    if isinstance(name, str):
        with contextlib.suppress(BackendAIError):
            return f"service/{control.update_target(name)}"
    return f"service/{cut(str(name), 64)}"


def _version_asked(control: ManagerControl, name: object = "", version: object = "",
                   *args: object, **kwargs: object) -> dict[str, object]:
    return {"version": cut(str(version), 64), "origin": cut(str(kwargs.get("origin", "")),
                                                            100) or None}


def _forced(control: ManagerControl, *args: object, **kwargs: object) -> dict[str, object]:
    return {"force": True if kwargs.get("force") is True else None}


class ManagerControl:
    def __init__(self, config: ManagerConfig, units: Mapping[str, ServiceUnit],
                 updater: Updater | None = None, *,
                 supervised: SupervisedUnits | None = None,
                 events: EventLog | None = None) -> None:
        """`supervised`: the daemon's set of supervised units (its `units` is the live
        mapping a reload changes); without one, a set of `units` without health
        monitors. `events`: the event history (the audit trail of every operator action
        goes there)."""
        self.events = events
        self.config = config
        self.supervised = (supervised if supervised is not None
                           else SupervisedUnits(config, dict(units), lambda _unit: None))
        self.units = self.supervised.units
        self.updater = updater
        self.reloader: Reloader | None = None  # set by the daemon
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

    def count(self, pattern: str = "") -> ServiceList:
        """`list(pattern)` with the counts by state of what it matched."""
        found = self.list(pattern)
        return ServiceList(found, count_states(found))

    def matching(self, pattern: str) -> builtins.list[ServiceUnit]:
        """The units a glob matches, in config order; NotFound when none does."""
        names = [s.name for s in self.list(pattern)]
        if not names:
            raise NotFound(f"no service matches {pattern!r}")
        return [self.units[n] for n in names]

    def _targets(self, name: str) -> builtins.list[ServiceUnit]:
        """The units a lifecycle request names: one, or every one a glob matches."""
        return self.matching(name) if is_pattern(name) else [self.unit(name)]

    async def _before_lifecycle(self, units: builtins.list[ServiceUnit], request: str,
                                force: bool) -> None:
        if not isinstance(force, bool):
            raise InvalidArgument("force must be true or false")
        if self.updater is not None:
            # an instance's update is its service's (NAME for NAME-i)
            for target in dict.fromkeys(u.config.instance_of or u.name for u in units):
                await self.updater.before_lifecycle(target, request, force=force)

    @audited("start", service_subject, request=_forced)
    async def start(self, name: str = "", *, wait: bool = True,
                    force: bool = False) -> ServiceStatus:
        """Start one service, or every service a glob matches (in start order; the
        answer is then the first one's status). force: cancel a running update of the
        service first."""
        units = self._targets(name)
        await self._before_lifecycle(units, "start", force)
        if is_pattern(name) or units[0].config.after:
            return (await self.supervised.start_many([u.name for u in units], wait=wait))[0]
        return await units[0].start(wait=wait)

    @audited("stop", service_subject, request=_forced)
    async def stop(self, name: str = "", *, timeout: float | None = None,
                   force: bool = False) -> ServiceStatus:
        """Stop one service, or every service a glob matches (what starts after another
        stops before it; the answer is then the first one's status). force: SIGKILL at
        once, and cancel a running update of the service first."""
        units = self._targets(name)
        timeout = validate_timeout(timeout)
        await self._before_lifecycle(units, "stop", force)
        if is_pattern(name):
            return (await self.supervised.stop_many([u.name for u in units], timeout=timeout,
                                               force=force))[0]
        return await units[0].stop(timeout=timeout, force=force)

    @audited("restart", service_subject, request=_forced)
    async def restart(self, name: str = "", *, force: bool = False) -> ServiceStatus:
        """Restart one service, or every service a glob matches (stopped in reverse
        start order, then started in order). force: cancel a running update of the
        service first."""
        units = self._targets(name)
        await self._before_lifecycle(units, "restart", force)
        if is_pattern(name):
            names = [u.name for u in units]
            await self.supervised.stop_many(names, pausing=frozenset(names))
            return (await self.supervised.start_many(names))[0]
        return await units[0].restart()

    @audited("reload", lambda self: "manager")
    async def reload(self) -> ReloadResult:
        """Re-read the config file and the secrets (SIGHUP, gRPC Reload, POST /reload)."""
        if self.reloader is None:
            raise NotConfigured("this manager has no config file to reload")
        return await self.reloader.reload()

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

    def watch(self, name: str = "", keepalive: float = 0.0) -> AsyncIterator[ServiceStatus]:
        """The service's status, then every change; with `keepalive` (seconds), the
        current status again after that long without a change."""
        unit = self.unit(name)
        if isinstance(keepalive, bool) or not isinstance(keepalive, int | float) or \
                not (keepalive == 0 or (math.isfinite(keepalive)
                                        and MIN_KEEPALIVE <= keepalive <= MAX_KEEPALIVE)):
            raise InvalidArgument(f"keepalive_seconds must be 0 (none) or between "
                                  f"{MIN_KEEPALIVE:g} and {MAX_KEEPALIVE:g}, got {keepalive!r}")
        if not keepalive:
            return unit.watch()
        return with_keepalive(unit.watch(), unit.status, float(keepalive))

    def require_updater(self) -> Updater:
        if self.updater is None:
            raise NotConfigured("updates are not configured on this manager "
                                "(no service has install_root and package_url)")
        return self.updater

    def update_target(self, name: str) -> str:
        """What an update names: a service, or a service with `instances` (by its own
        name or any instance's: its instances share one install_root and are updated
        together, one at a time)."""
        if isinstance(name, str) and name and self.config.members(name) \
                and name not in self.units:
            return name  # NAME of NAME-1 ... NAME-N
        unit = self.unit(name)
        return unit.config.instance_of or unit.name

    @audited("update", update_subject, request=_version_asked,
             detail=lambda r: {"operation": r.operation_id or None})
    async def update(self, name: str, version: str, *, origin: str = "",
                     start_stopped: bool = False) -> UpdateStarted:
        """origin: who asks (journaled, reported back); start_stopped: start the service
        after the update even if the operator had stopped it."""
        target = self.update_target(name)
        version = check_version(version)
        origin = check_origin(origin)
        if not isinstance(start_stopped, bool):
            raise InvalidArgument("start_stopped must be true or false")
        return await self.require_updater().update(target, version, origin=origin,
                                                   start_stopped=start_stopped)

    def get_update(self, name: str = "", operation_id: str = "",
                   origin: str = "") -> OperationReport:
        """One operation by id, the service's newest one issued with `origin`, or the
        service's running (else last) operation. With an id and no service, the
        operation of whichever service it is."""
        if not isinstance(operation_id, str):
            raise InvalidArgument("operation_id must be a string")
        origin = check_origin(origin)
        if operation_id and origin:
            raise InvalidArgument("give operation_id or origin, not both")
        if operation_id:
            from manager.updates.journal import check_operation_id  # noqa: PLC0415

            check_operation_id(operation_id)
        service = self.update_target(name) if name or not operation_id else ""
        return self.require_updater().report(service, operation_id, origin)

    @audited("rollback", update_subject,
             detail=lambda r: {"operation": r.operation_id, "version": r.version})
    async def rollback(self, name: str, *, origin: str = "",
                       version: str = "") -> RollbackStarted:
        """origin: who asks (journaled, reported back), as for an update; version: refuse
        unless the rollback goes to exactly this version."""
        target = self.update_target(name)
        origin = check_origin(origin)
        if not isinstance(version, str):
            raise InvalidArgument("version must be a string")
        if version:
            version = check_version(version)
        return await self.require_updater().rollback(target, origin=origin, expect=version)

    async def check_release(self, name: str, version: str) -> ReleaseCheck:
        """Whether the package store has `version` for the service (nothing changes)."""
        target = self.update_target(name)
        version = check_version(version)
        return await self.require_updater().check_release(target, version)

    def releases(self, name: str) -> builtins.list[ReleaseInfo]:
        return self.require_updater().releases(self.update_target(name))

    def watch_update(self, operation_id: str) -> AsyncIterator[EventRecord]:
        from manager.updates.journal import check_operation_id  # noqa: PLC0415

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
