"""The manager's lean start: a real ai-manager (tests/fixtures/module_census.py) whose
config uses none of the optional features has loaded none of their modules once it is
ready and has answered a Status on both transports; a config that uses them loads them.
A behaviour test (what is imported), not a timing one."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
from grpc_reflection.v1alpha import reflection_pb2

from backendai.v1 import manager_pb2 as pb
from tests.conftest import ManagerProc, assert_eventually, fast_service

CENSUS = "tests.fixtures.module_census"

# Module (and its submodules) -> what alone may load it.
HEAVY = {
    "prometheus_client": "the first GET /metrics",
    "backendai.metrics_export": "the first GET /metrics",
    "wsproto": "a WebSocket upgrade",
    "backendai.websocket": "a WebSocket upgrade",
    "psycopg": "nothing: the manager never uses PostgreSQL",
    "psycopg_pool": "nothing: the manager never uses PostgreSQL",
    "backendai.tls": "a [tls], [hub.tls] or health_tls table",
    "cryptography": "a signing key (package verification)",
    "backendai.events.sinks": "[[event_sinks]]",
    "manager.updates.updater": "a service with install_root",
    "tarfile": "an update",
    "zipfile": "an update",
    "hashlib": "an update (or an HMAC-signed sink, a token check)",
    "shutil": "an update",
    "bz2": "an update",
    "lzma": "an update",
    "urllib.request": "an update's download, a webhook or OpenSearch sink",
    "http.client": "an update's download, a webhook or OpenSearch sink",
    "manager.supervision.health_monitor": "a [services.health] check",
    "manager.supervision.health_probes": "a [services.health] check",
    "manager.config_reload": "the first reload",
    "manager.hub_registration": "[hub]",
    "manager.supervision.systemd_unit": "a systemd service",
    "manager.supervision.rcd_unit": "an rcd service",
    "psutil": "a search of the process table (never a fresh start)",
    "grpc_reflection.v1alpha": "the first reflection call (grpcurl list)",
}


def loaded(modules: set[str], name: str) -> bool:
    return name in modules or any(m.startswith(name + ".") for m in modules)


def census(m: ManagerProc) -> set[str]:
    """The modules the running manager has loaded now."""
    where = m.root / "census"
    (where / "ask").touch()
    out = where / "modules"
    assert_eventually(out.exists, what="the manager's module census")
    return set(out.read_text().split())


def start(m: ManagerProc) -> ManagerProc:
    (m.root / "census").mkdir()
    return m.start(entry=[CENSUS, str(m.root / "census")])


def answer_status(m: ManagerProc) -> None:
    """One Status on each transport: what a ready manager serves first."""
    assert_eventually(lambda: m.status("svc").state == pb.SERVICE_STATE_RUNNING,
                      what="svc RUNNING")
    code, body = m.http("GET", "/status?service=svc")
    assert code == 200, body
    assert json.loads(body)["running"] is True


def test_a_plain_config_loads_no_optional_module(make_manager):
    m = start(make_manager([fast_service("svc")]))
    answer_status(m)
    modules = census(m)
    assert "manager.daemon" in modules and "grpc" in modules  # the census is the manager's
    found = {name: why for name, why in HEAVY.items() if loaded(modules, name)}
    assert not found, f"loaded at start though nothing configured needs them: {found}"


def list_services(m: ManagerProc) -> list[str]:
    """What `grpcurl list` asks: reflection's list_services."""
    with grpc.insecure_channel(m.grpc_addr) as channel:
        info = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
        replies = list(info(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                            timeout=10))
    return [s.name for s in replies[0].list_services_response.service]


def test_the_optional_modules_load_when_used(make_manager, tmp_path: Path):
    """The census sees what a config (a sink, a health check) and a request (/metrics,
    reflection) load: the test above cannot pass for want of looking."""
    m = start(make_manager(
        [fast_service("svc", health={"exec": ["/bin/true"], "interval": 1.0})],
        {"event_sinks": [{"type": "jsonl", "path": str(tmp_path / "events.jsonl")}]}))
    answer_status(m)
    code, _ = m.http("GET", "/metrics")
    assert code == 200
    assert list_services(m) == ["backendai.v1.Manager", "grpc.health.v1.Health",
                                "grpc.reflection.v1alpha.ServerReflection"]
    modules = census(m)
    for name in ("backendai.events.sinks", "manager.supervision.health_monitor",
                 "prometheus_client", "grpc_reflection.v1alpha"):
        assert loaded(modules, name), name
