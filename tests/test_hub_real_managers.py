"""The hub driving real `ai-manager` processes (with the real updater): releases built
with `aictl release build`, published to a file:// store, installed per host; a staged
rollout to a good version, then one to a broken version that its canary's manager
rolls back, halting the rollout with every other host untouched."""

from __future__ import annotations

import pytest

from backendai.v1 import hub_pb2 as pb
from backendai.v1 import manager_pb2 as mpb
from tests.conftest import fast_service
from tests.fixtures.hub_procs import TERMINAL, HubProc, wait_for
from tests.fixtures.real_fleet import downloads, publish_releases, real_managers, wait_running

pytestmark = pytest.mark.slow

HOSTS = 3


@pytest.fixture
def fleet(tmp_path, make_manager, store_server):
    out = publish_releases(tmp_path, {"1.0.0": {}, "1.1.0": {},
                                      "1.2.0": {"behavior": {"unhealthy": True}}})
    with real_managers(make_manager, tmp_path, out, store_server, HOSTS,
                       healthy_deadline=4.0, min_healthy_time=0.3) as managers:
        yield managers


def test_rollout_with_real_managers_then_broken_version_halts(fleet, tmp_path):
    wait_running(fleet.values())
    hub = HubProc(tmp_path, {n: m.grpc_addr for n, m in fleet.items()})
    try:
        hub.start()
        r = hub.call("StartRollout", pb.StartRolloutRequest(
            version="1.1.0", strategy=pb.RolloutStrategy(waves=["1", "100%"], seed=5,
                                                         min_healthy_seconds=0.3))).rollout
        done = hub.wait_rollout(r.id, TERMINAL, timeout=90)
        assert done.state == pb.ROLLOUT_STATE_SUCCEEDED, done
        assert {m.status().version for m in fleet.values()} == {"1.1.0"}

        bad = hub.call("StartRollout", pb.StartRolloutRequest(
            version="1.2.0", strategy=pb.RolloutStrategy(waves=["1", "100%"], seed=5))).rollout
        canary = bad.waves[0].hosts[0]
        done = hub.wait_rollout(bad.id, TERMINAL, timeout=90)
        assert done.state == pb.ROLLOUT_STATE_ROLLED_BACK, done
        states = {h.name: h.state for h in done.hosts}
        assert states[canary] == pb.HOST_ROLLOUT_STATE_ROLLED_BACK
        assert sum(1 for s in states.values() if s == pb.HOST_ROLLOUT_STATE_SKIPPED) == HOSTS - 1
        for name, m in fleet.items():
            st = m.status()
            assert st.version == "1.1.0" and st.state == mpb.SERVICE_STATE_RUNNING
            if name != canary:
                assert st.update.last_version == "1.1.0"  # never asked for 1.2.0
        assert fleet[canary].status().update.last_outcome == "rolled_back"
    finally:
        hub.cleanup()


def test_hub_kill9_mid_wave_with_real_managers_updates_each_host_once(fleet, tmp_path,
                                                                     store_server):
    hub = HubProc(tmp_path, {n: m.grpc_addr for n, m in fleet.items()})
    try:
        hub.start()
        r = hub.call("StartRollout", pb.StartRolloutRequest(
            version="1.1.0", strategy=pb.RolloutStrategy(waves=["1", "100%"], seed=2))).rollout
        for _ in range(2):
            wait_for(lambda: any(h.state == pb.HOST_ROLLOUT_STATE_UPDATING and h.operation_id
                                 for h in hub.rollout(r.id).hosts), 60, "an update in flight")
            hub.kill9()
            hub.start()
        done = hub.wait_rollout(r.id, TERMINAL, timeout=90)
        assert done.state == pb.ROLLOUT_STATE_SUCCEEDED, done
        assert downloads(store_server, "1.1.0") == HOSTS  # one update per host, no more
        for m in fleet.values():
            st = m.status()
            assert st.version == "1.1.0" and st.update.last_outcome == "succeeded"
    finally:
        hub.cleanup()


def test_hub_follows_a_real_manager_going_away_and_coming_back(tmp_path, make_manager):
    m = make_manager([fast_service()], name="solo").start()
    hub = HubProc(tmp_path, {"solo": m.grpc_addr})
    try:
        hub.start()

        def host():
            return hub.call("ListHosts", pb.ListHostsRequest()).hosts[0]
        wait_for(lambda: host().reachable and host().state == mpb.SERVICE_STATE_RUNNING, 20)
        port = m.info["grpc_port"]
        m.kill9()
        wait_for(lambda: not host().reachable, 20, "hub notices the manager is gone")
        assert host().message
        m.top["grpc_listen"] = f"127.0.0.1:{port}"
        m.start()
        wait_for(lambda: host().reachable, 30, "hub reconnects to the restarted manager")
    finally:
        hub.cleanup()


def test_manager_killed_mid_update_hub_reconciles_with_what_it_reports(fleet, tmp_path):
    """kill -9 of a manager while it updates: the hub's watch breaks, it asks the
    restarted manager for its own update state, and records what really happened."""
    hub = HubProc(tmp_path, {n: m.grpc_addr for n, m in fleet.items()})
    try:
        hub.start()
        r = hub.call("StartRollout", pb.StartRolloutRequest(
            version="1.1.0", strategy=pb.RolloutStrategy(waves=["1", "100%"], seed=2,
                                                         max_failures_per_wave="1",
                                                         max_failures_total="1"))).rollout
        canary = r.waves[0].hosts[0]
        m = fleet[canary]
        wait_for(lambda: any(h.name == canary and h.operation_id and h.step
                             for h in hub.rollout(r.id).hosts), 60, "canary mid-update")
        m.kill9()
        m.top["grpc_listen"] = m.grpc_addr
        m.top["http_listen"] = f"127.0.0.1:{m.http_port}"
        m.start()
        done = hub.wait_rollout(r.id, TERMINAL, timeout=120)
        host = next(h for h in done.hosts if h.name == canary)
        st = m.status()
        if st.version == "1.1.0":
            assert host.state == pb.HOST_ROLLOUT_STATE_SUCCEEDED, done
        else:
            assert host.state in (pb.HOST_ROLLOUT_STATE_ROLLED_BACK,
                                  pb.HOST_ROLLOUT_STATE_FAILED), done
        assert st.state == mpb.SERVICE_STATE_RUNNING
        kinds = [e.kind for e in hub.events(r.id) if e.host == canary]
        assert "host.lost" in kinds and "host.reconciled" in kinds
    finally:
        hub.cleanup()


def test_rollout_to_hosts_that_registered_through_their_managers(fleet, tmp_path):
    """No static inventory: each manager registers its host ([hub] in its config), and a
    staged rollout reaches all of them."""
    hub = HubProc(tmp_path, {})
    try:
        hub.start()
        for name, m in fleet.items():
            m.stop()
            m.top["hub"] = {"address": hub.address, "name": name, "register_interval": 1.0}
            m.start()
        wait_for(lambda: sorted(h.name for h in hub.call(
            "ListHosts", pb.ListHostsRequest()).hosts if h.reachable) == sorted(fleet),
            30, "every host registered and watched")
        r = hub.call("StartRollout", pb.StartRolloutRequest(
            version="1.1.0", strategy=pb.RolloutStrategy(waves=["1", "100%"], seed=3,
                                                         min_healthy_seconds=0.3))).rollout
        done = hub.wait_rollout(r.id, TERMINAL, timeout=90)
        assert done.state == pb.ROLLOUT_STATE_SUCCEEDED, done
        assert {m.status().version for m in fleet.values()} == {"1.1.0"}
    finally:
        hub.cleanup()
