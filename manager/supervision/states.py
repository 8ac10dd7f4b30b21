"""Service states and the status snapshot every API layer reports."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field


class State(enum.Enum):
    STOPPED = "STOPPED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    EXITED = "EXITED"
    FATAL = "FATAL"

    @property
    def is_up(self) -> bool:
        """A process of the service exists (or is being brought up)."""
        return self in (State.STARTING, State.RUNNING, State.STOPPING)


@dataclass(frozen=True, slots=True)
class UpdateSummary:
    running_operation_id: str = ""
    last_operation_id: str = ""
    last_outcome: str = ""
    last_message: str = ""
    last_version: str = ""
    running_origin: str = ""  # who issued the running operation (UpdateRequest.origin)
    last_origin: str = ""
    running_version: str = ""  # the version the running operation targets
    running_step: str = ""  # the step it is at


@dataclass(frozen=True, slots=True)
class HealthView:
    """What a service's health check found, as its status shows it (health_monitor.py)."""

    health: str = ""  # "" (no check configured) | "unknown" | "healthy" | "unhealthy"
    message: str = ""  # the last check's result in words
    since: float = 0.0  # wall clock: when `health` last changed
    failures: int = 0  # consecutive failed checks


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """An immutable snapshot; a new one is published on every change."""

    name: str
    state: State
    pid: int = 0
    started_at: float = 0.0  # wall clock, 0 when not running
    restarts: int = 0
    exit_code: int | None = None
    exit_signal: int | None = None
    version: str = ""
    package: str = ""
    backend: str = "process"
    message: str = ""
    state_since: float = 0.0
    adopted: bool = False
    update: UpdateSummary = field(default_factory=UpdateSummary)
    desired: str = ""  # "running" | "stopped" | "": what was last asked
    # Health (issue 15, `[services.health]`): "" when no check is configured, else
    # "unknown" until the first result, then "healthy" / "unhealthy".
    health: str = ""
    health_message: str = ""
    health_since: float = 0.0
    health_failures: int = 0  # consecutive failed checks
    instance_of: str = ""  # for NAME-3 of `instances = N`: "NAME"
    instance: int = 0  # 1..N for an instance
    after: tuple[str, ...] = ()  # services this one starts after

    @property
    def running(self) -> bool:
        """What the seeds' GET /status calls "running"."""
        return self.state in (State.STARTING, State.RUNNING)


def count_states(statuses: Iterable[ServiceStatus]) -> dict[str, int]:
    """How many services are in each state, by state name ("RUNNING": 3); states with
    none are left out (seed 003's Count)."""
    counts: dict[str, int] = {}
    for st in statuses:
        counts[st.state.value] = counts.get(st.state.value, 0) + 1
    return counts
