"""A hub rollout never takes over an update it did not start (issue 11, item 2), the
hub's lifecycle calls respect an operator's update (item 1), and a host whose service
the operator stopped is skipped (issue 15, item 7): a real ai-hub driving real
ai-manager processes with the real updater, releases built by `aictl release build` in a
real HTTP store.

- an operator's update (POST /update) in flight when the rollout reaches the host, to
  the rollout's version and to another one: the host waits, the hub never adopts it, and
  a rollback goes back to what the host ran before the hub's own update;
- the hub killed between recording a host's update and sending it, and between sending
  it and recording the answer: every host is updated exactly once; killed with an
  operator's update starting on that host while it is down: the restarted hub waits,
  never adopts it, and rolls back only to the from_version it recorded;
- a stopped service: installed, left stopped, counted skipped (or started with
  start_stopped);
- the hub's RestartService / StopService and its HTTP stop / restart during an
  operator's update: refused (FAILED_PRECONDITION / 409 naming the operation) with
  nothing changed, or with force the update cancelled and the request carried out.
"""

from __future__ import annotations

import contextlib
import json

import grpc
import pytest

from backendai.v1 import hub_pb2 as pb
from backendai.v1 import manager_pb2 as mpb
from tests.conftest import assert_eventually
from tests.fixtures.hub_procs import TERMINAL, HubProc, wait_for
from tests.fixtures.real_fleet import downloads, publish_releases, real_managers, wait_running
from tests.update_support import StoreServer

pytestmark = pytest.mark.slow

HOSTS = 3


@pytest.fixture
def fleet(tmp_path, make_manager, store_server):
    """Three real managers on 1.0.0; 1.0.5 and 1.1.0 in the store."""
    out = publish_releases(tmp_path, {"1.0.0": {}, "1.0.5": {}, "1.1.0": {}})
    with real_managers(make_manager, tmp_path, out, store_server, HOSTS,
                       healthy_deadline=6.0, min_healthy_time=2.0) as managers:
        wait_running(managers.values())
        yield managers


def operator_update(m, version: str) -> str:
    code, raw = m.http("POST", "/update", json.dumps({"version": version}),
                       {"Content-Type": "application/json"})
    assert code == 200, raw
    return json.loads(raw)["operationId"]


def plan(hub: HubProc, **strategy) -> pb.Rollout:
    return hub.call("StartRollout", pb.StartRolloutRequest(
        version="1.1.0", dry_run=True, strategy=pb.RolloutStrategy(seed=4, **strategy)),
        timeout=60).rollout


def start(hub: HubProc, **kw) -> pb.Rollout:
    start_stopped = kw.pop("start_stopped", False)
    return hub.call("StartRollout", pb.StartRolloutRequest(
        version="1.1.0", start_stopped=start_stopped,
        strategy=pb.RolloutStrategy(seed=4, **kw)), timeout=60).rollout


def own_ops(m, origin: str) -> str:
    """The operation the manager journaled with this origin ("" when none)."""
    try:
        return m.stub().GetUpdate(mpb.GetUpdateRequest(origin=origin), timeout=10).operation_id
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return ""


def test_an_operators_update_to_the_same_version_is_waited_for(fleet, tmp_path,
                                                              store_server):
    hub = HubProc(tmp_path, {n: m.grpc_addr for n, m in fleet.items()})
    try:
        hub.start()
        canary = plan(hub, waves=["1", "100%"]).waves[0].hosts[0]
        op = operator_update(fleet[canary], "1.1.0")
        r = start(hub, waves=["1", "100%"], min_healthy_seconds=0.3)
        done = hub.wait_rollout(r.id, TERMINAL, timeout=120)
        assert done.state == pb.ROLLOUT_STATE_SUCCEEDED, done
        events = [e for e in hub.events(r.id) if e.host == canary]
        waiting = [e for e in events if e.kind == "host.waiting"]
        assert waiting and op in waiting[0].message and "did not start" in waiting[0].message
        host = next(h for h in done.hosts if h.name == canary)
        assert host.operation_id == ""  # the hub had nothing left to do there
        m = fleet[canary]
        assert m.status().update.last_operation_id == op
        assert m.status().update.last_origin == ""  # the operator's, never adopted
        assert own_ops(m, host.origin) == ""        # the hub issued no update there
        assert downloads(store_server, "1.1.0") == HOSTS  # the operator's + two of the hub
        assert {x.status().version for x in fleet.values()} == {"1.1.0"}
    finally:
        hub.cleanup()


def test_an_operators_update_to_another_version_then_the_rollback_goes_back_to_it(
        fleet, tmp_path):
    """The canary waits for an operator's update to 1.0.5, then the hub updates it from
    1.0.5; a later host fails, and the auto-rollback sends the canary back to 1.0.5 —
    what it ran before the hub's own update — not to 1.0.0 and not to a guess."""
    hub = HubProc(tmp_path, {n: m.grpc_addr for n, m in fleet.items()})
    try:
        hub.start()
        waves = plan(hub, waves=["1", "100%"]).waves
        canary, later = waves[0].hosts[0], waves[1].hosts[0]
        op = operator_update(fleet[canary], "1.0.5")
        fleet[later].kill9()  # unreachable when its wave comes: the rollout halts
        r = start(hub, waves=["1", "100%"], min_healthy_seconds=0.3, step_deadline_seconds=8)
        done = hub.wait_rollout(r.id, TERMINAL, timeout=150)
        assert done.state == pb.ROLLOUT_STATE_ROLLED_BACK, done
        host = next(h for h in done.hosts if h.name == canary)
        assert host.state == pb.HOST_ROLLOUT_STATE_ROLLED_BACK, done
        assert host.from_version == "1.0.5"
        m = fleet[canary]
        assert m.status().version == "1.0.5" and m.status().state == mpb.SERVICE_STATE_RUNNING
        # the hub's own update went from 1.0.5, its rollback back to 1.0.5
        update_origin = host.origin.replace("/rollback/", "/attempt/")
        mine = own_ops(m, update_origin)
        assert mine and mine != op
        got = m.stub().GetUpdate(mpb.GetUpdateRequest(operation_id=mine), timeout=10)
        assert (got.from_version, got.to_version) == ("1.0.5", "1.1.0")
        back = m.stub().GetUpdate(mpb.GetUpdateRequest(origin=host.origin), timeout=10)
        assert (back.kind, back.from_version, back.to_version, back.outcome) == (
            "rollback", "1.1.0", "1.0.5", "succeeded")
        assert m.status().update.last_origin == host.origin
    finally:
        hub.cleanup()


@pytest.mark.parametrize("when", ["before-update", "after-update"])
def test_hub_killed_around_its_first_update_updates_every_host_once(fleet, tmp_path,
                                                                  store_server, when):
    hub = HubProc(tmp_path, {n: m.grpc_addr for n, m in fleet.items()})
    try:
        hub.start(crash=when)
        canary = plan(hub, waves=["1", "100%"]).waves[0].hosts[0]
        with contextlib.suppress(grpc.RpcError):  # the hub may die before it answers
            start(hub, waves=["1", "100%"], min_healthy_seconds=0.3)
        hub.proc.wait(60)
        assert f'"when": "{when}"' in hub.logs() and canary in hub.logs()
        hub.start()
        done = hub.wait_rollout("", TERMINAL, timeout=150)
        assert done.state == pb.ROLLOUT_STATE_SUCCEEDED, done
        assert downloads(store_server, "1.1.0") == HOSTS  # once per host, no more
        events = [e for e in hub.events(done.id) if e.host == canary]
        reconciled = " ".join(e.message for e in events if e.kind == "host.reconciled")
        if when == "before-update":
            assert "update not started; issuing it" in reconciled
        else:
            assert "still running" in reconciled or "ended succeeded" in reconciled
        host = next(h for h in done.hosts if h.name == canary)
        assert host.from_version == "1.0.0" and host.operation_id
        assert own_ops(fleet[canary], host.origin) == host.operation_id
        for m in fleet.values():
            assert m.status().version == "1.1.0"
    finally:
        hub.cleanup()


@pytest.mark.parametrize("start_stopped", [False, True])
def test_a_stopped_service_is_installed_and_skipped_unless_start_stopped(
        fleet, tmp_path, start_stopped):
    hub = HubProc(tmp_path, {n: m.grpc_addr for n, m in fleet.items()})
    try:
        hub.start()
        stopped = sorted(fleet)[1]
        fleet[stopped].stub().Stop(mpb.StopRequest(), timeout=30)
        r = start(hub, waves=["100%"], min_healthy_seconds=0.3, start_stopped=start_stopped)
        done = hub.wait_rollout(r.id, TERMINAL, timeout=120)
        assert done.state == pb.ROLLOUT_STATE_SUCCEEDED, done
        host = next(h for h in done.hosts if h.name == stopped)
        st = fleet[stopped].status()
        assert st.version == "1.1.0"
        if start_stopped:
            assert host.state == pb.HOST_ROLLOUT_STATE_SUCCEEDED
            assert st.state == mpb.SERVICE_STATE_RUNNING
        else:
            assert host.state == pb.HOST_ROLLOUT_STATE_SKIPPED, done
            assert "left stopped" in host.message
            assert st.state == mpb.SERVICE_STATE_STOPPED
            assert st.update.last_outcome == "installed_stopped"
            assert (done.counts.skipped, done.counts.failed) == (1, 0)
    finally:
        hub.cleanup()


def test_dry_run_and_refusal_with_real_managers(fleet, tmp_path, store_server):
    hub = HubProc(tmp_path, {n: m.grpc_addr for n, m in fleet.items()})
    try:
        hub.start()
        wait_for(lambda: all(h.reachable for h in hub.call(
            "ListHosts", pb.ListHostsRequest()).hosts), 20)
        got = hub.call("StartRollout", pb.StartRolloutRequest(version="9.9.9", dry_run=True),
                       timeout=60).rollout
        assert len(got.packages) == 1
        p = got.packages[0]
        assert p.checked and not p.available and sorted(p.hosts) == sorted(fleet)
        assert p.url == f"{store_server.url}/9.9.9/agent-9.9.9.tar.gz"
        with pytest.raises(grpc.RpcError) as err:
            hub.call("StartRollout", pb.StartRolloutRequest(version="9.9.9"), timeout=60)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert p.url in err.value.details()
        assert hub.call("ListRollouts", pb.ListRolloutsRequest()).rollouts == []
        assert all(m.status().update.last_operation_id == "" for m in fleet.values())
    finally:
        hub.cleanup()


# ---- the hub's lifecycle calls during an operator's update (issue 11, item 1) ------------

@pytest.fixture
def held_host(tmp_path, make_manager, store_server):
    """One real manager on 1.0.0; 1.1.0 in the store is 4 MiB of noise, so a throttled
    store holds an update in its download for as long as the test needs."""
    out = publish_releases(tmp_path, {"1.0.0": {}, "1.1.0": {"blob_bytes": 4 << 20}})
    root = tmp_path / "host0" / "opt" / "ai-agent"
    with real_managers(make_manager, tmp_path, out, store_server, 1) as managers:
        m = managers["host-0"]
        wait_running([m])
        hub = HubProc(tmp_path, {"host-0": m.grpc_addr})
        try:
            hub.start()
            wait_for(lambda: hub.call("ListHosts", pb.ListHostsRequest()).hosts[0].reachable,
                     20, "the hub reaches the manager")
            yield hub, m, root
        finally:
            store_server.throttle = 0.0
            hub.cleanup()


def held_update(m, store_server: StoreServer) -> str:
    """An operator's update to 1.1.0, held in its download (~0.5 s per 64 KiB of 4 MiB:
    half a minute); its operation id."""
    store_server.throttle = 0.5
    op = operator_update(m, "1.1.0")
    assert_eventually(lambda: m.status().update.running_step == "download", 30,
                      what="the update in its download")
    return op


def assert_untouched(m, op: str, pid: int) -> None:
    """The update still runs, in its download; the service runs as before."""
    st = m.status()
    assert st.update.running_operation_id == op and st.update.running_step == "download"
    assert st.state == mpb.SERVICE_STATE_RUNNING and st.pid == pid and st.version == "1.0.0"


def last_of(m, op: str) -> mpb.GetUpdateResponse:
    def ended():
        got = m.stub().GetUpdate(mpb.GetUpdateRequest(operation_id=op), timeout=10)
        return got if got.state == "done" else None
    return assert_eventually(ended, 30, what=f"operation {op} done")


def test_hub_lifecycle_calls_during_an_update_are_refused_without_force(held_host,
                                                                        store_server):
    hub, m, root = held_host
    pid = m.status().pid
    op = held_update(m, store_server)
    calls = (("RestartService", pb.RestartServiceRequest(host="host-0"), "restart"),
             ("StopService", pb.StopServiceRequest(host="host-0"), "stop"),
             ("StopService", pb.StopServiceRequest(host="host-0", service="agent",
                                                   timeout_seconds=2), "stop"))
    for method, request, verb in calls:
        with pytest.raises(grpc.RpcError) as err:
            hub.call(method, request, timeout=30)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value
        details = err.value.details()
        for needle in (op, "update 1.0.0 -> 1.1.0", f"{verb} refused", "force"):
            assert needle in details, (method, details)
        assert_untouched(m, op, pid)
    for path in ("stop", "restart", "stop?force=false&timeout=2", "restart?force=0"):
        code, doc = hub.http("POST", f"/api/hosts/host-0/services/agent/{path}")
        assert code == 409 and doc["success"] is False, (path, doc)
        verb = path.partition("?")[0]
        for needle in ("host host-0", "FAILED_PRECONDITION", op, f"{verb} refused", "force"):
            assert needle in doc["error"], (path, doc)
        assert_untouched(m, op, pid)
    # nothing was undone: let the download finish, the update ends as the operator asked
    store_server.throttle = 0.0
    done = last_of(m, op)
    assert done.outcome == "succeeded", done
    assert m.status().version == "1.1.0" and (root / "current").readlink().name == "1.1.0"


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_hub_lifecycle_calls_with_force_cancel_the_update(held_host, store_server,
                                                          transport):
    """force=true through the hub: the operator's update is cancelled on purpose
    (outcome `cancelled`, the reason naming the request), 1.0.0 stays current, then the
    service is stopped / restarted as asked."""
    hub, m, root = held_host

    def ask(verb: str) -> None:
        if transport == "grpc":
            if verb == "stop":
                st = hub.call("StopService", pb.StopServiceRequest(host="host-0", force=True),
                              timeout=60)
            else:
                st = hub.call("RestartService",
                              pb.RestartServiceRequest(host="host-0", service="agent",
                                                       force=True), timeout=60)
            state = st.state
        else:
            code, doc = hub.http("POST", f"/api/hosts/host-0/services/agent/{verb}?force=true",
                                 timeout=60)
            assert code == 200 and doc["success"] is True, doc
            state = {"STOPPED": mpb.SERVICE_STATE_STOPPED,
                     "RUNNING": mpb.SERVICE_STATE_RUNNING}[doc["service"]["state"]]
        want = mpb.SERVICE_STATE_STOPPED if verb == "stop" else mpb.SERVICE_STATE_RUNNING
        assert state == want

    for verb in ("stop", "restart"):
        pid = m.status().pid
        op = held_update(m, store_server)
        ask(verb)
        done = last_of(m, op)
        assert done.outcome == "cancelled", done
        assert done.message == (f"cancelled by a {verb} request (force); the service was "
                                "not touched")
        st = m.status()
        assert st.version == "1.0.0" and st.update.last_outcome == "cancelled"
        assert st.update.running_operation_id == ""
        assert (root / "current").readlink().name == "1.0.0"
        assert not (root / "releases" / "1.1.0").exists()
        if verb == "stop":
            assert st.state == mpb.SERVICE_STATE_STOPPED and st.desired == "stopped"
            assert m.service_processes() == []
            m.stub().Start(mpb.StartRequest(), timeout=30)  # for the restart round
            assert_eventually(lambda: m.status().state == mpb.SERVICE_STATE_RUNNING, 20)
        else:
            assert st.state == mpb.SERVICE_STATE_RUNNING and st.pid != pid


# ---- after a hub restart, an operator's update met while reconciling (item 2) ------------

def test_hub_restarted_mid_rollout_never_adopts_an_operators_update(fleet, tmp_path,
                                                                    store_server):
    """The hub is killed -9 right after recording its canary as UPDATING, before sending
    the Update. While it is down an operator updates that host to another version
    (1.0.7, origin "curl:alice"), held in its download; a later host's manager dies.
    The restarted hub reconciles the canary: it waits for the operator's operation,
    naming it and its origin, and never adopts it; once it ended the hub issues its own
    update (from 1.0.7, recorded from its answer), the dead host halts the rollout, and
    the auto-rollback takes the canary back to 1.0.7 — the recorded from_version, not
    1.0.0 that the hub saw before it died."""
    publish_releases(tmp_path, {"1.0.7": {"blob_bytes": 4 << 20}})
    hub = HubProc(tmp_path, {n: m.grpc_addr for n, m in fleet.items()})
    try:
        hub.start(crash="before-update")
        waves = plan(hub, waves=["1", "100%"]).waves
        canary, later = waves[0].hosts[0], waves[1].hosts[0]
        with contextlib.suppress(grpc.RpcError):  # the hub may die before it answers
            start(hub, waves=["1", "100%"], min_healthy_seconds=0.3,
                  step_deadline_seconds=120)
        hub.proc.wait(60)
        assert '"when": "before-update"' in hub.logs()
        m = fleet[canary]
        assert m.status().update.last_operation_id == ""  # the hub never sent it
        store_server.throttle = 0.5  # ~30 s for 4 MiB: held until the test lets it go
        code, raw = m.http("POST", "/update", json.dumps({"version": "1.0.7",
                                                          "origin": "curl:alice"}),
                           {"Content-Type": "application/json"})
        assert code == 200, raw
        op = json.loads(raw)["operationId"]
        assert_eventually(lambda: m.status().update.running_step == "download", 30)
        fleet[later].kill9()
        hub.start()
        rid = hub.rollout("").id

        def waiting() -> list[pb.RolloutEvent]:
            return [e for e in hub.events(rid) if e.host == canary
                    and e.kind == "host.waiting"]
        note = wait_for(waiting, 60, "the restarted hub waits for the operator")[0].message
        for words in (op, "to 1.0.7", "origin 'curl:alice'", "did not start"):
            assert words in note, note
        row = next(h for h in hub.rollout(rid).hosts if h.name == canary)
        assert row.state == pb.HOST_ROLLOUT_STATE_UPDATING and row.operation_id == ""
        assert row.from_version == ""  # nothing recorded yet: nothing to roll back to
        st = m.status()
        assert st.update.running_operation_id == op and st.update.running_origin == "curl:alice"
        store_server.throttle = 0.0
        done = hub.wait_rollout(rid, TERMINAL, timeout=150)
        assert done.state == pb.ROLLOUT_STATE_ROLLED_BACK, done
        # the operator's operation ran to its end, untouched, and was never the hub's
        theirs = m.stub().GetUpdate(mpb.GetUpdateRequest(operation_id=op), timeout=10)
        assert (theirs.origin, theirs.from_version, theirs.to_version, theirs.outcome) == (
            "curl:alice", "1.0.0", "1.0.7", "succeeded")
        host = next(h for h in done.hosts if h.name == canary)
        assert host.state == pb.HOST_ROLLOUT_STATE_ROLLED_BACK, done
        assert host.from_version == "1.0.7" and host.operation_id != op
        mine = own_ops(m, host.origin.replace("/rollback/", "/attempt/"))
        assert mine and mine != op
        got = m.stub().GetUpdate(mpb.GetUpdateRequest(operation_id=mine), timeout=10)
        assert (got.from_version, got.to_version, got.outcome) == ("1.0.7", "1.1.0",
                                                                   "succeeded")
        back = m.stub().GetUpdate(mpb.GetUpdateRequest(origin=host.origin), timeout=10)
        assert (back.kind, back.from_version, back.to_version, back.outcome) == (
            "rollback", "1.1.0", "1.0.7", "succeeded")
        st = m.status()
        assert st.version == "1.0.7" and st.state == mpb.SERVICE_STATE_RUNNING
        events = [e for e in hub.events(rid) if e.host == canary]
        assert not any(op in e.message for e in events
                       if e.kind in ("host.accepted", "host.reconciled")), events
        # the dead host: unreachable, its reason in the rollout's JSON (issue 11 item 5)
        code, doc = hub.http("GET", f"/api/rollouts/{rid}")
        assert code == 200
        dead = next(h for h in doc["hosts"] if h["name"] == later)
        assert dead["state"] == "UNREACHABLE", dead
        assert "UNAVAILABLE" in dead["reason"] and dead["failed_step"], dead
        assert dead["reason"] == next(h.reason for h in done.hosts if h.name == later)
    finally:
        store_server.throttle = 0.0
        hub.cleanup()
