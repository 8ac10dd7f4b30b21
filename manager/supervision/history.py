"""What a service's status changes mean for the event history.

`changes(old, new)` is pure: two status snapshots in, the events they amount to out
(kind, message, fields). Every backend publishes a snapshot on each change, so
`ServiceHistory.track(unit)` listens to a unit's status feed and queues these events:
the process, systemd and rcd backends get the same history with no code of their own.

Kinds:
- `service.state`: every state change, with the reason (the exit code or signal, the
  crash loop that made it FATAL, "stop requested", ...);
- `service.restart`: a restart the manager (or systemd) did on its own;
- `service.adopted`: a service found still running after a manager restart;
- `service.health`: the health check's verdict changed (healthy / unhealthy / unknown).
  Health checks that publish it in the status need nothing more; code that knows
  more than the status says can call `ServiceHistory.health(...)` directly.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from backendai.events.audit import Recorder
from manager.supervision.states import ServiceStatus, State

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Change:
    kind: str
    message: str
    fields: Mapping[str, object]


def _signal_name(sig: int | None) -> str | None:
    if sig is None:
        return None
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


AFTER_EXIT = (State.BACKOFF, State.EXITED, State.FATAL, State.STOPPED)


def changes(old: ServiceStatus, new: ServiceStatus) -> list[Change]:
    """The events that lead from snapshot `old` to snapshot `new` of one service."""
    out: list[Change] = []
    reason = new.message
    if new.state != old.state:
        # The status message and exit status outlive the change that set them: a state
        # event carries them when they are news (STARTING -> RUNNING after a crash is
        # not caused by that crash).
        exited = new.state in AFTER_EXIT or new.restarts != old.restarts
        why = reason if reason and (exited or reason != old.message) else ""
        text = f"{old.state.value} -> {new.state.value}"
        out.append(Change("service.state", f"{text}: {why}" if why else text, {
            "state": new.state.value, "previous": old.state.value,
            "pid": new.pid or old.pid or None, "reason": why or None,
            "exit_code": new.exit_code if exited else None,
            "exit_signal": _signal_name(new.exit_signal) if exited else None,
            "restarts": new.restarts}))
    if new.restarts > old.restarts and new.state in (State.STARTING, State.RUNNING):
        out.append(Change("service.restart",
                          f"restarted automatically (restart {new.restarts})"
                          + (f" after: {reason}" if reason else ""), {
                              "restarts": new.restarts, "reason": reason or None,
                              "exit_code": new.exit_code,
                              "exit_signal": _signal_name(new.exit_signal),
                              "pid": new.pid or None}))
    if new.adopted and not old.adopted:
        out.append(Change("service.adopted",
                          f"re-adopted pid {new.pid} after a manager restart",
                          {"pid": new.pid, "state": new.state.value}))
    if new.health != old.health and new.health:
        text = f"health {old.health or 'not checked'} -> {new.health}"
        out.append(Change("service.health",
                          f"{text}: {new.health_message}" if new.health_message else text, {
                              "health": new.health, "previous": old.health or None,
                              "failures": new.health_failures,
                              "reason": new.health_message or None}))
    return out


class ServiceHistory:
    """Feeds the status changes of the manager's units into its event log."""

    def __init__(self, events: Recorder) -> None:
        self.events = events
        self._last: dict[str, ServiceStatus] = {}

    def track(self, unit: Any) -> None:
        """Listen to `unit`'s status feed (every backend has one)."""
        feed = getattr(unit, "feed", None)
        if feed is None:
            log.warning("events.untracked_unit", service=unit.name)
            return
        self._last[unit.name] = feed.value
        feed.listen(self.observe)

    def observe(self, new: ServiceStatus) -> None:
        old = self._last.get(new.name)
        self._last[new.name] = new
        if old is None:
            return
        try:
            for change in changes(old, new):
                self.events.emit(change.kind, f"service/{new.name}", change.message,
                                 change.fields)
        except Exception:  # the history must never break supervision
            log.exception("events.observe_failed", service=new.name)

    def health(self, service: str, health: str, message: str = "", *,
               previous: str = "", failures: int = 0) -> None:
        """Record a health verdict that the status snapshot does not carry."""
        text = f"health {previous or 'not checked'} -> {health}"
        self.events.emit("service.health", f"service/{service}",
                         f"{text}: {message}" if message else text,
                         {"health": health, "previous": previous or None,
                          "failures": failures, "reason": message or None})
