"""A latest-value feed for watch streams: current value first, then every change.

Each subscriber has a small bounded buffer; a subscriber that falls behind loses the
oldest intermediate values, never the latest, so memory stays bounded whatever the
reader's speed. Listeners (`listen`) are called synchronously on every publish: they
see every value (the event history records each change this way).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

T = TypeVar("T")

DEFAULT_BUFFER = 64


class _Subscriber(Generic[T]):
    __slots__ = ("buffer", "wakeup")

    def __init__(self, size: int) -> None:
        self.buffer: collections.deque[T] = collections.deque(maxlen=size)
        self.wakeup = asyncio.Event()


class Feed(Generic[T]):
    def __init__(self, initial: T, *, buffer: int = DEFAULT_BUFFER) -> None:
        self._value = initial
        self._size = buffer
        self._subscribers: set[_Subscriber[T]] = set()
        self._listeners: list[Callable[[T], None]] = []
        self._closed = False

    @property
    def value(self) -> T:
        return self._value

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def listen(self, listener: Callable[[T], None]) -> None:
        """Call `listener(value)` on every publish, before the subscribers wake (it must
        not block or raise)."""
        self._listeners.append(listener)

    def publish(self, value: T) -> None:
        """Set the current value and hand it to every subscriber (never blocks)."""
        self._value = value
        for listener in self._listeners:
            listener(value)
        for sub in self._subscribers:
            sub.buffer.append(value)
            sub.wakeup.set()

    def close(self) -> None:
        """End every subscription after what it has buffered."""
        self._closed = True
        for sub in self._subscribers:
            sub.wakeup.set()

    async def subscribe(self) -> AsyncIterator[T]:
        sub: _Subscriber[T] = _Subscriber(self._size)
        self._subscribers.add(sub)
        try:
            yield self._value
            while True:
                while sub.buffer:
                    yield sub.buffer.popleft()
                if self._closed:
                    return
                sub.wakeup.clear()
                if not sub.buffer and not self._closed:
                    await sub.wakeup.wait()
        finally:
            self._subscribers.discard(sub)


async def with_keepalive(source: AsyncIterator[T], current: Callable[[], T],
                         interval: float) -> AsyncIterator[T]:
    """`source`'s values, and `current()` again whenever `interval` seconds pass without
    one (a keepalive: the reader knows the writer is there). interval 0: `source` only.
    The pending read is never cancelled by the keepalive, so no value is lost."""
    if interval <= 0:
        async for value in source:
            yield value
        return
    it = aiter(source)
    pending: asyncio.Future[T] = asyncio.ensure_future(anext(it))
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=interval)
            if not done:
                yield current()
                continue
            try:
                value = pending.result()
            except StopAsyncIteration:
                return
            yield value
            pending = asyncio.ensure_future(anext(it))
    finally:
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, Exception):
            await pending
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            await aclose()
