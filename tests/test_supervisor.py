"""The pure supervisor state machine, driven with plain values (no processes, no clock)."""

from __future__ import annotations

import signal

import pytest

from manager.supervision.restart_policy import Policy
from manager.supervision.states import State
from manager.supervision.supervisor import (
    Adopted,
    Core,
    Exited,
    KillGroup,
    SetTimer,
    SignalGroup,
    Spawn,
    Spawned,
    SpawnFailed,
    StartRequested,
    StopRequested,
    TimerFired,
    Vanished,
    transition,
)

P = Policy(start_secs=1.0, stop_timeout=5.0, backoff_initial=1.0, backoff_max=8.0,
           backoff_jitter=0.0, crash_loop_max=3, crash_loop_window=60.0)


def run(core, *events, now=0.0, policy=P):
    actions = []
    for ev in events:
        core, acts = transition(core, ev, now, policy, 0.5)
        actions += acts
    return core, actions


def timer_of(actions):
    timers = [a for a in actions if isinstance(a, SetTimer)]
    return timers[-1]


def running(pid=10, policy=P):
    core, acts = run(Core(), StartRequested(), Spawned(pid), policy=policy)
    if core.state == State.STARTING:
        core, _ = run(core, TimerFired(timer_of(acts).token), now=1.0, policy=policy)
    return core


def test_start_spawns_then_running_after_start_secs():
    core, acts = transition(Core(), StartRequested(), 0.0, P)
    assert core.state == State.STARTING and acts == [Spawn()]
    core, acts = transition(core, Spawned(42), 0.0, P)
    assert core.pid == 42 and core.state == State.STARTING
    timer = timer_of(acts)
    assert timer.delay == 1.0
    core, acts = transition(core, TimerFired(timer.token), 1.0, P)
    assert core.state == State.RUNNING and acts == []


def test_start_secs_zero_is_running_at_once():
    core, _ = run(Core(), StartRequested(), Spawned(1), policy=Policy(start_secs=0))
    assert core.state == State.RUNNING


def test_stale_timer_is_ignored():
    core, acts = run(Core(), StartRequested(), Spawned(1))
    stale = timer_of(acts).token
    core, _ = run(core, StopRequested())
    assert core.state == State.STOPPING
    core2, acts2 = transition(core, TimerFired(stale), 2.0, P)
    assert core2 == core and acts2 == []


def test_stop_signals_group_then_kills_after_timeout():
    core = running()
    core, acts = transition(core, StopRequested(), 2.0, P)
    assert core.state == State.STOPPING
    assert acts[0] == SignalGroup(signal.SIGTERM)
    timer = timer_of(acts)
    assert timer.delay == 5.0
    core, acts = transition(core, TimerFired(timer.token), 7.0, P)
    assert KillGroup() in acts and core.state == State.STOPPING
    core, acts = transition(core, Exited(10, None, 9), 7.1, P)
    assert core.state == State.STOPPED and core.pid == 0 and KillGroup() in acts
    assert core.exit_signal == 9


def test_stop_with_explicit_timeout_and_force():
    core = running()
    _, acts = transition(core, StopRequested(timeout=0.5), 2.0, P)
    assert timer_of(acts).delay == 0.5
    _, acts = transition(core, StopRequested(force=True), 2.0, P)
    assert acts[0] == KillGroup()


def test_crash_from_running_restarts_at_once_then_backs_off():
    core = running()
    core, acts = transition(core, Exited(10, 1, None), 10.0, P)
    assert core.state == State.STARTING and Spawn() in acts and core.restarts == 1
    assert KillGroup() in acts  # leftovers of the crashed group are swept
    core, acts = run(core, Spawned(11), now=10.0)
    core, _ = run(core, TimerFired(timer_of(acts).token), now=11.0)
    core, acts = transition(core, Exited(11, 1, None), 12.0, P)
    assert core.state == State.BACKOFF
    assert timer_of(acts).delay == 1.0  # second crash within the window
    core, acts = transition(core, TimerFired(timer_of(acts).token), 13.0, P)
    assert core.state == State.STARTING and acts == [Spawn()] and core.restarts == 2


def test_backoff_is_exponential_and_capped():
    core = Core()
    delays = []
    pid = 100
    core, _ = run(core, StartRequested())
    for i in range(10):
        core, acts = run(core, Spawned(pid), now=float(i))
        core, acts = transition(core, Exited(pid, 1, None), float(i), Policy(
            start_secs=1.0, backoff_initial=1.0, backoff_max=8.0, backoff_jitter=0.0,
            crash_loop_max=0))
        pid += 1
        if core.state == State.BACKOFF:
            delays.append(timer_of(acts).delay)
            core, _ = transition(core, TimerFired(core.timer), float(i), P)
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0]


def test_jitter_stays_within_bounds():
    pol = Policy(backoff_initial=1.0, backoff_max=10.0, backoff_jitter=0.2, crash_loop_max=0)
    for roll, expected in ((0.0, 0.8), (0.999999, 1.2)):
        core, _ = run(Core(), StartRequested(), Spawned(1), policy=pol)
        core, _ = transition(core, Exited(1, 1, None), 0.0, pol, roll)
        core, _ = run(core, Spawned(2), policy=pol)
        core, acts = transition(core, Exited(2, 1, None), 0.0, pol, roll)
        assert abs(timer_of(acts).delay - expected) < 1e-3


def test_failed_starts_end_in_fatal():
    core, _ = run(Core(), StartRequested())
    pid = 1
    for _ in range(10):
        core, _ = run(core, Spawned(pid))
        core, acts = transition(core, Exited(pid, 2, None), 0.0, P)
        pid += 1
        if core.state == State.FATAL:
            break
        if core.state == State.BACKOFF:
            core, _ = transition(core, TimerFired(timer_of(acts).token), 0.0, P)
    assert core.state == State.FATAL
    assert "4 failed starts in a row" in core.message
    assert core.start_failures == 4


def test_crash_loop_within_window_ends_in_fatal_but_spread_out_crashes_do_not():
    core = running()
    t = 10.0
    pid = 10
    for _ in range(3):  # spread out: one crash per 61 s never trips the window
        core, acts = transition(core, Exited(pid, 1, None), t, P)
        assert core.state == State.STARTING
        pid += 1
        core, acts = run(core, Spawned(pid), now=t)
        core, _ = run(core, TimerFired(timer_of(acts).token), now=t + 1)
        t += 61.0
    assert core.state == State.RUNNING
    for _ in range(4):
        core, acts = transition(core, Exited(pid, 1, None), t, P)
        if core.state == State.FATAL:
            break
        if core.state == State.BACKOFF:
            core, acts = transition(core, TimerFired(timer_of(acts).token), t, P)
        pid += 1
        core, acts = run(core, Spawned(pid), now=t)
        core, _ = run(core, TimerFired(timer_of(acts).token), now=t + 1)
        t += 2
    assert core.state == State.FATAL and "crashes within 60s" in core.message


def test_restart_policies():
    never = Policy(start_secs=0, restart="never")
    core, _ = run(Core(), StartRequested(), Spawned(1), policy=never)
    core, acts = transition(core, Exited(1, 3, None), 1.0, never)
    assert core.state == State.EXITED and Spawn() not in acts and core.exit_code == 3

    onf = Policy(start_secs=0, restart="on-failure", success_exit_codes=(0, 3))
    core, _ = run(Core(), StartRequested(), Spawned(1), policy=onf)
    core, _ = transition(core, Exited(1, 3, None), 1.0, onf)
    assert core.state == State.EXITED
    core, _ = run(Core(), StartRequested(), Spawned(1), policy=onf)
    core, acts = transition(core, Exited(1, None, signal.SIGSEGV), 1.0, onf)
    assert core.state == State.STARTING and Spawn() in acts


def test_spawn_failure_backs_off():
    core, _ = run(Core(), StartRequested())
    core, acts = transition(core, SpawnFailed("no such file"), 0.0, P)
    assert core.state == State.STARTING and Spawn() in acts  # first failure: retry at once
    core, acts = transition(core, SpawnFailed("no such file"), 0.0, P)
    assert core.state == State.BACKOFF and "spawn failed: no such file" in core.message


def test_manual_start_clears_fatal_and_history():
    core = Core(state=State.FATAL, start_failures=9, crashes=(1.0, 2.0), message="x")
    core, _ = transition(core, StartRequested(), 5.0, P)
    assert core.state == State.STARTING and core.start_failures == 0 and core.crashes == ()


def test_stop_from_backoff_cancels_retry():
    core = Core(state=State.BACKOFF, timer=7)
    core, acts = transition(core, StopRequested(), 0.0, P)
    assert core.state == State.STOPPED and acts == []
    core2, acts = transition(core, TimerFired(7), 1.0, P)
    assert core2.state == State.STOPPED and acts == []


def test_exit_of_unknown_pid_only_sweeps():
    core = running(pid=5)
    core2, acts = transition(core, Exited(999, 0, None), 1.0, P)
    assert core2 == core and acts == [KillGroup()]


def test_adopted_old_process_is_running_young_one_starting():
    core, acts = transition(Core(), Adopted(7, age=100.0), 0.0, P)
    assert core.state == State.RUNNING and core.adopted and core.pid == 7 and acts == []
    core, acts = transition(Core(), Adopted(7, age=0.25), 0.0, P)
    assert core.state == State.STARTING and timer_of(acts).delay == 0.75


def test_vanished_restarts_by_policy():
    core, acts = transition(Core(), Vanished(), 0.0, P)
    assert core.state == State.STARTING and Spawn() in acts and core.restarts == 1
    never = Policy(restart="never")
    core, acts = transition(Core(), Vanished(), 0.0, never)
    assert core.state == State.EXITED and acts == []


def test_start_while_running_or_stopping_changes_nothing():
    core = running()
    assert transition(core, StartRequested(), 0.0, P) == (core, [])
    stopping, _ = transition(core, StopRequested(), 0.0, P)
    assert transition(stopping, StartRequested(), 0.0, P) == (stopping, [])


@pytest.mark.parametrize("state", [State.BACKOFF, State.EXITED, State.FATAL])
def test_a_stopped_service_does_not_keep_the_message_of_why_it_was_down(state):
    """Issue 11 item 5: "...; retrying in 2.08s" is not true of a STOPPED service."""
    core = Core(state=state, timer=3, exit_code=1,
                message="exited with code 1; retrying in 2.08s")
    core, acts = transition(core, StopRequested(), 0.0, P)
    assert core.state == State.STOPPED and acts == []
    assert "retrying" not in core.message
    assert core.message == f"stopped (was {state.value})"
    assert core.exit_code == 1  # the last run's exit is still reported
