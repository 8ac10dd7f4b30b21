"""A real Prometheus (Debian's package, tests/fixtures/components.py) scrapes a real
manager and a real hub; the test reads the results back through Prometheus's HTTP API:
the restart counter after a kill -9 of a service, the rollout metrics after a rollout.
And /metrics on real daemons answering bad requests."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
from typing import Any

import pytest

from backendai.v1 import hub_pb2 as pb
from backendai.v1 import manager_pb2 as mpb
from tests.conftest import assert_eventually, fast_service
from tests.fixtures.components import PrometheusServer
from tests.fixtures.hub_procs import TERMINAL, HubProc, SimManagers
from tests.test_metrics import non_loopback_address

TOKEN = "prometheus-scrapes-with-this"

pytestmark = pytest.mark.slow


def needs_prometheus() -> None:
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (scripts/bootstrap.sh installs Debian's "
                    "prometheus package)")


def one(prom: PrometheusServer, expr: str) -> float | None:
    """The value of a query that yields at most one series (None when it yields none)."""
    found = prom.query(expr)
    assert len(found) <= 1, found
    return float(found[0]["value"][1]) if found else None


def eventually(prom: PrometheusServer, expr: str, want: Any, timeout: float = 30.0) -> None:
    """Wait until Prometheus, scraping on its own schedule, answers `want` for `expr`."""
    assert_eventually(lambda: one(prom, expr) == want, timeout, 0.2,
                      f"prometheus: {expr} == {want}")


def test_prometheus_sees_a_restart_and_a_rollout(make_manager, procs, tmp_path):
    needs_prometheus()
    # the manager off loopback where this machine has such an address: Prometheus then
    # needs the manager's token, which it sends from a credentials file
    host = non_loopback_address() or "127.0.0.1"
    m = make_manager([fast_service("svc", "--interval", "0.1")],
                     {"http_listen": f"{host}:0", "auth_token_file": str(tmp_path / "m.token")})
    (tmp_path / "m.token").write_text(TOKEN + "\n")
    os.chmod(tmp_path / "m.token", 0o600)
    m.token = TOKEN
    m.start()
    sim = procs(SimManagers, hosts=3, delay=0.05).start()
    hub = procs(HubProc, sim.hosts).start()
    prom = PrometheusServer(tmp_path / "prom", {
        "manager": {"targets": [f"{host}:{m.http_port}"], "bearer": TOKEN},
        "hub": {"targets": [f"127.0.0.1:{hub.info['http_port']}"]},
    }, interval=0.5).start()
    try:
        eventually(prom, 'up{job="manager"}', 1)
        eventually(prom, 'up{job="hub"}', 1)
        assert all(t["health"] == "up" for t in prom.targets())

        # the manager: kill -9 of the service -> the restart counter went up
        pid = assert_eventually(
            lambda: (s := m.status()).state == mpb.SERVICE_STATE_RUNNING and s.pid, 20,
            what="service running")
        eventually(prom, 'backendai_manager_service_restarts_total{service="svc"}', 0)
        eventually(prom, 'backendai_manager_service_state{service="svc",state="RUNNING"}', 1)
        os.kill(pid, signal.SIGKILL)
        assert_eventually(lambda: m.status().pid not in (0, pid), 20, what="new pid")
        eventually(prom, 'backendai_manager_service_restarts_total{service="svc"}', 1)
        eventually(prom, 'backendai_manager_service_last_exit_signal{service="svc"}',
                   signal.SIGKILL)
        assert one(prom, 'max_over_time(backendai_manager_service_restarts_total'
                         '{service="svc"}[1m]) - min_over_time('
                         'backendai_manager_service_restarts_total{service="svc"}[1m])') == 1
        assert one(prom, 'process_resident_memory_bytes{job="manager"}') > 10e6
        assert one(prom, 'backendai_manager_service_log_bytes_total{service="svc"}') > 0

        # the hub: a rollout to the three simulated managers
        eventually(prom, 'backendai_hub_hosts{role="agent",reachability="reachable"}', 3)
        eventually(prom, 'backendai_hub_hosts_by_version{version="1.0"}', 3)
        r = hub.call("StartRollout", pb.StartRolloutRequest(
            version="2.0", strategy=pb.RolloutStrategy(waves=["1", "100%"], seed=1,
                                                       min_healthy_seconds=0.1))).rollout
        done = hub.wait_rollout(r.id, TERMINAL, timeout=60)
        assert done.state == pb.ROLLOUT_STATE_SUCCEEDED, done.message
        eventually(prom, 'backendai_hub_rollouts_finished_total{state="SUCCEEDED"}', 1)
        eventually(prom, 'backendai_hub_rollout_host_outcomes_total{outcome="succeeded"}', 3)
        eventually(prom, "backendai_hub_rollout_wave_duration_seconds_count", 2)
        eventually(prom, 'backendai_hub_hosts_by_version{version="2.0"}', 3)
        eventually(prom, 'sum(backendai_hub_rollouts)', 0)
        calls = one(prom, 'backendai_hub_manager_call_duration_seconds_count'
                          '{method="Update"}')
        assert calls is not None and calls >= 3
        assert one(prom, 'histogram_quantile(0.5, backendai_hub_manager_call_duration_seconds'
                         '_bucket{method="Update"})') < 5
        assert one(prom, 'backendai_hub_manager_streams_opened_total'
                         '{method="WatchStatus"}') >= 3
    finally:
        prom.stop()


def call(host: str, port: int, method: str = "GET", path: str = "/metrics",
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("open_", [False, True])
def test_real_manager_metrics_off_loopback(make_manager, tmp_path, open_):
    host = non_loopback_address()
    if host is None:
        pytest.skip("this machine has no non-loopback IPv4 address to call from")
    (tmp_path / "m.token").write_text(TOKEN + "\n")
    os.chmod(tmp_path / "m.token", 0o600)
    m = make_manager([fast_service("svc")], {
        "http_listen": f"{host}:0", "auth_token_file": str(tmp_path / "m.token"),
        **({"metrics_open": True} if open_ else {})})
    m.token = TOKEN
    m.start()
    port = m.http_port
    pid = assert_eventually(
        lambda: (s := m.status()).state == mpb.SERVICE_STATE_RUNNING and s.pid, 20,
        what="service running")
    good = {"Authorization": f"Bearer {TOKEN}"}
    status, headers, body = call(host, port, headers=good)
    assert status == 200 and b"backendai_manager_service_state" in body
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    for bad in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN},
                {"Authorization": "Bearer " + "x" * 5000}):
        status, headers, body = call(host, port, headers=bad)
        if open_:
            assert status == 200 and b"backendai_manager_info" in body
        else:
            assert status == 401 and headers["www-authenticate"] == "Bearer"
            assert b"backendai" not in body
        # the rest of the API keeps its auth either way
        assert call(host, port, path="/status", headers=bad)[0] == 401
        assert call(host, port, "POST", "/metrics", headers=bad)[0] == (405 if open_ else 401)
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, headers, _ = call(host, port, method, headers=good)
        assert status == 405 and headers["allow"] == "GET, HEAD"
    for path in ("/metrics?name[]=x", "/metrics?a=1&a=2", "/metrics?%zz"):
        status, _, body = call(host, port, path=path, headers=good)
        assert status == 400 and b'"success": false' in body
    status, _, body = call(host, port, "HEAD", headers=good)
    assert status == 200 and body == b""
    # nothing changed: the same process still runs, the manager still answers
    st = m.status()
    assert (st.state, st.pid, st.restarts) == (mpb.SERVICE_STATE_RUNNING, pid, 0)


def test_real_hub_metrics_rules(procs, tmp_path):
    host = non_loopback_address()
    if host is None:
        pytest.skip("this machine has no non-loopback IPv4 address to call from")
    hub = procs(HubProc, {}, token=TOKEN, extra={"http_listen": f"{host}:0"}).start()
    port = hub.info["http_port"]
    good = {"Authorization": f"Bearer {TOKEN}"}
    status, headers, body = call(host, port, headers=good)
    assert status == 200 and b"backendai_hub_info" in body
    assert b"process_cpu_seconds_total" in body
    for bad in ({}, {"Authorization": "Bearer nope"}):
        status, headers, body = call(host, port, headers=bad)
        assert status == 401 and headers["www-authenticate"] == "Bearer"
        assert call(host, port, "POST", headers=bad)[0] == 401
    assert call(host, port, "POST", headers=good)[0] == 405
    status, _, body = call(host, port, path="/metrics?format=json", headers=good)
    assert status == 400 and b"unknown query parameter" in body
    assert hub.call("ListHosts", pb.ListHostsRequest()).hosts == []  # still serving


def scrape(m) -> dict[tuple[str, frozenset[Any]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    status, _, body = call("127.0.0.1", m.http_port)
    assert status == 200
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples}


def test_restart_counter_survives_a_kill9_of_the_manager(make_manager):
    """The restart count is the manager's state (kept in its database): after a kill -9
    of the manager, the re-adopting manager reports it unchanged; what is counted in
    memory (log bytes) starts again from zero, as a counter may."""
    m = make_manager([fast_service("svc", "--interval", "0.05")]).start()
    pid = assert_eventually(
        lambda: (s := m.status()).state == mpb.SERVICE_STATE_RUNNING and s.pid, 20,
        what="service running")
    os.kill(pid, signal.SIGKILL)
    assert_eventually(lambda: (s := m.status()).pid not in (0, pid) and s.state ==
                      mpb.SERVICE_STATE_RUNNING, 20, what="restarted")
    key = ("backendai_manager_service_restarts_total", frozenset({("service", "svc")}))
    assert scrape(m)[key] == 1
    m.kill9()
    m.start()
    found = scrape(m)
    assert found[key] == 1
    assert found[("backendai_manager_service_state",
                  frozenset({("service", "svc"), ("state", "RUNNING")}))] == 1
    assert found[("backendai_manager_service_log_bytes_total",
                  frozenset({("service", "svc")}))] >= 0
