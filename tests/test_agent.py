"""The agent: real ai-agent processes, real grpcurl, a real hub (with simulated managers
behind it; FAKE managers, see tests/fixtures/sim_manager.py)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import tomli_w

from backendai.auth import write_token
from backendai.backoff import reconnect_delay
from backendai.v1 import agent_pb2 as apb
from backendai.v1 import agent_pb2_grpc as apb_grpc
from backendai.v1 import hub_pb2 as pb
from backendai.v1 import hub_pb2_grpc as pb_grpc
from tests.fixtures.hub_procs import (
    ROOT,
    HubProc,
    Proc,
    SimManagers,
    make_certs,
    wait_for,
)

HUB_TOKEN = "hub-secret"

GRPCURL = str(Path(sys.executable).parent / "grpcurl")


class AgentProc(Proc):
    def __init__(self, root: Path, name: str = "agent", **config) -> None:
        super().__init__(root, name)
        self.release = root / f"{name}-release"
        self.release.mkdir(exist_ok=True)
        (self.release / "VERSION").write_text("3.1.4\n")
        self.config = {"name": name, "grpc_listen": "127.0.0.1:0", "log_format": "json",
                       **config}
        self.config_path = root / f"{name}.toml"

    def start(self) -> AgentProc:
        self.config_path.write_text(tomli_w.dumps(self.config))
        argv = [sys.executable, "-m", "agent.main", "--config", str(self.config_path),
                "--ready-file", str(self.ready_path)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, cwd=self.release, env=env,
                                         start_new_session=True)
        wait_for(lambda: self.ready_path.exists() or self.proc.poll() is not None, 30)
        assert self.proc.poll() is None, self.logs()
        self.info = json.loads(self.ready_path.read_text())
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.info['grpc_port']}"

    def info_rpc(self) -> apb.AgentInfo:
        with grpc.insecure_channel(self.address) as ch:
            return apb_grpc.AgentStub(ch).GetInfo(apb.GetInfoRequest(), timeout=10)


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRPCURL, *args], capture_output=True, text=True, timeout=30)


def test_agent_serves_version_facts_health_and_reflection(procs):
    agent = procs(AgentProc).start()
    out = grpcurl("-plaintext", agent.address, "list")
    assert "backendai.v1.Agent" in out.stdout and "grpc.health.v1.Health" in out.stdout
    info = json.loads(grpcurl("-plaintext", agent.address, "backendai.v1.Agent/GetInfo").stdout)
    assert info["version"] == "3.1.4"  # the VERSION file of its release root
    facts = info["facts"]
    assert facts["cpu_count"] >= 1 and int(facts["memory_total_bytes"]) > 0
    assert facts["hostname"] and int(facts["disk_total_bytes"]) > 0
    assert apb.AgentInfo.DESCRIPTOR.fields_by_number[1].name == "version"
    health = grpcurl("-plaintext", agent.address, "grpc.health.v1.Health/Check")
    assert "SERVING" in health.stdout
    assert agent.stop() == 0


def test_agent_registers_heartbeats_and_survives_hub_restart(procs, tmp_path):
    sim = procs(SimManagers, hosts=1).start()
    hub = procs(HubProc, {}, token=HUB_TOKEN).start()
    write_token(tmp_path / "agent-hub.token", HUB_TOKEN)
    agent = procs(AgentProc, name="edge-1", hub_address=hub.address,
                  hub_token_file=str(tmp_path / "agent-hub.token"),
                  manager_address=sim.hosts["agent-000"], labels={"group": "edge"},
                  heartbeat_interval=0.3, reconnect_max=1.0).start()

    def listed():
        hosts = hub.call("ListAgents", pb.ListHostsRequest(labels={"group": "edge"})).hosts
        return hosts[0] if hosts and hosts[0].agent_connected and hosts[0].reachable else None
    host = wait_for(listed, 20, "agent registered and its manager watched")
    assert host.name == "edge-1" and host.source == "registered"
    assert host.agent_version == "3.1.4" and host.facts.cpu_count >= 1
    assert host.agent_address == agent.address and host.version == "1.0"
    assert agent.info_rpc().registered

    hub.kill9()
    wait_for(lambda: not agent.info_rpc().registered, 20, "agent notices the hub is gone")
    hub.start(same_port=True)
    before = hub.call("ListAgents", pb.ListHostsRequest()).hosts[0].agent_last_heartbeat_unix
    wait_for(lambda: hub.call("ListAgents", pb.ListHostsRequest()).hosts[0]
             .agent_last_heartbeat_unix > before, 20, "heartbeats again after the restart")
    assert agent.info_rpc().registered


def test_agent_with_wrong_token_is_not_registered(procs, tmp_path):
    sim = procs(SimManagers, hosts=1).start()
    hub = procs(HubProc, {}, token=HUB_TOKEN).start()
    write_token(tmp_path / "bad.token", "not-the-token")
    agent = procs(AgentProc, name="intruder", hub_address=hub.address,
                  hub_token_file=str(tmp_path / "bad.token"),
                  manager_address=sim.hosts["agent-000"], heartbeat_interval=0.2,
                  reconnect_max=0.5).start()
    wait_for(lambda: "UNAUTHENTICATED" in agent.logs() or "invalid bearer" in agent.logs()
             or agent.info_rpc().registered is False, 10)
    assert not agent.info_rpc().registered
    assert list(hub.call("ListAgents", pb.ListHostsRequest()).hosts) == []


@pytest.mark.parametrize(("config", "error"), [
    ({"bogus": 1}, "bogus: unknown key"),
    ({"grpc_listen": "0.0.0.0:0"}, "auth_token_file: required"),
    ({"hub_address": "nohost"}, "hub_address"),
    ({"hub_address": "127.0.0.1:3000"}, "manager_address: required"),
    ({"name": "../etc"}, "name"),
    ({"labels": {"a": 1}}, "labels.a"),
    ({"heartbeat_interval": -1}, "heartbeat_interval"),
])
def test_agent_config_errors_name_the_key(tmp_path, config, error):
    path = tmp_path / "agent.toml"
    config = {"grpc_listen": "127.0.0.1:0", **config}
    path.write_text(tomli_w.dumps(config))
    out = subprocess.run([sys.executable, "-m", "agent.main", "--config", str(path),
                          "--check-config"], capture_output=True, text=True, cwd=ROOT,
                         timeout=30)
    assert out.returncode == 2
    assert error in out.stderr


def test_reconnect_delays_spread_a_fleet_out():
    rng = random.Random(1)
    # 1000 agents losing the hub at once: their first reconnects spread over the window
    first = [reconnect_delay(1, base=0.5, cap=30, roll=rng.random) for _ in range(1000)]
    assert max(first) <= 0.5 and min(first) >= 0
    buckets = [sum(1 for d in first if i * 0.05 <= d < (i + 1) * 0.05) for i in range(10)]
    assert max(buckets) < 200  # no bucket holds a storm (uniform would be ~100)
    assert reconnect_delay(10, base=0.5, cap=30, roll=lambda: 0.999) <= 30
    assert reconnect_delay(100, base=0.5, cap=30, roll=lambda: 1.0) == 30
    assert reconnect_delay(3, base=0.5, cap=30, roll=lambda: 1.0) == 2.0


def test_agent_registers_over_mutual_tls(procs, tmp_path):
    c = make_certs(tmp_path)
    sim = procs(SimManagers, hosts=1).start()
    hub = procs(HubProc, {}, token=HUB_TOKEN, extra={"tls": {
        "cert_file": str(c / "server.pem"), "key_file": str(c / "server.key"),
        "client_ca_file": str(c / "ca.pem")}}).start()
    write_token(tmp_path / "agent-hub.token", HUB_TOKEN)
    common = {"hub_address": hub.address, "hub_token_file": str(tmp_path / "agent-hub.token"),
              "manager_address": sim.hosts["agent-000"], "heartbeat_interval": 0.3,
              "reconnect_max": 0.5}
    good = procs(AgentProc, name="tls-ok", hub_tls={
        "ca_file": str(c / "ca.pem"), "cert_file": str(c / "client.pem"),
        "key_file": str(c / "client.key")}, **common).start()
    bad = procs(AgentProc, name="tls-nocert", hub_tls={"ca_file": str(c / "ca.pem")},
                **common).start()
    wait_for(lambda: good.info_rpc().registered, 20, "agent with a client cert registers")
    assert not bad.info_rpc().registered
    creds = grpc.ssl_channel_credentials(
        root_certificates=(c / "ca.pem").read_bytes(),
        private_key=(c / "client.key").read_bytes(),
        certificate_chain=(c / "client.pem").read_bytes())
    with grpc.secure_channel(hub.address, creds) as ch:
        names = [h.name for h in pb_grpc.HubStub(ch).ListAgents(
            pb.ListHostsRequest(), timeout=5, metadata=hub.metadata()).hosts]
    assert names == ["tls-ok"]


def test_agent_version_rpc_stays_open_with_a_token(procs, tmp_path):
    write_token(tmp_path / "agent.token", "agent-secret")
    agent = procs(AgentProc, auth_token_file=str(tmp_path / "agent.token")).start()
    assert agent.info_rpc().version == "3.1.4"  # what a manager's health gate calls
    out = grpcurl("-plaintext", agent.address, "list")
    assert "backendai.v1.Agent" in out.stdout  # reflection stays open


def test_taken_port_fails_clearly(tmp_path):
    """One line and exit 1, as the hub and the manager; with a hub configured too (the
    registration task must not be touched when the server never started)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        path = tmp_path / "agent.toml"
        path.write_text(tomli_w.dumps({"name": "agent", "grpc_listen": f"127.0.0.1:{port}",
                                       "hub_address": "127.0.0.1:1",
                                       "manager_address": "127.0.0.1:1"}))
        out = subprocess.run([sys.executable, "-m", "agent.main", "--config", str(path)],
                             capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert out.returncode == 1, out.stderr
    assert f"ai-agent: cannot bind gRPC to 127.0.0.1:{port}" in out.stderr
    assert "Traceback" not in out.stderr
