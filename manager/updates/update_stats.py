"""What the updater counts for /metrics (manager/api/metrics.py): operations by outcome
and the duration of each step. Plain counts, updated where the updater records a step
or an outcome (backendai/metric_counts.py: no prometheus_client here)."""

from __future__ import annotations

from backendai.metric_counts import DURATION_BUCKETS, CounterVec, HistogramVec
from backendai.update_terms import OpKind, Outcome, Step


class UpdateStats:
    def __init__(self) -> None:
        # service, kind (update | rollback), outcome (backendai.update_terms.Outcome)
        self.operations = CounterVec("service", "kind", "outcome")
        self.step_seconds = HistogramVec("step", buckets=DURATION_BUCKETS)

    def step_done(self, step: Step, seconds: float) -> None:
        self.step_seconds.observe(seconds, step.value)

    def finished(self, service: str, kind: OpKind, outcome: Outcome) -> None:
        self.operations.inc(service, kind.value, outcome.value)
