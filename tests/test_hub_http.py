"""The hub's HTTP JSON API (hub/http_routes.py) on a real ai-hub process against
simulated managers (FAKE managers: tests/fixtures/sim_manager.py says why): the
listener, the same JSON the dashboard reads, lifecycle through the hub, rollouts from
curl, and every endpoint tried with wrong, missing, huge and hostile values."""

from __future__ import annotations

import http.client
import json
import time

import grpc
import pytest

from backendai.v1 import hub_pb2 as pb
from tests.fixtures.hub_procs import HubProc, SimManagers, assert_no_secret_logged, wait_for

TOKEN = "hub-http-token-1"


@pytest.fixture
def fleet(procs):
    sim = procs(SimManagers, hosts=4).start()
    labels = {"agent-000": {"site": "berlin", "group": "edge"},
              "agent-001": {"site": "berlin"}, "agent-002": {"site": "paris"}}
    hub = procs(HubProc, sim.hosts, labels=labels,
                extra={"call_timeout": 1.0}).start()
    wait_for(lambda: hub.http("GET", "/api/info")[1]["reachable"] == 4, 20,
             "every host reachable")
    return sim, hub


def names(doc):
    return [h["name"] for h in doc["hosts"]]


def test_listener_is_reported_like_the_grpc_address(fleet):
    _, hub = fleet
    assert hub.info["http"] == f"127.0.0.1:{hub.info['http_port']}"
    assert hub.info["http_port"] > 0
    info = hub.call("GetInfo", pb.HubInfoRequest())
    assert info.http_address == hub.info["http"]
    assert info.http_scheme == hub.info["http_scheme"] == "http"
    status, doc = hub.http("GET", "/api/info")
    assert status == 200 and doc["version"] == "9.9.9" and doc["host_count"] == 4


def test_hosts_and_filters(fleet):
    _sim, hub = fleet
    status, doc = hub.http("GET", "/api/hosts")
    assert status == 200 and doc["count"] == doc["total"] == 4
    h = doc["hosts"][0]
    assert h["name"] == "agent-000" and h["reachable"] and h["state"] == "RUNNING"
    assert h["version"] == "1.0" and h["labels"] == {"site": "berlin", "group": "edge"}
    assert h["role"] == "agent" and h["last_seen"] > 0 and h["manager_address"]
    assert names(hub.http("GET", "/api/hosts?label=site=berlin")[1]) == ["agent-000",
                                                                          "agent-001"]
    assert names(hub.http("GET", "/api/hosts?label=site=berlin,group=edge")[1]) == [
        "agent-000"]
    assert names(hub.http("GET", "/api/hosts?search=PARIS")[1]) == ["agent-002"]
    assert names(hub.http("GET", "/api/hosts?search=agent-003")[1]) == ["agent-003"]
    assert hub.http("GET", "/api/hosts?reachable=false")[1]["hosts"] == []
    assert len(hub.http("GET", "/api/hosts?reachable=true&state=running")[1]["hosts"]) == 4
    assert hub.http("GET", "/api/hosts?state=stopped")[1]["hosts"] == []
    assert len(hub.http("GET", "/api/hosts?role=agent")[1]["hosts"]) == 4
    # a stopped service shows up under its state once the manager says so
    status, _ = hub.http("POST", "/api/hosts/agent-002/services/ai-agent/stop")
    assert status == 200
    wait_for(lambda: names(hub.http("GET", "/api/hosts?state=STOPPED")[1]) == ["agent-002"],
             10, "the stopped host under state=STOPPED")


@pytest.mark.parametrize(("query", "words"), [
    ("state=sleeping", "state must be one of"),
    ("reachable=maybe", "reachable must be true or false"),
    ("label=site", "label must be NAME=VALUE"),
    ("label=bad%20key=x", "label: bad label name"),
    ("role=king", "role must be agent or hub"),
    ("search=" + "x" * 300, "search must be printable text of at most 200"),
    ("search=%0a", "search must be printable"),
    ("bogus=1", "unknown query parameter 'bogus'"),
    ("state=running&state=stopped", "given more than once"),
    ("search=%ff", "malformed path or query string"),
])
def test_bad_host_filters_are_400_naming_the_parameter(fleet, query, words):
    _, hub = fleet
    status, doc = hub.http("GET", "/api/hosts?" + query)
    assert status == 400 and words in doc["error"], doc
    assert doc["success"] is False


def test_one_host_with_its_services_asked_live(fleet):
    _, hub = fleet
    status, doc = hub.http("GET", "/api/hosts/agent-001")
    assert status == 200
    assert doc["name"] == "agent-001" and doc["services_error"] == ""
    [svc] = doc["services"]
    assert svc["name"] == "ai-agent" and svc["state"] == "RUNNING" and svc["version"] == "1.0"


@pytest.mark.parametrize(("path", "status", "words"), [
    ("/api/hosts/ghost", 404, "not in the inventory"),
    ("/api/hosts/..%2f..%2fetc", 400, "host: expected"),
    ("/api/hosts/%00", 400, "host: expected"),
    ("/api/hosts/" + "a" * 5000, 400, "host: expected"),
    ("/api/hosts/agent-000?timeout=-1", 400, "timeout must be"),
    ("/api/hosts/agent-000?timeout=1e9", 400, "timeout must be"),
    ("/api/hosts/agent-000/nothing", 404, "no endpoint"),
])
def test_bad_host_paths(fleet, path, status, words):
    _, hub = fleet
    got, doc = hub.http("GET", path)
    assert got == status and words in doc["error"], doc


def test_lifecycle_through_the_hub(fleet):
    _sim, hub = fleet
    base = "/api/hosts/agent-003/services/ai-agent"
    status, doc = hub.http("POST", f"{base}/stop?timeout=5&force=false")
    assert status == 200 and doc["service"]["state"] == "STOPPED" and doc["success"]
    status, doc = hub.http("POST", f"{base}/start")
    assert status == 200 and doc["service"]["state"] == "RUNNING"
    status, doc = hub.http("POST", f"{base}/restart?force=true")
    assert status == 200 and doc["service"]["restarts"] == 1
    # the same through gRPC: StartService / StopService with force and timeout
    st = hub.call("StopService", pb.StopServiceRequest(host="agent-003", timeout_seconds=2,
                                                       force=True))
    assert st.state == 1  # SERVICE_STATE_STOPPED
    st = hub.call("StartService", pb.StartServiceRequest(host="agent-003", force=True))
    assert st.state == 3  # SERVICE_STATE_RUNNING


@pytest.mark.parametrize(("path", "status", "words"), [
    ("agent-000/services/ai-agent/explode", 400, "action must be one of start, stop, restart"),
    ("agent-000/services/bad%20name/start", 400, "service: a service name"),
    ("agent-000/services/" + "s" * 300 + "/start", 400, "service: a service name"),
    ("agent-000/services/ai-agent/start?timeout=3", 400, "timeout: only for stop"),
    ("agent-000/services/ai-agent/stop?timeout=abc", 400, "timeout must be"),
    ("agent-000/services/ai-agent/stop?timeout=99999", 400, "timeout must be"),
    ("agent-000/services/ai-agent/stop?force=yes", 400, "force must be true or false"),
    ("ghost/services/ai-agent/stop", 404, "not in the inventory"),
    # the manager's own refusal keeps its meaning and names the host
    ("agent-000/services/other-svc/restart", 404, "host agent-000: NOT_FOUND"),
])
def test_bad_lifecycle_requests_change_nothing(fleet, path, status, words):
    _sim, hub = fleet
    got, doc = hub.http("POST", "/api/hosts/" + path)
    assert got == status and words in doc["error"], doc
    hosts = hub.http("GET", "/api/hosts")[1]["hosts"]
    assert all(h["state"] == "RUNNING" and h["restarts"] == 0 for h in hosts)


def test_a_manager_that_hangs_is_a_504_naming_the_step(fleet):
    sim, hub = fleet
    sim.rules([{"call": "restart", "host": "agent-001", "outcome": "hang"}])
    status, doc = hub.http("POST", "/api/hosts/agent-001/services/ai-agent/restart")
    assert status == 504 and "restart of ai-agent on host agent-001" in doc["error"], doc


def test_wrong_methods_and_unknown_paths(fleet):
    _, hub = fleet
    status, doc = hub.http("DELETE", "/api/hosts")
    assert status == 405 and "allowed: GET" in doc["error"]
    status, doc = hub.http("GET", "/api/hosts/agent-000/services/ai-agent/start")
    assert status == 405
    for path in ("/api", "/api/", "/api/hostsx", "/../../etc/passwd", "/api/rollouts/x/y/z"):
        assert hub.http("GET", path)[0] == 404, path


# ---------------------------------------------------------------- rollouts

def start_body(**over):
    return {"version": "2.0", "strategy": {"waves": ["1", "100%"], "seed": 3}, **over}


def test_dry_run_shows_the_plan_and_starts_nothing(fleet):
    sim, hub = fleet
    status, plan = hub.http("POST", "/api/rollouts", start_body(dry_run=True))
    assert status == 200, plan
    assert plan["id"] == "" and plan["state"] == "PLANNED" and not plan["active"]
    assert [w["spec"] for w in plan["waves"]] == ["1", "100%"]
    assert [w["size"] for w in plan["waves"]] == [1, 3]
    assert sorted(h for w in plan["waves"] for h in w["hosts"]) == sorted(sim.hosts)
    assert all(h["state"] == "PENDING" for h in plan["hosts"])
    # the same plan as gRPC's dry run (one code path)
    grpc_plan = hub.call("StartRollout", pb.StartRolloutRequest(
        version="2.0", dry_run=True,
        strategy=pb.RolloutStrategy(waves=["1", "100%"], seed=3))).rollout
    assert [list(w.hosts) for w in grpc_plan.waves] == [w["hosts"] for w in plan["waves"]]
    assert hub.http("GET", "/api/rollouts")[1]["rollouts"] == []
    assert sim.journal() == []
    assert plan["start_stopped"] is False
    assert {"origin", "stopped", "waiting"} <= set(plan["hosts"][0])
    assert plan["hosts"][0]["waiting"] is None and plan["hosts"][0]["stopped"] is False
    # start_stopped goes through to the plan (and to StartRolloutRequest.start_stopped)
    status, plan = hub.http("POST", "/api/rollouts", start_body(dry_run=True,
                                                               start_stopped=True))
    assert status == 200 and plan["start_stopped"] is True, plan


def test_rollout_from_curl_to_the_end_with_controls(fleet):
    _sim, hub = fleet
    status, r = hub.http("POST", "/api/rollouts", start_body(
        strategy={"waves": ["1", "100%"], "seed": 3, "pause_until_promote": True},
        description="from curl"))
    assert status == 200 and r["id"] and r["active"], r
    rid = r["id"]

    def state():
        return hub.http("GET", f"/api/rollouts/{rid}")[1]

    wait_for(lambda: state()["state"] == "WAITING", 20, "canary done, waiting for promote")
    doc = state()
    assert doc["awaiting_promote"] and doc["waves"][0]["done"]
    canary = doc["waves"][0]["hosts"][0]
    row = next(h for h in doc["hosts"] if h["name"] == canary)
    assert row["state"] == "SUCCEEDED" and row["started"] > 0 and row["finished"] >= row["started"]
    status, doc = hub.http("POST", f"/api/rollouts/{rid}/pause", {"reason": "lunch"})
    assert status == 200 and doc["state"] == "PAUSED"
    status, doc = hub.http("POST", f"/api/rollouts/{rid}/pause")
    assert status == 409 and "cannot pause a rollout that is paused" in doc["error"]
    assert hub.http("POST", f"/api/rollouts/{rid}/resume")[1]["state"] == "WAITING"
    assert hub.http("POST", f"/api/rollouts/{rid}/promote")[0] == 200
    wait_for(lambda: state()["state"] == "SUCCEEDED", 30, "rollout succeeded")
    listed = hub.http("GET", "/api/rollouts")[1]["rollouts"]
    assert [x["id"] for x in listed] == [rid]
    assert listed[0]["counts"]["succeeded"] == 4 and "hosts" not in listed[0]
    assert hub.http("GET", "/api/rollouts?active=true")[1]["rollouts"] == []
    events = hub.http("GET", f"/api/rollouts/{rid}/events?limit=5")[1]
    assert [e["index"] for e in events["events"]] == [0, 1, 2, 3, 4] and events["next"] == 5
    kinds = [e["kind"] for e in hub.http("GET", f"/api/rollouts/{rid}/events?from=0&limit=1000")
             [1]["events"]]
    assert "rollout.paused" in kinds and kinds[-1] == "rollout.finished"
    assert "lunch" in json.dumps(hub.http("GET", f"/api/rollouts/{rid}/events?limit=1000")[1])


def test_failed_hosts_carry_the_step_and_reason_and_retry_failed(fleet):
    sim, hub = fleet
    sim.rules([{"host": "agent-002", "version": "2.0", "outcome": "rolled_back"}])
    status, r = hub.http("POST", "/api/rollouts", start_body(
        strategy={"waves": ["100%"], "max_failures_per_wave": "1", "max_failures_total": "1"}))
    assert status == 200
    rid = r["id"]
    done = wait_for(lambda: (d := hub.http("GET", f"/api/rollouts/{rid}")[1])["state"]
                    == "FAILED" and d, 30, "rollout ends failed")
    row = next(h for h in done["hosts"] if h["name"] == "agent-002")
    assert row["state"] == "ROLLED_BACK"
    assert row["failed_step"] == "health"
    assert row["reason"] == "simulated health gate failure"
    # gRPC shows the same words
    grpc_row = next(h for h in hub.rollout(rid).hosts if h.name == "agent-002")
    assert (grpc_row.failed_step, grpc_row.reason) == ("health", row["reason"])
    sim.rules([])
    status, doc = hub.http("POST", f"/api/rollouts/{rid}/retry-failed")
    assert status == 200 and doc["state"] == "RUNNING"
    wait_for(lambda: hub.http("GET", f"/api/rollouts/{rid}")[1]["state"] == "SUCCEEDED", 30)
    row = next(h for h in hub.http("GET", f"/api/rollouts/{rid}")[1]["hosts"]
               if h["name"] == "agent-002")
    assert row["state"] == "SUCCEEDED" and row["reason"] == "" and row["attempts"] == 2


def test_abort_from_curl(fleet):
    sim, hub = fleet
    sim.rules([{"version": "2.0", "outcome": "succeeded", "delay": 3.0}])
    rid = hub.http("POST", "/api/rollouts", start_body())[1]["id"]
    status, doc = hub.http("POST", f"/api/rollouts/{rid}/abort", {"reason": "wrong build"})
    assert status == 200 and doc["state"] == "ABORTING" and "wrong build" in doc["message"]
    done = hub.wait_rollout(rid, (pb.ROLLOUT_STATE_ABORTED,), 30)
    assert done.counts.skipped == 3
    status, doc = hub.http("POST", f"/api/rollouts/{rid}/abort")
    assert status == 409 and "aborted" in doc["error"]


@pytest.mark.parametrize(("body", "status", "words"), [
    (b"not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (b"{\"version\": \"2.0\"" + b" " * 70_000 + b"}", 413, "larger than"),
    ({}, 400, "version: required"),
    ({"version": 2}, 400, "version: required"),
    ({"version": "../../etc"}, 400, "version"),
    ({"version": "x" * 5000}, 400, "version"),
    ({"version": "2.0", "bogus": 1}, 400, "unknown field 'bogus'"),
    ({"version": "2.0", "target": []}, 400, "target: expected an object"),
    ({"version": "2.0", "target": {"hosts": "agent-000"}}, 400, "target.hosts: expected a list"),
    ({"version": "2.0", "target": {"hosts": ["ghost"]}}, 400, "not in the inventory: ghost"),
    ({"version": "2.0", "target": {"labels": {"site": 1}}}, 400, "target.labels.site"),
    ({"version": "2.0", "target": {"labels": {"site": "mars"}}}, 400, "matches no hosts"),
    ({"version": "2.0", "target": {"nope": 1}}, 400, "target.nope: unknown field"),
    ({"version": "2.0", "strategy": {"waves": "1"}}, 400, "strategy.waves: expected a list"),
    ({"version": "2.0", "strategy": {"waves": ["0"]}}, 400, "strategy.waves[0]"),
    ({"version": "2.0", "strategy": {"waves": ["150%"]}}, 400, "percentage"),
    ({"version": "2.0", "strategy": {"max_parallel": -1}}, 400, "strategy.max_parallel"),
    ({"version": "2.0", "strategy": {"max_parallel": True}}, 400, "strategy.max_parallel"),
    ({"version": "2.0", "strategy": {"max_parallel": 2**40}}, 400, "strategy.max_parallel"),
    ({"version": "2.0", "strategy": {"seed": -5}}, 400, "strategy.seed"),
    ({"version": "2.0", "strategy": {"seed": 2**70}}, 400, "strategy.seed"),
    ({"version": "2.0", "strategy": {"step_deadline_seconds": "10"}}, 400,
     "strategy.step_deadline_seconds"),
    ({"version": "2.0", "strategy": {"pause_seconds": 1e300}}, 400, "strategy.pause_seconds"),
    ({"version": "2.0", "strategy": {"auto_rollback": "yes"}}, 400, "strategy.auto_rollback"),
    ({"version": "2.0", "strategy": {"max_failures_total": "many"}}, 400,
     "strategy.max_failures_total"),
    ({"version": "2.0", "dry_run": "true"}, 400, "dry_run: expected true or false"),
    ({"version": "2.0", "service": "../../bin/sh"}, 400, "service"),
    ({"version": "2.0", "include_hub": True}, 501, "self"),
    ({"version": "2.0", "description": "d" * 2000}, 400, "description: at most"),
    ({"version": "2.0", "start_stopped": "yes"}, 400, "start_stopped: expected true or false"),
    ({"version": "2.0", "start_stopped": 1}, 400, "start_stopped: expected true or false"),
    ({"version": "2.0", "start_stopped": [True] * 1000}, 400, "start_stopped: expected"),
])
def test_bad_start_bodies_are_refused_and_change_nothing(fleet, body, status, words):
    sim, hub = fleet
    got, doc = hub.http("POST", "/api/rollouts", body,
                        headers={"Content-Type": "application/json"})
    assert got == status and words in doc["error"], doc
    assert hub.http("GET", "/api/rollouts")[1]["rollouts"] == []
    assert sim.journal() == []


def test_start_needs_json(fleet):
    sim, hub = fleet
    status, doc = hub.http("POST", "/api/rollouts", b'{"version": "2.0"}',
                           headers={"Content-Type": "text/plain"})
    assert status == 415 and "application/json" in doc["error"]
    assert sim.journal() == []


@pytest.mark.parametrize(("method", "path", "body", "status", "words"), [
    ("GET", "/api/rollouts/nope", None, 404, "not found"),
    ("GET", "/api/rollouts/" + "x" * 500, None, 400, "id: not a rollout id"),
    ("GET", "/api/rollouts/%0a", None, 400, "id: not a rollout id"),
    ("GET", "/api/rollouts/nope/events", None, 404, "not found"),
    ("GET", "/api/rollouts?limit=0", None, 400, "limit must be"),
    ("GET", "/api/rollouts?limit=99999", None, 400, "limit must be"),
    ("GET", "/api/rollouts?active=perhaps", None, 400, "active must be"),
    ("POST", "/api/rollouts/nope/pause", None, 404, "not found"),
    ("POST", "/api/rollouts/nope/explode", None, 400, "unknown command 'explode'"),
    ("POST", "/api/rollouts/nope/pause", {"reason": 5}, 400, "reason: expected a string"),
    ("POST", "/api/rollouts/nope/pause", {"reason": "r" * 5000}, 400, "reason: at most"),
    ("POST", "/api/rollouts/nope/pause", {"why": "x"}, 400, "unknown field 'why'"),
])
def test_bad_rollout_requests(fleet, method, path, body, status, words):
    sim, hub = fleet
    got, doc = hub.http(method, path, body)
    assert got == status and words in doc["error"], doc
    assert sim.journal() == []


def test_token_guards_the_api(procs):
    sim = procs(SimManagers, hosts=1).start()
    hub = procs(HubProc, sim.hosts, token=TOKEN).start()
    assert hub.http("GET", "/api/hosts")[0] == 200
    for token in ("", "wrong-token"):
        status, doc = hub.http("GET", "/api/hosts", token=token)
        assert status == 401 and doc["error"] == "missing or invalid bearer token"
        status, _ = hub.http("POST", "/api/rollouts", start_body(), token=token)
        assert status == 401
        assert hub.http("GET", "/api/nothing-here", token=token)[0] == 401  # no probing
    assert sim.journal() == []
    with pytest.raises(grpc.RpcError):  # and gRPC still wants it
        hub.stub().ListHosts(pb.ListHostsRequest(), timeout=5)
    # the token in a query string (as the page's sockets send it) and over gRPC
    assert hub.http("GET", f"/api/hosts?token={TOKEN}", token="")[0] == 200
    assert hub.http("GET", "/api/nothing?token=wrong-token", token="")[0] == 401
    assert hub.call("ListHosts", pb.ListHostsRequest()).hosts
    assert_no_secret_logged(hub, TOKEN, "wrong-token")


def test_hosts_last_seen_is_the_last_contact(procs):
    """/api/hosts' `last_seen` (what the page shows as "Last contact") is the same last
    contact as gRPC's Host.last_contact_unix: the manager's stream or the agent's
    heartbeat, whichever is later — not only the manager's last message."""
    sim = procs(SimManagers, hosts=1).start()
    hub = procs(HubProc, sim.hosts, extra={"contact_interval": 3600.0}).start()
    wait_for(lambda: hub.http("GET", "/api/info")[1]["reachable"] == 1, 20)

    def grpc_host() -> pb.Host:
        return hub.call("ListHosts", pb.ListHostsRequest()).hosts[0]
    before = grpc_host()
    assert before.last_contact_unix == before.last_seen_unix > 0  # no agent yet
    assert hub.http("GET", "/api/hosts")[1]["hosts"][0]["last_seen"] == before.last_seen_unix
    # the agent heartbeats; the manager's stream stays quiet (a keepalive an hour away)
    wait_for(lambda: time.time() > before.last_seen_unix + 0.2, 5)
    hub.call("Heartbeat", pb.HeartbeatRequest(name="agent-000", version="1.0"))
    now = grpc_host()
    assert now.last_seen_unix == before.last_seen_unix
    assert now.last_contact_unix > before.last_seen_unix + 0.2
    listed = hub.http("GET", "/api/hosts")[1]["hosts"][0]
    assert listed["last_seen"] == now.last_contact_unix
    assert listed["agent"]["last_heartbeat"] == now.last_contact_unix
    one = hub.http("GET", "/api/hosts/agent-000")[1]
    assert one["last_seen"] == now.last_contact_unix


def test_an_http_port_taken_fails_the_start_clearly(procs, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        hub = procs(HubProc, {}, extra={"http_listen": f"127.0.0.1:{port}"})
        with pytest.raises(AssertionError, match=f"cannot bind HTTP to 127.0.0.1:{port}"):
            hub.start()


@pytest.mark.parametrize(("line", "error"), [
    ('http_listen = "0.0.0.0:0"\n', "auth_token_file: required when grpc_listen or "
                                    "http_listen is not a loopback address"),
    ('http_listen = "example.com:80"\n', "http_listen"),
    ('http_listen = "127.0.0.1:70000"\n', "http_listen"),
    ('http_listen = 3001\n', "http_listen"),
    ('http_listen = ""\n', "http_listen"),
    ('http_listen = "127.0.0.1:1' + "0" * 500 + '"\n', "http_listen"),
])
def test_bad_http_listen_is_a_config_error_naming_the_key(tmp_path, line, error):
    import subprocess
    import sys

    from tests.fixtures.hub_procs import ROOT

    path = tmp_path / "hub.toml"
    path.write_text(f'state_dir = "{tmp_path / "s"}"\ngrpc_listen = "127.0.0.1:0"\n' + line)
    out = subprocess.run([sys.executable, "-m", "hub.main", "--config", str(path),
                          "--check-config"], capture_output=True, text=True, cwd=ROOT,
                         timeout=30)
    assert out.returncode == 2 and error in out.stderr, out.stderr


@pytest.mark.parametrize(("method", "request_", "words"), [
    ("StartService", pb.StartServiceRequest(host=""), "host: expected"),
    ("StartService", pb.StartServiceRequest(host="../etc"), "host: expected"),
    ("StartService", pb.StartServiceRequest(host="a" * 5000), "host: expected"),
    ("StartService", pb.StartServiceRequest(host="agent-000", service="bad name"), "service"),
    ("StopService", pb.StopServiceRequest(host="agent-000", timeout_seconds=-1),
     "timeout_seconds"),
    ("StopService", pb.StopServiceRequest(host="agent-000", timeout_seconds=float("nan")),
     "timeout_seconds"),
    ("StopService", pb.StopServiceRequest(host="agent-000", timeout_seconds=1e12),
     "timeout_seconds"),
    ("StopService", pb.StopServiceRequest(host="agent-000", service="x" * 300), "service"),
    ("RestartService", pb.RestartServiceRequest(host="agent-000", service="a/b"), "service"),
])
def test_bad_lifecycle_rpcs_are_refused_and_change_nothing(fleet, method, request_, words):
    _, hub = fleet
    with pytest.raises(grpc.RpcError) as err:
        hub.call(method, request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in err.value.details()
    hosts = hub.http("GET", "/api/hosts")[1]["hosts"]
    assert all(h["state"] == "RUNNING" and h["restarts"] == 0 for h in hosts)


def test_lifecycle_rpc_for_an_unknown_host_or_service(fleet):
    _, hub = fleet
    with pytest.raises(grpc.RpcError) as err:
        hub.call("StopService", pb.StopServiceRequest(host="ghost"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:  # the manager's own answer, passed on
        hub.call("RestartService", pb.RestartServiceRequest(host="agent-000", service="nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_failed_hosts_keep_their_reason_across_a_hub_kill9(fleet):
    sim, hub = fleet
    sim.rules([{"host": "agent-001", "version": "2.0", "outcome": "rolled_back"}])
    rid = hub.http("POST", "/api/rollouts", start_body(strategy={"waves": ["100%"]}))[1]["id"]
    hub.wait_rollout(rid, (pb.ROLLOUT_STATE_ROLLED_BACK, pb.ROLLOUT_STATE_FAILED), 30)
    hub.kill9()
    hub.start()
    row = next(h for h in hub.http("GET", f"/api/rollouts/{rid}")[1]["hosts"]
               if h["name"] == "agent-001")
    assert (row["failed_step"], row["reason"]) == ("health", "simulated health gate failure")


def test_the_page_is_served_with_strict_headers_and_nothing_outside_it(fleet):
    _, hub = fleet
    status, body = hub.http("GET", "/ui/", token="")
    assert status == 200 and b'<script type="module" src="hub.js">' in body
    conn = http.client.HTTPConnection("127.0.0.1", hub.info["http_port"], timeout=10)
    try:
        for path, kind in (("/ui/", "text/html"), ("/ui/hub.js", "text/javascript"),
                           ("/ui/hub.css", "text/css"), ("/ui/shared/base.css", "text/css"),
                           ("/ui/shared/live.js", "text/javascript")):
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200 and resp.getheader("Content-Type").startswith(kind), path
            assert "script-src 'self'" in resp.getheader("Content-Security-Policy")
            assert resp.getheader("X-Content-Type-Options") == "nosniff"
        conn.request("GET", "/ui")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 308 and resp.getheader("Location") == "/ui/"
    finally:
        conn.close()
    for path in ("/ui/../hub/config.py", "/ui/..%2f..%2fetc%2fpasswd", "/ui/%2e%2e/daemon.py",
                 "/ui/ui_routes.py", "/ui/shared/../../http_server.py", "/ui/%00",
                 "/ui/.hidden", "/ui/" + "a" * 5000):
        status, _ = hub.http("GET", path, token="")
        assert status in (404, 431), path


def test_check_config_loads_the_named_tokens_as_the_start_does(tmp_path):
    import subprocess
    import sys

    from tests.fixtures.hub_procs import ROOT

    viewer = tmp_path / "viewer.token"
    viewer.write_text("viewer-token-1\n")
    viewer.chmod(0o644)  # readable by others: refused at start, so by --check-config too
    path = tmp_path / "hub.toml"
    path.write_text(f'state_dir = "{tmp_path / "s"}"\ngrpc_listen = "127.0.0.1:0"\n'
                    f'[[auth_tokens]]\nname = "viewer"\nfile = "{viewer}"\nrole = "read"\n')
    out = subprocess.run([sys.executable, "-m", "hub.main", "--config", str(path),
                          "--check-config"], capture_output=True, text=True, cwd=ROOT,
                         timeout=30)
    assert out.returncode == 2 and "auth_tokens[0].file" in out.stderr, out.stderr
    viewer.chmod(0o600)
    out = subprocess.run([sys.executable, "-m", "hub.main", "--config", str(path),
                          "--check-config"], capture_output=True, text=True, cwd=ROOT,
                         timeout=30)
    assert out.returncode == 0, out.stderr
