"""What the hub asks a real manager (issue 11, items 2, 3 and 5): CheckRelease (does the
store have a release, without changing anything), GetUpdate by origin (the operation the
hub issued, found again after a restart), Rollback with an origin, and WatchStatus with
a keepalive (the hub's "last contact"). Each with wrong, missing, huge and hostile
values: a clear error, nothing changed."""

from __future__ import annotations

import time

import grpc
import pytest

from backendai.v1 import manager_pb2 as pb
from tests.conftest import assert_eventually, fast_service
from tests.update_support import started, watch_op

pytestmark = pytest.mark.slow


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(*args, timeout=15, **kwargs)
    return err.value


def test_check_release_answers_per_version_and_changes_nothing(env):
    env.build("1.0.0")
    env.build("1.1.0")
    env.install("1.0.0")
    m = env.manager()
    pid = started(env, m)
    stub = m.stub()
    got = stub.CheckRelease(pb.CheckReleaseRequest(version="1.1.0"), timeout=15)
    assert got.available and got.service == "agent" and got.version == "1.1.0"
    assert got.url == f"{env.server.url}/1.1.0/agent-1.1.0.tar.gz"
    assert got.package and got.message == ""
    missing = stub.CheckRelease(pb.CheckReleaseRequest(service="agent", version="9.9.9"),
                                timeout=15)
    assert not missing.available
    assert missing.url.endswith("/9.9.9/agent-9.9.9.tar.gz")
    assert "9.9.9" in missing.message and "404" in missing.message
    # the store only answered HEAD or a one-byte GET: nothing was downloaded
    assert not any(method == "GET" and headers.get("Range") != "bytes=0-0"
                   for method, _path, headers in env.server.requests)
    for req, code, needle in (
            (pb.CheckReleaseRequest(version=""), "INVALID_ARGUMENT", "version"),
            (pb.CheckReleaseRequest(version="../1"), "INVALID_ARGUMENT", "version"),
            (pb.CheckReleaseRequest(version="1" * 10_000), "INVALID_ARGUMENT", "version"),
            (pb.CheckReleaseRequest(version="1.0\x00"), "INVALID_ARGUMENT", "version"),
            (pb.CheckReleaseRequest(service="nope", version="1.1.0"), "NOT_FOUND", "nope"),
            (pb.CheckReleaseRequest(service="a/b", version="1.1.0"), "INVALID_ARGUMENT",
             "service")):
        err = rpc_error(stub.CheckRelease, req)
        assert err.code().name == code and needle in err.details(), (req, err.details())
    st = m.status()
    assert st.pid == pid and st.update.last_operation_id == "" and env.on_disk() == ["1.0.0"]


def test_check_release_when_the_store_is_down_or_updates_are_not_configured(env,
                                                                           make_manager):
    env.build("1.0.0")
    env.install("1.0.0")
    m = env.manager(package_url="http://127.0.0.1:1/{version}/agent-{version}.tar.gz")
    started(env, m)
    down = m.stub().CheckRelease(pb.CheckReleaseRequest(version="1.1.0"), timeout=30)
    assert not down.available and "127.0.0.1:1" in down.url and down.message
    plain = make_manager([fast_service("svc")], name="plain").start()
    err = rpc_error(plain.stub().CheckRelease, pb.CheckReleaseRequest(version="1.1.0"))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not configured" in err.details()


def test_get_update_by_origin_and_a_rollback_with_an_origin(env):
    env.build("1.0.0")
    env.build("1.1.0")
    env.install("1.0.0")
    m = env.manager()
    started(env, m)
    stub = m.stub()
    origin = "hub:hub-1/rollout/r1/host/a/attempt/1"
    err = rpc_error(stub.GetUpdate, pb.GetUpdateRequest(origin=origin))
    assert err.code() == grpc.StatusCode.NOT_FOUND and origin in err.details()
    op = stub.Update(pb.UpdateRequest(version="1.1.0", origin=origin), timeout=15).operation_id
    assert stub.GetUpdate(pb.GetUpdateRequest(origin=origin), timeout=15).operation_id == op
    watch_op(m, op)
    got = stub.GetUpdate(pb.GetUpdateRequest(service="agent", origin=origin), timeout=15)
    assert (got.operation_id, got.outcome, got.from_version) == (op, "succeeded", "1.0.0")
    back = "hub:hub-1/rollout/r1/host/a/rollback/1"
    # a rollback that would go elsewhere than asked is refused, nothing started
    err = rpc_error(stub.Rollback, pb.RollbackRequest(origin=back, version="0.9.0"))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "1.0.0" in err.details() and "0.9.0" in err.details()
    for bad in ("../x", "v" * 65, "1.0\n"):
        err = rpc_error(stub.Rollback, pb.RollbackRequest(version=bad))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "version" in err.details()
    assert m.status().update.last_operation_id == op
    rb = stub.Rollback(pb.RollbackRequest(origin=back, version="1.0.0"), timeout=15)
    assert rb.version == "1.0.0"
    assert m.status().update.running_origin in (back, "")
    watch_op(m, rb.operation_id)
    assert m.status().update.last_origin == back
    got = stub.GetUpdate(pb.GetUpdateRequest(origin=back), timeout=15)
    assert (got.operation_id, got.kind) == (rb.operation_id, "rollback")
    # the update is still found by its own origin
    assert stub.GetUpdate(pb.GetUpdateRequest(origin=origin), timeout=15).operation_id == op
    for req, code in (
            (pb.GetUpdateRequest(origin="x" * 201), "INVALID_ARGUMENT"),
            (pb.GetUpdateRequest(origin="a\nb"), "INVALID_ARGUMENT"),
            (pb.GetUpdateRequest(origin="\u202eevil"), "INVALID_ARGUMENT"),
            (pb.GetUpdateRequest(origin=origin, operation_id=op), "INVALID_ARGUMENT"),
            (pb.GetUpdateRequest(origin="' OR 1=1 --"), "NOT_FOUND"),
            (pb.GetUpdateRequest(service="nope", origin=origin), "NOT_FOUND")):
        assert rpc_error(stub.GetUpdate, req).code().name == code, req
    before = m.status().update.last_operation_id
    for req in (pb.RollbackRequest(origin="o" * 201), pb.RollbackRequest(origin="\x07")):
        err = rpc_error(stub.Rollback, req)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "origin" in err.details()
    assert m.status().update.last_operation_id == before  # nothing was started


def test_watch_status_keepalive_resends_the_status_when_nothing_changes(make_manager):
    m = make_manager([fast_service("svc")]).start()
    assert_eventually(lambda: m.status().state == pb.SERVICE_STATE_RUNNING, 20)
    stub = m.stub()
    call = stub.WatchStatus(pb.WatchStatusRequest(keepalive_seconds=1), timeout=30)
    first = next(call)
    t0 = time.monotonic()
    again = next(call)
    waited = time.monotonic() - t0
    call.cancel()
    assert 0.8 <= waited < 5, waited
    assert (again.name, again.state, again.pid) == (first.name, first.state, first.pid)
    plain = stub.WatchStatus(pb.WatchStatusRequest(), timeout=3)
    next(plain)
    with pytest.raises(grpc.RpcError) as err:  # no keepalive asked: nothing until a change
        next(plain)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    for bad in (-1.0, 0.5, 3601.0, float("nan"), float("inf"), 1e300):
        with pytest.raises(grpc.RpcError) as err:
            next(stub.WatchStatus(pb.WatchStatusRequest(keepalive_seconds=bad), timeout=10))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        assert "keepalive_seconds" in err.value.details()
