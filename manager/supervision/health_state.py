"""A service's health as a pure state machine: check results in, health and actions out.

`transition(core, event, check)` takes the current `HealthCore`, one event (the service
came up with a pid, went down, or a check finished) and the service's `HealthCheck`,
and returns the new core plus the actions for the I/O shell (health_monitor.py). No
I/O, no clock reads: events carry the monotonic time.

Rules:
- health is `unknown` until the first counted result of the current process, then
  `healthy` (a check passed) or `unhealthy` (`failures` checks in a row failed);
- a new process (another pid) starts over at `unknown`; so does a service that is not
  running (no checks run then);
- within `start_period` of the process coming up, a failed check does not count (the
  message says so) until the first passing one, as Docker's HEALTHCHECK does;
- on becoming unhealthy with `on_unhealthy = "restart"`, one `Restart` action for that
  process: the shell hands it to the supervisor as an event, so it counts toward
  backoff and the crash-loop limit like a crash;
- a result for another pid than the current one is stale and ignored.

`next_check(...)` is the schedule: a check starts `interval` after the previous one
started, or when it ended if it took longer; never two at once.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from manager.health_config import HealthCheck


class Health(enum.Enum):
    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True, slots=True)
class HealthCore:
    health: Health = Health.UNKNOWN
    failures: int = 0          # consecutive counted failures
    message: str = "no check yet"
    pid: int = 0               # the process checked; 0: not running
    up_since: float | None = None  # monotonic time it was seen up; None: not running
    restart_asked: bool = False    # a Restart was sent for this process


# ---- events -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ProcessUp:
    """The service is running with this pid (sent on every look; a new pid resets)."""

    pid: int
    now: float


@dataclass(frozen=True, slots=True)
class ProcessDown:
    """The service is not running (stopped, exited, backing off, being stopped)."""

    why: str = "not running"


@dataclass(frozen=True, slots=True)
class Checked:
    pid: int       # the process the check ran against
    ok: bool
    message: str
    now: float     # when it ended


Event = ProcessUp | ProcessDown | Checked


# ---- actions ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Restart:
    pid: int
    reason: str


Action = Restart


def transition(core: HealthCore, event: Event,
               check: HealthCheck) -> tuple[HealthCore, list[Action]]:
    match event:
        case ProcessUp(pid=pid, now=now):
            if core.up_since is not None and pid == core.pid:
                return core, []
            return HealthCore(message="no check yet", pid=pid, up_since=now), []
        case ProcessDown(why=why):
            if core.up_since is None and core.health is Health.UNKNOWN:
                return (core if core.message == why else
                        dataclasses.replace(core, message=why)), []
            return HealthCore(message=why), []
        case Checked(pid=pid, ok=ok, message=message, now=now):
            if core.up_since is None or pid != core.pid:
                return core, []
            if ok:
                return dataclasses.replace(core, health=Health.HEALTHY, failures=0,
                                           message=message), []
            starting = core.health is not Health.HEALTHY and \
                now - core.up_since < check.start_period
            if starting:
                return dataclasses.replace(
                    core, message=f"{message} (within start_period: not counted)"), []
            failures = core.failures + 1
            if failures < check.failures:
                return dataclasses.replace(
                    core, failures=failures,
                    message=f"{message} ({failures} of {check.failures} failures)"), []
            core = dataclasses.replace(core, health=Health.UNHEALTHY, failures=failures,
                                       message=message)
            if check.on_unhealthy == "restart" and not core.restart_asked:
                reason = f"{failures} health checks failed in a row; last: {message}"
                return dataclasses.replace(core, restart_asked=True), [Restart(pid, reason)]
            return core, []
    return core, []


def next_check(last_start: float | None, last_end: float | None, interval: float,
               up_since: float) -> float:
    """When the next check may start (monotonic): at once for a process that was not
    checked yet, else `interval` after the last start, and never before the last end."""
    if last_start is None or last_end is None or last_start < up_since:
        return up_since
    return max(last_start + interval, last_end)
