"""The one retry loop behind staying registered with the hub (the agent's register +
heartbeat, the manager's periodic Register).

`keep_trying(attempt, ...)` calls `attempt()` forever. After a success it waits
`interval()` (±10 % jitter, so a fleet does not beat in step); after the n-th failure in
a row it backs off `reconnect_delay(n, base=base(), cap=cap())` (backendai/backoff.py:
exponential, full jitter, so a fleet that lost a restarting hub comes back spread out).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import NoReturn

from backendai.backoff import reconnect_delay

JITTER = 0.1


async def keep_trying(attempt: Callable[[], Awaitable[bool]], *,
                      interval: Callable[[], float], base: Callable[[], float],
                      cap: Callable[[], float],
                      roll: Callable[[], float] = random.random,
                      sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> NoReturn:
    """attempt(): True when the hub answered as hoped, False when it did not (the
    attempt logs why). Runs until cancelled. `roll` and `sleep` are for tests."""
    failures = 0
    while True:
        if await attempt():
            failures = 0
            delay = interval() * (1.0 - JITTER + 2 * JITTER * roll())
        else:
            failures += 1
            delay = reconnect_delay(failures, base=base(), cap=cap(), roll=roll)
        await sleep(delay)
