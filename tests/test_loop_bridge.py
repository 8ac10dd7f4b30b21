"""backendai/loop_bridge.py: pool-thread handlers calling into a real running event loop.

The gRPC servicer context is a small stand-in (`Context`): add_callback and abort are
all the bridge uses, and the real thing is exercised end to end by the manager's
stream tests (tests/test_manager_api.py). Everything else here is real: a loop in its
own thread, real async generators, real cancellation."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator

import grpc
import pytest

from backendai.errors import NotFound
from backendai.loop_bridge import LoopBridge
from tests.conftest import assert_eventually


class Aborted(Exception):
    pass


class Context:
    """Stand-in for grpc.ServicerContext: records callbacks, runs them on end()."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []
        self.ended = False

    def add_callback(self, fn: Callable[[], None]) -> bool:
        if self.ended:
            return False
        self.callbacks.append(fn)
        return True

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)

    def end(self) -> None:  # the RPC terminates (client gone, deadline, server stop)
        self.ended = True
        for fn in self.callbacks:
            fn()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop

    async def drain() -> None:  # what a test left on the loop ends before it closes
        await asyncio.sleep(0)
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run_coroutine_threadsafe(drain(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_call_returns_the_result_and_reraises_errors(loop):
    bridge = LoopBridge(loop)

    async def ok() -> str:
        assert threading.current_thread() is not threading.main_thread()
        return "done"

    async def missing() -> str:
        raise NotFound("no service named 'x'")

    assert bridge.call(ok, Context()) == "done"
    with pytest.raises(NotFound):
        bridge.call(missing, Context())


def test_call_is_cancelled_on_the_loop_when_the_rpc_ends(loop):
    bridge = LoopBridge(loop)
    started, cancelled = threading.Event(), threading.Event()
    ctx = Context()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    result: list[BaseException] = []

    def handler() -> None:
        try:
            bridge.call(forever, ctx)
        except BaseException as exc:  # recorded for the assertion
            result.append(exc)

    t = threading.Thread(target=handler)
    t.start()
    assert started.wait(10)
    ctx.end()
    t.join(10)
    assert not t.is_alive()
    assert cancelled.wait(10)  # the coroutine itself was cancelled on the loop
    assert isinstance(result[0], Aborted) and result[0].args[0] == grpc.StatusCode.CANCELLED


def test_iterate_stays_a_few_items_ahead_of_a_slow_reader(loop):
    bridge = LoopBridge(loop)
    produced = 0

    async def source() -> AsyncIterator[int]:
        nonlocal produced
        for i in range(100_000):
            produced += 1
            yield i

    it = bridge.iterate(source, Context(), depth=4)
    assert next(it) == 0
    # the pump fills its credits and stops: nothing like 100,000 items are buffered
    assert_eventually(lambda: produced >= 4, 10)
    # one read, four credits, one item waiting for a credit: never more than that
    assert produced <= 1 + 4 + 1
    assert [next(it) for _ in range(10)] == list(range(1, 11))
    assert produced <= 11 + 4 + 2
    it.close()


def test_iterate_ends_with_the_source_and_passes_errors(loop):
    bridge = LoopBridge(loop)

    async def three() -> AsyncIterator[int]:
        for i in range(3):
            yield i

    async def broken() -> AsyncIterator[int]:
        yield 1
        raise NotFound("gone")

    def bad_make() -> AsyncIterator[int]:
        raise NotFound("no service named 'x'")

    assert list(bridge.iterate(three, Context())) == [0, 1, 2]
    it = bridge.iterate(broken, Context())
    assert next(it) == 1
    with pytest.raises(NotFound):
        next(it)
    with pytest.raises(NotFound):
        list(bridge.iterate(bad_make, Context()))


def test_iterate_releases_the_thread_and_closes_the_source_when_the_rpc_ends(loop):
    bridge = LoopBridge(loop)
    closed = threading.Event()

    async def idle() -> AsyncIterator[int]:
        try:
            yield 0
            await asyncio.Event().wait()  # a watcher with nothing new to say
            yield 1
        finally:
            closed.set()

    ctx = Context()
    it = bridge.iterate(idle, ctx)
    assert next(it) == 0
    got: list[int] = []
    t = threading.Thread(target=lambda: got.extend(it))  # blocks waiting for item 1
    t.start()
    ctx.end()
    t.join(10)
    assert not t.is_alive() and got == []
    assert closed.wait(10)


def test_iterate_for_an_rpc_that_already_ended_returns_at_once(loop):
    """The RPC ended before the pump's first step: it is cancelled before it puts
    anything, and the reader must not wait for ever."""
    bridge = LoopBridge(loop)

    async def never() -> AsyncIterator[int]:
        await asyncio.Event().wait()
        yield 0

    for _ in range(50):
        ctx = Context()
        ctx.end()
        done = threading.Event()
        t = threading.Thread(target=lambda ctx=ctx, done=done: (
            list(bridge.iterate(never, ctx)), done.set()))
        t.start()
        assert done.wait(10)
        t.join(10)
