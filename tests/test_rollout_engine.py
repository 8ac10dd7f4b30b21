"""The rollout state machine and wave planning, driven with plain values (no I/O)."""

from __future__ import annotations

import pytest

from backendai.errors import FailedPrecondition, InvalidArgument
from hub import rollout_engine as E
from hub.rollout_plan import make_strategy, plan_waves, resolve

HOSTS = [f"h{i:02d}" for i in range(10)]


def start(hosts=HOSTS, now=1000.0, hub=None, **strategy):
    s = make_strategy(**strategy)
    plan = plan_waves(hosts, s, seed=7, hub=hub)
    r, notes = E.new_rollout(rollout_id="r1", version="2.0", service="", strategy=s,
                             plan=plan, now=now, include_hub=bool(hub))
    r, more, actions = E.transition(r, E.Tick(), now)
    return r, notes + more, actions


def updates(actions):
    return sorted(a.host for a in actions if isinstance(a, E.UpdateHost))


class Fleet:
    """Drives the engine like the shell would, answering actions from a fake fleet."""

    def __init__(self, r, versions=None, fail=(), now=1000.0):
        self.r = r
        self.now = now
        self.versions = dict(versions or dict.fromkeys(r.hosts, "1.0"))
        self.fail = set(fail)
        self.notes = []
        self.update_calls: list[str] = []
        self.rollback_calls: list[str] = []
        self.previous: dict[str, str] = {}  # the managers' previous release

    def feed(self, event):
        self.r, notes, actions = E.transition(self.r, event, self.now)
        self.notes += notes
        return actions

    def obs(self):
        return E.Tick({h: E.Observation(True, True, v) for h, v in self.versions.items()})

    def run(self, actions, max_steps=1000):
        """Answer every action at once: update succeeds unless the host is in `fail`."""
        queue = list(actions)
        for _ in range(max_steps):
            if not queue:
                self.now += 1
                queue += self.feed(self.obs())
                if not queue and (self.r.state in E.TERMINAL
                                  or self.r.state == E.RolloutState.WAITING):
                    return
                continue
            a = queue.pop(0)
            if isinstance(a, E.UpdateHost):
                self.update_calls.append(a.host)
                queue += self.feed(E.UpdateAccepted(a.host, "op-" + a.host,
                                                    self.versions[a.host]))
                if a.host in self.fail:
                    queue += self.feed(E.OperationFinished(a.host, "op-" + a.host,
                                                           "rolled_back", "health gate"))
                else:
                    self.previous[a.host] = self.versions[a.host]
                    self.versions[a.host] = a.version
                    queue += self.feed(E.OperationFinished(a.host, "op-" + a.host,
                                                           "succeeded"))
            elif isinstance(a, E.ReconcileHost):  # before a rollback: where would it go?
                queue += self.feed(E.Reconciled(a.host, E.ManagerReport(
                    self.versions[a.host], "", "", "", "",
                    previous=self.previous.get(a.host, ""))))
            elif isinstance(a, E.RollbackHost):
                self.rollback_calls.append(a.host)
                self.versions[a.host] = "1.0"
                queue += self.feed(E.RollbackAccepted(a.host, "rb-" + a.host, "1.0"))
                queue += self.feed(E.OperationFinished(a.host, "rb-" + a.host, "succeeded"))
        raise AssertionError("did not settle")


# ------------------------------------------------------------------ planning

def test_default_waves_canary_then_percentages():
    s = make_strategy()
    plan = plan_waves(HOSTS, s, seed=1)
    assert plan.specs == ("1", "10%", "50%", "100%")[: len(plan.waves)] or plan.specs
    assert [len(w) for w in plan.waves] == [1, 4, 5]  # 10% of 10 = 1 already reached
    assert sorted(plan.hosts) == HOSTS


def test_plan_is_fixed_by_seed():
    s = make_strategy(waves=["2", "50%"])
    assert plan_waves(HOSTS, s, seed=5) == plan_waves(list(reversed(HOSTS)), s, seed=5)
    assert plan_waves(HOSTS, s, seed=5).waves != plan_waves(HOSTS, s, seed=6).waves


def test_last_wave_extends_to_all_and_hub_first():
    s = make_strategy(waves=["1", "30%"])
    plan = plan_waves([*HOSTS, "hub"], s, seed=3, hub="hub")
    assert plan.waves[0] == ("hub",)
    assert plan.specs[0] == "hub"
    assert sum(len(w) for w in plan.waves[1:]) == 10


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "101%", "1/2", "", "5%%", "1e9", " ", "x" * 500])
def test_bad_wave_specs_are_rejected(bad):
    with pytest.raises(InvalidArgument, match=r"strategy\.waves"):
        make_strategy(waves=[bad])


@pytest.mark.parametrize(("field", "value"), [
    ("min_healthy_seconds", -1.0), ("healthy_deadline_seconds", float("nan")),
    ("step_deadline_seconds", 1e12), ("pause_seconds", float("inf"))])
def test_bad_durations_are_rejected(field, value):
    with pytest.raises(InvalidArgument, match=field):
        make_strategy(**{field: value})


def test_bad_budgets_and_too_many_waves():
    with pytest.raises(InvalidArgument, match="max_failures_per_wave"):
        make_strategy(max_failures_per_wave="lots")
    with pytest.raises(InvalidArgument, match="at most"):
        make_strategy(waves=["1"] * 101)


def test_resolve_rounds_percentages_up():
    assert resolve("10%", 5) == 1
    assert resolve("50%", 5) == 3
    assert resolve("7", 5) == 5


# ------------------------------------------------------------------ running

def test_canary_first_then_waves_until_success():
    r, notes, actions = start(waves=["1", "50%"])
    assert len(updates(actions)) == 1  # only the canary starts
    canary = updates(actions)[0]
    assert r.hosts[canary].wave == 0
    fleet = Fleet(r)
    fleet.run(actions)
    assert fleet.r.state == E.RolloutState.SUCCEEDED
    assert sorted(fleet.update_calls) == HOSTS  # every host exactly once
    c = E.counts(fleet.r)
    assert c.succeeded == 10 and c.failed == 0
    assert fleet.notes[-1].final
    assert [n.index for n in notes + fleet.notes] == list(range(len(notes + fleet.notes)))


def test_max_parallel_limits_hosts_in_flight():
    r, _, actions = start(waves=["100%"], max_parallel=3)
    assert len(updates(actions)) == 3
    fleet = Fleet(r)
    fleet.run(actions)
    assert fleet.r.state == E.RolloutState.SUCCEEDED


def test_canary_failing_health_gate_halts_and_touches_nothing_else():
    r, _, actions = start(waves=["1", "50%"])
    canary = updates(actions)[0]
    fleet = Fleet(r, fail={canary})
    fleet.run(actions)
    assert fleet.r.state == E.RolloutState.ROLLED_BACK
    assert fleet.update_calls == [canary]
    assert fleet.rollback_calls == []  # the manager rolled the canary back itself
    c = E.counts(fleet.r)
    assert (c.rolled_back, c.skipped) == (1, 9)
    assert "budget" in fleet.r.message


def test_budget_hit_in_later_wave_rolls_back_moved_hosts_only():
    r, _, actions = start(waves=["1", "3", "100%"], max_failures_per_wave="1")
    last_wave = [h.name for h in r.hosts.values() if h.wave == 2]
    fleet = Fleet(r, fail=set(last_wave[:2]))
    fleet.run(actions)
    assert fleet.r.state == E.RolloutState.ROLLED_BACK
    moved = {h for h in fleet.update_calls if h not in fleet.fail}
    assert set(fleet.rollback_calls) == moved
    assert all(v == "1.0" for v in fleet.versions.values())


def test_failures_within_budget_finish_but_not_successful():
    r, _, actions = start(waves=["100%"], max_failures_per_wave="2", max_failures_total="2")
    fleet = Fleet(r, fail={"h03"})
    fleet.run(actions)
    assert fleet.r.state == E.RolloutState.FAILED
    assert "1 of 10 hosts are not on 2.0" in fleet.r.message
    actions = fleet.feed(E.Control("retry_failed"))
    fleet.fail.clear()
    assert updates(actions) == ["h03"]
    fleet.run(actions)
    assert fleet.r.state == E.RolloutState.SUCCEEDED
    assert fleet.update_calls.count("h03") == 2


def test_no_auto_rollback_leaves_hosts_and_fails():
    r, _, actions = start(waves=["2", "100%"], auto_rollback=False)
    second = [h.name for h in r.hosts.values() if h.wave == 1]
    fleet = Fleet(r, fail={second[0]})
    fleet.run(actions)
    assert fleet.r.state == E.RolloutState.FAILED
    assert fleet.rollback_calls == []


def test_step_deadline_turns_a_hung_host_into_a_failure():
    r, _, actions = start(waves=["100%"], step_deadline_seconds=30, max_failures_total="1",
                          max_failures_per_wave="1", max_parallel=1)
    hung = updates(actions)[0]
    r, _, acts = E.transition(r, E.UpdateAccepted(hung, "op1", "1.0"), 1001)
    r, _, acts = E.transition(r, E.Tick(), 1029)
    assert r.hosts[hung].state == E.HostState.UPDATING
    r, notes, acts = E.transition(r, E.Tick(), 1031)
    assert r.hosts[hung].state == E.HostState.FAILED
    assert E.CancelHost(hung) in acts
    assert any("deadline" in n.message for n in notes)
    assert len(updates(acts)) == 1  # the next host starts; the rollout is not stuck
    # a late answer from the hung host changes nothing
    r2, _, _ = E.transition(r, E.OperationFinished(hung, "op1", "succeeded"), 1040)
    assert r2.hosts[hung].state == E.HostState.FAILED


def test_unreachable_counted_separately():
    r, _, actions = start(waves=["100%"], max_failures_per_wave="10", max_failures_total="10")
    h = updates(actions)[0]
    r, _, _ = E.transition(r, E.CallFailed(h, unreachable=True, message="connection refused"),
                           1001)
    assert r.hosts[h].state == E.HostState.UNREACHABLE
    assert E.counts(r).unreachable == 1


def test_verifying_needs_min_healthy_time_and_target_version():
    r, _, _actions = start(waves=["100%"], hosts=["a"], min_healthy_seconds=10,
                          healthy_deadline_seconds=60)
    r, _, _ = E.transition(r, E.UpdateAccepted("a", "op", "1.0"), 1000)
    r, _, _ = E.transition(r, E.OperationFinished("a", "op", "succeeded"), 1001)
    wrong = E.Tick({"a": E.Observation(True, True, "1.0")})
    right = E.Tick({"a": E.Observation(True, True, "2.0")})
    r, _, _ = E.transition(r, wrong, 1002)
    r, _, _ = E.transition(r, right, 1003)
    r, _, _ = E.transition(r, right, 1012)
    assert r.hosts["a"].state == E.HostState.VERIFYING
    r, _, _ = E.transition(r, right, 1013)
    assert r.hosts["a"].state == E.HostState.SUCCEEDED
    assert r.state == E.RolloutState.SUCCEEDED


def test_wrong_version_after_update_fails_at_healthy_deadline():
    r, _, _ = start(waves=["100%"], hosts=["a"], healthy_deadline_seconds=20,
                    max_failures_per_wave="1", max_failures_total="1")
    r, _, _ = E.transition(r, E.UpdateAccepted("a", "op", "1.0"), 1000)
    r, _, _ = E.transition(r, E.OperationFinished("a", "op", "succeeded"), 1001)
    r, _, _ = E.transition(r, E.Tick({"a": E.Observation(True, True, "1.9")}), 1022)
    assert r.hosts["a"].state == E.HostState.FAILED
    assert "running 1.9" in r.hosts["a"].message


def test_already_on_version_is_not_moved_and_not_rolled_back():
    r, _, _actions = start(waves=["100%"], hosts=["a", "b"], max_failures_total="0")
    r, _, _ = E.transition(r, E.UpdateAccepted("a", "", "2.0"), 1000)
    assert r.hosts["a"].state == E.HostState.VERIFYING and not r.hosts["a"].moved


def test_pause_resume_promote_abort():
    r, _, actions = start(waves=["1", "3", "100%"], pause_until_promote=True)
    fleet = Fleet(r)
    fleet.run(actions)
    assert fleet.r.state == E.RolloutState.WAITING and fleet.r.awaiting_promote
    with pytest.raises(FailedPrecondition):
        fleet.feed(E.Control("resume"))
    fleet.feed(E.Control("pause"))
    assert fleet.r.state == E.RolloutState.PAUSED
    with pytest.raises(FailedPrecondition):
        fleet.feed(E.Control("promote"))
    fleet.feed(E.Control("resume"))
    assert fleet.r.state == E.RolloutState.WAITING
    actions = fleet.feed(E.Control("promote"))
    assert len(updates(actions)) == 2
    # abort while the second wave is in flight: pending hosts skipped, in-flight finish
    fleet.feed(E.Control("abort", "operator"))
    assert fleet.r.state == E.RolloutState.ABORTING
    fleet.run(actions)
    assert fleet.r.state == E.RolloutState.ABORTED
    c = E.counts(fleet.r)
    assert (c.succeeded, c.skipped) == (3, 7)
    with pytest.raises(FailedPrecondition):
        fleet.feed(E.Control("pause"))


def test_timed_pause_between_waves():
    r, _, actions = start(waves=["1", "100%"], pause_seconds=30)
    fleet = Fleet(r)
    fleet.run(actions)
    assert fleet.r.state == E.RolloutState.WAITING
    assert fleet.r.resume_at == pytest.approx(fleet.now + 30, abs=2)
    fleet.now = fleet.r.resume_at
    actions = fleet.feed(fleet.obs())
    assert len(updates(actions)) == 9


def test_recover_reconciles_instead_of_reissuing():
    r, _, _actions = start(waves=["100%"], hosts=["a", "b", "c", "d"])
    r, _, _ = E.transition(r, E.UpdateAccepted("a", "op-a", "1.0"), 1001)
    r, _, _ = E.transition(r, E.UpdateAccepted("b", "op-b", "1.0"), 1001)
    r, _, _ = E.transition(r, E.UpdateAccepted("d", "op-d", "1.0"), 1001)
    # "c": persisted as UPDATING, but the hub died before Update reached the manager
    r, _, acts = E.transition(r, E.Recover(), 1002)
    assert sorted(a.host for a in acts if isinstance(a, E.ReconcileHost)) == ["a", "b", "c", "d"]
    r, _, acts = E.transition(r, E.Reconciled("a", E.ManagerReport("1.0", "op-a", "", "", "")),
                              1003)
    assert acts == [E.WatchOperation("a", "op-a")]
    r, _, acts = E.transition(r, E.Reconciled(
        "b", E.ManagerReport("2.0", "", "op-b", "succeeded", "2.0")), 1003)
    assert acts == [] and r.hosts["b"].state == E.HostState.VERIFYING and r.hosts["b"].moved
    r, _, acts = E.transition(r, E.Reconciled("c", E.ManagerReport("1.0", "", "", "", "")), 1003)
    assert acts == [E.UpdateHost("c", "2.0", "")]
    r, _, acts = E.transition(r, E.Reconciled(
        "d", E.ManagerReport("1.0", "", "op-d", "rolled_back", "2.0")), 1003)
    assert r.hosts["d"].state == E.HostState.ROLLED_BACK and r.hosts["d"].failed


def test_hub_wave_first_and_hub_not_rolled_back():
    r, _, actions = start(hosts=[*HOSTS[:3], "hub"], hub="hub", waves=["1", "100%"])
    assert r.state == E.RolloutState.UPDATING_HUB
    assert updates(actions) == ["hub"]
    fleet = Fleet(r, fail={h for h in HOSTS[:3] if r.hosts[h].wave == 2})
    fleet.run(actions)
    assert fleet.update_calls[0] == "hub"
    assert "hub" not in fleet.rollback_calls


def test_bad_control_and_unknown_hosts_change_nothing():
    r, _, _ = start(hosts=["a"], waves=["1"])
    with pytest.raises(FailedPrecondition):
        E.transition(r, E.Control("promote"), 1001)
    with pytest.raises(FailedPrecondition):
        E.transition(r, E.Control("retry_failed"), 1001)
    with pytest.raises(FailedPrecondition):
        E.transition(r, E.Control("explode"), 1001)
    r2, _notes, acts = E.transition(r, E.OperationFinished("nope", "x", "succeeded"), 1001)
    assert r2.hosts == r.hosts and acts == []


def test_a_batch_of_events_ends_where_one_at_a_time_does():
    r, _, actions = start(waves=["1", "100%"], hosts=["a", "b", "c"])
    canary = updates(actions)[0]
    events = [E.UpdateAccepted(canary, "op", "1.0"), E.OperationStep(canary, "op", "stop", "ok"),
              E.OperationFinished(canary, "op", "succeeded"),
              E.Tick({canary: E.Observation(True, True, "2.0")})]
    one = r
    acts_one = []
    for ev in events:
        one, _, acts = E.transition(one, ev, 1001)
        acts_one += acts
    batch, notes, acts_batch = E.transition_batch(r, events, 1001)
    assert batch.hosts == one.hosts and batch.state == one.state
    assert sorted(updates(acts_batch)) == sorted(updates(acts_one)) == sorted(
        {"a", "b", "c"} - {canary})
    assert [n.index for n in notes] == list(range(r.next_event, batch.next_event))
    with pytest.raises(TypeError):
        E.transition_batch(r, [E.Control("pause")], 1001)


def test_unreachable_host_when_manager_lost_past_the_deadline():
    r, _, _actions = start(waves=["100%"], hosts=["a"], step_deadline_seconds=20)
    r, _, _ = E.transition(r, E.UpdateAccepted("a", "op", "1.0"), 1001)
    r, _, acts = E.transition(r, E.ConnectionLost("a", "UNAVAILABLE"), 1002)
    assert acts == [E.ReconcileHost("a", "")]
    r, _, acts = E.transition(r, E.Tick(), 1021)
    assert r.hosts["a"].state == E.HostState.UNREACHABLE and E.CancelHost("a") in acts
    assert r.state == E.RolloutState.ROLLED_BACK  # budget 0: halted, nothing had moved


def test_a_failed_rollback_ends_failed_and_is_counted():
    r, _, actions = start(waves=["1", "100%"], hosts=["a", "b", "c"], max_failures_total="0")
    canary = updates(actions)[0]
    r, _, _ = E.transition(r, E.UpdateAccepted(canary, "op", "1.0"), 1001)
    r, _, _ = E.transition(r, E.OperationFinished(canary, "op", "succeeded"), 1002)
    r, _, acts = E.transition(r, E.Tick({canary: E.Observation(True, True, "2.0")}), 1003)
    others = updates(acts)
    assert len(others) == 2
    r, _, _ = E.transition(r, E.UpdateAccepted(others[0], "op1", "1.0"), 1004)
    r, _, _ = E.transition(r, E.OperationFinished(others[0], "op1", "succeeded"), 1005)
    r, notes, acts = E.transition(r, E.CallFailed(others[1], False, "FAILED_PRECONDITION"), 1005)
    assert r.state == E.RolloutState.HALTING  # others[0] is still being verified
    kinds = [n.kind for n in notes]
    assert kinds[-1] == "rollout.halting" and "host.failed" in kinds
    r, _, acts = E.transition(r, E.Tick({others[0]: E.Observation(True, True, "2.0")}), 1006)
    assert r.state == E.RolloutState.ROLLING_BACK
    # each manager is asked first where its rollback would go, then sent back
    assert sorted(a.host for a in acts if isinstance(a, E.ReconcileHost)) == sorted(
        [canary, others[0]])
    rollbacks = []
    for host in (canary, others[0]):
        r, _, acts = E.transition(r, E.Reconciled(host, E.ManagerReport(
            "2.0", "", "op", "succeeded", "2.0", previous="1.0")), 1006)
        rollbacks += [a.host for a in acts if isinstance(a, E.RollbackHost)]
    assert sorted(rollbacks) == sorted([canary, others[0]])
    r, _, _ = E.transition(r, E.RollbackAccepted(canary, "rb1", "1.0"), 1007)
    r, _, _ = E.transition(r, E.OperationFinished(canary, "rb1", "succeeded"), 1008)
    r, _, _ = E.transition(r, E.CallFailed(others[0], True, "UNAVAILABLE"), 1008)
    assert r.state == E.RolloutState.FAILED
    c = E.counts(r)
    assert (c.rolled_back, c.rollback_failed, c.failed) == (1, 1, 1)
    assert "failed to roll back" in r.message
    with pytest.raises(FailedPrecondition):
        E.transition(r, E.Control("abort"), 1009)


def test_reattached_watch_skips_the_steps_already_recorded():
    r, _, _ = start(waves=["100%"], hosts=["a"])
    r, _, _ = E.transition(r, E.UpdateAccepted("a", "op", "1.0"), 1001)
    for st in ("download", "verify"):
        r, _, _ = E.transition(r, E.OperationStep("a", "op", st, "ok"), 1002)
    r, _, acts = E.transition(r, E.Recover(), 1003)
    r, _, acts = E.transition(r, E.Reconciled("a", E.ManagerReport("1.0", "op", "", "", "")),
                              1004)
    assert acts == [E.WatchOperation("a", "op", skip=2)]
    r2, _, acts = E.transition(r, E.Reconciled("a", E.ManagerReport("1.0", "other", "", "",
                                                                     "")), 1004)
    # someone else's operation is never adopted: the host waits for it to end
    assert acts == [E.AwaitOperation("a", "other")]
    assert r2.hosts["a"].waiting_for == "other" and r2.hosts["a"].operation_id == "op"


def test_host_that_updated_but_failed_health_is_rolled_back_too():
    r, _, actions = start(waves=["1", "100%"], hosts=["a", "b"], healthy_deadline_seconds=10)
    canary = updates(actions)[0]
    r, _, _ = E.transition(r, E.UpdateAccepted(canary, "op", "1.0"), 1001)
    r, _, _ = E.transition(r, E.OperationFinished(canary, "op", "succeeded"), 1002)
    crash = E.Tick({canary: E.Observation(True, False, "2.0")})  # crash-looping on 2.0
    r, _, acts = E.transition(r, crash, 1013)
    assert r.hosts[canary].state == E.HostState.ROLLING_BACK
    assert acts == [E.ReconcileHost(canary, "")]  # where would its rollback go?
    r, _, acts = E.transition(r, E.Reconciled(canary, E.ManagerReport(
        "2.0", "", "op", "succeeded", "2.0", previous="1.0")), 1013)
    assert acts == [E.RollbackHost(canary, "")]
    r, _, _ = E.transition(r, E.RollbackAccepted(canary, "rb", "1.0"), 1014)
    r, _, _ = E.transition(r, E.CallFailed(canary, False, "no previous release"), 1015)
    assert r.state == E.RolloutState.FAILED  # its rollback failed: not ROLLED_BACK
    assert "failed to roll back" in r.message


def test_retried_host_keeps_what_it_moved_from():
    r, _, _actions = start(waves=["100%"], hosts=["a"], healthy_deadline_seconds=10,
                          auto_rollback=False)
    r, _, _ = E.transition(r, E.UpdateAccepted("a", "op", "1.0"), 1001)
    r, _, _ = E.transition(r, E.OperationFinished("a", "op", "succeeded"), 1002)
    r, _, _ = E.transition(r, E.Tick({"a": E.Observation(True, False, "2.0")}), 1013)
    assert r.state == E.RolloutState.FAILED and r.hosts["a"].moved
    r, _, _acts = E.transition(r, E.Control("retry_failed"), 1020)
    r, _, _ = E.transition(r, E.UpdateAccepted("a", "", "2.0"), 1021)  # already on 2.0
    assert r.hosts["a"].moved and r.hosts["a"].from_version == "1.0"


# ------------------------------------------------------------------ why a host failed

def test_a_rolled_back_host_says_which_step_failed_and_the_managers_words():
    r, _, actions = start(waves=["1", "100%"], hosts=["a", "b"])
    canary = updates(actions)[0]
    r, _, _ = E.transition(r, E.UpdateAccepted(canary, "op", "1.0"), 1001)
    for st, status, msg in (("download", "ok", ""), ("health", "started", ""),
                            ("health", "failed", "http://127.0.0.1:9/health: 503"),
                            ("rollback_start", "failed", "exec format error")):
        r, _, _ = E.transition(r, E.OperationStep(canary, "op", st, status, msg), 1002)
    final = ("health failed: http://127.0.0.1:9/health: 503; rolled back to version 1.0")
    r, _, _ = E.transition(r, E.OperationFinished(canary, "op", "rolled_back", final), 1003)
    h = r.hosts[canary]
    assert h.state == E.HostState.ROLLED_BACK
    assert h.failed_step == "health"  # the first step that failed, not the rollback's
    assert h.reason == final
    skipped = next(x for x in r.hosts.values() if x.name != canary)
    assert skipped.state == E.HostState.SKIPPED and not skipped.reason


def test_hub_side_failures_name_their_step_and_retry_clears_them():
    r, _, actions = start(waves=["100%"], hosts=["a", "b", "c", "d"], step_deadline_seconds=30,
                          healthy_deadline_seconds=10, max_failures_per_wave="4",
                          max_failures_total="4")
    assert updates(actions) == ["a", "b", "c", "d"]
    r, _, _ = E.transition(r, E.CallFailed("a", True, "UNAVAILABLE: connection refused"), 1001)
    assert (r.hosts["a"].failed_step, r.hosts["a"].reason) == (
        "update request", "UNAVAILABLE: connection refused")
    r, _, _ = E.transition(r, E.UpdateAccepted("b", "op-b", "1.0"), 1001)
    r, _, _ = E.transition(r, E.OperationStep("b", "op-b", "download", "started"), 1002)
    r, _, _ = E.transition(r, E.UpdateAccepted("c", "op-c", "1.0"), 1001)
    r, _, _ = E.transition(r, E.OperationFinished("c", "op-c", "succeeded"), 1002)
    r, _, _ = E.transition(r, E.UpdateAccepted("d", "op-d", "1.0"), 1001)
    r, _, _ = E.transition(r, E.OperationStep("d", "op-d", "verify", "failed",
                                              "checksum mismatch"), 1002)
    r, _, _ = E.transition(r, E.OperationFinished("d", "op-d", "failed",
                                                  "verify failed: checksum mismatch"), 1003)
    r, _, _ = E.transition(r, E.Tick({"c": E.Observation(True, False, "2.0")}), 1031)
    b, c, d = r.hosts["b"], r.hosts["c"], r.hosts["d"]
    assert b.state == E.HostState.FAILED and b.failed_step == "download"
    assert "step deadline of 30s exceeded at download" in b.reason
    assert c.state == E.HostState.FAILED and c.failed_step == "health gate"
    assert "not healthy on 2.0 within 10s (not running)" in c.reason
    assert d.state == E.HostState.FAILED and d.failed_step == "verify"
    assert d.reason == "verify failed: checksum mismatch"
    assert r.state == E.RolloutState.FAILED
    r, _, _ = E.transition(r, E.Control("retry_failed"), 1040)
    assert all(not h.failed_step and not h.reason for h in r.hosts.values()
               if h.state == E.HostState.UPDATING)


def test_hosts_the_rollout_sends_back_say_why():
    r, _, actions = start(waves=["1", "100%"], hosts=["a", "b"])
    canary = updates(actions)[0]
    other = "b" if canary == "a" else "a"
    r, _, _ = E.transition(r, E.UpdateAccepted(canary, "op", "1.0"), 1001)
    r, _, _ = E.transition(r, E.OperationFinished(canary, "op", "succeeded"), 1002)
    r, _, _ = E.transition(r, E.Tick({canary: E.Observation(True, True, "2.0")}), 1003)
    r, _, _ = E.transition(r, E.CallFailed(other, False, "FAILED_PRECONDITION: busy"), 1004)
    assert r.state == E.RolloutState.ROLLING_BACK
    r, _, _ = E.transition(r, E.RollbackAccepted(canary, "rb", "1.0"), 1005)
    r, _, _ = E.transition(r, E.OperationFinished(canary, "rb", "succeeded"), 1006)
    h = r.hosts[canary]
    assert h.state == E.HostState.ROLLED_BACK
    assert "halted" in h.reason and "sent back to 1.0" in h.reason


def test_reconciled_outcome_keeps_the_managers_message():
    r, _, _ = start(waves=["100%"], hosts=["a"])
    r, _, _ = E.transition(r, E.UpdateAccepted("a", "op", "1.0"), 1001)
    r, _, _ = E.transition(r, E.Recover(), 1002)
    report = E.ManagerReport("1.0", "", "op", "rolled_back", "2.0",
                             last_message="start failed: exit 1; rolled back to version 1.0")
    r, _, _ = E.transition(r, E.Reconciled("a", report), 1003)
    assert r.hosts["a"].state == E.HostState.ROLLED_BACK
    assert r.hosts["a"].reason == "start failed: exit 1; rolled back to version 1.0"
