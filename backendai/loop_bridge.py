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
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
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


class _Work(Generic[T]):
    """A coroutine run on the loop for a pool thread. The coroutine is created on the
    loop, so work whose RPC ended before it began is never created at all (nothing is
    left un-awaited), and `result` always settles: the outcome, the exception, or
    CancelledError."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 factory: Callable[[], Coroutine[Any, Any, T]]) -> None:
        self.loop = loop
        self.factory = factory
        self.result: concurrent.futures.Future[T] = concurrent.futures.Future()
        self.task: asyncio.Task[T] | None = None
        self.cancelled = False
        loop.call_soon_threadsafe(self._start)

    def _start(self) -> None:  # on the loop
        if self.cancelled:
            self.result.cancel()
            return
        self.result.set_running_or_notify_cancel()
        self.task = self.loop.create_task(self.factory())
        self.task.add_done_callback(self._settle)

    def _settle(self, task: asyncio.Task[T]) -> None:  # on the loop
        if task.cancelled():
            self.result.set_exception(concurrent.futures.CancelledError())
        elif (exc := task.exception()) is not None:
            self.result.set_exception(exc)
        else:
            self.result.set_result(task.result())

    def cancel(self) -> None:  # from any thread
        self.cancelled = True
        try:
            self.loop.call_soon_threadsafe(self._cancel_task)
        except RuntimeError:  # the loop is closed (exit): release the waiter here
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                self.result.set_exception(concurrent.futures.CancelledError())

    def _cancel_task(self) -> None:  # on the loop
        if self.task is not None:
            self.task.cancel()


class LoopBridge:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def call(self, make: Callable[[], Awaitable[T]], context: grpc.ServicerContext) -> T:
        """Run `make()` on the loop; its result, or its exception re-raised here."""
        async def run() -> T:
            return await make()

        work = _Work(self.loop, run)
        if not context.add_callback(work.cancel):
            work.cancel()  # the RPC already ended
        try:
            return work.result.result()
        except concurrent.futures.CancelledError:
            context.abort(grpc.StatusCode.CANCELLED, "call cancelled")
            raise  # context.abort raised already

    def iterate(self, make: Callable[[], AsyncIterator[T]], context: grpc.ServicerContext,
                depth: int = 4) -> Iterator[T]:
        pump: _Pump[T] = _Pump(make, depth)
        work = _Work(self.loop, pump.run)
        # However the pump ends (even cancelled before it began, when it puts nothing),
        # the reader wakes up: a terminal item after whatever it put.
        work.result.add_done_callback(lambda _: pump.items.put((_END, None)))
        if not context.add_callback(work.cancel):
            work.cancel()
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
            work.cancel()
