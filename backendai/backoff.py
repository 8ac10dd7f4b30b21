"""Reconnect pacing (pure): exponential backoff with full jitter, so a fleet (agents, or
managers registering) that lost the hub at the same moment (a hub restart) comes back
spread over the whole window instead of in one synchronized storm."""

from __future__ import annotations

from collections.abc import Callable


def reconnect_delay(attempt: int, *, base: float, cap: float,
                    roll: Callable[[], float]) -> float:
    """Delay before reconnect `attempt` (1, 2, …): uniform in [0, min(cap, base·2^(n-1))].
    `roll()` returns a number in [0, 1) (random.random in production)."""
    window: float = min(cap, base * 2.0 ** min(max(attempt - 1, 0), 30))
    return window * roll()
