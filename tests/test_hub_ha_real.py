"""Three real hubs on one real PostgreSQL, real `ai-manager` processes (the real
updater, releases built with `aictl release build` and served over HTTP) registered
through their `[hub] addresses` list, a real `ai-agent` with a list of hubs, and aictl
given all three hubs.

The leader is killed -9 mid-wave: another takes over within the lease's TTL and
finishes the rollout; each host is updated exactly once (the managers' own update
journals); the event log has no gap; aictl, the managers and the agent keep working
through the failover (aictl's watch follows it to the end; the managers and the agent
register with the new leader)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import threading
import time

import pytest

from backendai.v1 import hub_pb2 as pb
from tests.conftest import PY, ROOT
from tests.fixtures.hub_procs import TERMINAL, HubProc, wait_for
from tests.fixtures.real_fleet import publish_releases, real_managers, wait_running
from tests.test_agent import AgentProc
from tests.test_hub_ha import TTL, start_hubs, wait_leader

pytestmark = pytest.mark.slow

HOSTS = 4


@pytest.fixture
def releases(tmp_path, store_server):
    return store_server, publish_releases(tmp_path, {"1.0.0": {}, "1.1.0": {}})


def update_ops(manager, version: str) -> list[str]:
    """The manager's own journal: its update operations to `version`."""
    db = sqlite3.connect(manager.state_dir / "manager.db")
    try:
        return [op for (op,) in db.execute(
            "SELECT id FROM update_ops WHERE kind = 'update' AND to_version = ?", (version,))]
    finally:
        db.close()


def registered_with(manager, hub: HubProc) -> bool:
    return any(json.loads(line).get("event") == "manager.registered"
               and json.loads(line).get("hub") == hub.address
               for line in manager.logs().splitlines() if line.startswith("{"))


def agent_connected(hub: HubProc) -> bool:
    return any(h.name == "edge-agent" and h.agent_connected
               for h in hub.call("ListHosts", pb.ListHostsRequest()).hosts)


def test_three_hubs_leader_killed_mid_wave_with_real_managers_aictl_and_an_agent(
        pg_database, procs, tmp_path, make_manager, releases):
    server, out = releases
    hubs = start_hubs(procs, pg_database, {})
    addresses = [h.address for h in hubs]
    with contextlib.ExitStack() as stack:
        managers = stack.enter_context(real_managers(
            make_manager, tmp_path, out, server, HOSTS,
            top=lambda name: {"hub": {"addresses": addresses, "name": name,
                                      "register_interval": 1.0}},
            healthy_deadline=6.0, min_healthy_time=0.3))
        leader = wait_leader(hubs)
        wait_for(lambda: len(leader.call("ListAgents", pb.ListHostsRequest()).hosts) == HOSTS,
                 30, "every manager registered with the leader")
        agent = procs(AgentProc, name="edge-agent", hub_address=addresses,
                      manager_address=managers["host-0"].grpc_addr,
                      heartbeat_interval=0.5, reconnect_max=1.0).start()
        wait_for(lambda: agent_connected(leader), 30, "the agent heartbeats to the leader")
        wait_running(managers.values())
        followers = [h for h in hubs if h is not leader]
        epoch = leader.info_now().epoch

        r = leader.call("StartRollout", pb.StartRolloutRequest(
            version="1.1.0", target=pb.RolloutTarget(hosts=list(managers)),
            strategy=pb.RolloutStrategy(waves=["1", "100%"], seed=3, max_parallel=2,
                                        min_healthy_seconds=0.3))).rollout
        # aictl follows the rollout through all three hubs, the leader first
        hub_list = ",".join([leader.address, *(f.address for f in followers)])
        watch = subprocess.Popen([PY, "-m", "aictl.main", "rollout", "watch", r.id, "--hub",
                                  hub_list, "--json"], cwd=ROOT, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        stack.callback(watch.stderr.close)
        stack.callback(watch.stdout.close)
        stack.callback(lambda: watch.poll() is None and watch.kill())
        printed: list[str] = []
        reader = threading.Thread(target=lambda: printed.extend(watch.stdout), daemon=True)
        reader.start()
        wait_for(lambda: printed, 30, "aictl following the rollout")
        wait_for(lambda: any(h.state == pb.HOST_ROLLOUT_STATE_UPDATING and h.operation_id
                             for h in leader.rollout(r.id).hosts), 60, "an update in flight")
        killed = time.monotonic()
        leader.kill9()
        new = wait_leader(followers, timeout=TTL + 10)
        took = time.monotonic() - killed
        assert took <= TTL + 1.5, f"takeover took {took:.2f}s with a {TTL}s lease"
        assert new.info_now().epoch == epoch + 1

        # aictl with the dead leader first: a change reaches the new leader
        dead_first = ",".join([leader.address, *(f.address for f in followers)])
        res = subprocess.run([PY, "-m", "aictl.main", "rollout", "pause", r.id, "--hub",
                              dead_first, "--reason", "checking"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        if res.returncode != 0:  # it may have finished already: then pause is refused
            assert "cannot pause" in res.stderr or "succeeded" in res.stderr, res.stderr
        else:
            res = subprocess.run([PY, "-m", "aictl.main", "rollout", "resume", r.id, "--hub",
                                  dead_first], cwd=ROOT, capture_output=True, text=True,
                                 timeout=60)
            assert res.returncode == 0, res.stderr

        done = new.wait_rollout(r.id, TERMINAL, timeout=120)
        assert done.state == pb.ROLLOUT_STATE_SUCCEEDED, done
        assert watch.wait(60) == 0, watch.stderr.read()
        reader.join(10)
        stdout = "".join(printed)
        lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        assert lines[-1].get("final") or any(x.get("final") for x in lines), stdout
        assert any("reconnecting" in x.get("note", "") for x in lines), stdout  # it moved

        # each host updated exactly once, by its manager's own journal
        for name, m in managers.items():
            assert len(update_ops(m, "1.1.0")) == 1, name
            st = m.status()
            assert st.version == "1.1.0" and st.update.last_outcome == "succeeded", name
        events = new.events(r.id)
        assert [e.index for e in events] == list(range(len(events)))
        assert [e.kind for e in events].count("rollout.recovered") == 1

        # the managers and the agent carry on with the new leader
        for name, m in managers.items():
            wait_for(lambda m=m: registered_with(m, new), 30, f"{name} registered with it")
        wait_for(lambda: agent_connected(new), 30, "the agent heartbeats to the new leader")
        assert agent.info_rpc().hub_address == new.address and agent.info_rpc().registered
