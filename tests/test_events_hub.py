"""A host's events through the hub: Hub.ListEvents / WatchEvents with `host` ask that
host's real manager and mark each event with the host (`aictl events --host`); bad
requests are refused by the hub itself; a watch through the hub survives the manager's
restart by resuming after the last id."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import grpc
import pytest

from backendai.v1 import events_pb2 as epb
from backendai.v1 import manager_pb2 as pb
from tests.conftest import PY, ROOT, assert_eventually, fast_service
from tests.fixtures.hub_procs import HubProc


@pytest.fixture
def hub_and_manager(procs, make_manager):
    m = make_manager([fast_service("web")]).start()
    hub = procs(HubProc, {"agent-3": m.grpc_addr})
    hub.start()
    return hub, m


def test_list_and_watch_a_hosts_events_through_the_hub(hub_and_manager):
    hub, m = hub_and_manager
    assert_eventually(lambda: m.status("web").state == pb.SERVICE_STATE_RUNNING, 10)
    resp = hub.call("ListEvents", epb.ListEventsRequest(host="agent-3", kind="service."))
    assert resp.events and all(e.host == "agent-3" for e in resp.events)
    direct = m.stub().ListEvents(epb.ListEventsRequest(kind="service."), timeout=10)
    assert [e.id for e in resp.events] == [e.id for e in direct.events]
    assert resp.last_id == direct.last_id
    stream = hub.stub().WatchEvents(epb.WatchEventsRequest(host="agent-3", from_now=True),
                                    timeout=20, metadata=hub.metadata())
    m.stub().Restart(pb.RestartRequest(service="web"), timeout=30)
    seen = []
    for ev in stream:
        seen.append(ev)
        if ev.kind == "audit.restart":
            break
    stream.cancel()
    assert all(e.host == "agent-3" for e in seen) and seen[-1].subject == "service/web"
    for request, code in ((epb.ListEventsRequest(host="nobody"), grpc.StatusCode.NOT_FOUND),
                          (epb.ListEventsRequest(host="bad host!"),
                           grpc.StatusCode.INVALID_ARGUMENT),
                          (epb.ListEventsRequest(host="agent-3", kind="%"),
                           grpc.StatusCode.INVALID_ARGUMENT),
                          (epb.ListEventsRequest(host="agent-3", limit=5000),
                           grpc.StatusCode.INVALID_ARGUMENT),
                          (epb.ListEventsRequest(host="agent-3", after_id=10**12),
                           grpc.StatusCode.INVALID_ARGUMENT),
                          (epb.ListEventsRequest(), grpc.StatusCode.UNIMPLEMENTED)):
        with pytest.raises(grpc.RpcError) as err:
            hub.call("ListEvents", request)
        assert err.value.code() == code, (request, err.value.details())
    with pytest.raises(grpc.RpcError) as err:
        next(iter(hub.stub().WatchEvents(epb.WatchEventsRequest(host="agent-3", kind="BAD"),
                                         timeout=10)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_aictl_follows_a_host_through_the_hub_across_a_manager_restart(hub_and_manager):
    hub, m = hub_and_manager
    assert_eventually(lambda: m.status("web").state == pb.SERVICE_STATE_RUNNING, 10)
    res = subprocess.run([PY, "-m", "aictl.main", "events", "--hub", hub.address, "--host",
                          "agent-3", "--json", "-n", "3"], capture_output=True, text=True,
                         timeout=60, cwd=ROOT, check=False)
    assert res.returncode == 0, res.stderr
    listed = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(listed) == 3 and all(e["host"] == "agent-3" for e in listed)
    follower = subprocess.Popen(
        [PY, "-m", "aictl.main", "events", "-f", "--hub", hub.address, "--host", "agent-3",
         "--json", "-n", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert follower.stdout is not None
        ids = [json.loads(follower.stdout.readline())["id"]]
        m.kill9()  # the hub's relay ends; aictl resumes after the last id it showed
        m.top["grpc_listen"] = m.grpc_addr  # back on the address the hub knows
        m.start()
        m.stub().Stop(pb.StopRequest(service="web"), timeout=30)
        while True:
            ev = json.loads(follower.stdout.readline())
            ids.append(ev["id"])
            if ev["kind"] == "audit.stop":
                break
        assert ids == sorted(set(ids))  # nothing shown twice, in order
        everything = [e.id for e in m.stub().ListEvents(
            epb.ListEventsRequest(after_id=ids[0], limit=1000), timeout=10).events]
        assert ids[1:] == everything[:len(ids) - 1]  # nothing missed
    finally:
        follower.send_signal(signal.SIGINT)
        _, err = follower.communicate(timeout=10)
    assert "resuming after event" in err
