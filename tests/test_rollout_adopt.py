"""A rollout never takes over an operation it did not start (issue 11, item 2), and a
stopped service's host is skipped (issue 15, item 7): the pure state machine, driven with
plain values.

The hub records the origin it sends with each Update and Rollback before issuing it;
it adopts an operation only by the recorded operation id or origin; a host running
someone else's operation waits for it (bounded by the step deadline); a rollback goes
only to the from_version recorded before the hub's own update."""

from __future__ import annotations

from hub import rollout_adopt as A
from hub import rollout_engine as E
from hub.rollout_plan import make_strategy, plan_waves

T0 = 1000.0


def start(hosts=("a",), issuer="hub:hub-1", start_stopped=False, **strategy):
    strategy.setdefault("waves", ["100%"])
    s = make_strategy(**strategy)
    r, _ = E.new_rollout(rollout_id="r1", version="2.0", service="", strategy=s,
                         plan=plan_waves(list(hosts), s, seed=7), now=T0, issuer=issuer,
                         start_stopped=start_stopped)
    r, notes, actions = E.transition(r, E.Tick(), T0)
    return r, notes, actions


def report(version="1.0", running="", running_origin="", running_version="", last="",
           last_outcome="", last_version="", last_origin="", **kw):
    return E.ManagerReport(version, running, last, last_outcome, last_version,
                           running_origin=running_origin, running_version=running_version,
                           last_origin=last_origin, **kw)


def test_origin_recorded_with_the_state_that_issues_the_update():
    r, _notes, actions = start(hosts=("a", "b"))
    assert sorted(a.host for a in actions if isinstance(a, E.UpdateHost)) == ["a", "b"]
    for name in ("a", "b"):
        h = r.hosts[name]
        assert h.state == E.HostState.UPDATING
        assert h.origin == f"hub:hub-1/rollout/r1/host/{name}/attempt/1"
    assert len(E.origin(r, "x" * 64, "attempt", 10**6)) <= 200


def test_an_operators_update_to_the_same_version_is_waited_for_not_adopted():
    r, _, _ = start()
    # the shell's Status before Update: an operator's update is running
    r, notes, acts = E.transition(r, E.Reconciled("a", report(
        running="op-x", running_version="2.0", running_step="download")), T0 + 1)
    assert acts == [E.AwaitOperation("a", "op-x")]
    h = r.hosts["a"]
    assert h.state == E.HostState.UPDATING and h.operation_id == "" and h.waiting_for == "op-x"
    assert notes[-1].kind == "host.waiting"
    assert "op-x" in notes[-1].message and "did not start" in notes[-1].message
    assert "an operator" in notes[-1].message
    # its watch reports it again while it runs: still waiting, nothing issued
    r, notes, acts = E.transition(r, E.Reconciled("a", report(
        running="op-x", running_version="2.0")), T0 + 2)
    assert acts == [E.AwaitOperation("a", "op-x")] and notes == []
    r, _, acts = E.transition(r, E.OperationEnded("a", "op-x", "succeeded"), T0 + 3)
    assert acts == [E.ReconcileHost("a", "")]
    r, _, acts = E.transition(r, E.Reconciled("a", report(
        version="2.0", last="op-x", last_outcome="succeeded", last_version="2.0")), T0 + 4)
    h = r.hosts["a"]
    assert acts == [] and h.state == E.HostState.VERIFYING
    assert h.operation_id == "" and not h.moved  # the operator moved it, not this rollout
    r, _, _ = E.transition(r, E.Tick({"a": E.Observation(True, True, "2.0")}), T0 + 5)
    assert r.state == E.RolloutState.SUCCEEDED


def test_an_update_to_another_version_is_waited_for_then_the_hub_updates_from_it():
    r, _, _ = start()
    r, _, acts = E.transition(r, E.Reconciled("a", report(
        running="op-x", running_origin="deploy-bot", running_version="1.5")), T0 + 1)
    assert acts == [E.AwaitOperation("a", "op-x")]
    assert "deploy-bot" in r.hosts["a"].message
    # whose it is, for the dashboard's row (hub/json_views.py `waiting`)
    assert (r.hosts["a"].waiting_for, r.hosts["a"].waiting_origin) == ("op-x", "deploy-bot")
    r, _, acts = E.transition(r, E.OperationEnded("a", "op-x", "succeeded"), T0 + 2)
    r, _, acts = E.transition(r, E.Reconciled("a", report(
        version="1.5", last="op-x", last_outcome="succeeded", last_version="1.5",
        last_origin="deploy-bot")), T0 + 3)
    assert acts == [E.UpdateHost("a", "2.0", "")]  # not adopted: its own update now
    r, _, acts = E.transition(r, E.UpdateAccepted("a", "op-h", "1.5"), T0 + 4)
    h = r.hosts["a"]
    assert (h.operation_id, h.from_version, h.waiting_for) == ("op-h", "1.5", "")
    assert h.waiting_origin == ""  # no longer waiting: no foreign origin either


def test_a_foreign_operation_past_the_step_deadline_fails_the_host_naming_it():
    r, _, _ = start(step_deadline_seconds=30, max_failures_per_wave="1",
                    max_failures_total="1")
    r, _, _ = E.transition(r, E.Reconciled("a", report(
        running="op-x", running_version="3.0")), T0 + 1)
    r, _, acts = E.transition(r, E.Tick(), T0 + 31)
    h = r.hosts["a"]
    assert h.state == E.HostState.FAILED and E.CancelHost("a") in acts
    assert "op-x" in h.message and "did not start" in h.message
    assert "not updated" in h.message
    assert "no origin: an operator's request" in h.reason  # whose it was, too


def test_the_step_deadline_names_the_foreign_operations_origin():
    r, _, _ = start(step_deadline_seconds=30)
    r, _, _ = E.transition(r, E.Reconciled("a", report(
        running="op-y", running_version="3.0", running_origin="deploy-bot")), T0 + 1)
    r, _, _ = E.transition(r, E.Tick(), T0 + 31)
    h = r.hosts["a"]
    assert h.state == E.HostState.FAILED
    assert "op-y (origin 'deploy-bot')" in h.message and "op-y" in h.reason


def test_a_finished_foreign_operation_at_the_target_is_not_taken_as_ours_after_recover():
    """The hub recorded UPDATING (with its origin) and died before sending Update; an
    operator updated the host meanwhile. The old rule adopted the manager's last
    operation at the target version as the hub's own; now it is on the version, not
    moved by the rollout (a rollback will not touch it)."""
    r, _, _ = start()
    r, _, acts = E.transition(r, E.Recover(), T0 + 5)
    assert acts == [E.ReconcileHost("a", "")]
    r, _, acts = E.transition(r, E.Reconciled("a", report(
        version="2.0", last="op-x", last_outcome="succeeded", last_version="2.0")), T0 + 6)
    h = r.hosts["a"]
    assert h.state == E.HostState.VERIFYING and h.operation_id == "" and not h.moved
    # ... and one that failed there is not the rollout's failure: the hub updates it
    r, _, _ = start()
    r, _, _ = E.transition(r, E.Recover(), T0 + 5)
    r, _, acts = E.transition(r, E.Reconciled("a", report(
        version="1.0", last="op-x", last_outcome="rolled_back", last_version="2.0")), T0 + 6)
    assert acts == [E.UpdateHost("a", "2.0", "")]
    assert r.hosts["a"].state == E.HostState.UPDATING and not r.hosts["a"].failed


def test_the_hubs_own_update_is_adopted_by_origin_after_recover():
    r, _, _ = start()
    mine = r.hosts["a"].origin
    r, _, _ = E.transition(r, E.Recover(), T0 + 5)
    own = E.OwnOperation("op-h", mine, running=True, from_version="1.0", to_version="2.0")
    r, _, acts = E.transition(r, E.Reconciled("a", report(
        running="op-h", running_origin=mine, running_version="2.0", own=own)), T0 + 6)
    assert acts == [E.WatchOperation("a", "op-h")]
    h = r.hosts["a"]
    assert (h.operation_id, h.update_op, h.from_version) == ("op-h", "op-h", "1.0")
    # finished while the hub was down, found by its origin (GetUpdate), another operation
    # ran after it: still ours, with the version it started from
    r, _, _ = start()
    r, _, _ = E.transition(r, E.Recover(), T0 + 5)
    own = E.OwnOperation("op-h", mine, running=False, outcome="succeeded",
                         from_version="1.0", to_version="2.0")
    r, _, acts = E.transition(r, E.Reconciled("a", report(
        version="2.0", last="op-y", last_outcome="succeeded", last_version="2.0",
        own=own)), T0 + 6)
    h = r.hosts["a"]
    assert h.state == E.HostState.VERIFYING and h.moved and h.from_version == "1.0"
    # an operation returned for another origin is not ours
    r, _, _ = start()
    r, _, _ = E.transition(r, E.Recover(), T0 + 5)
    other = E.OwnOperation("op-z", "hub:hub-2/rollout/r0/host/a/attempt/1", running=False,
                           outcome="succeeded", from_version="1.0")
    r, _, acts = E.transition(r, E.Reconciled("a", report(own=other)), T0 + 6)
    assert acts == [E.UpdateHost("a", "2.0", "")]


def _moved_then_halted(report_for_rollback):
    """Host a updates (1.0 -> 2.0) and succeeds; b fails: the rollout rolls a back."""
    r, _, _ = start(hosts=("a", "b"), waves=["100%"])
    r, _, _ = E.transition(r, E.UpdateAccepted("a", "op-a", "1.0"), T0 + 1)
    r, _, _ = E.transition(r, E.OperationFinished("a", "op-a", "succeeded"), T0 + 2)
    r, _, _ = E.transition(r, E.Tick({"a": E.Observation(True, True, "2.0")}), T0 + 3)
    r, _, acts = E.transition(r, E.CallFailed("b", False, "NOT_FOUND: no such version"),
                              T0 + 4)
    assert r.state == E.RolloutState.ROLLING_BACK
    assert acts == [E.ReconcileHost("a", "")]
    h = r.hosts["a"]
    assert h.origin == "hub:hub-1/rollout/r1/host/a/rollback/1"  # recorded before issuing
    return E.transition(r, E.Reconciled("a", report_for_rollback), T0 + 5)


def test_rollback_goes_only_to_the_recorded_from_version():
    r, _, acts = _moved_then_halted(report(version="2.0", previous="1.0"))
    assert acts == [E.RollbackHost("a", "")]
    r, _, acts = _moved_then_halted(report(version="2.0", previous="0.9"))
    h = r.hosts["a"]
    assert acts == [] and h.state == E.HostState.ROLLBACK_FAILED
    assert "0.9" in h.message and "1.0" in h.message
    assert r.state == E.RolloutState.FAILED  # not ROLLED_BACK: a stays on 2.0
    r, _, acts = _moved_then_halted(report(version="1.7", previous="1.0"))
    assert acts == [] and "runs 1.7" in r.hosts["a"].message
    r, _, acts = _moved_then_halted(report(version="1.0", previous=""))
    assert acts == [] and r.hosts["a"].state == E.HostState.ROLLED_BACK
    assert r.state == E.RolloutState.ROLLED_BACK
    r, _, acts = _moved_then_halted(report(version="2.0", running="op-x"))
    assert acts == [E.AwaitOperation("a", "op-x")]  # someone else's: wait, never adopt


def test_no_recorded_from_version_means_no_rollback_and_says_why():
    r, _, _ = start(hosts=("a", "b"), waves=["100%"])
    r, _, _ = E.transition(r, E.UpdateAccepted("a", "op-a", ""), T0 + 1)  # no version known
    r, _, _ = E.transition(r, E.OperationFinished("a", "op-a", "succeeded"), T0 + 2)
    r, _, _ = E.transition(r, E.Tick({"a": E.Observation(True, True, "2.0")}), T0 + 3)
    r, _, acts = E.transition(r, E.CallFailed("b", False, "refused"), T0 + 4)
    assert not any(isinstance(a, E.RollbackHost | E.ReconcileHost) for a in acts)
    h = r.hosts["a"]
    assert h.state == E.HostState.ROLLBACK_FAILED and "not recorded" in h.message
    assert r.state == E.RolloutState.FAILED and "failed to roll back" in r.message


def test_rollback_adopted_by_origin_after_the_hub_died_having_sent_it():
    r, _, _ = _moved_then_halted(report(version="2.0", previous="1.0"))
    origin = r.hosts["a"].origin
    r, _, acts = E.transition(r, E.Recover(), T0 + 6)
    assert acts == [E.ReconcileHost("a", "")]
    r, _, acts = E.transition(r, E.Reconciled("a", report(
        version="1.0", last="rb-1", last_outcome="succeeded", last_version="1.0",
        last_origin=origin, previous="")), T0 + 7)
    assert r.hosts["a"].state == E.HostState.ROLLED_BACK and acts == []
    assert r.state == E.RolloutState.ROLLED_BACK


def test_a_stopped_service_is_skipped_with_its_reason_and_the_rollout_succeeds():
    r, _, _ = start(hosts=("a", "b"))
    r, _, _ = E.transition(r, E.UpdateAccepted("a", "op-a", "1.0"), T0 + 1)
    r, notes, _ = E.transition(r, E.OperationFinished(
        "a", "op-a", "installed_stopped", "update to version 2.0 installed (stopped)"), T0 + 2)
    h = r.hosts["a"]
    assert h.state == E.HostState.SKIPPED and h.stopped and not h.failed and h.moved
    assert notes[0].kind == "host.skipped" and "left stopped" in h.message
    assert "start_stopped" in h.message
    r, _, _ = E.transition(r, E.UpdateAccepted("b", "op-b", "1.0"), T0 + 3)
    r, _, _ = E.transition(r, E.OperationFinished("b", "op-b", "succeeded"), T0 + 4)
    r, _, _ = E.transition(r, E.Tick({"b": E.Observation(True, True, "2.0")}), T0 + 5)
    assert r.state == E.RolloutState.SUCCEEDED
    assert "1 installed but left stopped" in r.message
    c = E.counts(r)
    assert (c.succeeded, c.skipped, c.failed) == (1, 1, 0)


def test_a_stopped_host_on_the_new_release_is_rolled_back_with_the_others():
    r, _, _ = start(hosts=("a", "b"))
    r, _, _ = E.transition(r, E.UpdateAccepted("a", "op-a", "1.0"), T0 + 1)
    r, _, _ = E.transition(r, E.OperationFinished("a", "op-a", "installed_stopped"), T0 + 2)
    r, _, acts = E.transition(r, E.CallFailed("b", False, "refused"), T0 + 3)
    assert r.state == E.RolloutState.ROLLING_BACK and acts == [E.ReconcileHost("a", "")]
    r, _, acts = E.transition(r, E.Reconciled("a", report(version="2.0", previous="1.0")),
                              T0 + 4)
    assert acts == [E.RollbackHost("a", "")]
    r, _, _ = E.transition(r, E.RollbackAccepted("a", "rb", "1.0"), T0 + 5)
    r, _, _ = E.transition(r, E.OperationFinished("a", "rb", "installed_stopped"), T0 + 6)
    assert r.hosts["a"].state == E.HostState.ROLLED_BACK
    assert r.state == E.RolloutState.ROLLED_BACK


def test_retry_gives_a_new_origin_and_start_stopped_is_kept():
    r, _, _ = start(start_stopped=True, auto_rollback=False)
    assert r.start_stopped
    r, _, _ = E.transition(r, E.CallFailed("a", False, "refused"), T0 + 1)
    assert r.state == E.RolloutState.FAILED
    r, _, acts = E.transition(r, E.Control("retry_failed"), T0 + 2)
    assert acts == [E.UpdateHost("a", "2.0", "")]
    assert r.hosts["a"].origin.endswith("/host/a/attempt/2")


def test_is_own_needs_a_recorded_id_or_origin():
    h = E.HostRun(name="a", wave=0)
    assert not A.is_own(h, "op", "")
    assert not A.is_own(h, "op", "anything")  # no recorded origin: nothing is ours
    assert not A.is_own(E.HostRun(name="a", wave=0, origin="o"), "", "o")
    assert A.is_own(E.HostRun(name="a", wave=0, origin="o"), "op", "o")
    assert A.is_own(E.HostRun(name="a", wave=0, operation_id="op"), "op", "")
