"""The hub's API at its edges: auth, TLS and mutual TLS, bad input, dry runs, fleet
fan-out, registration, self-update order. A real ai-hub process; managers are the
simulation in tests/fixtures/sim_manager.py (FAKE: see there why)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import tomli_w

from backendai.v1 import hub_pb2 as pb
from backendai.v1 import hub_pb2_grpc as pb_grpc
from backendai.v1 import manager_pb2 as mpb
from tests.fixtures.hub_procs import (
    ROOT,
    TERMINAL,
    HubProc,
    SimManagers,
    make_certs,
    wait_for,
)

TOKEN = "hub-token-1"
MTOKEN = "manager-token-1"
GRPCURL = str(Path(sys.executable).parent / "grpcurl")


def code_of(fn):
    with pytest.raises(grpc.RpcError) as err:
        fn()
    return err.value.code(), err.value.details()


def test_tokens_both_ways(procs):
    """Callers need the hub's token; the hub sends the managers' token to them."""
    sim = procs(SimManagers, hosts=2, token=MTOKEN).start()
    hub = procs(HubProc, sim.hosts, token=TOKEN, manager_token=MTOKEN).start()
    wait_for(lambda: all(h.reachable for h in hub.call("ListHosts", pb.ListHostsRequest()).hosts),
             what="the hub reaches token-protected managers")
    stub = hub.stub()
    code, _ = code_of(lambda: stub.ListHosts(pb.ListHostsRequest(), timeout=5))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    code, _ = code_of(lambda: stub.ListHosts(pb.ListHostsRequest(), timeout=5,
                                             metadata=[("authorization", "Bearer nope")]))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    code, _ = code_of(lambda: stub.StartRollout(pb.StartRolloutRequest(version="2.0"),
                                                timeout=5))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    # GetInfo stays open: a manager's health gate reads the version without a token
    assert stub.GetInfo(pb.HubInfoRequest(), timeout=5).version == "9.9.9"
    r = hub.call("StartRollout", pb.StartRolloutRequest(version="2.0")).rollout
    assert hub.wait_rollout(r.id, TERMINAL).state == pb.ROLLOUT_STATE_SUCCEEDED
    # health and reflection stay open (grpcurl with no token)
    out = subprocess.run([GRPCURL, "-plaintext", hub.address, "list"], capture_output=True,
                         text=True, timeout=30)
    assert "backendai.v1.Hub" in out.stdout


def test_wrong_manager_token_shows_hosts_unreachable(procs):
    sim = procs(SimManagers, hosts=1, token=MTOKEN).start()
    hub = procs(HubProc, sim.hosts, manager_token="wrong-token").start()
    host = wait_for(lambda: next(iter(h for h in hub.call("ListHosts", pb.ListHostsRequest())
                                      .hosts if "UNAUTHENTICATED" in h.message), None), 20)
    assert not host.reachable


@pytest.mark.parametrize(("request_", "code", "words"), [
    (pb.StartRolloutRequest(version=""), grpc.StatusCode.INVALID_ARGUMENT, "version"),
    (pb.StartRolloutRequest(version="../../etc"), grpc.StatusCode.INVALID_ARGUMENT, "version"),
    (pb.StartRolloutRequest(version="x" * 5000), grpc.StatusCode.INVALID_ARGUMENT, "version"),
    # what the managers refuse, the hub refuses too (one rule: backendai/validate.py)
    (pb.StartRolloutRequest(version="1..2"), grpc.StatusCode.INVALID_ARGUMENT, "'..'"),
    (pb.StartRolloutRequest(version="2.1.44\n"), grpc.StatusCode.INVALID_ARGUMENT, "version"),
    (pb.StartRolloutRequest(version="a/b"), grpc.StatusCode.INVALID_ARGUMENT, "version"),
    (pb.StartRolloutRequest(version="2.1.44", service="svc\n"),
     grpc.StatusCode.INVALID_ARGUMENT, "service"),
    (pb.StartRolloutRequest(version="2.0", strategy=pb.RolloutStrategy(waves=["0"])),
     grpc.StatusCode.INVALID_ARGUMENT, "strategy.waves"),
    (pb.StartRolloutRequest(version="2.0", strategy=pb.RolloutStrategy(waves=["150%"])),
     grpc.StatusCode.INVALID_ARGUMENT, "percentage"),
    (pb.StartRolloutRequest(version="2.0", strategy=pb.RolloutStrategy(
        step_deadline_seconds=-5)), grpc.StatusCode.INVALID_ARGUMENT, "step_deadline"),
    (pb.StartRolloutRequest(version="2.0", strategy=pb.RolloutStrategy(
        max_failures_total="many")), grpc.StatusCode.INVALID_ARGUMENT, "max_failures_total"),
    (pb.StartRolloutRequest(version="2.0", target=pb.RolloutTarget(hosts=["ghost"])),
     grpc.StatusCode.INVALID_ARGUMENT, "ghost"),
    (pb.StartRolloutRequest(version="2.0", target=pb.RolloutTarget(labels={"site": "mars"})),
     grpc.StatusCode.INVALID_ARGUMENT, "matches no hosts"),
    (pb.StartRolloutRequest(version="2.0", include_hub=True),
     grpc.StatusCode.FAILED_PRECONDITION, "self"),
    (pb.StartRolloutRequest(version="2.0", service="../../bin/sh"),
     grpc.StatusCode.INVALID_ARGUMENT, "service"),
    (pb.StartRolloutRequest(version="2.0", target=pb.RolloutTarget(hosts=["a/b"])),
     grpc.StatusCode.INVALID_ARGUMENT, "target.hosts"),
    (pb.StartRolloutRequest(version="2.0", target=pb.RolloutTarget(labels={"bad key": "x"})),
     grpc.StatusCode.INVALID_ARGUMENT, "target.labels"),
])
def test_bad_start_requests_are_refused_and_change_nothing(procs, request_, code, words):
    sim = procs(SimManagers, hosts=2).start()
    hub = procs(HubProc, sim.hosts).start()
    got, details = code_of(lambda: hub.call("StartRollout", request_))
    assert got == code and words in details
    assert list(hub.call("ListRollouts", pb.ListRolloutsRequest()).rollouts) == []
    assert sim.journal() == []


def test_bad_ids_and_control_without_rollout(procs):
    sim = procs(SimManagers, hosts=1).start()
    hub = procs(HubProc, sim.hosts).start()
    assert code_of(lambda: hub.call("GetRollout", pb.GetRolloutRequest(id="nope")))[0] == \
        grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: hub.call("GetRollout", pb.GetRolloutRequest(id="x" * 500)))[0] == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: hub.call("PauseRollout", pb.RolloutControlRequest()))[0] == \
        grpc.StatusCode.FAILED_PRECONDITION
    for bad in (float("nan"), -1.0, 1e9):
        assert code_of(lambda bad=bad: hub.call("HostStatus", pb.HostStatusRequest(
            timeout_seconds=bad)))[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: hub.call("HostStatus", pb.HostStatusRequest(hosts=["ghost"])))[0] \
        == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: list(hub.stub().WatchRollout(pb.WatchRolloutRequest(
        from_index=2**64 - 1), timeout=5)))[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: hub.call("RestartService", pb.RestartServiceRequest(
        host="ghost")))[0] == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: hub.call("Register", pb.RegisterRequest(
        name="../x", role="agent")))[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: hub.call("Register", pb.RegisterRequest(
        name="new", role="agent")))[0] == grpc.StatusCode.INVALID_ARGUMENT  # no manager
    assert code_of(lambda: hub.call("Register", pb.RegisterRequest(
        name="new", role="agent", manager_address="1.2.3.4:99999")))[0] == \
        grpc.StatusCode.INVALID_ARGUMENT


def test_dry_run_previews_the_plan_and_one_active_rollout_at_a_time(hub_store, procs):
    sim = procs(SimManagers, hosts=10, delay=2.0).start()
    labels = {n: {"group": "a" if i % 2 else "b"} for i, n in enumerate(sorted(sim.hosts))}
    hub = procs(HubProc, sim.hosts, labels=labels, store=hub_store).start()
    req = pb.StartRolloutRequest(version="2.0", dry_run=True, target=pb.RolloutTarget(
        labels={"group": "a"}), strategy=pb.RolloutStrategy(seed=42, waves=["1", "60%"]))
    plan = hub.call("StartRollout", req).rollout
    assert plan.id == "" and plan.state == pb.ROLLOUT_STATE_PLANNED
    assert [len(w.hosts) for w in plan.waves] == [1, 4]
    assert all(labels[h]["group"] == "a" for w in plan.waves for h in w.hosts)
    assert hub.call("StartRollout", req).rollout.waves == plan.waves  # same seed, same plan
    assert sim.journal() == [] and not hub.call("ListRollouts", pb.ListRolloutsRequest()).rollouts
    req.dry_run = False
    real = hub.call("StartRollout", req).rollout
    assert [w.hosts for w in real.waves] == [w.hosts for w in plan.waves] and real.seed == 42
    got, details = code_of(lambda: hub.call("StartRollout", req))
    assert got == grpc.StatusCode.FAILED_PRECONDITION and real.id in details
    hub.call("AbortRollout", pb.RolloutControlRequest(id=real.id))
    hub.wait_rollout(real.id, TERMINAL)
    listed = hub.call("ListRollouts", pb.ListRolloutsRequest(with_hosts=True)).rollouts
    assert [r.id for r in listed] == [real.id] and len(listed[0].hosts) == 5


def test_fleet_fan_out_status_restart_and_logs(procs):
    sim = procs(SimManagers, hosts=3).start()
    hub = procs(HubProc, {**sim.hosts, "dead": "127.0.0.1:1"}).start()
    resp = hub.call("HostStatus", pb.HostStatusRequest(timeout_seconds=2))
    by = {h.host: h for h in resp.hosts}
    assert set(by) == {*sim.hosts, "dead"}
    assert all(by[n].reachable and by[n].services[0].version == "1.0" for n in sim.hosts)
    assert not by["dead"].reachable and by["dead"].error
    st = hub.call("RestartService", pb.RestartServiceRequest(host="agent-001"))
    assert st.restarts == 1
    batches = hub.stub().StreamHostLogs(pb.StreamHostLogsRequest(host="agent-002", tail_lines=3),
                                        timeout=20)
    lines = []
    for batch in batches:
        lines += batch.lines
        if len(lines) >= 5:
            batches.cancel()
            break
    assert lines[0].startswith("agent-002 sim log line") and "follow line" in lines[-1]
    done = list(hub.stub().StreamHostLogs(pb.StreamHostLogsRequest(
        host="agent-000", tail_lines=2, no_follow=True), timeout=20))
    assert [len(b.lines) for b in done] == [2]
    hosts = {h.name: h for h in hub.call("ListHosts", pb.ListHostsRequest()).hosts}
    assert not hosts["dead"].reachable and hosts["agent-000"].state == mpb.SERVICE_STATE_RUNNING


def test_self_update_order_updates_the_hub_first(hub_store, procs):
    sim = procs(SimManagers, hosts=4, delay=0.3).start()
    agents = {n: a for n, a in sim.hosts.items() if n != "agent-000"}
    hub = procs(HubProc, agents, self_manager=sim.hosts["agent-000"], store=hub_store).start()
    r = hub.call("StartRollout", pb.StartRolloutRequest(
        version="2.0", include_hub=True, strategy=pb.RolloutStrategy(seed=3))).rollout
    assert r.waves[0].spec == "hub" and list(r.waves[0].hosts) == ["hub"]
    assert r.state == pb.ROLLOUT_STATE_UPDATING_HUB
    done = hub.wait_rollout(r.id, TERMINAL)
    assert done.state == pb.ROLLOUT_STATE_SUCCEEDED, done
    order = [e["host"] for e in sim.journal() if e["call"] == "update"]
    assert order[0] == "agent-000" and sorted(order) == sorted(sim.hosts)  # hub's manager first


def test_hub_killed_during_its_self_update_resumes_the_agent_waves(hub_store, procs):
    """What the seeds' order looks like on a host: the hub's manager restarts the hub in
    the middle of the hub wave; the new hub process picks the rollout up."""
    sim = procs(SimManagers, hosts=3, delay=1.0).start()
    agents = {n: a for n, a in sim.hosts.items() if n != "agent-000"}
    hub = procs(HubProc, agents, self_manager=sim.hosts["agent-000"], store=hub_store).start()
    r = hub.call("StartRollout", pb.StartRolloutRequest(version="2.0", include_hub=True)).rollout
    wait_for(sim.journal, 10, "the hub asked its own manager to update it")
    hub.kill9()
    hub.start()
    done = hub.wait_rollout(r.id, TERMINAL)
    assert done.state == pb.ROLLOUT_STATE_SUCCEEDED, done
    assert sim.updates_per_host() == dict.fromkeys(sim.hosts, 1)


def test_managers_can_register_themselves(hub_store, procs):
    sim = procs(SimManagers, hosts=2).start()
    hub = procs(HubProc, {}, store=hub_store).start()
    resp = hub.call("Register", pb.RegisterRequest(
        name="nas-1", role="manager", manager_address=sim.hosts["agent-001"],
        labels={"site": "home"}))
    assert resp.heartbeat_interval_seconds > 0
    host = wait_for(lambda: next(iter(h for h in hub.call("ListHosts", pb.ListHostsRequest(
        labels={"site": "home"})).hosts if h.reachable), None), 20)
    assert host.name == "nas-1" and host.source == "registered" and host.version == "1.0"
    hb = hub.call("Heartbeat", pb.HeartbeatRequest(name="unknown-host"))
    assert hb.reregister
    hub.stop()
    hub.start()  # registered hosts are remembered
    assert [h.name for h in hub.call("ListHosts", pb.ListHostsRequest()).hosts] == ["nas-1"]


@pytest.mark.parametrize(("extra", "error"), [
    ("bogus = 1\n", "bogus: unknown key"),
    ('grpc_listen = "0.0.0.0:0"\n', "auth_token_file: required"),
    ('[[hosts]]\nname = "a"\nmanager = "x:1:2"\n', "hosts[0].manager"),
    ('[[hosts]]\nname = "a"\n', "hosts[0].manager: required"),
    ('[[hosts]]\nname = "a"\nmanager = "h:1"\n[[hosts]]\nname = "a"\nmanager = "h:2"\n',
     "duplicate host names a"),
    ('[tls]\ncert_file = "/nonexistent"\nkey_file = "/nonexistent"\n', "tls.cert_file"),
    ('inventory_file = "missing.toml"\n', "missing.toml"),
])
def test_hub_config_errors_name_the_key(tmp_path, extra, error):
    path = tmp_path / "hub.toml"
    top = tomli_w.dumps({"state_dir": str(tmp_path / "s")})
    if "grpc_listen" not in extra:
        top += 'grpc_listen = "127.0.0.1:0"\n'
    path.write_text(top + extra)
    out = subprocess.run([sys.executable, "-m", "hub.main", "--config", str(path),
                          "--check-config"], capture_output=True, text=True, cwd=ROOT,
                         timeout=30)
    assert out.returncode == 2, out
    assert error in out.stderr


# ---------------------------------------------------------------- TLS

@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


def test_mutual_tls_hub_and_managers(procs, certs):
    c = certs
    sim = procs(SimManagers, hosts=2, tls=["--tls-cert", str(c / "server.pem"), "--tls-key",
                                           str(c / "server.key"), "--client-ca",
                                           str(c / "ca.pem")]).start()
    hub = procs(HubProc, sim.hosts)  # configured below, then started
    hub.extra.update({"tls": {"cert_file": str(c / "server.pem"),
                              "key_file": str(c / "server.key"),
                              "client_ca_file": str(c / "ca.pem")},
                      "manager_tls": {"ca_file": str(c / "ca.pem"),
                                      "cert_file": str(c / "client.pem"),
                                      "key_file": str(c / "client.key")}})
    hub.start()
    creds = grpc.ssl_channel_credentials(
        root_certificates=(c / "ca.pem").read_bytes(),
        private_key=(c / "client.key").read_bytes(),
        certificate_chain=(c / "client.pem").read_bytes())
    with grpc.secure_channel(hub.address, creds) as ch:
        stub = pb_grpc.HubStub(ch)
        wait_for(lambda: all(h.reachable for h in stub.ListHosts(
            pb.ListHostsRequest(), timeout=5).hosts), 20, "hub reaches managers over mTLS")
    # no client certificate: the handshake fails
    anon = grpc.ssl_channel_credentials(root_certificates=(c / "ca.pem").read_bytes())
    with grpc.secure_channel(hub.address, anon) as ch:
        code, _ = code_of(lambda: pb_grpc.HubStub(ch).ListHosts(pb.ListHostsRequest(),
                                                                timeout=5))
        assert code == grpc.StatusCode.UNAVAILABLE
    # plaintext to a TLS port fails too
    with grpc.insecure_channel(hub.address) as ch:
        code, _ = code_of(lambda: pb_grpc.HubStub(ch).ListHosts(pb.ListHostsRequest(),
                                                                timeout=5))
        assert code == grpc.StatusCode.UNAVAILABLE




def test_taken_port_and_second_hub_on_same_state_dir_fail_clearly(procs, tmp_path):
    import socket

    hub = procs(HubProc, {}).start()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        path = tmp_path / "other.toml"
        path.write_text(tomli_w.dumps({"state_dir": str(tmp_path / "other")}) +
                        f'grpc_listen = "127.0.0.1:{port}"\n')
        out = subprocess.run([sys.executable, "-m", "hub.main", "--config", str(path)],
                             capture_output=True, text=True, cwd=ROOT, timeout=30)
        assert out.returncode == 1 and f"cannot bind gRPC to 127.0.0.1:{port}" in out.stderr
    out = subprocess.run([sys.executable, "-m", "hub.main", "--config", str(hub.config_path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert out.returncode == 1 and "one daemon per state_dir" in out.stderr
    assert hub.proc.poll() is None


def test_target_names_and_labels_narrow_together_and_naming_the_hub_puts_it_first(procs):
    sim = procs(SimManagers, hosts=5).start()
    agents = {n: a for n, a in sim.hosts.items() if n != "agent-004"}
    labels = {"agent-000": {"site": "x"}, "agent-001": {"site": "x"}, "agent-002": {"site": "y"}}
    hub = procs(HubProc, agents, labels=labels, self_manager=sim.hosts["agent-004"]).start()
    plan = hub.call("StartRollout", pb.StartRolloutRequest(
        version="2.0", dry_run=True, target=pb.RolloutTarget(
            labels={"site": "x"}, hosts=["agent-001", "agent-002", "hub"]))).rollout
    assert [list(w.hosts) for w in plan.waves] == [["hub"], ["agent-001"]]
    assert plan.include_hub
    everyone = hub.call("StartRollout", pb.StartRolloutRequest(version="2.0", dry_run=True))
    assert sorted(h for w in everyone.rollout.waves for h in w.hosts) == sorted(agents)


def test_rollout_to_the_running_version_touches_nothing(procs):
    sim = procs(SimManagers, hosts=3).start()
    agents = {n: a for n, a in sim.hosts.items() if n != "agent-000"}
    hub = procs(HubProc, agents, self_manager=sim.hosts["agent-000"]).start()
    r = hub.call("StartRollout", pb.StartRolloutRequest(version="1.0", include_hub=True)).rollout
    done = hub.wait_rollout(r.id, TERMINAL)
    assert done.state == pb.ROLLOUT_STATE_SUCCEEDED, done
    assert sim.updates_per_host() == {}
    assert {e["call"] for e in sim.journal()} == {"update-noop"}


def test_a_manager_that_hangs_answers_deadline_exceeded_naming_the_step(procs):
    sim = procs(SimManagers, hosts=2).start()
    sim.rules([{"call": "restart", "host": "agent-001", "outcome": "hang"},
               {"call": "list_services", "host": "agent-001", "outcome": "hang"}])
    hub = procs(HubProc, sim.hosts, extra={"call_timeout": 0.2}).start()
    got, details = code_of(lambda: hub.call("RestartService", pb.RestartServiceRequest(
        host="agent-001", service="ai-agent")))
    assert got == grpc.StatusCode.DEADLINE_EXCEEDED
    assert details == "restart of ai-agent on host agent-001: no answer within 0.6s"
    by = {h.host: h for h in hub.call("HostStatus", pb.HostStatusRequest(
        timeout_seconds=0.5)).hosts}
    assert by["agent-000"].reachable
    assert not by["agent-001"].reachable
    assert by["agent-001"].error == \
        "DEADLINE_EXCEEDED: status of host agent-001: no answer within 0.5s"
    assert hub.call("RestartService", pb.RestartServiceRequest(host="agent-000")).restarts == 1
    assert "Traceback" not in hub.logs() and "grpc.internal_error" not in hub.logs()
