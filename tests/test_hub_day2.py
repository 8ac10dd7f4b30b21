"""The hub on day 2 (issue 11, items 2, 3, 5; issue 15, item 7), a real ai-hub against
simulated managers (tests/fixtures/sim_manager.py; the same scenarios with real managers
are in tests/test_hub_real_day2.py):

- the store is asked before a rollout starts, one manager per package (dry run: per
  package; a real start refuses a version a target cannot fetch, nothing started);
- a rollout meeting someone else's update waits for it and never adopts it;
- a host whose service the operator stopped is skipped with the reason (unless
  start_stopped);
- "last seen" is the last contact (status stream keepalives), not the last change.
"""

from __future__ import annotations

import time

import grpc
import pytest

from backendai.v1 import hub_pb2 as pb
from backendai.v1 import manager_pb2 as mpb
from backendai.v1 import manager_pb2_grpc as mpb_grpc
from tests.fixtures.hub_procs import TERMINAL, HubProc, SimManagers, wait_for


def manager(addr: str) -> mpb_grpc.ManagerStub:
    return mpb_grpc.ManagerStub(grpc.insecure_channel(addr))


def reachable(hub: HubProc, count: int) -> None:
    wait_for(lambda: sum(h.reachable for h in hub.call(
        "ListHosts", pb.ListHostsRequest()).hosts) >= count, what="hosts reachable")


def start(hub: HubProc, version: str = "2.0", *, dry_run: bool = False, **kw) -> pb.Rollout:
    strategy = pb.RolloutStrategy(waves=["100%"], seed=1,
                                  **{k: v for k, v in kw.items() if k != "start_stopped"})
    return hub.call("StartRollout", pb.StartRolloutRequest(
        version=version, dry_run=dry_run, strategy=strategy,
        start_stopped=kw.get("start_stopped", False)), timeout=60).rollout


@pytest.fixture
def two_packages(procs):
    agents = procs(SimManagers, hosts=3, delay=0.1, name="agents").start()
    workers = procs(SimManagers, hosts=2, delay=0.1, name="workers", prefix="worker-",
                    package="@backend-ai/worker").start()
    hub = procs(HubProc, {**agents.hosts, **workers.hosts}).start()
    reachable(hub, 5)
    return agents, workers, hub


def checks(sim: SimManagers) -> list[dict]:
    return [e for e in sim.calls() if e["call"] == "check"]


def test_dry_run_says_per_package_whether_the_store_has_it(two_packages):
    agents, workers, hub = two_packages
    workers.rules([{"call": "check", "version": "2.0", "outcome": "missing"}])
    plan = start(hub, dry_run=True)
    assert plan.state == pb.ROLLOUT_STATE_PLANNED
    by_package = {p.package: p for p in plan.packages}
    assert set(by_package) == {"@backend-ai/agent", "@backend-ai/worker"}
    ok, missing = by_package["@backend-ai/agent"], by_package["@backend-ai/worker"]
    assert ok.checked and ok.available and ok.url.endswith("/2.0/agent-2.0.tar.gz")
    assert sorted(ok.hosts) == sorted(agents.hosts) and ok.asked in agents.hosts
    assert missing.checked and not missing.available and "404" in missing.message
    assert sorted(missing.hosts) == sorted(workers.hosts)
    # one manager asked per package, nothing else done
    assert len(checks(agents)) == 1 and len(checks(workers)) == 1
    assert not any(e["call"] == "update" for e in agents.journal() + workers.journal())


def test_a_real_start_refuses_a_version_a_target_cannot_fetch(two_packages):
    agents, workers, hub = two_packages
    workers.rules([{"call": "check", "version": "2.0", "outcome": "missing"}])
    with pytest.raises(grpc.RpcError) as err:
        start(hub)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    text = err.value.details()
    assert "@backend-ai/worker" in text and "worker-2.0.tar.gz" not in text
    assert "/2.0/agent-2.0.tar.gz" in text  # the sim's URL for that package
    assert "worker-000" in text and "nothing was started" in text
    assert hub.call("ListRollouts", pb.ListRolloutsRequest()).rollouts == []
    assert not any(e["call"] == "update" for e in agents.journal() + workers.journal())
    workers.rules([{"call": "check", "version": "2.0", "outcome": "down"}])
    with pytest.raises(grpc.RpcError) as err:  # a store the managers cannot reach
        start(hub)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "did not answer" in err.value.details()
    workers.rules([])
    r = start(hub)
    assert {p.package: p.available for p in r.packages} == {
        "@backend-ai/agent": True, "@backend-ai/worker": True}
    assert hub.wait_rollout(r.id, TERMINAL).state == pb.ROLLOUT_STATE_SUCCEEDED


def test_hosts_no_manager_answers_for_are_not_checked_and_do_not_block(procs):
    sim = procs(SimManagers, hosts=2, delay=0.1).start()
    hub = procs(HubProc, {**sim.hosts, "gone": "127.0.0.1:1"}).start()
    reachable(hub, 2)
    plan = start(hub, dry_run=True, max_failures_per_wave="1", max_failures_total="1")
    unchecked = [p for p in plan.packages if not p.checked]
    assert len(unchecked) == 1 and list(unchecked[0].hosts) == ["gone"]
    assert "no manager of these hosts answered" in unchecked[0].message
    r = start(hub, max_failures_per_wave="1", max_failures_total="1")
    done = hub.wait_rollout(r.id, TERMINAL)
    assert (done.counts.succeeded, done.counts.unreachable) == (2, 1)


@pytest.mark.slow
def test_a_manager_hanging_or_babbling_on_the_store_check(procs):
    """A check no manager answers is bounded (reported not checked, the start goes on);
    a megabyte of hostile text from a manager is cut before it reaches anyone."""
    sim = procs(SimManagers, hosts=2, delay=0.1).start()
    hub = procs(HubProc, sim.hosts).start()
    reachable(hub, 2)
    sim.rules([{"call": "check", "version": "2.0", "outcome": "hang"}])
    t0 = time.monotonic()
    plan = start(hub, dry_run=True)
    assert time.monotonic() - t0 < 25
    (p,) = plan.packages
    assert not p.checked and "no manager of these hosts answered" in p.message
    sim.rules([{"call": "check", "version": "2.0", "outcome": "huge"}])
    (p,) = start(hub, dry_run=True).packages
    assert p.checked and not p.available and len(p.message) <= 1000
    with pytest.raises(grpc.RpcError) as err:
        start(hub)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert len(err.value.details()) < 4000


def test_a_rollout_meeting_an_operators_update_waits_and_never_adopts_it(procs):
    sim = procs(SimManagers, hosts=2, delay=0.1).start()
    hub = procs(HubProc, sim.hosts).start()
    reachable(hub, 2)
    sim.rules([{"host": "agent-000", "version": "1.5", "delay": 3.0}])
    addr = sim.hosts["agent-000"]
    op = manager(addr).Update(mpb.UpdateRequest(version="1.5"), timeout=10).operation_id
    r = start(hub)
    wait_for(lambda: any(e.kind == "host.waiting" and e.host == "agent-000"
                         for e in hub.events(r.id)), what="the host waits")
    waiting = next(e for e in hub.events(r.id) if e.kind == "host.waiting")
    assert op in waiting.message and "did not start" in waiting.message
    done = hub.wait_rollout(r.id, TERMINAL)
    assert done.state == pb.ROLLOUT_STATE_SUCCEEDED, done
    host = next(h for h in done.hosts if h.name == "agent-000")
    assert host.from_version == "1.5" and host.operation_id != op
    assert host.origin.startswith("hub:") and "/host/agent-000/attempt/1" in host.origin
    updates = [e for e in sim.journal() if e["call"] == "update" and e["host"] == "agent-000"]
    assert [(e["version"], e["origin"]) for e in updates] == [("1.5", ""),
                                                              ("2.0", host.origin)]


def test_a_foreign_update_past_the_step_deadline_fails_the_host_naming_it(procs):
    sim = procs(SimManagers, hosts=1, delay=0.1).start()
    hub = procs(HubProc, sim.hosts).start()
    reachable(hub, 1)
    sim.rules([{"version": "1.5", "outcome": "hang"}])
    op = manager(sim.hosts["agent-000"]).Update(
        mpb.UpdateRequest(version="1.5", origin="deploy-bot"), timeout=10).operation_id
    r = start(hub, step_deadline_seconds=2)
    done = hub.wait_rollout(r.id, TERMINAL)
    host = done.hosts[0]
    assert host.state == pb.HOST_ROLLOUT_STATE_FAILED
    assert op in host.message and "did not start" in host.message
    assert "origin 'deploy-bot'" in host.message and "origin 'deploy-bot'" in host.reason
    assert not [e for e in sim.journal() if e["call"] == "update" and e["version"] == "2.0"]


@pytest.mark.parametrize("start_stopped", [False, True])
def test_a_host_whose_service_the_operator_stopped(procs, start_stopped):
    sim = procs(SimManagers, hosts=2, delay=0.1).start()
    hub = procs(HubProc, sim.hosts).start()
    reachable(hub, 2)
    manager(sim.hosts["agent-001"]).Stop(mpb.StopRequest(), timeout=10)
    r = start(hub, start_stopped=start_stopped)
    done = hub.wait_rollout(r.id, TERMINAL)
    assert done.state == pb.ROLLOUT_STATE_SUCCEEDED, done
    assert done.start_stopped == start_stopped
    host = next(h for h in done.hosts if h.name == "agent-001")
    if start_stopped:
        assert host.state == pb.HOST_ROLLOUT_STATE_SUCCEEDED
        assert (done.counts.succeeded, done.counts.skipped) == (2, 0)
    else:
        assert host.state == pb.HOST_ROLLOUT_STATE_SKIPPED
        assert "left stopped" in host.message and "start_stopped" in host.message
        assert (done.counts.succeeded, done.counts.skipped, done.counts.failed) == (1, 1, 0)
        assert "installed but left stopped" in done.message


def test_last_seen_is_the_last_contact_not_the_last_change(procs):
    sim = procs(SimManagers, hosts=1, delay=0.1).start()
    hub = procs(HubProc, sim.hosts, extra={"contact_interval": 1.0}).start()
    reachable(hub, 1)

    def host() -> pb.Host:
        return hub.call("ListHosts", pb.ListHostsRequest()).hosts[0]
    first = host()
    assert first.last_contact_unix > 0 and first.last_seen_unix == first.last_contact_unix
    since = first.state
    # nothing changes on the host, yet the hub hears from its manager every second
    wait_for(lambda: host().last_contact_unix >= first.last_contact_unix + 1.5, 10,
             "a newer contact")
    now = host()
    assert now.state == since and time.time() - now.last_contact_unix < 3


@pytest.mark.parametrize("value", ["0", "0.5", "-1", "3601", "1e999", "nan", '"5"', "true",
                                   "[1]"])
def test_bad_contact_intervals_are_refused_naming_the_key(tmp_path, value):
    from backendai.errors import ConfigError
    from hub import config as hub_config

    path = tmp_path / "hub.toml"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\ngrpc_listen = "127.0.0.1:0"\n'
                    f"contact_interval = {value}\n")
    with pytest.raises(ConfigError, match="contact_interval"):
        hub_config.load(path)
    path.write_text(f'state_dir = "{tmp_path / "state"}"\ngrpc_listen = "127.0.0.1:0"\n'
                    "contact_interval = 2\n")
    assert hub_config.load(path).contact_interval == 2.0
