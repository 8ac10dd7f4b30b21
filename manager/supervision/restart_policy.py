"""The restart policy and the one pure restart decision every backend that restarts
services uses.

`decide_restart(history, now, policy, roll, ...)` says what follows a death the manager
did not ask for (or a start that failed): restart now, back off for a while, stay
EXITED, or give up (FATAL, until the next manual start). It takes the restart history
(consecutive failed starts, times of recent crashes), the monotonic time, the policy
and a uniform random number in [0, 1) for the jitter, and returns the verdict with the
new history. No I/O, no clock reads, no randomness of its own.

Who calls it:
- the process backend's state machine (`supervisor.transition`, on an exit, a failed
  spawn, or a service that vanished while the manager was down);
- the rcd backend (`rcd_supervisor.py`), on a service its rc script reports dead and on
  an automatic start that did not come up.
The systemd backend does not: systemd restarts its services itself (`Restart=`).

Rules (see docs/CONFIG.md for the keys):
- a failure while starting (before `start_secs`) is a failed start; more than
  `crash_loop_max` consecutive failed starts is FATAL;
- a death after that is a crash; more than `crash_loop_max` crashes within
  `crash_loop_window` seconds is a crash loop and also FATAL (circus' flapping);
- the first failure restarts at once, the n-th waits
  `min(backoff_max, backoff_initial * 2**(n-2))`, +/- `backoff_jitter` of that;
- `restart = "never"` stays EXITED; `"on-failure"` stays EXITED after a clean exit
  only (the caller knows what clean means: an exit code in `success_exit_codes` and no
  signal; an exit whose status nobody can tell is never clean).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from manager.config import RestartPolicy

Policy = RestartPolicy  # a service's `policy`, as configured (manager/config.py)


@dataclass(frozen=True, slots=True)
class RestartHistory:
    """What the decision remembers between failures; a manual start clears it."""

    start_failures: int = 0  # consecutive failed starts
    crashes: tuple[float, ...] = ()  # monotonic times of recent crashes

    def started(self) -> RestartHistory:
        """The service came up (stayed up for start_secs): failed starts no longer count."""
        return RestartHistory(0, self.crashes)


class Verdict(enum.Enum):
    RESTART = "restart"  # start it again now
    BACKOFF = "backoff"  # start it again after `delay` seconds
    EXITED = "exited"  # the policy says not to restart it
    FATAL = "fatal"  # crash loop: no restart until the next manual start


@dataclass(frozen=True, slots=True)
class RestartDecision:
    verdict: Verdict
    history: RestartHistory
    reason: str  # what failed
    message: str  # what the status says
    delay: float = 0.0  # BACKOFF only


def backoff_delay(n: int, policy: Policy, roll: float) -> float:
    """The wait before the restart after the n-th failure (the first waits nothing)."""
    if n <= 1:
        return 0.0
    base = min(policy.backoff_max, policy.backoff_initial * 2 ** min(n - 2, 60))
    return float(max(0.0, base * (1.0 + policy.backoff_jitter * (2.0 * roll - 1.0))))


def decide_restart(history: RestartHistory, now: float, policy: Policy, roll: float, *,
                   during_start: bool, clean: bool, reason: str) -> RestartDecision:
    """What follows a death the manager did not ask for (or a failed start)."""
    if policy.restart == "never" or (policy.restart == "on-failure" and clean):
        return RestartDecision(Verdict.EXITED, history, reason, reason)
    window = policy.crash_loop_window
    crashes = history.crashes
    start_failures = history.start_failures
    if during_start:
        start_failures += 1
        n = start_failures
    else:
        crashes = (*(t for t in crashes if window > 0 and now - t < window), now)
        n = len(crashes)
    history = RestartHistory(start_failures, crashes)
    limit = policy.crash_loop_max
    if limit > 0 and (start_failures > limit or (window > 0 and len(crashes) > limit)):
        what = (f"{start_failures} failed starts in a row" if start_failures > limit
                else f"{len(crashes)} crashes within {window:g}s")
        return RestartDecision(Verdict.FATAL, history, reason,
                               f"crash loop: {what}; last: {reason}")
    delay = backoff_delay(n, policy, roll)
    if delay <= 0:
        return RestartDecision(Verdict.RESTART, history, reason, reason)
    return RestartDecision(Verdict.BACKOFF, history, reason,
                           f"{reason}; retrying in {delay:.2f}s", delay)
