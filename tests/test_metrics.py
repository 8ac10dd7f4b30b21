"""Prometheus metrics with plain values: the counts, the manager's and the hub's
collectors, the exposition (read back with prometheus_client's own parsers), the call
interceptor against a real gRPC server, and the /metrics endpoint's rules."""

from __future__ import annotations

import asyncio
import http.client
import math
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import grpc
import pytest
import tomli_w
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families as text_parse

from backendai.errors import ConfigError
from backendai.http_router import Router
from backendai.http_server import HttpServer
from backendai.listen import ListenAddress
from backendai.metric_counts import CounterVec, HistogramVec
from backendai.metrics_export import counter, histogram, new_registry, render
from backendai.metrics_http import add_metrics_route
from backendai.update_terms import OpKind, Outcome, Step
from backendai.v1 import manager_pb2 as mpb
from backendai.v1 import manager_pb2_grpc as mpb_grpc
from hub import config as hub_config
from hub import rollout_engine as E
from hub.config import HostEntry
from hub.inventory import HostView, Inventory
from hub.manager_links import ManagerLinks
from hub.metrics import MAX_VERSIONS, HubCollector
from hub.stats import HubStats, method_label
from manager import config as manager_config
from manager.api.control import ManagerControl
from manager.api.metrics import ManagerCollector
from manager.supervision.logstore import LogStore
from manager.supervision.states import ServiceStatus, State, UpdateSummary
from manager.updates.update_stats import UpdateStats
from tests.conftest import ROOT
from tests.test_rollout_engine import Fleet, start

TOKEN = "metrics-token"


def samples(registry: Any, *, openmetrics: bool = False) -> dict[tuple[str, frozenset[Any]], float]:
    """Every sample of a registry's exposition, parsed back: (name, labels) -> value."""
    body, _ = render(registry, openmetrics=openmetrics)
    parse = om_parse if openmetrics else text_parse
    out = {}
    for family in parse(body.decode()):
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, f"duplicate sample {key}"
            out[key] = s.value
    return out


def registry_of(*collectors: Any) -> CollectorRegistry:
    reg = CollectorRegistry()
    for c in collectors:
        reg.register(c)
    return reg


def value(found: dict[tuple[str, frozenset[Any]], float], name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def named(found: dict[tuple[str, frozenset[Any]], float], name: str) -> dict[frozenset[Any], float]:
    return {labels: v for (n, labels), v in found.items() if n == name}


# -- the counts ------------------------------------------------------------------------

def test_counter_counts_by_labels_and_refuses_going_down():
    c = CounterVec("method", "code")
    c.inc("Status", "OK")
    c.inc("Status", "OK", amount=2)
    c.inc("Update", "UNAVAILABLE")
    assert c.get("Status", "OK") == 3 and c.get("Nope", "OK") == 0
    assert list(c.items()) == [(("Status", "OK"), 3.0), (("Update", "UNAVAILABLE"), 1.0)]
    for bad in (-1.0, math.nan):
        with pytest.raises(ValueError, match="only goes up"):
            c.inc("Status", "OK", amount=bad)
    with pytest.raises(ValueError, match="expected labels"):
        c.inc("Status")
    assert c.get("Status", "OK") == 3


def test_histogram_buckets_are_upper_bounds_and_cumulative_on_export():
    h = HistogramVec("step", buckets=(0.1, 1.0, 10.0))
    for v in (0.05, 0.1, 0.5, 1.0, 5.0, 50.0, math.inf, math.nan):
        h.observe(v, "download")
    data = h.get("download")
    assert data is not None
    assert data.buckets == [2, 2, 1, 1]  # <=0.1, <=1, <=10, +Inf; inf and nan ignored
    assert data.count == 6 and data.sum == pytest.approx(56.65)
    found = samples(registry_of(_Families(histogram("x_seconds", "x", h))))
    assert value(found, "x_seconds_bucket", step="download", le="0.1") == 2
    assert value(found, "x_seconds_bucket", step="download", le="1.0") == 4
    assert value(found, "x_seconds_bucket", step="download", le="10.0") == 5
    assert value(found, "x_seconds_bucket", step="download", le="+Inf") == 6
    assert value(found, "x_seconds_count", step="download") == 6
    for bad in ((), (1.0, 0.5), (1.0, 1.0), (1.0, math.inf)):
        with pytest.raises(ValueError, match="buckets"):
            HistogramVec(buckets=bad)


class _Families:
    def __init__(self, *families: Any) -> None:
        self.families = families

    def collect(self) -> Iterable[Any]:
        return self.families


def test_both_exposition_formats_parse_and_carry_the_process_metrics():
    c = CounterVec("outcome")
    c.inc("succeeded")
    reg = new_registry([_Families(counter("backendai_test_things_total", "Things.", c))])
    for om in (False, True):
        found = samples(reg, openmetrics=om)
        assert value(found, "backendai_test_things_total", outcome="succeeded") == 1
        assert value(found, "process_resident_memory_bytes") > 1e6
        assert value(found, "process_open_fds") > 0
    body, content_type = render(reg, openmetrics=True)
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")
    assert render(reg)[1] == "text/plain; version=0.0.4; charset=utf-8"


# -- the manager -----------------------------------------------------------------------

class FakeUnit:
    def __init__(self, st: ServiceStatus, logs: LogStore | None = None) -> None:
        self.st = st
        self.name = st.name
        if logs is not None:
            self.logs = logs

    def status(self) -> ServiceStatus:
        return self.st


class FakeUpdater:
    def __init__(self) -> None:
        self.stats = UpdateStats()


def manager_control(tmp_path: Path, units: dict[str, FakeUnit], updater: Any = None,
                    **top: Any) -> ManagerControl:
    cfg = manager_config.parse({
        "state_dir": str(tmp_path), **top,
        "services": [{"name": n, "command": ["true"],
                      **({"install_root": str(tmp_path / n)} if n == "web" else {})}
                     for n in units]})
    return ManagerControl(cfg, units, updater)  # type: ignore[arg-type]


def test_manager_collector_reports_each_service_from_its_status(tmp_path):
    now = 10_000.0
    logs = LogStore(tmp_path / "logs", "web", max_bytes=100, backups=2)
    logs.append(b"x" * 59 + b"\n")
    logs.append(b"y" * 79 + b"\n")  # rotates: bytes_written spans the files
    units = {
        "web": FakeUnit(ServiceStatus("web", State.RUNNING, pid=4242, started_at=now - 12.5,
                                      restarts=3, exit_signal=signal.SIGKILL, version="2.1",
                                      health="healthy",
                                      update=UpdateSummary(running_operation_id="ab" * 16)),
                        logs),
        "db": FakeUnit(ServiceStatus("db", State.FATAL, restarts=5, exit_code=3,
                                     backend="systemd", health="")),
        "odd": FakeUnit(ServiceStatus("odd", State.BACKOFF, health="degraded")),
    }
    updater = FakeUpdater()
    updater.stats.step_done(Step.DOWNLOAD, 0.3)
    updater.stats.step_done(Step.DOWNLOAD, 7.0)
    updater.stats.finished("web", OpKind.UPDATE, Outcome.SUCCEEDED)
    updater.stats.finished("web", OpKind.UPDATE, Outcome.ROLLED_BACK)
    updater.stats.finished("web", OpKind.UPDATE, Outcome.ROLLED_BACK)
    control = manager_control(tmp_path, units, updater)
    found = samples(registry_of(ManagerCollector(control, clock=lambda: now)))
    m = "backendai_manager_"
    assert value(found, m + "info", version=control.manager_version, role="agent") == 1
    for name in units:
        states = {dict(k)["state"]: v for k, v in named(found, m + "service_state").items()
                  if dict(k)["service"] == name}
        assert sorted(states) == sorted(s.value for s in State)  # one-hot: every state
        assert sum(states.values()) == 1
    assert value(found, m + "service_state", service="db", state="FATAL") == 1
    assert value(found, m + "service_up", service="web") == 1
    assert value(found, m + "service_up", service="odd") == 0
    assert value(found, m + "service_uptime_seconds", service="web") == 12.5
    assert value(found, m + "service_uptime_seconds", service="db") == 0
    assert value(found, m + "service_restarts_total", service="web") == 3
    assert value(found, m + "service_restarts_total", service="db") == 5
    assert value(found, m + "service_last_exit_code", service="db") == 3
    assert value(found, m + "service_last_exit_signal", service="web") == signal.SIGKILL
    assert (m + "service_last_exit_code", frozenset({("service", "web")})) not in found
    assert value(found, m + "service_info", service="db", backend="systemd",
                 version="") == 1
    health = named(found, m + "service_health")
    assert value(found, m + "service_health", service="web", health="healthy") == 1
    assert value(found, m + "service_health", service="web", health="unhealthy") == 0
    assert value(found, m + "service_health", service="odd", health="degraded") == 1
    assert not [k for k in health if ("service", "db") in k]  # no check, no series
    assert value(found, m + "service_log_bytes_total", service="web") == 140
    assert logs.bytes_written == 140
    assert value(found, m + "update_running", service="web") == 1
    assert len(named(found, m + "update_running")) == 1  # only services with install_root
    assert value(found, m + "update_operations_total", service="web", kind="update",
                 outcome="rolled_back") == 2
    assert value(found, m + "update_step_duration_seconds_count", step="download") == 2
    assert value(found, m + "update_step_duration_seconds_bucket", step="download",
                 le="0.5") == 1
    # bounded labels only: no pid and no operation id anywhere
    for (_, labels) in found:
        for _, v in labels:
            assert "4242" not in v and "abab" not in v
    logs.close()


def test_manager_without_updater_reports_no_update_counts(tmp_path):
    units = {"svc": FakeUnit(ServiceStatus("svc", State.STOPPED))}
    found = samples(registry_of(ManagerCollector(manager_control(tmp_path, units))))
    assert not named(found, "backendai_manager_update_operations_total")
    assert value(found, "backendai_manager_service_state", service="svc", state="STOPPED") == 1


def test_log_bytes_written_counts_from_open_across_rotations(tmp_path):
    first = LogStore(tmp_path, "svc", max_bytes=50, backups=1)
    first.append(b"a" * 29 + b"\n")
    first.close()
    again = LogStore(tmp_path, "svc", max_bytes=50, backups=1)
    assert again.bytes_written == 0  # what an earlier run wrote is not counted again
    for _ in range(5):
        again.append(b"b" * 19 + b"\n")
    again.append(b"partial")
    assert again.bytes_written == 100
    again.close()  # flushes the partial line
    assert again.bytes_written == 108


@pytest.mark.parametrize("bad", ["yes", 1, 0, "", [True], {"a": 1}])
def test_metrics_open_must_be_a_boolean(tmp_path, bad):
    with pytest.raises(ConfigError, match="metrics_open"):
        manager_config.parse({"state_dir": str(tmp_path), "metrics_open": bad,
                              "services": [{"name": "s", "command": ["true"]}]})
    assert manager_config.parse({"state_dir": str(tmp_path), "metrics_open": True, "services": [
        {"name": "s", "command": ["true"]}]}).metrics_open


@pytest.mark.parametrize("bad", ["yes", 1, [True]])
def test_hub_metrics_open_must_be_a_boolean(tmp_path, bad):
    path = tmp_path / "hub.toml"
    top = {"state_dir": str(tmp_path), "grpc_listen": "127.0.0.1:0"}
    path.write_text(tomli_w.dumps({**top, "metrics_open": bad}))
    with pytest.raises(ConfigError, match="metrics_open"):
        hub_config.load(path)
    path.write_text(tomli_w.dumps({**top, "metrics_open": True}))
    assert hub_config.load(path).metrics_open
    path.write_text(tomli_w.dumps(top))
    assert not hub_config.load(path).metrics_open


# -- the hub ---------------------------------------------------------------------------

def finished_rollout(fail=()):
    """A rollout driven to its end by the pure engine, with every note it made."""
    r, notes, actions = start(waves=["1", "50%"])
    fleet = Fleet(r, fail=fail)
    fleet.notes = list(notes)
    fleet.run(actions)
    return fleet


def test_rollout_notes_count_host_outcomes_waves_and_the_end():
    fleet = finished_rollout()
    stats = HubStats()
    stats.rollout_notes("r1", fleet.notes[:3])
    stats.rollout_notes("r1", fleet.notes[3:])
    stats.rollout_notes("r1", fleet.notes[-1:] and [])  # an empty batch changes nothing
    assert fleet.r.state is E.RolloutState.SUCCEEDED
    assert stats.host_outcomes.get("succeeded") == len(fleet.r.hosts) == 10
    assert stats.rollouts_finished.get("SUCCEEDED") == 1
    waves = stats.wave_seconds.get()
    assert waves is not None and waves.count == fleet.r.wave_count
    assert waves.sum == pytest.approx(
        sum(n.at for n in fleet.notes if n.kind == "wave.done")
        - sum(n.at for n in fleet.notes if n.kind == "wave.started"))
    assert not stats._wave_started  # forgotten once the rollout ended


def test_rollout_notes_count_every_time_a_host_reaches_a_final_state():
    """Three hosts fail (their managers roll back): the rollout halts and rolls back
    the seven that had succeeded. Each host's entry into a final state counts once:
    7 succeeded, then 10 rolled_back."""
    fleet = finished_rollout(fail=("h03", "h07", "h01"))
    stats = HubStats()
    for note in fleet.notes:  # one at a time, as small commits would
        stats.rollout_notes("r1", [note])
    entered: dict[str, int] = {}
    last: dict[str, E.HostState] = {}
    for note in fleet.notes:  # the host states the notes show, as transitions
        if note.host and note.host_state is not None:
            if note.host_state in E.HOST_DONE and last.get(note.host) != note.host_state:
                key = note.host_state.value.lower()
                entered[key] = entered.get(key, 0) + 1
            last[note.host] = note.host_state
    assert entered == {"succeeded": 7, "rolled_back": 10}
    assert dict(stats.host_outcomes.items()) == {(k,): float(v) for k, v in entered.items()}
    assert fleet.r.state is E.RolloutState.ROLLED_BACK
    assert stats.rollouts_finished.get("ROLLED_BACK") == 1


def test_open_waves_are_bounded():
    stats = HubStats()
    for i in range(3000):
        stats.rollout_notes(f"r{i}", [E.Note(0, float(i), "wave.started",
                                             E.RolloutState.RUNNING, wave=0)])
    assert len(stats._wave_started) == 1000


def view(name: str, *, reachable: bool, version: str = "", role: str = "agent",
         heartbeat: float = 0.0) -> HostView:
    v = HostView(HostEntry(name, "127.0.0.1:1", role=role))
    v.reachable = reachable
    if version:
        v.status = mpb.ServiceStatus(name="ai-agent", version=version)
    v.agent_heartbeat = heartbeat
    return v


class FakeRollouts:
    def __init__(self, *rollouts: E.Rollout) -> None:
        self.runners = {r.id: type("Runner", (), {"r": r})() for r in rollouts}


async def test_hub_collector_reports_hosts_rollouts_and_calls():
    now = 5000.0
    inv = Inventory(None, heartbeat_interval=10.0)  # type: ignore[arg-type]
    for v in (view("a", reachable=True, version="2.0", heartbeat=now - 5),
              view("b", reachable=True, version="2.0"),
              view("c", reachable=False, version="1.9"),
              view("d", reachable=False),
              view("hub", reachable=True, version="2.0", role="hub")):
        inv.hosts[v.name] = v
    inv.reconnects = 7
    r, _notes, _actions = start(waves=["1", "50%"])
    stats = HubStats()
    stats.call_done("Status", 0.002, grpc.StatusCode.OK)
    stats.call_done("Update", 0.5, grpc.StatusCode.UNAVAILABLE)
    stats.stream_ended("WatchStatus", grpc.StatusCode.UNAVAILABLE)
    stats.stream_ended("WatchStatus", grpc.StatusCode.CANCELLED)
    collector = HubCollector(inventory=inv, rollouts=FakeRollouts(r),  # type: ignore[arg-type]
                             stats=stats, version="3.0", clock=lambda: now)
    found = samples(registry_of(collector))
    h = "backendai_hub_"
    assert value(found, h + "info", version="3.0") == 1
    assert value(found, h + "hosts", role="agent", reachability="reachable") == 2
    assert value(found, h + "hosts", role="agent", reachability="unreachable") == 2
    assert value(found, h + "hosts", role="hub", reachability="reachable") == 1
    assert value(found, h + "hosts", role="hub", reachability="unreachable") == 0
    assert named(found, h + "hosts_by_version") == {
        frozenset({("version", "2.0")}): 3, frozenset({("version", "1.9")}): 1,
        frozenset({("version", "unknown")}): 1}
    assert value(found, h + "agents_connected") == 1
    assert value(found, h + "status_stream_reconnects_total") == 7
    assert value(found, h + "rollouts", state="RUNNING") == 1
    assert value(found, h + "rollouts", state="PAUSED") == 0
    assert sum(named(found, h + "rollout_hosts").values()) == 10
    assert value(found, h + "rollout_hosts", state="UPDATING") == 1
    assert value(found, h + "rollout_wave") == 1
    assert value(found, h + "rollout_waves") == 2
    assert value(found, h + "rollouts_finished_total", state="SUCCEEDED") == 0
    assert value(found, h + "manager_call_duration_seconds_count", method="Update") == 1
    assert value(found, h + "manager_call_errors_total", method="Update",
                 code="UNAVAILABLE") == 1
    assert value(found, h + "manager_call_errors_total", method="WatchStatus",
                 code="UNAVAILABLE") == 1
    assert (h + "manager_call_errors_total",
            frozenset({("method", "WatchStatus"), ("code", "CANCELLED")})) not in found
    # no host names, operation or rollout ids in any label
    for (_, labels) in found:
        assert not {v for _, v in labels} & {"a", "b", "c", "d", r.id}


def test_hub_without_active_rollout_and_many_versions(tmp_path):
    inv = Inventory(None, heartbeat_interval=10.0)  # type: ignore[arg-type]
    for i in range(MAX_VERSIONS + 50):
        v = view(f"h{i}", reachable=True, version=f"1.{i}")
        inv.hosts[v.name] = v
    found = samples(registry_of(HubCollector(
        inventory=inv, rollouts=FakeRollouts(), stats=HubStats(),  # type: ignore[arg-type]
        version="3.0")))
    versions = named(found, "backendai_hub_hosts_by_version")
    assert len(versions) == MAX_VERSIONS + 1
    assert versions[frozenset({("version", "other")})] == 50
    assert not named(found, "backendai_hub_rollout_wave")
    assert sum(named(found, "backendai_hub_rollouts").values()) == 0


def test_method_labels_are_bounded():
    assert method_label("/backendai.v1.Manager/Status") == "Status"
    assert method_label(b"/backendai.v1.Manager/WatchUpdate") == "WatchUpdate"
    for bad in ("/x/", "/x/a b", "/x/" + "A" * 65, "/x/9lives", b"/x/\xff"):
        assert method_label(bad) == "other"


# -- the hub's call metrics against a real gRPC server ------------------------------

class TinyManager(mpb_grpc.ManagerServicer):
    def __init__(self) -> None:
        self.hang = asyncio.Event()

    async def Status(self, request, context):
        if request.service == "down":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "not now")
        if request.service == "hang":
            await self.hang.wait()
        return mpb.ServiceStatus(name=request.service or "svc")

    async def WatchStatus(self, request, context):
        yield mpb.ServiceStatus(name="svc")
        if request.service == "fail":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "manager going away")
        await self.hang.wait()


async def test_interceptor_times_calls_and_counts_failures():
    server = grpc.aio.server()
    servicer = TinyManager()
    mpb_grpc.add_ManagerServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    stats = HubStats()
    stream_recorded = asyncio.Event()
    record = stats.stream_ended

    def recorded(method: str, code: grpc.StatusCode) -> None:
        record(method, code)
        stream_recorded.set()

    stats.stream_ended = recorded  # type: ignore[method-assign]
    links = ManagerLinks(token=b"tok", tls=None, call_timeout=5.0,
                         instrument=stats.instrument)
    try:
        stub = links.stub(f"127.0.0.1:{port}")
        for _ in range(3):
            assert (await stub.Status(mpb.StatusRequest(service="web"))).name == "web"
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.Status(mpb.StatusRequest(service="down"))
        assert failed.value.code() is grpc.StatusCode.UNAVAILABLE  # the caller still sees it
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await stub.Status(mpb.StatusRequest(service="hang"))
        ok = stub.WatchStatus(mpb.WatchStatusRequest())
        assert (await ok.read()).name == "svc"
        ok.cancel()  # how the hub ends a stream: not a failure
        bad = stub.WatchStatus(mpb.WatchStatusRequest(service="fail"))
        with pytest.raises(grpc.aio.AioRpcError):
            async for _ in bad:
                pass
        async with asyncio.timeout(5):
            await stream_recorded.wait()  # the failed stream's code is read in a task
        timing = stats.call_seconds.get("Status")
        assert timing is not None and timing.count == 5
        assert 0.2 <= timing.sum < 5
        assert stats.call_errors.get("Status", "UNAVAILABLE") == 1
        assert stats.call_errors.get("Status", "CANCELLED") == 1
        assert stats.streams_opened.get("WatchStatus") == 2
        assert dict(stats.call_errors.items()) == {
            ("Status", "CANCELLED"): 1, ("Status", "UNAVAILABLE"): 1,
            ("WatchStatus", "UNAVAILABLE"): 1}
    finally:
        servicer.hang.set()
        await links.close()
        await server.stop(None)


# -- the endpoint ----------------------------------------------------------------------

def non_loopback_address() -> str | None:
    """An address of this machine that is not loopback (to be a caller from "elsewhere")."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


def get(host: str, port: int, method: str = "GET", path: str = "/metrics",
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


async def serve_metrics(host: str, *, token: bytes | None, open_: bool = False):
    c = CounterVec("outcome")
    c.inc("ok")
    made = []

    def collectors():
        made.append(1)
        return [_Families(counter("backendai_test_total", "t", c))]

    router = Router()
    add_metrics_route(router, collectors, open_=open_)
    server = HttpServer(ListenAddress(host, 0), router, token=token)
    _, port = await server.start()
    return server, port, made


async def test_metrics_endpoint_on_loopback_needs_no_token_and_takes_nothing_else():
    server, port, made = await serve_metrics("127.0.0.1", token=TOKEN.encode())
    try:
        assert made == []  # nothing built before the first scrape
        status, headers, body = await asyncio.to_thread(get, "127.0.0.1", port)
        assert status == 200 and made == [1]
        assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert headers["cache-control"] == "no-store"
        assert b'backendai_test_total{outcome="ok"} 1.0' in body
        await asyncio.to_thread(get, "127.0.0.1", port)
        assert made == [1]  # one registry for the daemon's life
        status, headers, body = await asyncio.to_thread(
            get, "127.0.0.1", port, headers={
                "Accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"})
        assert headers["content-type"].startswith("application/openmetrics-text")
        assert body.endswith(b"# EOF\n")
        for hostile in ("application/openmetrics-text;version=abc",
                        "text/plain;version=x.y;escaping=\x7f", "a" * 8000, ";;;,,,"):
            status, headers, body = await asyncio.to_thread(
                get, "127.0.0.1", port, headers={"Accept": hostile})
            assert status == 200 and "abc" not in headers["content-type"]
        status, headers, body = await asyncio.to_thread(get, "127.0.0.1", port, "HEAD")
        assert status == 200 and body == b""
        for method in ("POST", "PUT", "DELETE"):
            status, headers, body = await asyncio.to_thread(get, "127.0.0.1", port, method)
            assert status == 405 and headers["allow"] == "GET, HEAD"
        for path in ("/metrics?name[]=up", "/metrics?x", "/metrics?%ff=1",
                     "/metrics?" + "a=1&" * 100, "/metrics?" + "x" * 10000):
            status, _, body = await asyncio.to_thread(get, "127.0.0.1", port, path=path)
            assert status == 400, path
            assert b'"success": false' in body and b"backendai" not in body
        # another path is not /metrics: unknown, and this caller has no token
        status, _, _ = await asyncio.to_thread(get, "127.0.0.1", port, path="/metrics/")
        assert status == 401
        status, _, body = await asyncio.to_thread(get, "127.0.0.1", port,
                                                  path="/metrics?name[]=up")
        assert status == 400 and b"unknown query parameter" in body
    finally:
        await server.stop()


@pytest.mark.parametrize("open_", [False, True])
async def test_metrics_endpoint_off_loopback_needs_the_token_unless_open(open_):
    addr = non_loopback_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback IPv4 address to call from")
    server, port, _ = await serve_metrics(addr, token=TOKEN.encode(), open_=open_)
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                        {"Authorization": "Basic " + TOKEN}):
            status, reply, body = await asyncio.to_thread(get, addr, port, headers=headers)
            if open_:
                assert status == 200
            else:
                assert status == 401 and reply["www-authenticate"] == "Bearer"
                assert b"backendai" not in body
            status, _, _ = await asyncio.to_thread(get, addr, port, "POST", headers=headers)
            assert status == (405 if open_ else 401)
        status, _, body = await asyncio.to_thread(
            get, addr, port, headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and b"backendai_test_total" in body
    finally:
        await server.stop()


def test_a_daemon_loads_prometheus_client_only_when_scraped():
    """prometheus_client costs RSS: the manager's and hub's code paths up to serving do
    not import it; the first scrape does."""
    code = """
import sys
import manager.daemon, hub.daemon, manager.updates.updater
from manager.api.http_routes import ManagerRoutes
assert "prometheus_client" not in sys.modules, "imported at start"
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_scrape_of_a_thousand_host_hub_stays_fast():
    inv = Inventory(None, heartbeat_interval=10.0)  # type: ignore[arg-type]
    for i in range(1000):
        v = view(f"h{i:04d}", reachable=i % 10 != 0, version=f"2.{i % 3}",
                 heartbeat=time.time())
        inv.hosts[v.name] = v
    r, _, _ = start(hosts=list(inv.hosts), waves=["1", "10%", "50%"])
    reg = new_registry([HubCollector(inventory=inv, rollouts=FakeRollouts(r),  # type: ignore[arg-type]
                                     stats=HubStats(), version="3.0")])
    render(reg)
    t0 = time.perf_counter()
    for _ in range(10):
        render(reg)
    assert (time.perf_counter() - t0) / 10 < 0.05  # the target, with room

