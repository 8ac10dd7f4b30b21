"""The supervisor's decisions as a pure state machine.

`transition(core, event, now, policy, roll)` takes the current `Core`, one event, the
monotonic time and a uniform random number in [0, 1) (for backoff jitter) and returns
the new `Core` plus the actions the I/O shell must carry out. No I/O, no clock reads:
tests drive it with plain values.

What follows an exit we did not ask for (or a failed spawn, or a service that vanished
while the manager was down) is `restart_policy.decide_restart`, the restart decision
the rcd backend uses too: restart at once, back off, stay EXITED or go FATAL (see that
module for the rules). An exit is clean for `restart = "on-failure"` when its code is
in `success_exit_codes` and no signal killed it; a vanished service's exit status is
unknown, so it is not clean.

A service its health check found unhealthy (`Unhealthy`, from health_monitor.py with
`on_unhealthy = "restart"`) is stopped like a requested stop (stop_signal, then SIGKILL
after stop_timeout), but its exit is then a failure: the same restart decision follows,
so health restarts count toward backoff and the crash-loop limit.
"""

from __future__ import annotations

import dataclasses
import signal
from dataclasses import dataclass, field

from manager.supervision.restart_policy import (
    Policy,
    RestartHistory,
    Verdict,
    decide_restart,
)
from manager.supervision.states import State

KILL_GRACE = 5.0  # after SIGKILL, how long before a process that will not die is reported


# ---- events -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StartRequested:
    pass


@dataclass(frozen=True, slots=True)
class StopRequested:
    timeout: float | None = None  # None: policy.stop_timeout
    force: bool = False


@dataclass(frozen=True, slots=True)
class Spawned:
    pid: int


@dataclass(frozen=True, slots=True)
class SpawnFailed:
    reason: str


@dataclass(frozen=True, slots=True)
class Exited:
    pid: int
    code: int | None = None
    signal: int | None = None


@dataclass(frozen=True, slots=True)
class TimerFired:
    token: int


@dataclass(frozen=True, slots=True)
class Adopted:
    """A manager restart found the service still running."""

    pid: int
    age: float  # seconds since the process started


@dataclass(frozen=True, slots=True)
class Vanished:
    """A manager restart found that the service it had running is gone."""


@dataclass(frozen=True, slots=True)
class Unhealthy:
    """The health check of this process failed `failures` times (on_unhealthy restart)."""

    pid: int
    reason: str


Event = (StartRequested | StopRequested | Spawned | SpawnFailed | Exited | TimerFired
         | Adopted | Vanished | Unhealthy)


# ---- actions ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Spawn:
    pass


@dataclass(frozen=True, slots=True)
class SignalGroup:
    signal: signal.Signals


@dataclass(frozen=True, slots=True)
class KillGroup:
    """SIGKILL everything left in the service's process group (also the sweep after exit)."""


@dataclass(frozen=True, slots=True)
class SetTimer:
    token: int
    delay: float


Action = Spawn | SignalGroup | KillGroup | SetTimer


# ---- state --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Core:
    state: State = State.STOPPED
    pid: int = 0
    restarts: int = 0
    exit_code: int | None = None
    exit_signal: int | None = None
    message: str = ""
    timer: int = 0  # token of the one live timer; older tokens are stale
    start_failures: int = 0  # consecutive exits before start_secs
    crashes: tuple[float, ...] = field(default_factory=tuple)  # times of recent crashes
    adopted: bool = False
    unhealthy: str = ""  # STOPPING because unhealthy: why (the exit is then a failure)


def _arm(core: Core, delay: float) -> tuple[Core, SetTimer]:
    token = core.timer + 1
    return dataclasses.replace(core, timer=token), SetTimer(token, delay)


def _disarm(core: Core) -> Core:
    return dataclasses.replace(core, timer=core.timer + 1)


def _spawn(core: Core, *, restart: bool) -> tuple[Core, list[Action]]:
    core = _disarm(core)
    return dataclasses.replace(
        core, state=State.STARTING, pid=0, adopted=False, unhealthy="",
        restarts=core.restarts + (1 if restart else 0)), [Spawn()]


def _running(core: Core, policy: Policy, age: float) -> tuple[Core, list[Action]]:
    if age >= policy.start_secs:
        core = _disarm(core)
        return dataclasses.replace(core, state=State.RUNNING, start_failures=0), []
    core, timer = _arm(core, policy.start_secs - age)
    return dataclasses.replace(core, state=State.STARTING), [timer]


def _after_failure(core: Core, now: float, policy: Policy, roll: float, *,
                   during_start: bool, reason: str,
                   clean: bool) -> tuple[Core, list[Action]]:
    """Carry out the restart decision on an exit we did not ask for (or a failed spawn)."""
    decision = decide_restart(RestartHistory(core.start_failures, core.crashes), now, policy,
                              roll, during_start=during_start, clean=clean, reason=reason)
    history = decision.history
    core = dataclasses.replace(core, pid=0, crashes=history.crashes,
                               start_failures=history.start_failures, message=decision.message)
    match decision.verdict:
        case Verdict.EXITED:
            return dataclasses.replace(_disarm(core), state=State.EXITED), []
        case Verdict.FATAL:
            return dataclasses.replace(_disarm(core), state=State.FATAL), []
        case Verdict.RESTART:
            return _spawn(core, restart=True)
    core, timer = _arm(core, decision.delay)
    return dataclasses.replace(core, state=State.BACKOFF), [timer]


def describe_exit(code: int | None, sig: int | None) -> str:
    if sig is not None:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"killed by {name}"
    if code is None:
        return "exited (status unknown)"
    return f"exited with code {code}"


def transition(core: Core, event: Event, now: float, policy: Policy,
               roll: float = 0.5) -> tuple[Core, list[Action]]:
    """Apply one event. Returns the new core and the actions to carry out, in order."""
    state = core.state
    match event:
        case StartRequested():
            if state in (State.STOPPED, State.EXITED, State.FATAL, State.BACKOFF):
                core = dataclasses.replace(core, start_failures=0, crashes=(), message="")
                return _spawn(core, restart=False)
            return core, []

        case StopRequested(timeout=timeout, force=force):
            if state in (State.STARTING, State.RUNNING):
                core = dataclasses.replace(core, state=State.STOPPING, message="stop requested")
                if force or core.pid == 0:
                    core, timer = _arm(core, KILL_GRACE)
                    return core, [KillGroup(), timer]
                core, timer = _arm(core, policy.stop_timeout if timeout is None else timeout)
                return core, [SignalGroup(policy.stop_signal), timer]
            if state == State.STOPPING:
                if core.unhealthy:  # the operator's stop wins: the exit is a stop
                    core = dataclasses.replace(core, unhealthy="", message="stop requested")
                if force:
                    core, timer = _arm(core, KILL_GRACE)
                    return core, [KillGroup(), timer]
                return core, []
            if state in (State.BACKOFF, State.EXITED, State.FATAL):
                # The message said why it was down ("...; retrying in 2.08s"): no longer
                # true once stopped, so it says what happened instead.
                return dataclasses.replace(_disarm(core), state=State.STOPPED, pid=0,
                                           message=f"stopped (was {state.value})"), []
            return core, []

        case Spawned(pid=pid):
            if state != State.STARTING:
                return core, []
            # exit_code/exit_signal keep describing the previous run, as supervisord does.
            core = dataclasses.replace(core, pid=pid)
            return _running(core, policy, 0.0)

        case SpawnFailed(reason=reason):
            if state != State.STARTING:
                return core, []
            return _after_failure(core, now, policy, roll, during_start=True,
                                  reason=f"spawn failed: {reason}", clean=False)

        case Exited(pid=pid, code=code, signal=sig):
            if pid != core.pid or core.pid == 0:
                return core, [KillGroup()]  # a stale exit; still sweep what it left
            core = dataclasses.replace(core, exit_code=code, exit_signal=sig)
            reason = describe_exit(code, sig)
            if state == State.STOPPING and core.unhealthy:
                why = f"unhealthy: {core.unhealthy}"
                core = dataclasses.replace(_disarm(core), unhealthy="")
                core, actions = _after_failure(core, now, policy, roll, during_start=False,
                                               reason=why, clean=False)
                return core, [KillGroup(), *actions]
            if state == State.STOPPING:
                core = dataclasses.replace(_disarm(core), state=State.STOPPED, pid=0,
                                           message=f"stopped ({reason})")
                return core, [KillGroup()]
            if state in (State.STARTING, State.RUNNING):
                clean = sig is None and code is not None and code in policy.success_exit_codes
                core, actions = _after_failure(core, now, policy, roll,
                                               during_start=state == State.STARTING,
                                               reason=reason, clean=clean)
                return core, [KillGroup(), *actions]
            return core, [KillGroup()]

        case TimerFired(token=token):
            if token != core.timer:
                return core, []
            if state == State.STARTING:
                return dataclasses.replace(_disarm(core), state=State.RUNNING,
                                           start_failures=0), []
            if state == State.BACKOFF:
                return _spawn(core, restart=True)
            if state == State.STOPPING:
                core, timer = _arm(core, KILL_GRACE)
                core = dataclasses.replace(core, message="stop timeout; killing the group")
                return core, [KillGroup(), timer]
            return core, []

        case Adopted(pid=pid, age=age):
            if state != State.STOPPED:
                return core, []
            core = dataclasses.replace(core, pid=pid, adopted=True, message="re-adopted")
            return _running(core, policy, age)

        case Unhealthy(pid=pid, reason=reason):
            if state not in (State.STARTING, State.RUNNING) or pid != core.pid or pid == 0:
                return core, []
            core = dataclasses.replace(core, state=State.STOPPING, unhealthy=reason,
                                       message=f"unhealthy, restarting: {reason}")
            core, timer = _arm(core, policy.stop_timeout)
            return core, [SignalGroup(policy.stop_signal), timer]

        case Vanished():
            if state != State.STOPPED:
                return core, []
            core = dataclasses.replace(core, state=State.RUNNING, pid=0)
            return _after_failure(core, now, policy, roll, during_start=False,
                                  reason="exited while the manager was down", clean=False)
    return core, []
