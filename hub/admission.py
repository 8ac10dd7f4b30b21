"""Admission control: how fast the hub lets its fleet back in after a failover or a
restart, so the leader stays responsive while 10,000 agents and managers reconnect.

- A `Register` that writes the store (a new host, a changed address or labels) goes
  through one token bucket, a `Heartbeat` or a registration that changes nothing (a
  fleet coming back to a restarted or new leader: the store already has it) through
  another (`[admission]`): a caller
  beyond the rate is answered RESOURCE_EXHAUSTED with a retry hint (the
  `backendai-retry-after-ms` trailer) and comes back then (backendai/registration_loop.py).
  The hint is an appointment: each refused caller is given the next free slot after
  those already refused, so callers that return when told arrive at the admitted rate
  instead of as the same storm a little later.
- The hub's own status streams to the managers (hub/inventory.py) open at most
  `watch_connects` at a time: a hub that (re)starts with 10,000 hosts connects them in
  waves instead of holding 10,000 connection attempts at once.

`TokenBucket` is pure (time passed in); `Admission` holds one per kind of call.

    [admission]
    register_rate = 200.0    # Register calls admitted per second (0: no limit)
    register_burst = 400
    heartbeat_rate = 5000.0
    heartbeat_burst = 5000
    watch_connects = 256     # status streams being opened at once (0: no limit)
    max_retry_after = 60.0   # the longest wait a refusal asks for
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from backendai.config import Table
from backendai.errors import ResourceExhausted

log = structlog.get_logger(__name__)

LOG_EVERY = 10.0  # seconds between "refusing" log lines per kind of call


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    register_rate: float = 200.0       # Register calls per second; 0: no limit
    register_burst: int = 400          # admitted at once before the rate applies
    heartbeat_rate: float = 5000.0     # Heartbeat calls per second; 0: no limit
    heartbeat_burst: int = 5000
    watch_connects: int = 256          # status streams being opened at once; 0: no limit
    max_retry_after: float = 60.0      # seconds: the longest wait a refusal asks for


def load_admission(t: Table | None) -> AdmissionConfig:
    if t is None:
        return AdmissionConfig()
    cfg = AdmissionConfig(
        register_rate=t.number("register_rate", low=0, high=1_000_000),
        register_burst=t.integer("register_burst", low=1, high=1_000_000),
        heartbeat_rate=t.number("heartbeat_rate", low=0, high=1_000_000),
        heartbeat_burst=t.integer("heartbeat_burst", low=1, high=1_000_000),
        watch_connects=t.integer("watch_connects", low=0, high=1_000_000),
        max_retry_after=t.number("max_retry_after", low=1, high=3600))
    t.done()
    return cfg


class TokenBucket:
    """`rate` calls per second on average, `burst` at once. `take(now)`: 0.0 when the
    call is admitted, else the seconds after which this caller should come back (its
    appointment: one slot of 1/rate after the last one given out, at most `max_wait`)."""

    def __init__(self, rate: float, burst: int, max_wait: float, now: float) -> None:
        if not (rate > 0 and math.isfinite(rate)) or burst < 1 or not max_wait > 0:
            raise ValueError("rate and max_wait must be positive and finite, burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.max_wait = max_wait
        self.tokens = float(burst)
        self.stamp = now
        self.booked = now     # the last appointment given to a refused caller

    def take(self, now: float) -> float:
        if now > self.stamp:  # a clock that goes backwards refills nothing
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        self.booked = max(self.booked, now) + 1.0 / self.rate
        wait = min(self.booked - now, self.max_wait)
        if self.booked - now > self.max_wait:
            self.booked = now + self.max_wait  # never book further out than we tell
        return wait


class Admission:
    """One bucket per kind of call ("register", "heartbeat"); a rate of 0 admits all.
    `admit(kind)` raises ResourceExhausted (RESOURCE_EXHAUSTED with the retry hint)."""

    def __init__(self, cfg: AdmissionConfig,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        now = clock()
        self.buckets: dict[str, TokenBucket] = {}
        for kind, rate, burst in (("register", cfg.register_rate, cfg.register_burst),
                                  ("heartbeat", cfg.heartbeat_rate, cfg.heartbeat_burst)):
            if rate > 0:
                self.buckets[kind] = TokenBucket(rate, burst, cfg.max_retry_after, now)
        self.refused: dict[str, int] = dict.fromkeys(("register", "heartbeat"), 0)
        self._logged: dict[str, float] = {}

    def admit(self, kind: str) -> None:
        bucket = self.buckets.get(kind)
        if bucket is None:
            return
        now = self.clock()
        wait = bucket.take(now)
        if wait > 0:
            self.refused[kind] += 1
            if now - self._logged.get(kind, -LOG_EVERY) >= LOG_EVERY:
                self._logged[kind] = now
                log.warning("admission.refusing", kind=kind, rate=bucket.rate,
                            refused_total=self.refused[kind], retry_after=round(wait, 2))
            raise ResourceExhausted(
                f"{kind}: the hub admits {bucket.rate:g} per second and is at that rate "
                f"(a fleet reconnecting); retry in {wait:.1f}s", retry_after=wait)
