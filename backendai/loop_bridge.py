"""Calls from a gRPC pool thread into the daemon's event loop.

`LoopBridge(loop).call(coro_fn, context)` runs a coroutine on the loop and waits for it;
`.iterate(make_agen, context)` turns an async iterator on the loop into a plain iterator
for a streaming handler, at most `depth` items ahead of the reader (a slow client never
makes the daemon buffer more). When the RPC ends early (client gone, deadline, server
stop), the coroutine or the iterator's task is cancelled on the loop, and the waiting
thread is released.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Generic, TypeVar

import grpc

T = TypeVar("T")

_ITEM, _END, _ERROR = 0, 1, 2


class _Pump(Generic[T]):
    """Runs on the loop: moves items of an async iterator into a thread-safe queue."""

    def __init__(self, make: Callable[[], AsyncIterator[T]], depth: int) -> None:
        self.make = make
        self.items: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        self.credits = asyncio.Semaphore(depth)  # binds to the loop on first use (3.10+)

    async def run(self) -> None:
        try:
            source = self.make()
        except BaseException as exc:
            self.items.put((_ERROR, exc))
            raise
        try:
            async for item in source:
                await self.credits.acquire()
                self.items.put((_ITEM, item))
        except BaseException as exc:  # CancelledError too: the reader must wake up
            self.items.put((_ERROR, exc))
            raise
        else:
            self.items.put((_END, None))
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()


class LoopBridge:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def _cancel(self, fut: concurrent.futures.Future[Any]) -> None:
        if not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):
                fut.cancel()

    def call(self, make: Callable[[], Awaitable[T]], context: grpc.ServicerContext) -> T:
        """Run `make()` on the loop; its result, or its exception re-raised here."""
        async def run() -> T:
            return await make()

        fut = asyncio.run_coroutine_threadsafe(run(), self.loop)
        if not context.add_callback(lambda: self._cancel(fut)):
            self._cancel(fut)  # the RPC already ended
        try:
            return fut.result()
        except concurrent.futures.CancelledError:
            context.abort(grpc.StatusCode.CANCELLED, "call cancelled")
            raise  # context.abort raised already

    def iterate(self, make: Callable[[], AsyncIterator[T]], context: grpc.ServicerContext,
                depth: int = 4) -> Iterator[T]:
        pump: _Pump[T] = _Pump(make, depth)
        fut = asyncio.run_coroutine_threadsafe(pump.run(), self.loop)
        # However the pump ends (even cancelled before its first step, when it puts
        # nothing), the reader wakes up: a terminal item after whatever it put.
        fut.add_done_callback(lambda _: pump.items.put((_END, None)))
        if not context.add_callback(lambda: self._cancel(fut)):
            self._cancel(fut)
        try:
            while True:
                kind, value = pump.items.get()
                if kind == _ITEM:
                    with contextlib.suppress(RuntimeError):  # the loop is gone at exit
                        self.loop.call_soon_threadsafe(pump.credits.release)
                    yield value
                elif kind == _END:
                    return
                elif isinstance(value, asyncio.CancelledError):
                    return  # the RPC ended: nobody reads any more
                else:
                    raise value
        finally:
            self._cancel(fut)
