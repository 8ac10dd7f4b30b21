"""Operator actions versus updates, on real managers over both transports (issue 11,
items 1 and 4; issue 15, item 7).

A start, stop or restart of a service whose update runs is refused (409 /
FAILED_PRECONDITION naming the operation) and the update goes on; with `force` the update
is cancelled on purpose (the previous release restored, outcome `cancelled`), then the
request does what it asked. An update of a service the operator stopped installs it and
leaves it stopped (`installed_stopped`) unless `start_stopped`. curl users follow an
operation with GET /update.
"""

from __future__ import annotations

import json
import time

import grpc
import pytest

from backendai.v1 import manager_pb2 as pb
from tests.conftest import assert_eventually
from tests.update_support import (
    Env,
    assert_on,
    running_version_safe,
    started,
    steps,
    update,
    watch_op,
)

pytestmark = pytest.mark.slow
JSON = {"Content-Type": "application/json"}


def call(m, method: str, path: str, body: object = None) -> tuple[int, dict]:
    data = json.dumps(body) if body is not None else None
    code, raw = m.http(method, path, data, JSON if data is not None else None)
    return code, json.loads(raw)


def at_step(m, step: str, timeout: float = 30.0) -> str:
    """Wait until the running operation is at `step`; return its id."""
    assert_eventually(lambda: m.status().update.running_step == step, timeout,
                      what=f"update at step {step}")
    return m.status().update.running_operation_id


def on_disk_current(env: Env) -> str:
    return (env.install_root / "current").readlink().name


# ---- refused without force --------------------------------------------------------------

def test_stop_racing_an_update_is_refused_and_the_update_goes_on(env):
    """POST /update, then POST /stop at once: the stop is a 409 naming the operation,
    and the update is not undone behind the operator's back (it ends succeeded, the
    service running the new version, started once by the update)."""
    env.build("1.0.0")
    env.build("1.1.0")
    env.install("1.0.0")
    m = env.manager(min_healthy_time=2.0)
    started(env, m)
    code, body = call(m, "POST", "/update", {"version": "1.1.0"})
    assert code == 200 and body["started"] is True
    op = body["operationId"]
    code, body = call(m, "POST", "/stop")
    assert code == 409 and body["success"] is False
    for needle in (op, "update 1.0.0 -> 1.1.0", "at step", "stop refused", "force"):
        assert needle in body["error"], body["error"]
    # every transport and lifecycle verb says the same
    for path in ("/start", "/restart", "/stop?force=false", "/api/services/agent/stop",
                 "/api/services/agent/start", "/api/services/agent/restart"):
        code, body = call(m, "POST", path)
        assert code == 409 and op in body["error"], (path, body)
    stub = m.stub()
    for rpc, req in ((stub.Stop, pb.StopRequest()), (stub.Start, pb.StartRequest()),
                     (stub.Restart, pb.RestartRequest())):
        with pytest.raises(grpc.RpcError) as err:
            rpc(req, timeout=10)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert op in err.value.details() and "1.1.0" in err.value.details()
    events = watch_op(m, op)
    assert events[-1].outcome == "succeeded", steps(events)
    assert "rollback_stop:started" not in steps(events)
    assert_on(env, m, "1.1.0")
    st = m.status()
    assert st.restarts == 0 and st.desired == "running"
    # once it ended, the stop goes through
    code, body = call(m, "POST", "/stop")
    assert code == 200 and m.status().state == pb.SERVICE_STATE_STOPPED


# ---- force cancels -----------------------------------------------------------------------

def test_forced_stop_during_the_health_gate_cancels_and_leaves_it_stopped(env):
    env.build("1.0.0")
    env.build("1.1.0")
    env.install("1.0.0")
    m = env.manager(min_healthy_time=30.0, healthy_deadline=60.0)
    started(env, m)
    op = update(m, "1.1.0")
    assert at_step(m, "health") == op
    assert running_version_safe(env.port) == "1.1.0"  # the new release is up, being gated
    t0 = time.monotonic()
    code, body = call(m, "POST", "/stop?force=true")
    assert code == 200 and body == {"success": True}
    assert time.monotonic() - t0 < 20  # the 30 s health gate was interrupted
    events = watch_op(m, op)
    final = events[-1]
    assert final.outcome == "cancelled", steps(events)
    assert final.message == ("cancelled by a stop request (force); rolled back to version "
                             "1.0.0 (left stopped)")
    assert steps(events)[-11:] == [
        "cancel:ok", "health:failed", "rollback_stop:started", "rollback_stop:ok",
        "rollback_switch:started", "rollback_switch:ok", "rollback_start:started",
        "rollback_start:skipped", "rollback_health:started", "rollback_health:skipped",
        "done:failed"]
    health = next(e for e in events if e.step == "health" and e.status == "failed")
    assert health.message == "interrupted: cancelled by a stop request (force)"
    st = m.status()
    assert st.state == pb.SERVICE_STATE_STOPPED and st.version == "1.0.0"
    assert st.desired == "stopped" and m.service_processes() == []
    assert st.update.last_outcome == "cancelled" and st.update.running_operation_id == ""
    assert on_disk_current(env) == "1.0.0" and env.leftovers() == []
    code, body = call(m, "GET", f"/update/{op}")
    assert body["outcome"] == "cancelled" and body["cancelledBy"] == "stop"
    # started again by hand, it runs the previous release
    assert call(m, "POST", "/start")[0] == 200
    assert_on(env, m, "1.0.0")


def test_forced_restart_during_the_download_cancels_before_anything_changed(env):
    """gRPC RestartRequest.force while the package trickles in: the download stops at
    once, the service was never touched, then it is restarted (a new pid)."""
    env.build("1.0.0")
    env.build("1.1.0", blob_bytes=4 << 20)
    env.install("1.0.0")
    m = env.manager()
    pid = started(env, m)
    env.server.throttle = 0.2  # ~0.3 MB/s: the download would take ~13 s
    op = update(m, "1.1.0")
    at_step(m, "download")
    t0 = time.monotonic()
    st = m.stub().Restart(pb.RestartRequest(force=True), timeout=60)
    assert time.monotonic() - t0 < 8
    assert st.state == pb.SERVICE_STATE_RUNNING and st.pid != pid
    events = watch_op(m, op)
    assert events[-1].outcome == "cancelled"
    assert events[-1].message == ("cancelled by a restart request (force); the service was "
                                  "not touched")
    assert "stop:started" not in steps(events)
    env.server.throttle = 0.0
    assert_on(env, m, "1.0.0")
    assert env.on_disk() == ["1.0.0"]


def test_forced_start_after_the_switch_restores_and_runs_the_old_release(env):
    env.build("1.0.0")
    env.build("1.1.0")
    env.install("1.0.0")
    m = env.manager(min_healthy_time=30.0, healthy_deadline=60.0)
    started(env, m)
    op = update(m, "1.1.0")
    at_step(m, "health")
    st = m.stub().Start(pb.StartRequest(force=True), timeout=60)
    assert st.state == pb.SERVICE_STATE_RUNNING and st.version == "1.0.0"
    events = watch_op(m, op)
    assert events[-1].outcome == "cancelled"
    assert "rollback_start:ok" in steps(events) and "rollback_health:ok" in steps(events)
    assert events[-1].message.endswith("rolled back to version 1.0.0")
    assert_on(env, m, "1.0.0")
    rels = {r.version: r for r in m.stub().ListReleases(pb.ListReleasesRequest()).releases}
    assert rels["1.0.0"].current


@pytest.mark.parametrize("request_", ["stop", "restart"])
def test_a_cancel_whose_rollback_fails(env, request_):
    """The previous release vanished from disk, so the cancel's rollback fails: a forced
    stop still stops (stopping never makes it worse); a forced restart is refused
    (it would start whatever the failed rollback left), naming the operation."""
    import shutil

    env.build("1.0.0")
    env.build("1.1.0")
    env.install("1.0.0")
    m = env.manager(min_healthy_time=30.0, healthy_deadline=60.0)
    started(env, m)
    op = update(m, "1.1.0")
    at_step(m, "health")
    shutil.rmtree(env.install_root / "releases" / "1.0.0")
    code, body = call(m, "POST", f"/api/services/agent/{request_}?force=true")
    final = watch_op(m, op)[-1]
    assert final.outcome == "rollback_failed"
    assert "rollback failed at rollback_switch" in final.message
    if request_ == "stop":
        assert code == 200, body
    else:
        assert code == 500 and op in body["error"] and "restart not done" in body["error"]
    # either way the service is down now (the rollback stopped it; no restart followed)
    assert m.status().state == pb.SERVICE_STATE_STOPPED
    assert m.service_processes() == []


@pytest.mark.parametrize("crash_at", ["cancel", "rollback_switch"])
def test_kill9_during_a_cancel_resumes_it_as_the_same_cancel(env, crash_at):
    """The manager dies right after journaling the cancel, or during its rollback: the
    next start finishes the cancel (cancelled, left stopped as the stop request wanted),
    on the previous release."""
    env.build("1.0.0")
    env.build("1.1.0")
    env.install("1.0.0")
    m = env.manager(crash_at=crash_at, min_healthy_time=30.0, healthy_deadline=60.0)
    started(env, m)
    op = update(m, "1.1.0")
    at_step(m, "health")
    with pytest.raises(grpc.RpcError):  # the manager dies before it answers
        m.stub().Stop(pb.StopRequest(force=True), timeout=30)
    assert m.proc is not None and m.proc.wait(30) == 137, m.logs()
    assert "update.test_crash" in m.logs()
    m._close_channel()
    m.start()  # the shipped entry point
    events = watch_op(m, op)
    assert events[-1].outcome == "cancelled", steps(events)
    assert events[-1].message == ("cancelled by a stop request (force); rolled back to "
                                  "version 1.0.0 (left stopped)")
    assert "rollback_start:skipped" in steps(events)
    st = m.status()
    assert st.state == pb.SERVICE_STATE_STOPPED and st.version == "1.0.0"
    assert st.update.last_outcome == "cancelled"
    assert m.service_processes() == [] and env.leftovers() == []
    assert on_disk_current(env) == "1.0.0"


# ---- an update of a stopped service (issue 15, item 7) -----------------------------------

def test_update_of_a_stopped_service_installs_it_and_leaves_it_stopped(env):
    env.build("1.0.0")
    env.build("1.1.0")
    env.build("1.2.0")
    env.install("1.0.0")
    m = env.manager()
    started(env, m)
    assert call(m, "POST", "/stop")[0] == 200
    code, body = call(m, "POST", "/update", {"version": "1.1.0"})
    assert code == 200 and body["started"] is True
    events = watch_op(m, body["operationId"])
    final = events[-1]
    assert final.outcome == "installed_stopped", steps(events)
    assert "installed (stopped)" in final.message
    assert "start:skipped" in steps(events) and "health:skipped" in steps(events)
    st = m.status()
    assert st.state == pb.SERVICE_STATE_STOPPED and st.version == "1.1.0"
    assert st.desired == "stopped" and m.service_processes() == []
    assert on_disk_current(env) == "1.1.0"
    code, body = call(m, "GET", "/update")
    assert body["outcome"] == "installed_stopped" and body["leaveStopped"] is True
    # a rollback of a stopped service leaves it stopped too
    rb = m.stub().Rollback(pb.RollbackRequest(), timeout=10)
    assert rb.version == "1.0.0"
    assert watch_op(m, rb.operation_id)[-1].outcome == "installed_stopped"
    assert m.status().state == pb.SERVICE_STATE_STOPPED and m.status().version == "1.0.0"
    # start_stopped (HTTP body) starts it and gates it as usual
    code, body = call(m, "POST", "/update", {"version": "1.2.0", "start_stopped": True})
    assert code == 200
    events = watch_op(m, body["operationId"])
    assert events[-1].outcome == "succeeded" and "health:ok" in steps(events)
    assert_on(env, m, "1.2.0")


def test_start_stopped_over_grpc(env):
    env.build("1.0.0")
    env.build("1.1.0")
    env.install("1.0.0")
    m = env.manager()
    started(env, m)
    m.stub().Stop(pb.StopRequest(), timeout=30)
    resp = m.stub().Update(pb.UpdateRequest(version="1.1.0", start_stopped=True), timeout=10)
    assert resp.started
    assert watch_op(m, resp.operation_id)[-1].outcome == "succeeded"
    assert_on(env, m, "1.1.0")
    assert m.status().desired == "running"


# ---- following an update: GET /update, GetUpdate, /status, origin -----------------------

def test_curl_users_follow_an_update(env):
    env.build("1.0.0")
    env.build("1.1.0")
    env.install("1.0.0")
    m = env.manager(min_healthy_time=3.0)
    started(env, m)
    code, body = call(m, "POST", "/update", {"version": "1.0.0"})
    assert (code, body) == (200, {"success": True, "message": "Already on version 1.0.0",
                                  "operationId": "", "started": False})
    resp = m.stub().Update(pb.UpdateRequest(version="1.0.0"), timeout=10)
    assert not resp.started and resp.operation_id == ""
    code, body = call(m, "POST", "/update", {"version": "1.1.0", "origin": "curl:alice"})
    op = body["operationId"]
    at_step(m, "health")
    code, running = call(m, "GET", "/update")
    assert code == 200
    assert {k: running[k] for k in ("operationId", "service", "kind", "version", "fromVersion",
                                    "state", "step", "outcome", "origin")} == {
        "operationId": op, "service": "agent", "kind": "update", "version": "1.1.0",
        "fromVersion": "1.0.0", "state": "running", "step": "health", "outcome": "",
        "origin": "curl:alice"}
    assert [s["step"] for s in running["steps"]] == [
        "validate", "download", "verify", "stage", "stop", "switch", "start", "health"]
    assert running["steps"][-1]["status"] == "started"
    assert all(s["status"] == "ok" and s["elapsedSeconds"] >= 0 for s in running["steps"][:-1])
    assert running["createdAt"] > 0 and running["finishedAt"] == 0
    code, by_service = call(m, "GET", "/update?service=agent")
    assert by_service["operationId"] == op
    code, status = call(m, "GET", "/status")
    assert status["update"]["runningOperationId"] == op
    assert status["update"]["runningVersion"] == "1.1.0"
    assert status["update"]["runningStep"] == "health"
    assert status["update"]["runningOrigin"] == "curl:alice"
    st = m.status().update
    assert (st.running_origin, st.running_version, st.running_step) == (
        "curl:alice", "1.1.0", "health")
    assert watch_op(m, op)[-1].outcome == "succeeded"
    code, done = call(m, "GET", f"/update/{op}")
    assert done["state"] == "done" and done["outcome"] == "succeeded" and done["step"] == ""
    assert done["message"] == "update to version 1.1.0 succeeded"
    assert done["finishedAt"] >= done["createdAt"] > 0
    assert [s["step"] for s in done["steps"]][-1] == "commit"
    # gRPC GetUpdate answers the same
    g = m.stub().GetUpdate(pb.GetUpdateRequest(operation_id=op), timeout=10)
    assert (g.operation_id, g.service, g.kind, g.from_version, g.to_version, g.state,
            g.outcome, g.origin) == (op, "agent", "update", "1.0.0", "1.1.0", "done",
                                      "succeeded", "curl:alice")
    assert [(s.step, s.status) for s in g.steps] == [
        (s["step"], s["status"]) for s in done["steps"]]
    g = m.stub().GetUpdate(pb.GetUpdateRequest(), timeout=10)
    assert g.operation_id == op
    st = m.status().update
    assert (st.last_origin, st.running_origin, st.running_step) == ("curl:alice", "", "")
    resp = m.stub().Update(pb.UpdateRequest(version="1.0.0", origin="hub:rollout/r1"),
                           timeout=10)
    assert resp.started
    assert m.stub().GetUpdate(pb.GetUpdateRequest(), timeout=10).origin == "hub:rollout/r1"
    watch_op(m, resp.operation_id)
    assert m.status().update.last_origin == "hub:rollout/r1"


BAD_GETS = [
    ("/update/nope", 400, "operation_id"),
    ("/update/" + "0" * 32, 404, "no update operation"),
    ("/update/" + "A" * 32, 400, "operation_id"),
    ("/update/" + "0" * 33, 400, "operation_id"),
    ("/update/" + "a" * 10_000, 400, "operation_id"),
    ("/update/" + "a" * 20_000, 431, "larger than"),
    ("/update/%00%01", 400, "operation_id"),
    ("/update/..%2F..%2Fetc", 400, "operation_id"),
    ("/update?service=nope", 404, "nope"),
    ("/update?service=%00", 400, "service name"),
    ("/update?service=a&service=b", 400, "more than once"),
    ("/update?operation=1", 400, "unknown query parameter"),
]

BAD_POSTS = [
    ({"version": "1.1.0", "origin": "x" * 201}, 400, "at most 200 printable"),
    ({"version": "1.1.0", "origin": "a\nb"}, 400, "printable"),
    ({"version": "1.1.0", "origin": "\x00"}, 400, "printable"),
    ({"version": "1.1.0", "origin": "\u202etxt"}, 400, "printable"),
    ({"version": "1.1.0", "origin": 7}, 400, "origin must be a string"),
    ({"version": "1.1.0", "origin": None}, 400, "origin must be a string"),
    ({"version": "1.1.0", "origin": ["hub"]}, 400, "origin must be a string"),
    ({"version": "1.1.0", "start_stopped": "yes"}, 400, "start_stopped"),
    ({"version": "1.1.0", "start_stopped": 1}, 400, "start_stopped"),
    ({"version": "1.1.0", "start_stopped": None}, 400, "start_stopped"),
    ({"version": "1.1.0", "force": True}, 400, "unknown field 'force'"),
]


def test_bad_update_requests_get_clear_errors_and_change_nothing(env):
    env.build("1.0.0")
    env.build("1.1.0")
    env.install("1.0.0")
    m = env.manager()
    pid = started(env, m)
    for path, status, needle in BAD_GETS:
        code, body = call(m, "GET", path)
        assert code == status and needle in body["error"], (path, body)
    for body, status, needle in BAD_POSTS:
        code, answer = call(m, "POST", "/update", body)
        assert code == status and needle in answer["error"], (body, answer)
    for path in ("/stop?force=maybe", "/start?force=2", "/restart?force=",
                 "/api/services/agent/restart?force=TRUE", "/start?force=true&force=true"):
        code, answer = call(m, "POST", path)
        assert code == 400 and "force" in answer["error"], (path, answer)
    stub = m.stub()
    for req in (pb.UpdateRequest(version="1.1.0", origin="o" * 201),
                pb.UpdateRequest(version="1.1.0", origin="tab\there")):
        with pytest.raises(grpc.RpcError) as err:
            stub.Update(req, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "origin" in err.value.details()
    for req, code in ((pb.GetUpdateRequest(operation_id="x"), grpc.StatusCode.INVALID_ARGUMENT),
                      (pb.GetUpdateRequest(operation_id="f" * 32), grpc.StatusCode.NOT_FOUND),
                      (pb.GetUpdateRequest(service="nope"), grpc.StatusCode.NOT_FOUND),
                      (pb.GetUpdateRequest(service="../x"), grpc.StatusCode.INVALID_ARGUMENT),
                      (pb.GetUpdateRequest(), grpc.StatusCode.NOT_FOUND)):
        with pytest.raises(grpc.RpcError) as err:
            stub.GetUpdate(req, timeout=10)
        assert err.value.code() == code, (req, err.value.details())
    # nothing happened: no operation, the service untouched
    st = m.status()
    assert st.pid == pid and st.update.last_operation_id == ""
    assert st.update.running_operation_id == "" and env.on_disk() == ["1.0.0"]
    # an operation asked for by id and its own service is found
    op = update(m, "1.1.0")
    watch_op(m, op)
    got = stub.GetUpdate(pb.GetUpdateRequest(service="agent", operation_id=op), timeout=10)
    assert got.operation_id == op and got.outcome == "succeeded"
