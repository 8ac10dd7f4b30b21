"""The one registration retry loop (agent and manager): after a success wait the
interval with ±10 % jitter; after failures back off with full jitter, doubling from
`base` up to `cap`; a success starts the backoff over. Driven with a recording sleep."""

from __future__ import annotations

import pytest

from backendai.registration_loop import keep_trying


class Stop(Exception):
    pass


async def run(results: list[bool], *, roll: float, interval=lambda: 5.0, base=lambda: 0.5,
              cap=lambda: 3.0) -> list[float]:
    delays: list[float] = []
    pending = list(results)

    async def attempt() -> bool:
        return pending.pop(0)

    async def sleep(delay: float) -> None:
        delays.append(round(delay, 6))
        if not pending:
            raise Stop

    with pytest.raises(Stop):
        await keep_trying(attempt, interval=interval, base=base, cap=cap, roll=lambda: roll,
                          sleep=sleep)
    return delays


async def test_failures_back_off_doubling_to_the_cap_and_a_success_starts_over():
    got = await run([False, False, False, False, True, True, False], roll=1.0)
    assert got == [0.5, 1.0, 2.0, 3.0, 5.5, 5.5, 0.5]
    got = await run([False, True], roll=0.0)
    assert got == [0.0, 4.5]  # full jitter down to 0; the interval jitters by ±10 %


async def test_the_pacing_is_read_at_each_wait():
    """The agent's interval is what the hub last said; the manager's cap follows it."""
    interval = [5.0]

    async def attempt_and_change() -> list[float]:
        delays: list[float] = []
        results = [True, True, False]

        async def attempt() -> bool:
            ok = results.pop(0)
            interval[0] = 2.0  # the hub answered with a new interval
            return ok

        async def sleep(delay: float) -> None:
            delays.append(round(delay, 6))
            if not results:
                raise Stop

        with pytest.raises(Stop):
            await keep_trying(attempt, interval=lambda: interval[0], base=lambda: interval[0],
                              cap=lambda: 30.0, roll=lambda: 0.5, sleep=sleep)
        return delays

    assert await attempt_and_change() == [2.0, 2.0, 1.0]
