"""The one retry loop behind staying registered with the hub (the agent's register +
heartbeat, the manager's periodic Register).

`keep_trying(attempt, ...)` calls `attempt()` forever. After a success it waits
`interval()` (±10 % jitter, so a fleet does not beat in step); after the n-th failure in
a row it backs off `reconnect_delay(n, base=base(), cap=cap())` (backendai/backoff.py:
exponential, full jitter, so a fleet that lost a restarting hub comes back spread out).
When the hub answers "later" (`Later`: its admission control, hub/admission.py), it
waits what the hub asked plus up to 10 % (never sooner: the hub gave each caller its own
slot), without counting a failure.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NoReturn

from backendai.backoff import reconnect_delay

JITTER = 0.1


@dataclass(frozen=True, slots=True)
class Later:
    """The hub is admitting callers at a bounded rate: come back after `seconds`."""

    seconds: float


async def keep_trying(attempt: Callable[[], Awaitable[bool | Later]], *,
                      interval: Callable[[], float], base: Callable[[], float],
                      cap: Callable[[], float],
                      roll: Callable[[], float] = random.random,
                      sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> NoReturn:
    """attempt(): True when the hub answered as hoped, False when it did not (the
    attempt logs why), Later when the hub asked to come back later. Runs until
    cancelled. `roll` and `sleep` are for tests."""
    failures = 0
    while True:
        result = await attempt()
        if isinstance(result, Later):
            delay = max(0.0, result.seconds) * (1.0 + JITTER * roll())
        elif result:
            failures = 0
            delay = interval() * (1.0 - JITTER + 2 * JITTER * roll())
        else:
            failures += 1
            delay = reconnect_delay(failures, base=base(), cap=cap(), roll=roll)
        await sleep(delay)
