"""Decorators for servicer methods (grpc.aio, and thread-pool grpc.server below): our
errors become their status codes; a TimeoutError nobody named (see
backendai/deadlines.py `step_deadline` for naming the step) becomes DEADLINE_EXCEEDED
naming the RPC method; anything else is logged and becomes INTERNAL "internal error"
(never a stack trace)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import grpc
import structlog

from backendai.errors import BackendAIError

log = structlog.get_logger(__name__)

DEADLINE = grpc.StatusCode.DEADLINE_EXCEEDED


def _timed_out(method: str) -> str:
    log.warning("grpc.deadline_exceeded", method=method)
    return f"{method}: timed out"

Req = TypeVar("Req")
Resp = TypeVar("Resp")


def unary(fn: Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]],
          ) -> Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]:
    @functools.wraps(fn)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        try:
            return await fn(self, request, context)
        except BackendAIError as exc:
            await context.abort(exc.grpc_code, str(exc))
        except grpc.aio.AioRpcError as exc:  # a downstream call failed: pass its status on
            await context.abort(exc.code(), exc.details() or exc.code().name)
        except TimeoutError:
            await context.abort(DEADLINE, _timed_out(fn.__name__))
        except Exception:
            log.exception("grpc.internal_error", method=fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
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
        except BackendAIError as exc:
            await context.abort(exc.grpc_code, str(exc))
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or exc.code().name)
        except TimeoutError:
            await context.abort(DEADLINE, _timed_out(fn.__name__))
        except Exception:
            log.exception("grpc.internal_error", method=fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
    return wrapper


# ---- the same for servicers on a thread-pool `grpc.server` (see backendai/grpc_server.py) --

def unary_sync(fn: Callable[[Any, Req, grpc.ServicerContext], Resp],
               ) -> Callable[[Any, Req, grpc.ServicerContext], Resp]:
    @functools.wraps(fn)
    def wrapper(self: Any, request: Req, context: grpc.ServicerContext) -> Resp:
        try:
            return fn(self, request, context)
        except BackendAIError as exc:
            context.abort(exc.grpc_code, str(exc))
        except TimeoutError:
            context.abort(DEADLINE, _timed_out(fn.__name__))
        except Exception:
            log.exception("grpc.internal_error", method=fn.__name__)
            context.abort(grpc.StatusCode.INTERNAL, "internal error")
        raise AssertionError("unreachable")  # context.abort always raises
    return wrapper


def stream_sync(fn: Callable[[Any, Req, grpc.ServicerContext], Iterator[Resp]],
                ) -> Callable[[Any, Req, grpc.ServicerContext], Iterator[Resp]]:
    @functools.wraps(fn)
    def wrapper(self: Any, request: Req, context: grpc.ServicerContext) -> Iterator[Resp]:
        try:
            yield from fn(self, request, context)
        except BackendAIError as exc:
            context.abort(exc.grpc_code, str(exc))
        except TimeoutError:
            context.abort(DEADLINE, _timed_out(fn.__name__))
        except Exception:
            log.exception("grpc.internal_error", method=fn.__name__)
            context.abort(grpc.StatusCode.INTERNAL, "internal error")
    return wrapper
