"""The hub's Prometheus collector: every scrape reads the inventory's live host views and
the active rollouts' state (through hub/inventory.py and hub/rollouts.py, never the
store), plus the counts hub/stats.py keeps. Metric names and meanings: docs/METRICS.md.

Imported on the first scrape only (the /metrics route, backendai/metrics_http.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from backendai.metrics_export import Metric, counter, counter_of, gauge, histogram
from hub.inventory import Inventory
from hub.rollout_model import TERMINAL, HostState, RolloutState
from hub.rollouts import Rollouts
from hub.stats import HubStats, hosts_by

P = "backendai_hub_"
MAX_VERSIONS = 100  # distinct versions reported; more are counted as "other"
ACTIVE_STATES = tuple(s.value for s in RolloutState
                      if s not in TERMINAL and s is not RolloutState.PLANNED)
FINAL_STATES = tuple(s.value for s in RolloutState if s in TERMINAL)
HOST_STATES = tuple(s.value for s in HostState)


class HubCollector:
    """prometheus_client collector (`collect()` on every scrape) over the hub's parts."""

    def __init__(self, *, inventory: Inventory, rollouts: Rollouts, stats: HubStats,
                 version: str, clock: Callable[[], float] = time.time) -> None:
        self.inventory = inventory
        self.rollouts = rollouts
        self.stats = stats
        self.version = version
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        yield gauge(P + "info", "The hub: its version (always 1).", ("version",),
                    [((self.version,), 1.0)])
        yield from self._hosts()
        yield from self._rollouts()
        yield from self._calls()

    def _hosts(self) -> Iterator[Metric]:
        inv = self.inventory
        views = list(inv.hosts.values())
        now = self.clock()
        reach: dict[tuple[str, str], int] = {}
        for role in sorted({"agent", *(v.entry.role for v in views)}):
            for word in ("reachable", "unreachable"):
                reach[(role, word)] = 0
        for v in views:
            key = (v.entry.role, "reachable" if v.reachable else "unreachable")
            reach[key] += 1
        yield gauge(P + "hosts",
                    "Hosts in the inventory by role and by whether the hub's status stream "
                    "to the host's manager is up.", ("role", "reachability"),
                    ((key, float(n)) for key, n in reach.items()))
        versions = hosts_by((v.version or "unknown" for v in views), MAX_VERSIONS)
        yield gauge(P + "hosts_by_version",
                    "Hosts by the version their manager last reported for the host's "
                    "service (\"unknown\" before the first report).", ("version",),
                    (((version,), float(n)) for version, n in sorted(versions.items())))
        yield gauge(P + "agents_connected",
                    "Hosts whose agent sent a heartbeat within three heartbeat intervals.",
                    (), [((), float(sum(1 for v in views if inv.agent_connected(v, now))))])
        yield counter_of(P + "status_stream_reconnects_total",
                         "Times the hub re-opened a manager's status stream (WatchStatus) "
                         "after it ended or failed.", (), [((), float(inv.reconnects))])

    def _rollouts(self) -> Iterator[Metric]:
        active = [runner.r for runner in list(self.rollouts.runners.values())]
        states = dict.fromkeys(ACTIVE_STATES, 0)
        hosts = dict.fromkeys(HOST_STATES, 0)
        for r in active:
            states[r.state.value] = states.get(r.state.value, 0) + 1
            for h in r.hosts.values():
                hosts[h.state.value] += 1
        yield gauge(P + "rollouts", "Active rollouts by state.", ("state",),
                    (((state,), float(n)) for state, n in states.items()))
        yield gauge(P + "rollout_hosts", "Hosts of the active rollout by their state in it.",
                    ("state",), (((state,), float(n)) for state, n in hosts.items()))
        yield gauge(P + "rollout_wave",
                    "The active rollout's current wave, counted from 1 (0 before the first).",
                    (), [((), float(max(r.current_wave + 1 for r in active)))] if active else [])
        yield gauge(P + "rollout_waves", "The number of waves the active rollout has.", (),
                    [((), float(max(r.wave_count for r in active)))] if active else [])
        stats = self.stats
        finished = stats.rollouts_finished
        yield counter_of(P + "rollouts_finished_total",
                         "Rollouts that ended, by final state.", ("state",),
                         (((state,), finished.get(state)) for state in FINAL_STATES))
        yield counter(P + "rollout_host_outcomes_total",
                      "Hosts of rollouts that reached a final state, by that state "
                      "(succeeded, failed, unreachable, rolled_back, rollback_failed, "
                      "skipped).", stats.host_outcomes)
        yield histogram(P + "rollout_wave_duration_seconds",
                        "Time from a wave's start to its last host's final state.",
                        stats.wave_seconds)

    def _calls(self) -> Iterator[Metric]:
        stats = self.stats
        yield histogram(P + "manager_call_duration_seconds",
                        "Unary calls from the hub to managers (Status, Update, Rollback, "
                        "ListServices, Restart, ...), by method; failures included.",
                        stats.call_seconds)
        yield counter(P + "manager_call_errors_total",
                      "Calls to managers that failed, by method and gRPC status code "
                      "(streams the hub cancelled itself are not failures).",
                      stats.call_errors)
        yield counter(P + "manager_streams_opened_total",
                      "Streams the hub opened to managers (WatchStatus, WatchUpdate, "
                      "StreamLogs), by method.", stats.streams_opened)
