"""What the hub counts for /metrics (hub/metrics.py): rollout outcomes from the rollout
event notes, and every call to a manager from a client interceptor on the hub's
channels. Plain counts updated where things happen (backendai/metric_counts.py: no
prometheus_client here), all on the hub's event loop.

Labels stay bounded: a method name from the Manager service, a gRPC status code name,
an engine state word; never a host, an operation or a rollout id.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import grpc

from backendai.metric_counts import DURATION_BUCKETS, CounterVec, HistogramVec
from hub.rollout_model import HOST_DONE, TERMINAL, Note

# A manager call takes a millisecond on a LAN, a WatchUpdate can wait for minutes.
CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0)
MAX_OPEN_WAVES = 1000  # waves whose start is remembered (one or two per active rollout)
_METHOD = re.compile(r"[A-Za-z][A-Za-z0-9]{0,63}")


def method_label(method: str | bytes) -> str:
    """"/backendai.v1.Manager/Status" -> "Status" (anything unexpected: "other")."""
    text = method.decode("ascii", "replace") if isinstance(method, bytes) else method
    name = text.rsplit("/", 1)[-1]
    return name if _METHOD.fullmatch(name) else "other"


class HubStats:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        # rollouts
        self.host_outcomes = CounterVec("outcome")           # hosts reaching a final state
        self.rollouts_finished = CounterVec("state")         # rollouts reaching a final state
        self.wave_seconds = HistogramVec(buckets=DURATION_BUCKETS)
        self._wave_started: dict[tuple[str, int], float] = {}
        # calls to managers
        self.call_seconds = HistogramVec("method", buckets=CALL_BUCKETS)  # unary calls
        self.call_errors = CounterVec("method", "code")
        self.streams_opened = CounterVec("method")

    # ---------------------------------------------------------------- rollout notes

    def rollout_notes(self, rollout_id: str, notes: Sequence[Note]) -> None:
        """Count what a committed batch of rollout events says: a host entering a final
        state (its `host.<state>` note), a wave's start and end, the rollout's end."""
        for note in notes:
            if note.host:
                state = note.host_state
                if state in HOST_DONE and state is not None and \
                        note.kind == "host." + state.value.lower():
                    self.host_outcomes.inc(state.value.lower())
            elif note.kind == "wave.started":
                if len(self._wave_started) >= MAX_OPEN_WAVES:
                    self._wave_started.pop(next(iter(self._wave_started)))
                self._wave_started[(rollout_id, note.wave)] = note.at
            elif note.kind == "wave.done":
                began = self._wave_started.pop((rollout_id, note.wave), None)
                if began is not None:
                    self.wave_seconds.observe(max(0.0, note.at - began))
            if note.final and note.state in TERMINAL:
                self.rollouts_finished.inc(note.state.value)
                for key in [k for k in self._wave_started if k[0] == rollout_id]:
                    del self._wave_started[key]

    # ---------------------------------------------------------------- manager calls

    def interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        """Client interceptors for the hub's channels to managers."""
        return [_TimedUnaryUnary(self), _CountedUnaryStream(self)]

    def call_done(self, method: str, seconds: float, code: grpc.StatusCode) -> None:
        self.call_seconds.observe(seconds, method)
        if code is not grpc.StatusCode.OK:
            self.call_errors.inc(method, code.name)

    def stream_ended(self, method: str, code: grpc.StatusCode) -> None:
        if code not in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED):
            self.call_errors.inc(method, code.name)


class _TimedUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Times every unary call and counts its failures by status code."""

    def __init__(self, stats: HubStats) -> None:
        self.stats = stats

    async def intercept_unary_unary(self, continuation: Callable[..., Any],
                                    details: grpc.aio.ClientCallDetails, request: Any) -> Any:
        method = method_label(details.method)
        started = self.stats.clock()
        code = grpc.StatusCode.UNKNOWN
        call = await continuation(details, request)
        try:
            await call  # the caller awaits it again: a finished call answers at once
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
        except asyncio.CancelledError:  # our own deadline (step_deadline) or shutdown
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            self.stats.call_done(method, self.stats.clock() - started, code)
        return call


class _CountedUnaryStream(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Counts streams opened (WatchStatus, WatchUpdate, StreamLogs) and how they failed;
    cancelling a stream is how the hub ends one, so that is not a failure."""

    def __init__(self, stats: HubStats) -> None:
        self.stats = stats

    async def intercept_unary_stream(self, continuation: Callable[..., Any],
                                     details: grpc.aio.ClientCallDetails, request: Any) -> Any:
        method = method_label(details.method)
        self.stats.streams_opened.inc(method)
        call = await continuation(details, request)
        call.add_done_callback(lambda done: self._ended(method, done))
        return call

    def _ended(self, method: str, call: Any) -> None:
        if call.cancelled():
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing: nothing to count
            asyncio.get_running_loop().create_task(self._record(method, call))

    async def _record(self, method: str, call: Any) -> None:
        with contextlib.suppress(Exception):
            self.stats.stream_ended(method, await call.code())


def hosts_by(values: Iterable[str], limit: int) -> dict[str, int]:
    """Counts by value, at most `limit` distinct values (the rest counted as "other")."""
    counts: dict[str, int] = {}
    for value in values:
        key = value if value in counts or len(counts) < limit else "other"
        counts[key] = counts.get(key, 0) + 1
    return counts
