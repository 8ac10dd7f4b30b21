"""The hub end to end: a real ai-hub process against simulated managers in another real
process (FAKE managers: the real updater is being written in issue 3; the simulation
honours the Manager API semantics, see tests/fixtures/sim_manager.py)."""

from __future__ import annotations

import pytest

from backendai.v1 import hub_pb2 as pb
from tests.fixtures.hub_procs import TERMINAL, HubProc, SimManagers, wait_for


@pytest.fixture
def procs(tmp_path):
    made = []

    def make(kind, *args, **kwargs):
        p = kind(tmp_path, *args, **kwargs)
        made.append(p)
        return p

    yield make
    for p in reversed(made):
        p.cleanup()


def start_rollout(hub, version="2.0", waves=("1", "50%", "100%"), **strategy):
    req = pb.StartRolloutRequest(version=version,
                                 strategy=pb.RolloutStrategy(waves=list(waves), seed=1,
                                                             **strategy))
    return hub.call("StartRollout", req).rollout


def test_staged_rollout_succeeds_and_every_host_updated_once(procs):
    sim = procs(SimManagers, hosts=6, delay=0.1).start()
    hub = procs(HubProc, sim.hosts).start()
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
