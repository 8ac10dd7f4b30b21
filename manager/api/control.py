"""The service layer: the one code path behind both the gRPC servicer and the HTTP shim.

It resolves and validates what a request names, then delegates to the service's unit.
A request is validated before the manager's capabilities are checked: a bad version is
INVALID_ARGUMENT / 400 whether or not updates are configured here. No transport details
here, and no business logic in the transports.
"""

from __future__ import annotations

import builtins
import fnmatch
import math
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from backendai import __version__
from backendai.errors import InvalidArgument, NotConfigured, NotFound
from backendai.validate import check_version, is_service_name
from manager.config import ManagerConfig
from manager.supervision.fleet import Fleet
from manager.supervision.states import ServiceStatus, count_states
from manager.supervision.unit import ServiceUnit

if TYPE_CHECKING:  # the updates wing loads only where updates are configured
    from manager.updates.journal import EventRecord, OpRecord
    from manager.updates.results import ReleaseInfo, RollbackStarted, UpdateStarted

DEFAULT_LOG_LINES = 100
MAX_LOG_LINES = 100_000
MAX_PATTERN_LEN = 200
MAX_STOP_TIMEOUT = 3600.0
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

    async def reload(self) -> ReloadResult: ...


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


class ManagerControl:
    def __init__(self, config: ManagerConfig, units: Mapping[str, ServiceUnit],
                 updater: Updater | None = None, *, fleet: Fleet | None = None) -> None:
        """`fleet`: the daemon's (its `units` is the live mapping a reload changes);
        without one, a fleet of `units` without health monitors."""
        self.config = config
        self.fleet = fleet if fleet is not None else Fleet(config, dict(units),
                                                           lambda _unit: None)
        self.units = self.fleet.units
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

    def matching(self, pattern: str) -> builtins.list[str]:
        """The names a glob matches, in config order; NotFound when none does."""
        names = [s.name for s in self.list(pattern)]
        if not names:
            raise NotFound(f"no service matches {pattern!r}")
        return names

    async def start(self, name: str = "", *, wait: bool = True) -> ServiceStatus:
        """Start one service, or every service a glob matches (in start order; the
        answer is then the first one's status)."""
        if is_pattern(name):
            return (await self.fleet.start_many(self.matching(name), wait=wait))[0]
        unit = self.unit(name)
        if unit.config.after:
            return (await self.fleet.start_many([unit.name], wait=wait))[0]
        return await unit.start(wait=wait)

    async def stop(self, name: str = "", *, timeout: float | None = None,
                   force: bool = False) -> ServiceStatus:
        """Stop one service, or every service a glob matches (what starts after another
        stops before it; the answer is then the first one's status)."""
        timeout = validate_timeout(timeout)
        if is_pattern(name):
            return (await self.fleet.stop_many(self.matching(name), timeout=timeout,
                                               force=force))[0]
        unit = self.unit(name)
        return await unit.stop(timeout=timeout, force=force)

    async def restart(self, name: str = "") -> ServiceStatus:
        """Restart one service, or every service a glob matches (stopped in reverse
        start order, then started in order)."""
        if is_pattern(name):
            names = self.matching(name)
            await self.fleet.stop_many(names)
            return (await self.fleet.start_many(names))[0]
        return await self.unit(name).restart()

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

    def watch(self, name: str = "") -> AsyncIterator[ServiceStatus]:
        return self.unit(name).watch()

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

    async def update(self, name: str, version: str) -> UpdateStarted:
        target = self.update_target(name)
        version = check_version(version)
        return await self.require_updater().update(target, version)

    async def rollback(self, name: str) -> RollbackStarted:
        return await self.require_updater().rollback(self.update_target(name))

    def releases(self, name: str) -> builtins.list[ReleaseInfo]:
        return self.require_updater().releases(self.update_target(name))

    def watch_update(self, operation_id: str) -> AsyncIterator[EventRecord]:
        from manager.updates.journal import check_operation_id  # noqa: PLC0415

        check_operation_id(operation_id)
        return self.require_updater().watch(operation_id)
