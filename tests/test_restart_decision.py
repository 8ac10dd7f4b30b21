"""The one restart decision (`restart_policy.decide_restart`) and the rcd backend's use of
it (`rcd_supervisor`), driven with plain values; then the rcd unit carrying the
decisions out against a fake rc script call (no script, no process)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from backendai.errors import ServiceFailed, Unavailable
from manager.config import ServiceConfig, parse
from manager.daemon import wait_ready
from manager.statestore import ServiceRecord, StateStore
from manager.supervision import rcd_supervisor as rcd
from manager.supervision.host_command import CommandResult
from manager.supervision.rcd_unit import RcdUnit
from manager.supervision.restart_policy import (
    Policy,
    RestartHistory,
    Verdict,
    backoff_delay,
    decide_restart,
)
from manager.supervision.states import ServiceStatus, State
from manager.supervision.supervisor import (
    Core,
    Exited,
    SetTimer,
    Spawned,
    StartRequested,
    TimerFired,
    transition,
)

P = Policy(backoff_initial=1.0, backoff_max=8.0, backoff_jitter=0.2, crash_loop_max=3,
           crash_loop_window=60.0)


def fail(history: RestartHistory, now: float = 0.0, policy: Policy = P, roll: float = 0.5,
         *, during_start: bool = True, clean: bool = False):
    return decide_restart(history, now, policy, roll, during_start=during_start, clean=clean,
                          reason="boom")


# ---- the decision ----------------------------------------------------------------------

def test_first_failure_restarts_at_once_then_backs_off_exponentially():
    d = fail(RestartHistory())
    assert (d.verdict, d.delay, d.message, d.history) == (
        Verdict.RESTART, 0.0, "boom", RestartHistory(1, ()))
    delays = []
    d = fail(RestartHistory(), policy=Policy(backoff_jitter=0.0, backoff_max=8.0,
                                             crash_loop_max=0))
    for _ in range(6):
        d = fail(d.history, policy=Policy(backoff_jitter=0.0, backoff_max=8.0,
                                          crash_loop_max=0))
        delays.append(d.delay)
        assert d.verdict == Verdict.BACKOFF and d.message == f"boom; retrying in {d.delay:.2f}s"
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_jitter_bounds_come_from_the_roll():
    history = RestartHistory(2, ())  # the third failed start: base 2 s
    assert fail(history, roll=0.0).delay == pytest.approx(1.6)
    assert fail(history, roll=0.5).delay == pytest.approx(2.0)
    assert fail(history, roll=0.999999).delay == pytest.approx(2.4, abs=1e-5)
    for roll in (0.0, 0.1, 0.37, 0.5, 0.8, 0.999):
        assert 1.6 - 1e-9 <= backoff_delay(3, P, roll) <= 2.4 + 1e-9


def test_crashes_count_within_the_window_only():
    d = fail(RestartHistory(), now=100.0, during_start=False)
    assert d.verdict == Verdict.RESTART and d.history.crashes == (100.0,)
    d = fail(d.history, now=110.0, during_start=False)
    assert d.verdict == Verdict.BACKOFF and d.history.crashes == (100.0, 110.0)
    # 61 s after the last one the old crashes have expired: at once again
    d = fail(d.history, now=171.0, during_start=False)
    assert d.verdict == Verdict.RESTART and d.history.crashes == (171.0,)
    # window 0: only failed starts count, a crash always restarts at once
    zero = Policy(crash_loop_window=0.0, crash_loop_max=1)
    for t in (1.0, 2.0, 3.0):
        d = fail(d.history, now=t, policy=zero, during_start=False)
        assert d.verdict == Verdict.RESTART


def test_crash_loop_max_ends_in_fatal():
    history = RestartHistory()
    verdicts = []
    for _ in range(4):
        d = fail(history)
        verdicts.append(d.verdict)
        history = d.history
    assert verdicts == [Verdict.RESTART, Verdict.BACKOFF, Verdict.BACKOFF, Verdict.FATAL]
    assert d.message == "crash loop: 4 failed starts in a row; last: boom"
    history = RestartHistory(crashes=(1.0, 2.0, 3.0))
    d = fail(history, now=4.0, during_start=False)
    assert d.verdict == Verdict.FATAL and "4 crashes within 60s" in d.message
    # crash_loop_max = 0: never give up
    d = fail(RestartHistory(99, ()), policy=Policy(crash_loop_max=0))
    assert d.verdict == Verdict.BACKOFF


def test_restart_policies_and_clean_exits():
    for restart, clean, verdict in [("always", True, Verdict.RESTART),
                                    ("always", False, Verdict.RESTART),
                                    ("on-failure", True, Verdict.EXITED),
                                    ("on-failure", False, Verdict.RESTART),
                                    ("never", False, Verdict.EXITED)]:
        d = fail(RestartHistory(), policy=Policy(restart=restart), clean=clean)
        assert d.verdict == verdict, (restart, clean)
    d = fail(RestartHistory(2, (5.0,)), policy=Policy(restart="never"))
    assert d.history == RestartHistory(2, (5.0,)) and d.message == "boom"


def test_came_up_forgets_failed_starts_not_crashes():
    assert RestartHistory(3, (1.0,)).started() == RestartHistory(0, (1.0,))


def test_process_supervisor_makes_the_same_decisions():
    """The process backend's state machine and the rcd core, fed the same failures,
    back off the same and give up at the same point."""
    core, _ = transition(Core(), StartRequested(), 0.0, P)
    rc_core = rcd.requested(rcd.RcdCore(), rcd.RUNNING)
    for i, roll in enumerate((0.1, 0.9, 0.3, 0.7)):
        core, acts = transition(core, Spawned(i + 1), 0.0, P)
        core, acts = transition(core, Exited(i + 1, 1, None), 0.0, P, roll)
        rc_core, decision = rcd.start_failed(rc_core, 0.0, P, roll, reason="exited with code 1")
        assert (core.start_failures, core.crashes) == (rc_core.history.start_failures,
                                                      rc_core.history.crashes)
        assert core.message == decision.message
        if core.state == State.BACKOFF:
            timer = acts[-1]
            assert isinstance(timer, SetTimer) and decision.verdict == Verdict.BACKOFF
            assert timer.delay == decision.delay
            core, _ = transition(core, TimerFired(timer.token), 0.0, P)
    assert core.state == State.FATAL and rc_core.given_up == State.FATAL


# ---- the rcd core ---------------------------------------------------------------------

def test_rcd_death_with_unknown_status_is_a_failure():
    running = rcd.RcdCore(desired=rcd.RUNNING)
    for restart, verdict in [("always", Verdict.RESTART), ("on-failure", Verdict.RESTART),
                             ("never", Verdict.EXITED)]:
        pol = Policy(restart=restart)
        for state in (State.STOPPED, State.EXITED):  # rc status 3 / 1: neither is "clean"
            core, d = rcd.observed(running, state, 5.0, pol, 0.5, first=False,
                                   detail="svc is not running")
            assert d is not None and d.verdict == verdict, (restart, state)
            assert d.reason == "exited (status unknown): svc is not running"
            if restart == "never":
                assert core.given_up == State.EXITED and core.history == RestartHistory()
            else:
                assert core.given_up is None and core.history.crashes == (5.0,)


def test_rcd_observations_that_need_no_decision():
    pol = Policy()
    # never asked: adopted as found
    core, d = rcd.observed(rcd.RcdCore(), State.RUNNING, 0.0, pol, 0.5, first=True)
    assert (core.desired, d) == (rcd.RUNNING, None)
    core, d = rcd.observed(rcd.RcdCore(), State.STOPPED, 0.0, pol, 0.5, first=True)
    assert (core, d) == (rcd.RcdCore(), None)
    # stopped through the manager: stays stopped
    stopped = rcd.RcdCore(desired=rcd.STOPPED)
    assert rcd.observed(stopped, State.STOPPED, 0.0, pol, 0.5, first=False) == (stopped, None)
    # running: nothing to do
    up = rcd.RcdCore(desired=rcd.RUNNING)
    assert rcd.observed(up, State.RUNNING, 0.0, pol, 0.5, first=False) == (up, None)


def test_rcd_death_while_the_manager_was_down():
    _, d = rcd.observed(rcd.RcdCore(desired=rcd.RUNNING), State.STOPPED, 0.0, Policy(), 0.5,
                        first=True)
    assert d is not None and d.verdict == Verdict.RESTART
    assert d.reason == "exited while the manager was down"


def test_rcd_fatal_until_the_next_manual_start():
    core = rcd.requested(rcd.RcdCore(), rcd.RUNNING)
    for _ in range(4):
        core = rcd.restarting(core)
        core, d = rcd.start_failed(core, 0.0, P, 0.5, reason="did not come up")
    assert d.verdict == Verdict.FATAL and core.given_up == State.FATAL
    assert core.message == "crash loop: 4 failed starts in a row; last: did not come up"
    # found dead again and again: no further decision
    assert rcd.observed(core, State.STOPPED, 9.0, P, 0.5, first=False) == (core, None)
    # a stop clears FATAL (it is then stopped), the history stays until a start
    stopped = rcd.requested(core, rcd.STOPPED)
    assert stopped.given_up is None and stopped.history.start_failures == 4
    # a manual start clears FATAL and the history: the next failure restarts at once
    started = rcd.requested(core, rcd.RUNNING)
    assert (started.given_up, started.message, started.history) == (None, "", RestartHistory())
    assert started.restarts == core.restarts == 4
    _, d = rcd.start_failed(started, 0.0, P, 0.5, reason="again")
    assert d.verdict == Verdict.RESTART


def test_rcd_came_up_resets_failed_starts():
    core = rcd.requested(rcd.RcdCore(), rcd.RUNNING)
    core, _ = rcd.start_failed(core, 0.0, P, 0.5, reason="x")
    core, _ = rcd.start_failed(core, 0.0, P, 0.5, reason="x")
    core = rcd.came_up(core)
    _, d = rcd.start_failed(core, 0.0, P, 0.5, reason="x")
    assert d.verdict == Verdict.RESTART and d.history.start_failures == 1


# ---- the rcd unit carrying the decisions out (fake script calls) --------------------------

class FakeHost:
    """What `rc.svc start|stop|restart|status` would do, in memory."""

    def __init__(self) -> None:
        self.running = False
        self.pid = 100
        self.dying_starts = 0  # this many starts "start" a service that dies at once
        self.calls: list[str] = []
        self.status_gate: asyncio.Event | None = None  # hold status calls until set
        self.called = asyncio.Event()  # set on every call

    def crash(self) -> None:
        self.running = False

    def starts(self) -> int:
        return sum(v in ("start", "restart") for v in self.calls)

    async def call(self, verb: str) -> CommandResult:
        self.calls.append(verb)
        self.called.set()
        if verb == "status":
            if self.status_gate is not None:
                await self.status_gate.wait()
            if self.running:
                return CommandResult(0, f"svc is running (pid {self.pid})\n", "")
            return CommandResult(3, "svc is not running\n", "")
        if verb in ("stop", "restart"):
            self.running = False
        if verb in ("start", "restart") and not self.running:
            self.pid += 1
            self.running = self.dying_starts == 0
            self.dying_starts = max(0, self.dying_starts - 1)
        return CommandResult(0, "", "")


def rcd_config(**over: Any) -> ServiceConfig:
    svc = {"name": "svc", "backend": "rcd", "start_secs": 0, "status_interval": 0.05,
           "backoff_initial": 0.05, "backoff_max": 0.1, "backoff_jitter": 0.5,
           "crash_loop_max": 3, "crash_loop_window": 60, **over}
    return parse({"state_dir": "/nonexistent", "services": [svc]}).services[0]


class FakeRcdUnit(RcdUnit):
    """The rcd unit with its one script call swapped for the fake host's."""

    def __init__(self, host: FakeHost, store: StateStore | None = None, **over: Any) -> None:
        super().__init__(rcd_config(**over), store)
        self.host = host

    async def _call(self, verb: str, timeout: float, *,
                    stop_timeout: float | None = None) -> CommandResult:
        return await self.host.call(verb)


async def until(unit: RcdUnit, cond: Callable[[ServiceStatus], bool],
                limit: float = 10.0) -> ServiceStatus:
    """The first published status that meets `cond` (waits on the unit's feed)."""
    async with asyncio.timeout(limit):
        async for st in unit.watch():
            if cond(st):
                return st
    raise AssertionError("the feed closed")


async def more_polls(host: FakeHost, n: int, limit: float = 10.0) -> None:
    """Wait until the unit made n more status calls."""
    target = host.calls.count("status") + n
    async with asyncio.timeout(limit):
        while host.calls.count("status") < target:
            host.called.clear()
            await host.called.wait()


@pytest.fixture
async def running_unit() -> Any:
    units: list[RcdUnit] = []

    async def make(host: FakeHost, store: StateStore | None = None, **over: Any) -> RcdUnit:
        unit = FakeRcdUnit(host, store, **over)
        units.append(unit)
        tasks.append(asyncio.create_task(unit.run()))
        await unit.ready.wait()
        return unit

    tasks: list[asyncio.Task[None]] = []
    yield make
    for unit in units:
        await unit.shutdown()
    await asyncio.gather(*tasks)


@pytest.mark.parametrize("restart", ["always", "on-failure"])
async def test_unit_restarts_a_dead_service_with_unknown_status(running_unit: Any,
                                                               restart: str) -> None:
    host = FakeHost()
    unit = await running_unit(host, restart=restart)
    st = await unit.start()
    assert st.state == State.RUNNING and st.pid == 101
    host.crash()
    st = await until(unit, lambda s: s.restarts == 1 and s.state == State.RUNNING)
    assert st.pid == 102 and host.starts() == 2


async def test_unit_never_leaves_it_exited(running_unit: Any) -> None:
    host = FakeHost()
    unit = await running_unit(host, restart="never")
    await unit.start()
    host.crash()
    st = await until(unit, lambda s: s.state == State.EXITED)
    assert "exited (status unknown)" in st.message
    await more_polls(host, 3)  # more polls change nothing
    assert unit.status().state == State.EXITED and host.starts() == 1


async def test_unit_crash_loop_is_fatal_until_a_manual_start(running_unit: Any) -> None:
    host = FakeHost()
    host.dying_starts = 100
    unit = await running_unit(host)
    with pytest.raises(ServiceFailed):
        await unit.start()
    st = await until(unit, lambda s: s.state == State.FATAL)
    assert st.message.startswith("crash loop: 4 failed starts in a row; last: ")
    assert host.starts() == 4  # the manual start, then 3 automatic ones
    # the manual start clears FATAL and starts it
    host.dying_starts = 0
    st = await unit.start()
    assert st.state == State.RUNNING and "crash loop" not in st.message
    # and the history: the next crash restarts at once again, without a backoff
    seen: list[State] = []

    def restarted(s: ServiceStatus) -> bool:
        seen.append(s.state)
        return s.state == State.RUNNING and s.restarts == 4

    host.crash()
    await until(unit, restarted)
    assert State.BACKOFF not in seen


async def test_unit_backs_off_from_the_second_failure(running_unit: Any) -> None:
    """A crash restarts at once; that start failing is the first failed start, also
    retried at once; the second failed start backs off (with jitter)."""
    host = FakeHost()
    unit = await running_unit(host)
    await unit.start()
    host.dying_starts = 2
    host.crash()
    st = await until(unit, lambda s: s.state == State.BACKOFF)
    delay = float(st.message.rsplit("retrying in ", 1)[1].rstrip("s"))
    assert 0.025 <= delay <= 0.075  # backoff_initial 0.05 +/- 50 %
    assert "failed to restart" in st.message and st.restarts == 2
    st = await until(unit, lambda s: s.state == State.RUNNING)
    assert st.restarts == 3 and host.starts() == 4


async def test_unit_stop_during_backoff_wins(running_unit: Any) -> None:
    host = FakeHost()
    unit = await running_unit(host, backoff_initial=5.0, backoff_max=5.0)
    await unit.start()
    host.dying_starts = 2
    host.crash()
    await until(unit, lambda s: s.state == State.BACKOFF)
    st = await unit.stop()
    assert st.state == State.STOPPED
    starts = host.starts()
    await more_polls(host, 3)
    assert host.starts() == starts and unit.status().state == State.STOPPED


async def test_unit_restarts_what_died_while_the_manager_was_down(
        running_unit: Any, tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    try:
        store.save_service(ServiceRecord("svc", desired="running"))
        host = FakeHost()
        with capture_logs() as logs:
            unit = await running_unit(host, store)
            st = await until(unit, lambda s: s.state == State.RUNNING)
        assert st.restarts == 1 and host.calls[:2] == ["status", "start"]
        restart = [e for e in logs if e["event"] == "rcd.auto_restart"]
        assert restart[0]["reason"] == "exited while the manager was down: svc is not running"
    finally:
        store.close()


async def test_unit_is_ready_only_after_its_first_observation() -> None:
    host = FakeHost()
    host.running = True
    host.status_gate = asyncio.Event()
    unit = FakeRcdUnit(host)
    task = asyncio.create_task(unit.run())
    try:
        async with asyncio.timeout(10):
            await host.called.wait()
        assert not unit.ready.is_set()
        assert unit.status().message == "not observed yet"
        host.status_gate.set()
        async with asyncio.timeout(10):
            await unit.ready.wait()
        st = unit.status()
        assert (st.state, st.pid) == (State.RUNNING, 100)
    finally:
        await unit.shutdown()
        await task


async def test_a_failed_first_observation_still_makes_the_unit_ready() -> None:
    unit = RcdUnit(rcd_config(rc_script="/nonexistent/rc.svc"))  # the real script call
    task = asyncio.create_task(unit.run())
    try:
        async with asyncio.timeout(10):
            await unit.ready.wait()
        assert "rc script '/nonexistent/rc.svc' not found" in unit.status().message
    finally:
        await unit.shutdown()
        await task


async def test_wait_ready_names_the_unit_that_is_late() -> None:
    class Unit:
        def __init__(self, name: str, ready: bool) -> None:
            self.name = name
            self.ready = asyncio.Event()
            if ready:
                self.ready.set()

    units: Any = {"a": Unit("a", True), "slow": Unit("slow", False)}
    with pytest.raises(Unavailable, match=r"services not ready within 0\.05s: 'slow'"):
        await wait_ready(units, None, 0.05)
    units["slow"].ready.set()
    await wait_ready(units, None, 0.05)
