"""An update of a service with `instances` (real manager, real releases, real store):
its instances are stopped, started and health-gated one at a time through the service's
own `[services.health]` check; a failure at the second rolls all of them back; a kill -9
of the manager mid-way (injected, and a real SIGKILL) rolls all back on the next start."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest

from backendai.v1 import manager_pb2 as pb
from tests.conftest import PY, ManagerProc, assert_eventually, reserved_ports
from tests.update_support import Env, running_version_safe, steps, update_service, watch_op

pytestmark = pytest.mark.slow

NAMES = ["web-1", "web-2", "web-3"]


@pytest.fixture
def base() -> Iterator[int]:
    with reserved_ports(3) as port:
        yield port


def manager(env: Env, base: int, *, crash_at: str = "") -> ManagerProc:
    svc = update_service(
        env.install_root, env.url, base, name="web", instances=3, base_port=base,
        health_probe="none", health_target="", min_healthy_time=0.3, healthy_deadline=8.0,
        env={"HEALTH_PORT": "{port}", "INSTANCE": "{instance}", "AI_PYTHON": PY},
        health={"http": "http://127.0.0.1:{port}/health", "interval": 0.2, "timeout": 1.0,
                "start_period": 10.0})
    return env.make_manager([svc]).start(crash_at=crash_at)


def all_on(m: ManagerProc, base: int, version: str) -> dict[str, int]:
    """Every instance RUNNING, healthy, on `version` (status and its own answer)."""
    pids = {}
    for i, name in enumerate(NAMES):
        st = assert_eventually(
            lambda n=name: (s := m.status(n)).state == pb.SERVICE_STATE_RUNNING
            and s.health == "healthy" and s, 20, what=f"{name} healthy")
        assert st.version == version, (name, st.version)
        assert_eventually(lambda p=base + i: running_version_safe(p) == version, 10,
                          what=f"{name} serves {version}")
        pids[name] = st.pid
    return pids


def update_to(m: ManagerProc, version: str, service: str = "web") -> str:
    return m.stub().Update(pb.UpdateRequest(service=service, version=version),
                           timeout=10).operation_id


def forward(events: list[pb.UpdateEvent]) -> list[str]:
    """The per-instance forward steps as "step:status:instance"."""
    out = []
    instance = ""
    for e in events:
        if e.step in ("stop", "start", "health"):
            if e.status == "started":
                instance = e.message
            out.append(f"{e.step}:{e.status}:{instance}")
    return out


def test_instances_are_updated_one_at_a_time(env, base):
    env.build("1.0.0")
    env.build("2.0.0")
    env.install("1.0.0")
    m = manager(env, base)
    before = all_on(m, base, "1.0.0")
    op = update_to(m, "2.0.0", service="web-2")  # any instance names the whole service
    events = watch_op(m, op)
    assert events[-1].outcome == "succeeded", steps(events)
    got = forward(events)
    expected = []
    for name in NAMES:
        expected += [f"stop:started:{name}", f"stop:ok:{name}", f"start:started:{name}",
                     f"start:ok:{name}", f"health:started:{name}", f"health:ok:{name}"]
    assert got == expected
    assert [e.step for e in events].count("switch") == 2  # started + ok, once
    health_ok = [e.message for e in events if (e.step, e.status) == ("health", "ok")]
    assert all("http health check" in msg for msg in health_ok), health_ok
    after = all_on(m, base, "2.0.0")
    assert all(after[n] != before[n] for n in NAMES)
    st = m.status("web-3")
    assert st.update.last_outcome == "succeeded" and st.update.last_version == "2.0.0"
    # the whole service is on 2.0.0: any of its names says so
    assert m.stub().Update(pb.UpdateRequest(service="web", version="2.0.0"),
                           timeout=10).operation_id == ""
    code, body = m.http("GET", "/version?service=web-1")
    assert code == 200 and json.loads(body)["version"] == "2.0.0"
    releases = m.stub().ListReleases(pb.ListReleasesRequest(service="web"), timeout=10)
    assert {r.version for r in releases.releases} == {"1.0.0", "2.0.0"}


def test_a_failure_at_the_second_instance_rolls_all_of_them_back(env, base):
    env.build("1.0.0")
    env.build("2.0.0", behavior={"crash_instance": 2})
    env.install("1.0.0")
    m = manager(env, base)
    all_on(m, base, "1.0.0")
    op = update_to(m, "2.0.0")
    events = watch_op(m, op)
    final = events[-1]
    assert final.outcome == "rolled_back", steps(events)
    assert final.message == ("start failed: service 'web-2' failed to start: exited with "
                             "code 3; rolled back to version 1.0.0")
    got = forward(events)
    assert got[:6] == ["stop:started:web-1", "stop:ok:web-1", "start:started:web-1",
                       "start:ok:web-1", "health:started:web-1", "health:ok:web-1"]
    assert got[6:9] == ["stop:started:web-2", "stop:ok:web-2", "start:started:web-2"]
    assert "stop:started:web-3" not in got  # the third was never touched forward
    rollback = [f"{e.step}:{e.status}" for e in events if e.step.startswith("rollback")]
    assert rollback == ["rollback_stop:started", "rollback_stop:ok", "rollback_switch:started",
                        "rollback_switch:ok", "rollback_start:started", "rollback_start:ok",
                        "rollback_health:started", "rollback_health:ok"]
    stopped = next(e.message for e in events if (e.step, e.status) == ("rollback_stop", "ok"))
    assert stopped == "stopped web-1, web-2"
    all_on(m, base, "1.0.0")
    assert m.status("web-1").update.last_outcome == "rolled_back"


def test_kill9_mid_way_rolls_all_back_on_the_next_start(env, base):
    env.build("1.0.0")
    env.build("2.0.0")
    env.install("1.0.0")
    m = manager(env, base, crash_at="health#2")  # web-2's health gate
    all_on(m, base, "1.0.0")
    try:
        op = update_to(m, "2.0.0")
    except grpc.RpcError:
        op = ""
    assert m.proc is not None and m.proc.wait(60) == 137, m.logs()
    assert "update.test_crash" in m.logs()
    m._close_channel()
    m.start()  # the shipped entry point
    if not op:
        summary = m.status().update
        op = summary.running_operation_id or summary.last_operation_id
    events = watch_op(m, op)
    assert events[-1].outcome == "rolled_back", steps(events)
    assert "interrupted by a manager restart during health" in events[-1].message
    all_on(m, base, "1.0.0")


def test_kill9_after_the_last_instance_was_healthy_commits(env, base):
    env.build("1.0.0")
    env.build("2.0.0")
    env.install("1.0.0")
    m = manager(env, base, crash_at="commit")
    all_on(m, base, "1.0.0")
    try:
        op = update_to(m, "2.0.0")
    except grpc.RpcError:
        op = ""
    assert m.proc is not None and m.proc.wait(60) == 137, m.logs()
    m._close_channel()
    m.start()
    if not op:
        summary = m.status().update
        op = summary.running_operation_id or summary.last_operation_id
    assert watch_op(m, op)[-1].outcome == "succeeded"
    all_on(m, base, "2.0.0")


def test_real_sigkill_between_instances_rolls_all_back(env, base):
    env.build("1.0.0")
    env.build("2.0.0")
    env.install("1.0.0")
    m = manager(env, base)
    all_on(m, base, "1.0.0")
    op = update_to(m, "2.0.0")
    for ev in m.stub().WatchUpdate(pb.WatchUpdateRequest(operation_id=op), timeout=60):
        if (ev.step, ev.status, ev.message) == ("start", "started", "web-2"):
            break
    m.kill9()  # from outside: web-1 is on 2.0.0, web-2 is being started
    m.start()
    events = watch_op(m, op)
    assert events[-1].outcome == "rolled_back", steps(events)
    all_on(m, base, "1.0.0")
