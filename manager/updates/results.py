"""What the updater answers: the results the service layer passes on to both transports."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class UpdateStarted:
    operation_id: str  # empty when the service already runs that version
    version: str
    message: str


@dataclass(frozen=True, slots=True)
class RollbackStarted:
    operation_id: str
    version: str  # the release switched back to


@dataclass(frozen=True, slots=True)
class ReleaseInfo:
    version: str
    current: bool
    previous: bool
    installed: float  # unix time
