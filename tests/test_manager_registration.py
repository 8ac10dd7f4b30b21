"""A manager with `[hub]` registers its host with a real hub: the hub then lists and
watches it without a static inventory entry, keeps it across a hub kill -9, and a
manager with the wrong token or no hub yet keeps serving and retries."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from backendai.auth import write_token
from backendai.errors import ConfigError
from backendai.v1 import hub_pb2 as hpb
from backendai.v1 import manager_pb2 as pb
from manager import config
from tests.conftest import ManagerProc, assert_eventually, fast_service
from tests.fixtures.hub_procs import HubProc

HUB_TOKEN = "hub-secret"


def hosts(hub: HubProc) -> dict[str, hpb.Host]:
    return {h.name: h for h in hub.call("ListHosts", hpb.ListHostsRequest()).hosts}


def registering_manager(make_manager, tmp_path: Path, hub_address: str, *,
                        token: str = HUB_TOKEN, **hub: object) -> ManagerProc:
    token_file = tmp_path / "hub-for-manager.token"
    write_token(token_file, token)
    table = {"address": hub_address, "name": "edge-7", "token_file": str(token_file),
             "labels": {"site": "lab"}, "register_interval": 1.0, **hub}
    return make_manager([fast_service("svc")], top={"hub": table})


def log_events(m: ManagerProc) -> list[str]:
    return [json.loads(line)["event"] for line in m.logs().splitlines()
            if line.startswith("{")]


def test_a_registered_manager_is_listed_watched_and_survives_a_hub_kill9(
        make_manager, tmp_path):
    hub = HubProc(tmp_path, {}, token=HUB_TOKEN)
    try:
        hub.start()
        m = registering_manager(make_manager, tmp_path, hub.address).start()
        host = assert_eventually(lambda: hosts(hub).get("edge-7"), 20, what="registered")
        assert host.manager_address == m.grpc_addr and host.source == "registered"
        assert dict(host.labels) == {"site": "lab"} and host.role == "agent"
        # the hub watches the manager it learned about
        assert_eventually(lambda: hosts(hub)["edge-7"].reachable
                          and hosts(hub)["edge-7"].state == pb.SERVICE_STATE_RUNNING, 20)
        assert "manager.registered" in log_events(m)
        hub.kill9()
        hub.start(same_port=True)
        assert_eventually(lambda: hosts(hub).get("edge-7") is not None
                          and hosts(hub)["edge-7"].reachable, 30, what="known after restart")
    finally:
        hub.cleanup()


def test_wrong_token_is_retried_and_the_manager_keeps_serving(make_manager, tmp_path):
    hub = HubProc(tmp_path, {}, token=HUB_TOKEN)
    try:
        hub.start()
        m = registering_manager(make_manager, tmp_path, hub.address, token="Bad-T0ken-99").start()
        assert_eventually(lambda: log_events(m).count("manager.register_failed") >= 2, 20,
                          what="retried")
        assert "UNAUTHENTICATED" in m.logs() and "Bad-T0ken-99" not in m.logs()
        assert "edge-7" not in hosts(hub)
        assert m.status().state in (pb.SERVICE_STATE_STARTING, pb.SERVICE_STATE_RUNNING)
    finally:
        hub.cleanup()


def test_a_hub_that_comes_up_later_gets_the_registration(make_manager, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    m = registering_manager(make_manager, tmp_path, f"127.0.0.1:{port}").start()
    assert_eventually(lambda: "manager.register_failed" in log_events(m), 20)
    hub = HubProc(tmp_path, {}, token=HUB_TOKEN, extra={"grpc_listen": f"127.0.0.1:{port}"})
    try:
        hub.start()
        assert_eventually(lambda: "edge-7" in hosts(hub), 30, what="registered late")
    finally:
        hub.cleanup()


def doc(tmp_path: Path, hub: object) -> dict[str, object]:
    return {"state_dir": str(tmp_path), "hub": hub,
            "services": [{"name": "svc", "command": ["true"]}]}


def test_hub_table_defaults(tmp_path):
    cfg = config.parse(doc(tmp_path, {"address": "10.0.0.2:3000"}))
    assert cfg.hub is not None and cfg.hub.name and cfg.hub.register_interval == 60.0
    assert cfg.hub.token_file is None and cfg.hub.advertise_address == ""


@pytest.mark.parametrize(("hub", "message"), [
    ("10.0.0.2:3000", "hub: must be a table"),
    ({}, "hub.address: required"),
    ({"address": "nohost"}, "hub.address"),
    ({"address": "10.0.0.2:3000", "bogus": 1}, "hub.bogus: unknown key"),
    ({"address": "10.0.0.2:3000", "name": "../x"}, "hub.name"),
    ({"address": "10.0.0.2:3000", "token_file": "hub.token"},
     "hub.token_file: must be an absolute path"),
    ({"address": "10.0.0.2:3000", "register_interval": 0}, "hub.register_interval"),
    ({"address": "10.0.0.2:3000", "labels": {"a": 1}}, "hub.labels.a"),
    ({"address": "10.0.0.2:3000", "advertise_address": "x:99999"}, "hub.advertise_address"),
    ({"address": "10.0.0.2:3000", "tls": {"ca_file": "/nonexistent"}}, "hub.tls.ca_file"),
])
def test_bad_hub_table_names_the_key(tmp_path, hub, message):
    with pytest.raises(ConfigError) as info:
        config.parse(doc(tmp_path, hub))
    assert message in str(info.value)
