"""Issue 15 end to end, on a real ai-manager supervising real children: health checks
that restart a hung service, start order, instances, counts, the manager-wide env, and
health on every transport."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from pathlib import Path

import grpc
import psutil
import pytest

from backendai.v1 import events_pb2 as epb
from backendai.v1 import manager_pb2 as pb
from tests.conftest import (
    ManagerProc,
    assert_eventually,
    fast_service,
    reserved_ports,
)

RUNNING = pb.SERVICE_STATE_RUNNING
STOPPED = pb.SERVICE_STATE_STOPPED
FATAL = pb.SERVICE_STATE_FATAL

pytestmark = pytest.mark.slow


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def healthy(m: ManagerProc, service: str = "") -> pb.ServiceStatus:
    return assert_eventually(
        lambda: (s := m.status(service)).state == RUNNING and s.health == "healthy" and s,
        15, what=f"{service or 'primary'} healthy")


def checked_service(name: str, port: int, hang_file: Path, **health: object) -> dict:
    """A service serving GET /health on `port`, hanging while `hang_file` names it."""
    # start_period: a python service needs a moment before it listens (failures until
    # the first pass do not count); a hang of a healthy one is counted at once
    check = {"http": f"http://127.0.0.1:{port}/health", "interval": 0.2, "timeout": 0.2,
             "failures": 3, "start_period": 10.0, **health}
    return fast_service(name, "--http-port", str(port), "--hang-file", str(hang_file),
                        health=check)


def log_events(m: ManagerProc, name: str) -> list[dict]:
    return [e for line in m.logs().splitlines() if line.startswith("{")
            and (e := json.loads(line))["event"] == name]


def test_a_service_that_stops_answering_is_restarted_after_the_configured_failures(
        make_manager, tmp_path):
    hang = tmp_path / "hang"
    with reserved_ports(1) as port:
        m = make_manager([checked_service("web", port, hang)]).start()
        st = healthy(m)
        pid = st.pid
        assert st.health_message == "http: status 200" and st.health_failures == 0
        assert st.health_since_unix > 0
        # the process stays alive; its health endpoint stops answering
        hang.write_text(str(pid))
        t0 = time.monotonic()
        st = assert_eventually(lambda: (s := m.status()).pid not in (0, pid) and s, 10,
                               what="a new pid")
        took = time.monotonic() - t0
        assert not alive(pid)
        # three failed checks at 0.2 s intervals, each timing out after 0.2 s
        assert 0.4 < took < 3.0, took
        st = healthy(m)
        assert st.restarts == 1 and st.pid != pid
        restart = log_events(m, "service.unhealthy_restart")
        assert len(restart) == 1 and restart[0]["pid"] == pid
        assert "3 health checks failed in a row; last: http check timed out after 0.2s" \
            in restart[0]["reason"]
        health_log = [(e["health"], e["pid"]) for e in log_events(m, "service.health")]
        assert ("unhealthy", pid) in health_log
        assert health_log[-1] == ("healthy", st.pid)


def test_unhealthy_restarts_back_off_and_end_in_fatal(make_manager, tmp_path):
    hang = tmp_path / "hang"
    hang.write_text("all")  # every process of it hangs
    with reserved_ports(1) as port:
        svc = checked_service("web", port, hang, failures=1, start_period=0.0)
        svc.update(crash_loop_max=2, backoff_initial=0.2)
        m = make_manager([svc]).start()
        st = assert_eventually(lambda: (s := m.status()).state == FATAL and s, 30,
                               what="FATAL")
        assert st.restarts == 2
        assert "crash loop" in st.message and "unhealthy" in st.message
        assert st.health == "unknown"  # not running: not checked
        assert m.service_processes() == []


def test_on_unhealthy_none_reports_on_every_transport_without_restarting(
        make_manager, tmp_path):
    hang = tmp_path / "hang"
    with reserved_ports(1) as port:
        svc = checked_service("web", port, hang, failures=2, on_unhealthy="none")
        m = make_manager([svc]).start()
        pid = healthy(m).pid
        watch = m.stub().WatchStatus(pb.WatchStatusRequest(), timeout=20)
        first = next(watch)
        assert first.health == "healthy"
        hang.write_text(str(pid))
        seen = []
        for st in watch:
            seen.append(st.health)
            if st.health == "unhealthy":
                break
        watch.cancel()
        st = m.status()
        assert (st.health, st.pid, st.restarts) == ("unhealthy", pid, 0)
        assert st.health_failures >= 2
        assert st.health_message == "http check timed out after 0.2s"
        code, body = m.http("GET", "/status")
        data = json.loads(body)
        assert code == 200 and (data["health"], data["pid"]) == ("unhealthy", pid)
        assert data["healthMessage"] == "http check timed out after 0.2s"
        code, body = m.http("GET", "/api/services")
        svc_json = json.loads(body)["services"][0]
        assert (svc_json["health"], svc_json["health_message"]) == (
            "unhealthy", "http check timed out after 0.2s")
        hang.write_text("")  # it answers again
        assert healthy(m).pid == pid


def test_a_dependency_chain_starts_in_order_and_stops_in_reverse(make_manager, tmp_path):
    rec = tmp_path / "record"
    hang = tmp_path / "hang"

    def recorded(name: str, *args: str, **over: object) -> dict:
        return fast_service(name, "--record", str(rec), "--name", name, *args, **over)

    with reserved_ports(1) as port:
        # listed dependents first: the order comes from `after`, not from the file
        services = [
            recorded("web", after=["cache"]),
            recorded("cache", after=["db"]),
            recorded("db", "--http-port", str(port), "--hang-file", str(hang),
                     start_secs=0.5, health={"http": f"http://127.0.0.1:{port}/health",
                                             "interval": 0.2, "timeout": 0.5,
                                             "start_period": 10.0}),
        ]
        hang.write_text("all")  # db runs, but its health check does not pass yet
        m = make_manager(services).start()

        def lines() -> list[tuple[str, str, float]]:
            return [(w[0], w[1], float(w[2])) for w in
                    (line.split() for line in rec.read_text().splitlines())]
        def started() -> list[str]:
            return [n for what, n, _ in lines() if what == "start"]
        # RUNNING is not enough: cache waits for db's first healthy result (and web for
        # cache), however long db has been running
        assert_eventually(lambda: (s := m.status("db")).state == RUNNING
                          and "timed out" in s.health_message and s.uptime_seconds > 1.5,
                          20, what="db running for a while, its checks timing out")
        assert started() == ["db"]
        waiting = m.status("cache")
        assert waiting.state == STOPPED and m.status("web").state == STOPPED, waiting
        hang.write_text("")  # db's health endpoint answers
        for name in ("web", "cache", "db"):
            assert_eventually(lambda n=name: m.status(n).state == RUNNING, 20, what=name)
        assert assert_eventually(lambda: len(s := started()) == 3 and s, 20) == [
            "db", "cache", "web"]
        health = {e["service"]: e for e in log_events(m, "service.health")
                  if e["health"] == "healthy"}
        assert "db" in health
        # the manager's own history: db's first healthy result, then cache's start
        history = list(m.stub().ListEvents(epb.ListEventsRequest(limit=1000),
                                           timeout=10).events)
        db_healthy = next(e for e in history if e.subject == "service/db"
                          and e.kind == "service.health" and e.fields["health"] == "healthy")
        cache_starts = [e for e in history if e.subject == "service/cache"
                        and e.kind == "service.state" and e.fields.get("state") == "STARTING"]
        assert cache_starts and db_healthy.id < cache_starts[0].id
        assert db_healthy.at_unix <= cache_starts[0].at_unix
        assert not any(e.subject == "service/cache" and e.id < db_healthy.id
                       for e in history if e.kind in ("service.state", "service.spawned"))
        st = m.status("cache")
        assert tuple(st.after) == ("db",) and tuple(m.status("web").after) == ("cache",)
        # an explicit start of a service whose dependency is down is refused, naming it
        m.stub().Stop(pb.StopRequest(service="cache"), timeout=20)
        m.stub().Stop(pb.StopRequest(service="web"), timeout=20)
        m.stub().Stop(pb.StopRequest(service="db"), timeout=20)
        with pytest.raises(grpc.RpcError) as err:
            m.stub().Start(pb.StartRequest(service="web"), timeout=20)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "starts after 'cache', which is STOPPED" in err.value.details()
        assert m.status("web").state == STOPPED
        rec.write_text("")
        # start all by pattern: in order again; stop all: in reverse
        st = m.stub().Start(pb.StartRequest(service="*"), timeout=60)
        assert st.state == RUNNING
        assert assert_eventually(lambda: len(s := started()) == 3 and s, 20) == [
            "db", "cache", "web"]
        m.stub().Stop(pb.StopRequest(service="*"), timeout=60)
        stops = [(n, t) for what, n, t in lines() if what == "stop"]
        assert [n for n, _ in stops] == ["web", "cache", "db"]
        resp = m.stub().ListServices(pb.ListServicesRequest(pattern="*"), timeout=10)
        assert dict(resp.counts) == {"STOPPED": 3} and resp.total == 3
        # the HTTP route takes the pattern too
        code, body = m.http("POST", "/api/services/*/start")
        assert code == 200, body
        data = json.loads(body)
        assert data["services"] == ["web", "cache", "db"]
        assert data["message"] == "3 services started: web, cache, db"
        assert assert_eventually(lambda: len(s := started()) == 6 and s, 20)[-3:] == [
            "db", "cache", "web"]
        code, body = m.http("POST", "/api/services/nomatch-*/stop")
        assert code == 404 and b"no service matches 'nomatch-*'" in body


def test_three_instances_with_distinct_ports_serve_and_one_killed_comes_back_alone(
        make_manager):
    with reserved_ports(3) as base:
        svc = fast_service("web", "--http-port", "{port}", instances=3, base_port=base,
                           env={"INSTANCE": "{instance}", "SHARED": "mine"},
                           health={"tcp": "127.0.0.1:{port}", "interval": 0.2,
                                   "start_period": 10.0})
        m = make_manager([svc], top={"env": {"SHARED": "all", "GLOBAL": "yes"}}).start()
        pids = {}
        for i in (1, 2, 3):
            st = healthy(m, f"web-{i}")
            assert (st.instance_of, st.instance) == ("web", i)
            pids[i] = st.pid
            env = psutil.Process(st.pid).environ()
            assert (env["INSTANCE"], env["SHARED"], env["GLOBAL"]) == (str(i), "mine", "yes")
            code, body = _get(base + i - 1)
            assert code == 200 and body == f"ok pid={st.pid} port={base + i - 1}"
        resp = m.stub().ListServices(pb.ListServicesRequest(pattern="web-*"), timeout=10)
        assert [s.name for s in resp.services] == ["web-1", "web-2", "web-3"]
        assert dict(resp.counts) == {"RUNNING": 3} and resp.total == 3
        os.kill(pids[2], signal.SIGKILL)
        st = assert_eventually(lambda: (s := m.status("web-2")).state == RUNNING
                               and s.pid != pids[2] and s, 10, what="web-2 back")
        assert st.restarts == 1
        assert m.status("web-1").pid == pids[1] and m.status("web-3").pid == pids[3]
        assert m.status("web-1").restarts == 0 and m.status("web-3").restarts == 0
        assert_eventually(lambda: _get(base + 1)[0] == 200, 10, what="web-2 serves")
        # glob operations act on the instances; the counts follow
        m.stub().Stop(pb.StopRequest(service="web-[13]"), timeout=30)
        resp = m.stub().ListServices(pb.ListServicesRequest(pattern="web-*"), timeout=10)
        assert dict(resp.counts) == {"STOPPED": 2, "RUNNING": 1} and resp.total == 3
        code, body = m.http("GET", "/api/services?pattern=web-*")
        assert json.loads(body)["counts"] == {"STOPPED": 2, "RUNNING": 1}
        code, body = m.http("GET", "/api/services?pattern=nothing*")
        data = json.loads(body)
        assert (data["counts"], data["meta"]["total"]) == ({}, 0)
        web2 = m.status("web-2").pid
        st = m.stub().Restart(pb.RestartRequest(service="web-*"), timeout=60)
        assert st.name == "web-1" and st.state == RUNNING
        resp = m.stub().ListServices(pb.ListServicesRequest(pattern="web-*"), timeout=10)
        assert dict(resp.counts) == {"RUNNING": 3}
        assert m.status("web-2").pid != web2
        with pytest.raises(grpc.RpcError) as err:
            m.stub().Start(pb.StartRequest(service="nomatch-*"), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as err:
            m.stub().Stop(pb.StopRequest(service="*" * 300), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "pattern must be a glob of at most 200" in err.value.details()


def _get(port: int) -> tuple[int, str]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/health")
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    except OSError:
        return 0, ""
    finally:
        conn.close()


def test_health_checks_cost_little_and_never_pile_up(make_manager, tmp_path):
    """A check slower than its interval: the next one waits for it (one in flight)."""
    marks = tmp_path / "marks"
    slow = (f"import time, os; open({str(marks)!r}, 'a').write(f'{{time.monotonic()}} "
            "start\\n'); time.sleep(0.5); open(" + repr(str(marks)) + ", 'a').write("
            "f'{time.monotonic()} end\\n')")
    import sys

    svc = fast_service("svc", health={"exec": [sys.executable, "-c", slow], "interval": 0.1,
                                      "timeout": 2})
    m = make_manager([svc]).start()
    healthy(m)
    assert_eventually(lambda: marks.read_text().count("end") >= 3, 10)
    events = [line.split()[1] for line in marks.read_text().splitlines()]
    # strictly alternating: never two checks at once
    assert all(a != b for a, b in itertools.pairwise(events))
    assert events[0] == "start"
