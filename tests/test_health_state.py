"""The pure health state machine and its schedule, and the supervisor's Unhealthy event,
driven with plain values (no processes, no clock)."""

from __future__ import annotations

import signal

from manager.health_config import HealthCheck
from manager.supervision import health_state as hs
from manager.supervision.restart_policy import Policy
from manager.supervision.states import State
from manager.supervision.supervisor import (
    Core,
    Exited,
    KillGroup,
    SetTimer,
    SignalGroup,
    Spawn,
    Spawned,
    StartRequested,
    StopRequested,
    TimerFired,
    Unhealthy,
    transition,
)

CHECK = HealthCheck(http="http://127.0.0.1:1/", failures=3, start_period=0.0)


def feed(core, *events, check=CHECK):
    actions = []
    for ev in events:
        core, acts = hs.transition(core, ev, check)
        actions += acts
    return core, actions


def up(pid=10, now=0.0, check=CHECK):
    return feed(hs.HealthCore(), hs.ProcessUp(pid, now), check=check)[0]


def test_unknown_until_the_first_result_then_healthy():
    core = up()
    assert core.health is hs.Health.UNKNOWN and core.message == "no check yet"
    core, acts = feed(core, hs.Checked(10, True, "http: status 200", 1.0))
    assert core.health is hs.Health.HEALTHY and core.message == "http: status 200"
    assert acts == []


def test_unhealthy_after_the_configured_consecutive_failures_and_one_restart():
    core, _ = feed(up(), hs.Checked(10, True, "ok", 1.0))
    core, acts = feed(core, hs.Checked(10, False, "timed out", 2.0),
                      hs.Checked(10, False, "timed out", 3.0))
    assert core.health is hs.Health.HEALTHY and core.failures == 2 and acts == []
    assert core.message == "timed out (2 of 3 failures)"
    core, acts = feed(core, hs.Checked(10, False, "timed out", 4.0))
    assert core.health is hs.Health.UNHEALTHY and core.failures == 3
    assert acts == [hs.Restart(10, "3 health checks failed in a row; last: timed out")]
    # more failures of the same process: no second restart
    core, acts = feed(core, hs.Checked(10, False, "timed out", 5.0))
    assert acts == [] and core.failures == 4


def test_a_pass_resets_the_count():
    core, _ = feed(up(), hs.Checked(10, False, "x", 1.0), hs.Checked(10, False, "x", 2.0),
                   hs.Checked(10, True, "ok", 3.0), hs.Checked(10, False, "x", 4.0),
                   hs.Checked(10, False, "x", 5.0))
    assert core.failures == 2 and core.health is hs.Health.HEALTHY


def test_on_unhealthy_none_only_reports():
    check = HealthCheck(tcp="127.0.0.1:1", failures=1, on_unhealthy="none")
    core, acts = feed(up(check=check), hs.Checked(10, False, "refused", 1.0), check=check)
    assert core.health is hs.Health.UNHEALTHY and acts == []


def test_failures_within_start_period_do_not_count_until_the_first_pass():
    check = HealthCheck(tcp="127.0.0.1:1", failures=1, start_period=5.0)
    core, acts = feed(up(now=100.0, check=check), hs.Checked(10, False, "refused", 101.0),
                      check=check)
    assert core.health is hs.Health.UNKNOWN and core.failures == 0 and acts == []
    assert "within start_period" in core.message
    core, acts = feed(core, hs.Checked(10, False, "refused", 105.5), check=check)
    assert core.health is hs.Health.UNHEALTHY and len(acts) == 1
    # once healthy, the start period is over even if it has not elapsed
    core = up(now=0.0, check=check)
    core, acts = feed(core, hs.Checked(10, True, "ok", 1.0),
                      hs.Checked(10, False, "refused", 2.0), check=check)
    assert core.health is hs.Health.UNHEALTHY and len(acts) == 1


def test_a_new_process_starts_over_and_stale_results_are_ignored():
    core, _ = feed(up(), *(hs.Checked(10, False, "x", t) for t in (1.0, 2.0, 3.0)))
    assert core.health is hs.Health.UNHEALTHY and core.restart_asked
    core, acts = feed(core, hs.ProcessUp(11, 4.0))
    assert core == hs.HealthCore(pid=11, up_since=4.0)
    core, acts = feed(core, hs.Checked(10, False, "late result of the old pid", 4.5))
    assert core == hs.HealthCore(pid=11, up_since=4.0) and acts == []
    # the same pid again changes nothing
    assert feed(core, hs.ProcessUp(11, 9.0))[0] == core


def test_down_resets_to_unknown_and_results_while_down_are_ignored():
    core, _ = feed(up(), hs.Checked(10, True, "ok", 1.0), hs.ProcessDown("service is STOPPED"))
    assert core.health is hs.Health.UNKNOWN and core.message == "service is STOPPED"
    assert core.up_since is None
    assert feed(core, hs.Checked(10, True, "ok", 2.0))[0] == core
    assert feed(core, hs.ProcessDown("service is STOPPED"))[0] == core
    # still down, for another reason: the message follows
    later = feed(core, hs.ProcessDown("service is BACKOFF"))[0]
    assert later == hs.HealthCore(message="service is BACKOFF")


def test_schedule_is_a_fixed_rate_that_never_overlaps():
    assert hs.next_check(None, None, 1.0, up_since=5.0) == 5.0  # a new process: at once
    assert hs.next_check(10.0, 10.2, 1.0, up_since=5.0) == 11.0
    assert hs.next_check(10.0, 12.5, 1.0, up_since=5.0) == 12.5  # took longer: right after
    assert hs.next_check(4.0, 4.1, 1.0, up_since=5.0) == 5.0  # last check was another pid's


# ---- the supervisor's side: an unhealthy restart is a failure like a crash ----------------

P = Policy(start_secs=1.0, stop_timeout=5.0, backoff_initial=1.0, backoff_max=8.0,
           backoff_jitter=0.0, crash_loop_max=2, crash_loop_window=60.0)


def sup(core, *events, now=0.0, policy=P):
    actions = []
    for ev in events:
        core, acts = transition(core, ev, now, policy, 0.5)
        actions += acts
    return core, actions


def running(pid=10):
    core, acts = sup(Core(), StartRequested(), Spawned(pid))
    token = [a for a in acts if isinstance(a, SetTimer)][-1].token
    return sup(core, TimerFired(token), now=1.0)[0]


def test_unhealthy_stops_with_the_stop_signal_then_restarts_on_exit():
    core = running()
    core, acts = sup(core, Unhealthy(10, "3 checks failed"), now=10.0)
    assert core.state == State.STOPPING and core.unhealthy == "3 checks failed"
    assert acts[0] == SignalGroup(signal.SIGTERM) and isinstance(acts[1], SetTimer)
    assert acts[1].delay == P.stop_timeout
    core, acts = sup(core, Exited(10, 0, None), now=10.5)
    assert core.state == State.STARTING and core.restarts == 1  # first failure: at once
    assert acts == [KillGroup(), Spawn()]
    assert core.crashes == (10.5,)


def test_unhealthy_restarts_count_toward_backoff_and_fatal():
    core = running()
    now = 10.0
    states = []
    for pid in (10, 11, 12):
        core, _ = sup(core, Unhealthy(pid, "hung"), now=now)
        core, acts = sup(core, Exited(pid, None, signal.SIGTERM), now=now)
        states.append(core.state)
        if core.state == State.BACKOFF:
            token = [a for a in acts if isinstance(a, SetTimer)][-1].token
            core, _ = sup(core, TimerFired(token), now=now)
        if core.state == State.STARTING:
            core, acts = sup(core, Spawned(pid + 1), now=now)
            token = [a for a in acts if isinstance(a, SetTimer)][-1].token
            core, _ = sup(core, TimerFired(token), now=now + 1)
        now += 2.0
    assert states == [State.STARTING, State.BACKOFF, State.FATAL]
    assert "crash loop" in core.message and "unhealthy: hung" in core.message


def test_unhealthy_of_another_pid_or_state_is_ignored_and_a_stop_wins():
    core = running()
    assert sup(core, Unhealthy(99, "x"))[0] == core
    assert sup(Core(), Unhealthy(0, "x"))[0] == Core()
    core, _ = sup(core, Unhealthy(10, "hung"))
    core, acts = sup(core, StopRequested())  # the operator stops it meanwhile
    assert core.unhealthy == "" and core.message == "stop requested" and acts == []
    core, _ = sup(core, Exited(10, 0, None))
    assert core.state == State.STOPPED and core.restarts == 0
