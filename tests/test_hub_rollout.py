"""The hub end to end: a real ai-hub process against simulated managers in another real
process (FAKE managers: the real updater is being written in issue 3; the simulation
honours the Manager API semantics, see tests/fixtures/sim_manager.py). Every scenario
runs on both store backends: SQLite in state_dir and a real PostgreSQL (`hub_store`)."""

from __future__ import annotations

import json

import grpc
import pytest

from backendai.v1 import hub_pb2 as pb
from backendai.v1 import manager_pb2 as mpb
from backendai.v1 import manager_pb2_grpc as mpb_grpc
from tests.fixtures.hub_procs import TERMINAL, HubProc, SimManagers, wait_for


def start_rollout(hub, version="2.0", waves=("1", "50%", "100%"), **strategy):
    req = pb.StartRolloutRequest(version=version,
                                 strategy=pb.RolloutStrategy(waves=list(waves), seed=1,
                                                             **strategy))
    return hub.call("StartRollout", req).rollout


def test_staged_rollout_succeeds_and_every_host_updated_once(hub_store, procs):
    sim = procs(SimManagers, hosts=6, delay=0.1).start()
    hub = procs(HubProc, sim.hosts, store=hub_store).start()
    wait_for(lambda: all(h.reachable for h in hub.call(
        "ListAgents", pb.ListHostsRequest()).hosts), what="hosts reachable")
    r = start_rollout(hub)
    assert r.id and [len(w.hosts) for w in r.waves] == [1, 2, 3]
    done = hub.wait_rollout(r.id, TERMINAL)
    assert done.state == pb.ROLLOUT_STATE_SUCCEEDED, done
    assert done.counts.succeeded == 6
    assert sim.updates_per_host() == dict.fromkeys(sim.hosts, 1)
    hosts = hub.call("ListAgents", pb.ListHostsRequest()).hosts
    assert {h.version for h in hosts} == {"2.0"}
    events = hub.events(r.id)
    assert [e.index for e in events] == list(range(len(events)))
    assert events[-1].final and events[-1].state == pb.ROLLOUT_STATE_SUCCEEDED
    # the canary wave ended before the next wave started
    kinds = [(e.kind, e.wave) for e in events if e.kind.startswith("wave.")]
    assert kinds[:3] == [("wave.started", 0), ("wave.done", 0), ("wave.started", 1)]
    # structured logs carry the rollout id bound for the runner's task
    logged = wait_for(lambda: [json.loads(line) for line in hub.logs().splitlines()
                               if '"rollout.done"' in line])
    assert logged[-1]["rollout"] == r.id and logged[-1]["state"] == "SUCCEEDED"


def wave_of(r, host):
    return next(w.index for w in r.waves if host in w.hosts)


def test_canary_failing_health_gate_halts_rolls_back_others_untouched(hub_store, procs):
    sim = procs(SimManagers, hosts=5, delay=0.1).start()
    hub = procs(HubProc, sim.hosts, store=hub_store).start()
    plan = hub.call("StartRollout", pb.StartRolloutRequest(
        version="2.0", dry_run=True, strategy=pb.RolloutStrategy(seed=1))).rollout
    canary = plan.waves[0].hosts[0]
    sim.rules([{"host": canary, "outcome": "rolled_back"}])
    r = start_rollout(hub)
    assert r.waves[0].hosts == [canary]  # the dry run showed exactly this plan
    done = hub.wait_rollout(r.id, TERMINAL)
    assert done.state == pb.ROLLOUT_STATE_ROLLED_BACK, done
    assert "budget" in done.message
    assert sim.updates_per_host() == {canary: 1}  # nobody else was touched
    c = done.counts
    assert (c.rolled_back, c.skipped, c.succeeded) == (1, 4, 0)
    states = {h.name: h.state for h in done.hosts}
    assert states[canary] == pb.HOST_ROLLOUT_STATE_ROLLED_BACK
    versions = {h.name: h.version for h in hub.call("ListAgents", pb.ListHostsRequest()).hosts}
    assert set(versions.values()) == {"1.0"}


def last_wave(hub, waves) -> list[str]:
    """The hosts the last wave of a rollout with `waves` (seed 1) will take (a dry run)."""
    plan = hub.call("StartRollout", pb.StartRolloutRequest(
        version="2.0", dry_run=True, strategy=pb.RolloutStrategy(
            seed=1, waves=list(waves)))).rollout
    return list(plan.waves[-1].hosts)


def test_budget_hit_in_later_wave_rolls_back_moved_hosts(hub_store, procs):
    sim = procs(SimManagers, hosts=8, delay=0.1).start()
    hub = procs(HubProc, sim.hosts, store=hub_store).start()
    last = last_wave(hub, ("1", "3", "100%"))
    sim.rules([{"host": last[0], "outcome": "failed"}, {"host": last[1], "outcome": "failed"}])
    r = start_rollout(hub, waves=("1", "3", "100%"), max_failures_per_wave="1",
                      max_failures_total="1")
    done = hub.wait_rollout(r.id, TERMINAL)
    assert done.state == pb.ROLLOUT_STATE_ROLLED_BACK, done
    rollbacks = {e["host"] for e in sim.journal() if e["call"] == "rollback"}
    moved = {h.name for h in done.hosts if h.state == pb.HOST_ROLLOUT_STATE_ROLLED_BACK
             and h.name not in last[:2]}
    assert rollbacks == moved and len(moved) >= 3  # waves 0 and 1 at least
    assert last[0] not in rollbacks and last[1] not in rollbacks
    assert done.counts.failed == 2
    wait_for(lambda: {h.version for h in hub.call("ListAgents", pb.ListHostsRequest()).hosts}
             == {"1.0"}, what="every host back on 1.0")


def test_managers_that_do_not_name_the_version_they_update_from(hub_store, procs):
    """Managers from before UpdateResponse.from_version: the hub reads each operation's
    own record instead, so a budget rollback still knows where each host goes back to."""
    sim = procs(SimManagers, hosts=8, delay=0.1).start()
    hub = procs(HubProc, sim.hosts, store=hub_store).start()
    last = last_wave(hub, ("1", "3", "100%"))
    sim.rules([{"host": last[0], "outcome": "failed", "old_response": True},
               {"host": last[1], "outcome": "failed", "old_response": True},
               {"old_response": True}])
    r = start_rollout(hub, waves=("1", "3", "100%"), max_failures_per_wave="1",
                      max_failures_total="1")
    done = hub.wait_rollout(r.id, TERMINAL)
    assert done.state == pb.ROLLOUT_STATE_ROLLED_BACK, done
    assert {h.from_version for h in done.hosts if h.state != pb.HOST_ROLLOUT_STATE_SKIPPED
            } == {"1.0"}
    rollbacks = [e for e in sim.journal() if e["call"] == "rollback"]
    moved = {h.name for h in done.hosts if h.state == pb.HOST_ROLLOUT_STATE_ROLLED_BACK
             and h.name not in last[:2]}
    assert {e["host"] for e in rollbacks} == moved and len(moved) >= 3
    assert len(rollbacks) == len(moved)  # each moved host rolled back once
    wait_for(lambda: {h.version for h in hub.call("ListAgents", pb.ListHostsRequest()).hosts}
             == {"1.0"}, what="every host back on 1.0")


def test_hung_host_hits_step_deadline(hub_store, procs):
    sim = procs(SimManagers, hosts=3, delay=0.1).start()
    hub = procs(HubProc, sim.hosts, store=hub_store).start()
    sim.rules([{"host": "agent-001", "outcome": "hang"}])
    r = start_rollout(hub, waves=("100%",), step_deadline_seconds=1.5,
                      max_failures_per_wave="1", max_failures_total="1")
    done = hub.wait_rollout(r.id, TERMINAL)
    assert done.state == pb.ROLLOUT_STATE_FAILED, done
    hung = next(h for h in done.hosts if h.name == "agent-001")
    assert hung.state == pb.HOST_ROLLOUT_STATE_FAILED
    assert "deadline" in hung.message
    assert done.counts.succeeded == 2


def test_pause_promote_abort(hub_store, procs):
    sim = procs(SimManagers, hosts=6, delay=0.1).start()
    hub = procs(HubProc, sim.hosts, store=hub_store).start()
    r = start_rollout(hub, pause_until_promote=True)
    hub.wait_rollout(r.id, (pb.ROLLOUT_STATE_WAITING,))
    assert sum(sim.updates_per_host().values()) == 1
    paused = hub.call("PauseRollout", pb.RolloutControlRequest(id=r.id, reason="lunch"))
    assert paused.state == pb.ROLLOUT_STATE_PAUSED
    resumed = hub.call("ResumeRollout", pb.RolloutControlRequest(id=r.id))
    assert resumed.state == pb.ROLLOUT_STATE_WAITING
    promoted = hub.call("PromoteRollout", pb.RolloutControlRequest(id=r.id))
    assert promoted.state == pb.ROLLOUT_STATE_RUNNING
    hub.wait_rollout(r.id, (pb.ROLLOUT_STATE_WAITING,))
    assert sum(sim.updates_per_host().values()) == 3
    aborted = hub.call("AbortRollout", pb.RolloutControlRequest(id=r.id, reason="enough"))
    done = hub.wait_rollout(r.id, TERMINAL)
    assert aborted.state in (pb.ROLLOUT_STATE_ABORTING, pb.ROLLOUT_STATE_ABORTED)
    assert done.state == pb.ROLLOUT_STATE_ABORTED
    assert (done.counts.succeeded, done.counts.skipped) == (3, 3)
    assert sum(sim.updates_per_host().values()) == 3
    with pytest.raises(grpc.RpcError) as err:
        hub.call("PromoteRollout", pb.RolloutControlRequest(id=r.id))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_watch_rollout_resumes_from_an_index(hub_store, procs):
    sim = procs(SimManagers, hosts=4, delay=0.1).start()
    hub = procs(HubProc, sim.hosts, store=hub_store).start()
    r = start_rollout(hub)
    stream = hub.stub().WatchRollout(pb.WatchRolloutRequest(id=r.id), timeout=30,
                                     metadata=hub.metadata())
    first = [next(stream) for _ in range(3)]
    stream.cancel()
    rest = list(hub.stub().WatchRollout(pb.WatchRolloutRequest(id=r.id, from_index=3),
                                        timeout=30, metadata=hub.metadata()))
    seen = first + rest
    assert [e.index for e in seen] == list(range(len(seen)))
    assert seen[-1].final and seen[-1].state == pb.ROLLOUT_STATE_SUCCEEDED
    assert [e.index for e in hub.events(r.id, 5)] == list(range(5, len(seen)))


@pytest.mark.slow
def test_hub_kill9_mid_wave_resumes_without_updating_any_host_twice(hub_store, procs):
    sim = procs(SimManagers, hosts=8, delay=1.0).start()
    hub = procs(HubProc, sim.hosts, store=hub_store).start()
    r = start_rollout(hub, waves=("2", "50%", "100%"), max_parallel=2)
    for _ in range(3):  # kill it three times, each with updates in flight
        def in_flight():
            cur = hub.rollout(r.id)
            return any(h.state == pb.HOST_ROLLOUT_STATE_UPDATING and h.operation_id
                       for h in cur.hosts) or cur.state in TERMINAL
        wait_for(in_flight, 30, "an update in flight")
        hub.kill9()
        hub.start()
    done = hub.wait_rollout(r.id, TERMINAL, timeout=60)
    assert done.state == pb.ROLLOUT_STATE_SUCCEEDED, done
    assert sim.updates_per_host() == dict.fromkeys(sim.hosts, 1)
    kinds = [e.kind for e in hub.events(r.id)]
    assert kinds.count("rollout.recovered") >= 1
    events = hub.events(r.id)
    assert [e.index for e in events] == list(range(len(events)))


@pytest.mark.slow
def test_hub_killed_while_hosts_finish_reconciles_their_outcome(hub_store, procs):
    """The managers finish (or fail) while the hub is down: the restarted hub takes each
    outcome from Status.update instead of updating again."""
    sim = procs(SimManagers, hosts=4, delay=1.0).start()
    hub = procs(HubProc, sim.hosts, store=hub_store).start()
    sim.rules([{"host": "agent-002", "outcome": "rolled_back"}])
    r = start_rollout(hub, waves=("100%",), max_failures_per_wave="1", max_failures_total="1")
    wait_for(lambda: sum(1 for h in hub.rollout(r.id).hosts if h.operation_id) == 4, 20,
             "all four updates accepted")
    hub.kill9()
    assert len([h for h in sim.journal() if h["call"] == "update"]) == 4

    def all_finished():
        for addr in sim.hosts.values():
            with grpc.insecure_channel(addr) as ch:
                st = mpb_grpc.ManagerStub(ch).Status(mpb.StatusRequest(), timeout=5)
                if st.update.running_operation_id:
                    return False
        return True
    wait_for(all_finished, 20, "the managers finished on their own")
    hub.start()
    done = hub.wait_rollout(r.id, TERMINAL)
    assert done.state == pb.ROLLOUT_STATE_FAILED, done  # one host failed: not all on 2.0
    assert sim.updates_per_host() == dict.fromkeys(sim.hosts, 1)
    states = {h.name: h.state for h in done.hosts}
    assert states["agent-002"] == pb.HOST_ROLLOUT_STATE_ROLLED_BACK
    assert sum(1 for s in states.values() if s == pb.HOST_ROLLOUT_STATE_SUCCEEDED) == 3


def test_unreachable_host_counted_within_budget_then_retry_failed(hub_store, procs):
    sim = procs(SimManagers, hosts=3, delay=0.1).start()
    hub = procs(HubProc, {**sim.hosts, "gone": "127.0.0.1:1"}, store=hub_store).start()
    sim.rules([{"host": "agent-001", "outcome": "failed"}])
    r = start_rollout(hub, waves=("100%",), max_failures_per_wave="2", max_failures_total="2")
    done = hub.wait_rollout(r.id, TERMINAL)
    assert done.state == pb.ROLLOUT_STATE_FAILED, done  # within budget, but not all on 2.0
    assert (done.counts.unreachable, done.counts.failed, done.counts.succeeded) == (1, 1, 2)
    assert "not on 2.0" in done.message
    sim.rules([])
    again = hub.call("RetryFailed", pb.RolloutControlRequest(id=r.id))
    assert again.state == pb.ROLLOUT_STATE_RUNNING
    done = hub.wait_rollout(r.id, TERMINAL)
    assert (done.counts.unreachable, done.counts.failed, done.counts.succeeded) == (1, 0, 3)
    assert sim.updates_per_host() == {"agent-000": 1, "agent-001": 2, "agent-002": 1}


@pytest.mark.parametrize("outcome", ["wrong_version", "crash"])
def test_host_not_healthy_on_the_new_version_fails_at_healthy_deadline(hub_store, procs, outcome):
    sim = procs(SimManagers, hosts=2, delay=0.1).start()
    hub = procs(HubProc, sim.hosts, store=hub_store).start()
    sim.rules([{"host": "agent-000", "outcome": outcome}])
    r = start_rollout(hub, waves=("100%",), healthy_deadline_seconds=1.5,
                      max_failures_per_wave="1", max_failures_total="1")
    done = hub.wait_rollout(r.id, TERMINAL)
    bad = next(h for h in done.hosts if h.name == "agent-000")
    assert bad.state == pb.HOST_ROLLOUT_STATE_FAILED, done
    assert "not healthy on 2.0" in bad.message
    assert done.state == pb.ROLLOUT_STATE_FAILED


@pytest.mark.slow
def test_hub_killed_while_rolling_back_finishes_the_rollback_once(hub_store, procs):
    sim = procs(SimManagers, hosts=6, delay=0.1).start()
    hub = procs(HubProc, sim.hosts, store=hub_store).start()
    plan = hub.call("StartRollout", pb.StartRolloutRequest(
        version="2.0", dry_run=True, strategy=pb.RolloutStrategy(
            seed=1, waves=["1", "3", "100%"]))).rollout
    sim.rules([{"host": plan.waves[2].hosts[0], "outcome": "failed"},
               {"call": "rollback", "delay": 6.0}])  # each rollback takes 1.5 s
    r = start_rollout(hub, waves=("1", "3", "100%"))
    hub.wait_rollout(r.id, (pb.ROLLOUT_STATE_ROLLING_BACK,))
    wait_for(lambda: any(e["call"] == "rollback" for e in sim.journal()), 10)
    hub.kill9()
    hub.start()
    done = hub.wait_rollout(r.id, TERMINAL)
    assert done.state == pb.ROLLOUT_STATE_ROLLED_BACK, done
    rollbacks = [e["host"] for e in sim.journal() if e["call"] == "rollback"]
    assert sorted(rollbacks) == sorted(set(rollbacks))  # none rolled back twice
    assert set(rollbacks) == {h.name for h in done.hosts
                              if h.state == pb.HOST_ROLLOUT_STATE_ROLLED_BACK}
    assert sim.updates_per_host() == dict.fromkeys(sim.updates_per_host(), 1)


@pytest.mark.slow
def test_hub_graceful_stop_mid_rollout_resumes(hub_store, procs):
    sim = procs(SimManagers, hosts=4, delay=1.0).start()
    hub = procs(HubProc, sim.hosts, store=hub_store).start()
    r = start_rollout(hub, waves=("1", "100%"))
    wait_for(lambda: any(h.operation_id for h in hub.rollout(r.id).hosts), 10)
    assert hub.stop() == 0
    hub.start()
    done = hub.wait_rollout(r.id, TERMINAL)
    assert done.state == pb.ROLLOUT_STATE_SUCCEEDED, done
    assert sim.updates_per_host() == dict.fromkeys(sim.hosts, 1)


@pytest.mark.slow
def test_host_removed_from_inventory_across_a_restart_fails_fast(hub_store, procs):
    sim = procs(SimManagers, hosts=3, delay=2.0).start()
    hub = procs(HubProc, sim.hosts, store=hub_store).start()
    r = start_rollout(hub, waves=("100%",), max_failures_per_wave="1", max_failures_total="1")
    wait_for(lambda: all(h.operation_id for h in hub.rollout(r.id).hosts), 10)
    hub.kill9()
    del hub.hosts["agent-002"]
    hub.start()
    done = hub.wait_rollout(r.id, TERMINAL)
    gone = next(h for h in done.hosts if h.name == "agent-002")
    assert gone.state == pb.HOST_ROLLOUT_STATE_FAILED and "not in the inventory" in gone.message
    assert done.counts.succeeded == 2


@pytest.mark.slow
def test_watcher_reconnecting_across_a_hub_restart_misses_nothing(hub_store, procs):
    sim = procs(SimManagers, hosts=4, delay=1.0).start()
    hub = procs(HubProc, sim.hosts, store=hub_store).start()
    r = start_rollout(hub, waves=("1", "100%"))
    seen: list[pb.RolloutEvent] = []
    stream = hub.stub().WatchRollout(pb.WatchRolloutRequest(id=r.id), timeout=60)
    for ev in stream:
        seen.append(ev)
        if ev.kind == "host.step":
            break  # mid-update: the hub dies under the watcher
    hub.kill9()
    broke = False
    try:
        seen.extend(stream)  # what was already on its way, then the stream breaks
    except grpc.RpcError:
        broke = True
    assert broke
    hub.start(same_port=True)
    for ev in hub.stub().WatchRollout(pb.WatchRolloutRequest(
            id=r.id, from_index=seen[-1].index + 1), timeout=60):
        seen.append(ev)
    assert [e.index for e in seen] == list(range(len(seen)))
    assert seen[-1].final and seen[-1].state == pb.ROLLOUT_STATE_SUCCEEDED
    assert "rollout.recovered" in [e.kind for e in seen]


@pytest.mark.slow
def test_many_hosts_many_hub_kills(hub_store, procs):
    """60 hosts, the hub killed five times while dozens of updates are in flight."""
    sim = procs(SimManagers, hosts=60, delay=3.0).start()
    hub = procs(HubProc, sim.hosts, store=hub_store).start()
    r = start_rollout(hub, waves=("1", "20%", "100%"))

    def recovered() -> int:
        return sum(e.kind == "rollout.recovered" for e in hub.events(r.id))

    for i in range(5):
        # each kill lands mid-rollout, after the last restart's recovery and some progress
        threshold = hub.rollout(r.id).next_event_index + 8
        wait_for(lambda t=threshold: hub.rollout(r.id).next_event_index >= t
                 or hub.rollout(r.id).state in TERMINAL, 60, f"{threshold} events")
        assert hub.rollout(r.id).state not in TERMINAL, f"finished before kill {i + 1}"
        hub.kill9()
        hub.start()
        wait_for(lambda n=i + 1: recovered() == n, 60, f"recovery {i + 1}")
    done = hub.wait_rollout(r.id, TERMINAL, timeout=120)
    assert done.state == pb.ROLLOUT_STATE_SUCCEEDED, done.message
    assert sim.updates_per_host() == dict.fromkeys(sim.hosts, 1)
    events = hub.events(r.id)
    assert [e.index for e in events] == list(range(len(events)))
    assert sum(e.kind == "rollout.recovered" for e in events) == 5


def test_canary_that_updates_but_then_crash_loops_is_rolled_back(hub_store, procs):
    """The manager says the update succeeded; the hub's own health check (RUNNING on the
    target version for min_healthy_seconds) fails: the canary goes back."""
    sim = procs(SimManagers, hosts=3, delay=0.1).start()
    hub = procs(HubProc, sim.hosts, store=hub_store).start()
    plan = hub.call("StartRollout", pb.StartRolloutRequest(
        version="2.0", dry_run=True, strategy=pb.RolloutStrategy(seed=1))).rollout
    canary = plan.waves[0].hosts[0]
    sim.rules([{"host": canary, "outcome": "crash"}])
    r = start_rollout(hub, healthy_deadline_seconds=1.5)
    done = hub.wait_rollout(r.id, TERMINAL)
    assert done.state == pb.ROLLOUT_STATE_ROLLED_BACK, done
    assert [e["host"] for e in sim.journal() if e["call"] == "rollback"] == [canary]
    assert {h.name: h.state for h in done.hosts}[canary] == pb.HOST_ROLLOUT_STATE_ROLLED_BACK
