"""Deadlines that name what ran out of time.

`async with step_deadline("restart of ai-agent on host agent-3", 30):` raises
DeadlineExceeded("restart of ai-agent on host agent-3: no answer within 30s") when the
block outlives its deadline (or anything in it raises TimeoutError). A gRPC handler
then answers DEADLINE_EXCEEDED with that text (backendai/grpc_handlers.py, which also
maps a bare TimeoutError to DEADLINE_EXCEEDED naming the RPC method).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from backendai.errors import DeadlineExceeded


@contextlib.asynccontextmanager
async def step_deadline(step: str, seconds: float) -> AsyncIterator[None]:
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise DeadlineExceeded(f"{step}: no answer within {seconds:g}s") from None
