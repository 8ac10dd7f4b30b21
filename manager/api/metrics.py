"""The manager's Prometheus collector: every scrape reads the services' current status
snapshots (the same ones Status and GET /api/services answer with) and the counts the
updater and the log stores keep. Metric names and meanings: docs/METRICS.md.

Imported on the first scrape only (manager/api/metrics_routes.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from backendai.metrics_export import Metric, counter, counter_of, gauge, histogram, one_hot
from manager.api.control import ManagerControl
from manager.supervision.logstore import LogStore
from manager.supervision.states import ServiceStatus, State

STATES = tuple(s.value for s in State)
HEALTH = ("unknown", "healthy", "unhealthy")
P = "backendai_manager_"


class ManagerCollector:
    """prometheus_client collector (`collect()` on every scrape) over a ManagerControl."""

    def __init__(self, control: ManagerControl, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.control = control
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        control = self.control
        statuses = [unit.status() for unit in control.units.values()]
        yield gauge(P + "info", "The manager: its version and role (always 1).",
                    ("version", "role"), [((control.manager_version, control.role), 1.0)])
        yield from service_families(statuses, self.clock())
        stores = [(name, logs) for name, unit in control.units.items()
                  if isinstance(logs := getattr(unit, "logs", None), LogStore)]
        yield counter_of(P + "service_log_bytes_total",
                         "Bytes of the service's output the manager wrote to its log files "
                         "since the manager started (process backend).", ("service",),
                         (((name,), float(logs.bytes_written)) for name, logs in stores))
        yield from self._updates(statuses)

    def _updates(self, statuses: list[ServiceStatus]) -> Iterator[Metric]:
        control = self.control
        updatable = [st for st in statuses
                     if (cfg := control.config.service(st.name)) is not None
                     and cfg.install_root]
        yield gauge(P + "update_running",
                    "1 while an update or rollback operation runs on the service "
                    "(services with install_root).", ("service",),
                    (((st.name,), 1.0 if st.update.running_operation_id else 0.0)
                     for st in updatable))
        if control.updater is None:
            return
        stats = control.updater.stats
        yield counter(P + "update_operations_total",
                      "Update and rollback operations that ended, by outcome (succeeded, "
                      "failed, rolled_back, rollback_failed).", stats.operations)
        yield histogram(P + "update_step_duration_seconds",
                        "Time each step of an update or rollback took.", stats.step_seconds)


def service_families(statuses: list[ServiceStatus], now: float) -> Iterator[Metric]:
    """The per-service families, from status snapshots alone."""
    yield gauge(P + "service_info",
                "A supervised service: its backend and the version it runs (always 1).",
                ("service", "backend", "version"),
                (((st.name, st.backend, st.version), 1.0) for st in statuses))
    yield gauge(P + "service_state",
                "The service's supervisor state, one-hot: 1 for the current state.",
                ("service", "state"),
                (sample for st in statuses
                 for sample in one_hot((st.name,), STATES, st.state.value)))
    yield gauge(P + "service_up", "1 when the service is RUNNING, else 0.", ("service",),
                (((st.name,), 1.0 if st.state is State.RUNNING else 0.0) for st in statuses))
    yield gauge(P + "service_uptime_seconds",
                "Seconds since the service's current process started; 0 when it has none.",
                ("service",),
                (((st.name,), max(0.0, now - st.started_at) if st.pid and st.started_at
                  else 0.0) for st in statuses))
    yield counter_of(P + "service_restarts_total",
                     "Automatic restarts of the service after its process exited (kept "
                     "across manager restarts; operator restarts do not count).", ("service",),
                     (((st.name,), float(st.restarts)) for st in statuses))
    yield gauge(P + "service_last_exit_code",
                "Exit code of the service's last process that exited with one (absent "
                "before the first exit and when a signal ended it).", ("service",),
                (((st.name,), float(st.exit_code)) for st in statuses
                 if st.exit_code is not None))
    yield gauge(P + "service_last_exit_signal",
                "Number of the signal that ended the service's last process (absent "
                "unless a signal ended it).", ("service",),
                (((st.name,), float(st.exit_signal)) for st in statuses
                 if st.exit_signal is not None))
    yield gauge(P + "service_health",
                "The service's health check, one-hot over unknown, healthy and unhealthy "
                "(services with a health check only).", ("service", "health"),
                (sample for st in statuses if st.health
                 for sample in one_hot((st.name,), HEALTH, st.health)))
