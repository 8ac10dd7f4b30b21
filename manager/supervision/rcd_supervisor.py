"""The rcd backend's supervision decisions, pure: what follows when the rc script reports
the service dead, when an automatic start fails or comes up, and what a manual request
resets. `rcd_unit.py` is the I/O shell that runs the script and carries them out.

The restart decision itself is `restart_policy.decide_restart`, the one the process
backend's state machine (`supervisor.transition`) uses: the same first-failure-at-once,
exponential backoff with the same jitter, the same `crash_loop_window` and
`crash_loop_max`, the same meaning of `restart`. Only the decision is shared, not
`transition`: that machine is built on what an rc script cannot give (a pid we spawned
and whose exit we see at once through a pidfd, its exit status, a stop we signal and
time ourselves), while here every fact is a polled `rc.NAME status`, every action one
blocking script call, and start/stop requests wait for the script under the unit's
lock. Feeding polls into `transition` as fake Spawned/Exited events would hide that;
sharing the one decision function keeps the rules in one place.

An rc script cannot report an exit status. So a death the manager did not ask for (the
service was running, or asked to run, and `status` now says it is not) counts as a
failure: `restart = "always"` and `"on-failure"` both restart it, `"never"` leaves it
EXITED. That includes a service stopped with `rc.NAME stop` behind the manager's back:
stop it through the manager, which remembers the stop. An automatic start that does
not reach RUNNING (for `start_secs`) is a failed start; a death after that, a crash.

What was last asked (`desired`, "running" or "stopped") is kept in the state store by
the shell: a stopped service stays stopped across manager restarts, and one last asked
to run that the next manager finds dead is restarted by policy ("exited while the
manager was down"). A service never asked about is adopted as first seen: running ->
desired "running".
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from manager.supervision.restart_policy import (
    Policy,
    RestartDecision,
    RestartHistory,
    Verdict,
    decide_restart,
)
from manager.supervision.states import State

RUNNING = "running"
STOPPED = "stopped"
DEAD = (State.STOPPED, State.EXITED)  # what observe_rc_status maps "not running" to


@dataclass(frozen=True, slots=True)
class RcdCore:
    desired: str | None = None  # RUNNING / STOPPED as last asked; None: never asked
    history: RestartHistory = field(default_factory=RestartHistory)
    given_up: State | None = None  # EXITED or FATAL: no restart until the next request
    message: str = ""  # why it gave up
    restarts: int = 0  # automatic restarts by this manager


def requested(core: RcdCore, desired: str) -> RcdCore:
    """A manual start, restart or stop. A start clears the restart history and FATAL;
    a stop clears FATAL (the service is then simply stopped)."""
    history = RestartHistory() if desired == RUNNING else core.history
    return replace(core, desired=desired, history=history, given_up=None, message="")


def observed(core: RcdCore, state: State, now: float, policy: Policy, roll: float, *,
             first: bool, detail: str = "") -> tuple[RcdCore, RestartDecision | None]:
    """A background `status` observation; returns the restart decision when it shows a
    death the manager must act on. `first`: the first observation of this manager."""
    if core.desired is None:
        if state == State.RUNNING:  # adopt it as found
            return replace(core, desired=RUNNING), None
        return core, None
    if core.desired != RUNNING or core.given_up is not None or state not in DEAD:
        return core, None
    reason = "exited while the manager was down" if first else "exited (status unknown)"
    if detail:
        reason = f"{reason}: {detail}"
    return _decide(core, now, policy, roll, during_start=False, reason=reason)


def restarting(core: RcdCore) -> RcdCore:
    """An automatic start is about to run."""
    return replace(core, restarts=core.restarts + 1)


def start_failed(core: RcdCore, now: float, policy: Policy, roll: float, *,
                 reason: str) -> tuple[RcdCore, RestartDecision]:
    """A start (manual or automatic) did not bring the service up."""
    return _decide(core, now, policy, roll, during_start=True, reason=reason)


def came_up(core: RcdCore) -> RcdCore:
    """A start brought the service up: earlier failed starts no longer count."""
    return replace(core, history=core.history.started())


def _decide(core: RcdCore, now: float, policy: Policy, roll: float, *, during_start: bool,
            reason: str) -> tuple[RcdCore, RestartDecision]:
    decision = decide_restart(core.history, now, policy, roll, during_start=during_start,
                              clean=False, reason=reason)  # the exit status is unknown
    given_up = {Verdict.EXITED: State.EXITED, Verdict.FATAL: State.FATAL}.get(decision.verdict)
    core = replace(core, history=decision.history, given_up=given_up,
                   message=decision.message if given_up else "")
    return core, decision
