"""Decorators for servicer methods (grpc.aio, and thread-pool grpc.server below): our
errors become their status codes; a downstream call's failure passes its status on; a
TimeoutError nobody named (see backendai/deadlines.py `step_deadline` for naming the
step) becomes DEADLINE_EXCEEDED naming the RPC method; anything else is logged and
becomes INTERNAL "internal error" (never a stack trace). Unary handlers also say who
is calling (`grpc_caller`, worked out only when an audited action asks) for the audit
trail (backendai/events/audit.py)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import grpc
import structlog

from backendai.auth import grpc_identity
from backendai.errors import BackendAIError
from backendai.events.audit import Caller, calling

log = structlog.get_logger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")


ON_BEHALF_OF = "x-backendai-on-behalf-of"  # metadata a relaying hub adds: its operator


def grpc_caller(context: Any) -> Caller:
    """Who is calling (backendai/auth.py's Identity) and, from a relaying hub, the
    operator it acts for."""
    relayed = ""
    for key, value in context.invocation_metadata() or ():
        if key == ON_BEHALF_OF:
            relayed = str(value)[:200]
    return Caller(grpc_identity(context), relayed)


def answer_for(exc: Exception, method: str) -> tuple[grpc.StatusCode, str]:
    """The status and details an RPC ends with when its method raised `exc` (a bug is
    logged with its stack trace)."""
    if isinstance(exc, BackendAIError):
        return exc.grpc_code, str(exc)
    if isinstance(exc, grpc.aio.AioRpcError):  # a downstream call failed: pass its status on
        return exc.code(), exc.details() or exc.code().name
    if isinstance(exc, TimeoutError):
        log.warning("grpc.deadline_exceeded", method=method)
        return grpc.StatusCode.DEADLINE_EXCEEDED, f"{method}: timed out"
    log.error("grpc.internal_error", method=method, exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal error"


def _trailers(exc: Exception) -> tuple[tuple[str, str], ...]:
    return exc.trailing_metadata() if isinstance(exc, BackendAIError) else ()


def unary(fn: Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]],
          ) -> Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]:
    @functools.wraps(fn)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        try:
            with calling(lambda: grpc_caller(context)):
                return await fn(self, request, context)
        except Exception as exc:  # noqa: BLE001 - every error ends the RPC with a status
            await context.abort(*answer_for(exc, fn.__name__), trailing_metadata=_trailers(exc))
        raise AssertionError("unreachable")  # context.abort always raises
    return wrapper


def stream(fn: Callable[[Any, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]],
           ) -> Callable[[Any, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]]:
    @functools.wraps(fn)
    async def wrapper(self: Any, request: Req,
                      context: grpc.aio.ServicerContext) -> AsyncIterator[Resp]:
        try:
            async for item in fn(self, request, context):
                yield item
        except Exception as exc:  # noqa: BLE001 - every error ends the RPC with a status
            await context.abort(*answer_for(exc, fn.__name__), trailing_metadata=_trailers(exc))
    return wrapper


# ---- the same for servicers on a thread-pool `grpc.server` (see backendai/grpc_server.py) --

def unary_sync(fn: Callable[[Any, Req, grpc.ServicerContext], Resp],
               ) -> Callable[[Any, Req, grpc.ServicerContext], Resp]:
    @functools.wraps(fn)
    def wrapper(self: Any, request: Req, context: grpc.ServicerContext) -> Resp:
        try:
            with calling(lambda: grpc_caller(context)):
                return fn(self, request, context)
        except Exception as exc:  # noqa: BLE001 - every error ends the RPC with a status
            context.abort(*answer_for(exc, fn.__name__))
        raise AssertionError("unreachable")  # context.abort always raises
    return wrapper


def stream_sync(fn: Callable[[Any, Req, grpc.ServicerContext], Iterator[Resp]],
                ) -> Callable[[Any, Req, grpc.ServicerContext], Iterator[Resp]]:
    @functools.wraps(fn)
    def wrapper(self: Any, request: Req, context: grpc.ServicerContext) -> Iterator[Resp]:
        try:
            yield from fn(self, request, context)
        except Exception as exc:  # noqa: BLE001 - every error ends the RPC with a status
            context.abort(*answer_for(exc, fn.__name__))
    return wrapper
