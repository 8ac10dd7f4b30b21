"""What the hub counts for /metrics (hub/metrics.py): rollout outcomes from the rollout
event notes, and every call to a manager from the hub's stubs (HubStats.instrument).
Plain counts updated where things happen (backendai/metric_counts.py: no
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

    def instrument(self, kind: str, method: str, made: Any) -> Any:
        """A channel's callable for `method` (made by `kind`: the channel's unary_unary,
        unary_stream, ...) wrapped to be timed and counted. Done around the callable,
        not as a gRPC interceptor: any client interceptor sends every call and every
        stream message of the channel through grpc.aio's intercepted-call machinery (a
        task per call, an async generator per stream), which at 10,000 hosts cost the
        hub ~10 % of its rollout CPU besides the keepalives' share."""
        if kind == "unary_unary":
            return _TimedUnaryUnary(self, method, made)
        if kind == "unary_stream":
            return _CountedUnaryStream(self, method, made)
        return made

    def call_done(self, method: str, seconds: float, code: grpc.StatusCode) -> None:
        self.call_seconds.observe(seconds, method)
        if code is not grpc.StatusCode.OK:
            self.call_errors.inc(method, code.name)

    def stream_ended(self, method: str, code: grpc.StatusCode) -> None:
        if code not in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED):
            self.call_errors.inc(method, code.name)


class _TimedUnaryUnary:
    """A unary callable that times every call and counts its failures by status code
    (the caller awaits the answer: every hub call to a manager is `await stub.X(...)`)."""

    __slots__ = ("call", "method", "stats")

    def __init__(self, stats: HubStats, method: str, call: Callable[..., Any]) -> None:
        self.stats, self.method, self.call = stats, method, call

    async def __call__(self, request: Any, **kwargs: Any) -> Any:
        stats = self.stats
        started = stats.clock()
        code = grpc.StatusCode.UNKNOWN
        try:
            answer = await self.call(request, **kwargs)
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            raise
        except asyncio.CancelledError:  # our own deadline (step_deadline) or shutdown
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            stats.call_done(self.method, stats.clock() - started, code)
        return answer


class _CountedUnaryStream:
    """A stream callable (WatchStatus, WatchUpdate, StreamLogs) that counts the streams
    opened and how they failed; cancelling a stream is how the hub ends one, so that is
    not a failure. The call itself is gRPC's own: its messages pass untouched."""

    __slots__ = ("call", "method", "stats")

    def __init__(self, stats: HubStats, method: str, call: Callable[..., Any]) -> None:
        self.stats, self.method, self.call = stats, method, call

    def __call__(self, request: Any, **kwargs: Any) -> Any:
        self.stats.streams_opened.inc(self.method)
        call = self.call(request, **kwargs)
        call.add_done_callback(self._ended)
        return call

    def _ended(self, call: Any) -> None:
        if call.cancelled():
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing: nothing to count
            asyncio.get_running_loop().create_task(self._record(call))

    async def _record(self, call: Any) -> None:
        with contextlib.suppress(Exception):
            self.stats.stream_ended(self.method, await call.code())


def hosts_by(values: Iterable[str], limit: int) -> dict[str, int]:
    """Counts by value, at most `limit` distinct values (the rest counted as "other")."""
    counts: dict[str, int] = {}
    for value in values:
        key = value if value in counts or len(counts) < limit else "other"
        counts[key] = counts.get(key, 0) + 1
    return counts
