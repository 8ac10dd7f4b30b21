"""The hub's events. A host's through the hub: Hub.ListEvents / WatchEvents with `host`
ask that host's real manager and mark each event with the host (`aictl events --host`);
bad requests are refused by the hub itself; a watch through the hub survives the
manager's restart by resuming after the last id. The hub's own, on both store backends:
rollout events (in the rollout's transaction: all there after a kill -9 of the hub),
host reachability, registrations, the audit of rollout commands and of a restart
through the hub (which the manager records as relayed), its sinks (the leader's)."""

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
                          (epb.ListEventsRequest(after_id=10**12),  # the hub's own history
                           grpc.StatusCode.INVALID_ARGUMENT),
                          (epb.ListEventsRequest(subject="[x]"),
                           grpc.StatusCode.INVALID_ARGUMENT)):
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


TOKEN = "hub-token-for-events"


def hub_events(hub, **kw) -> list[epb.Event]:
    kw.setdefault("limit", 1000)
    return list(hub.call("ListEvents", epb.ListEventsRequest(**kw)).events)


def test_the_hubs_own_history_and_audit(hub_store, procs, make_manager):
    from backendai.v1 import hub_pb2 as hpb
    from tests.fixtures.hub_procs import TERMINAL, SimManagers, wait_for

    sim = procs(SimManagers, hosts=3).start()
    m = make_manager([fast_service("web")]).start()
    hub = procs(HubProc, {**sim.hosts, "real-1": m.grpc_addr}, token=TOKEN,
                store=hub_store).start()
    # every manager reached: one reachability event each (the hub leads)
    wait_for(lambda: len(hub_events(hub, kind="host.reachability")) == 4, 20,
             "four hosts reachable")
    up = hub_events(hub, kind="host.reachability", subject="host/agent-00?")
    assert [e.fields["reachable"] for e in up] == ["true"] * 3
    r = hub.call("StartRollout", hpb.StartRolloutRequest(
        version="2.0", target=hpb.RolloutTarget(hosts=list(sim.hosts)))).rollout
    assert hub.wait_rollout(r.id, TERMINAL).state == hpb.ROLLOUT_STATE_SUCCEEDED
    notes = hub.events(r.id)
    history = [e for e in hub_events(hub, kind="rollout.") if e.fields["rollout"] == r.id]
    # every note but the managers' step-by-step progress (in WatchRollout only; each
    # manager's own history has it as update.step)
    assert any(n.kind == "host.step" for n in notes)
    assert [int(e.fields["index"]) for e in history] == [
        n.index for n in notes if n.kind != "host.step"]
    assert not hub_events(hub, kind="rollout.host.step")
    assert history[0].kind == "rollout.created" and history[0].subject == f"rollout/{r.id}"
    assert any(e.kind == "rollout.host.succeeded" and e.subject == "host/agent-001"
               for e in history)
    (start,) = hub_events(hub, kind="audit.rollout.start")
    assert (start.subject, start.actor, start.transport, start.result) == (
        f"rollout/{r.id}", "default", "grpc", "ok")
    assert start.fields["version"] == "2.0" and start.peer.startswith("127.0.0.1:")
    with pytest.raises(grpc.RpcError):
        hub.call("PauseRollout", hpb.RolloutControlRequest(id=r.id, reason="test"))
    (pause,) = hub_events(hub, kind="audit.rollout.pause")
    assert pause.result != "ok" and pause.fields["reason"] == "test"
    # a restart through the hub: audited by the hub, and by the manager as relayed
    hub.call("RestartService", hpb.RestartServiceRequest(host="real-1", service="web"))
    (restart,) = hub_events(hub, kind="audit.restart")
    assert (restart.subject, restart.result, restart.fields["service"]) == (
        "host/real-1", "ok", "web")
    (relayed,) = m.stub().ListEvents(epb.ListEventsRequest(kind="audit.restart"),
                                     timeout=10).events
    assert (relayed.transport, relayed.actor) == ("hub", "anonymous for default")
    hub.call("StopService", hpb.StopServiceRequest(host="real-1", service="web"))
    hub.call("StartService", hpb.StartServiceRequest(host="real-1", service="web"))
    assert [e.kind for e in hub_events(hub, kind="audit.", subject="host/real-1")] == [
        "audit.restart", "audit.stop", "audit.start"]
    desired = m.stub().ListEvents(epb.ListEventsRequest(kind="service.desired"),
                                  timeout=10).events
    assert desired[-2].fields["desired"] == "stopped"
    assert desired[-2].actor == "anonymous for default" and desired[-2].transport == "hub"
    # registrations: a new host is an event, the same registration again is not
    for _ in range(2):
        hub.call("Register", hpb.RegisterRequest(name="nas-1", role="manager",
                                                 manager_address=sim.hosts["agent-001"]))
    (reg,) = hub_events(hub, kind="host.registered")
    assert reg.subject == "host/nas-1" and reg.fields["manager_address"]
    # a watcher sees what comes next; losing the managers is recorded. It watches after
    # the last id committed before the kill: `from_now` would start wherever the log is
    # when the hub gets to the request, which may be after the kill's events
    last = hub.call("ListEvents", epb.ListEventsRequest(limit=1)).last_id
    stream = hub.stub().WatchEvents(epb.WatchEventsRequest(kind="host.reachability",
                                                           after_id=last),
                                    timeout=30, metadata=hub.metadata())
    sim.kill9()
    lost = next(e for e in stream if e.fields["reachable"] == "false")  # (nas-1 comes up)
    stream.cancel()
    assert lost.fields["reachable"] == "false" and lost.subject.startswith("host/")
    # HTTP: the hub's own history, and a host's through its manager
    status, body = hub.http("GET", "/api/events?kind=audit.&order=oldest")
    assert status == 200 and [e["kind"] for e in body["events"]] == [
        "audit.rollout.start", "audit.rollout.pause", "audit.restart", "audit.stop",
        "audit.start"]
    status, body = hub.http("GET", "/api/events?host=real-1&subject=service/web&limit=3")
    assert status == 200 and body["host"] == "real-1" and body["count"] == 3
    assert all(e["host"] == "real-1" for e in body["events"])
    ids = [e["id"] for e in body["events"]]
    assert ids == sorted(ids, reverse=True)  # newest first
    for query, code in (("host=nobody", 404), ("host=bad%20host", 400), ("limit=0", 400),
                        ("kind=%25", 400), ("host=real-1&after_id=99999999", 400),
                        ("bogus=1", 400)):
        status, body = hub.http("GET", f"/api/events?{query}")
        assert status == code and body["success"] is False, (query, body)
    status, _ = hub.http("GET", "/api/events", token="")
    assert status == 401
    # aictl reads the hub's history
    res = subprocess.run([PY, "-m", "aictl.main", "events", "--hub", hub.address,
                          "--token-file", str(hub.root / "hub.token"), "--kind", "audit.",
                          "--json"], capture_output=True, text=True, timeout=60, cwd=ROOT,
                         check=False)
    assert res.returncode == 0, res.stderr
    kinds = [json.loads(line)["kind"] for line in res.stdout.splitlines()]
    assert kinds == ["audit.rollout.start", "audit.rollout.pause", "audit.restart",
                     "audit.stop", "audit.start"]


OPS = "hub-ops-token-for-events"


def test_rollout_commands_are_audited_with_who_and_the_result(hub_store, procs, tmp_path):
    """audit.rollout.pause/resume/promote/abort/retry_failed: who asked (the token's
    name), over what, from where, the reason given and the result (ok, or the error the
    caller got), over gRPC and HTTP alike."""
    from backendai.auth import write_token
    from backendai.v1 import hub_pb2 as hpb
    from tests.fixtures.hub_procs import TERMINAL, SimManagers

    write_token(tmp_path / "ops.token", OPS)
    sim = procs(SimManagers, hosts=4, delay=0.1).start()
    hub = procs(HubProc, sim.hosts, token=TOKEN, store=hub_store, extra={"auth_tokens": [
        {"name": "ops", "file": str(tmp_path / "ops.token"), "role": "admin"}]}).start()

    def as_ops(method: str, rid: str, reason: str = "") -> hpb.Rollout:
        return getattr(hub.stub(), method)(
            hpb.RolloutControlRequest(id=rid, reason=reason), timeout=15,
            metadata=[("authorization", f"Bearer {OPS}")])

    r = hub.call("StartRollout", hpb.StartRolloutRequest(
        version="2.0", strategy=hpb.RolloutStrategy(waves=["1", "100%"], seed=1,
                                                     pause_until_promote=True))).rollout
    hub.wait_rollout(r.id, (hpb.ROLLOUT_STATE_WAITING,))
    as_ops("PauseRollout", r.id, "lunch")
    as_ops("ResumeRollout", r.id)
    status, body = hub.http("POST", f"/api/rollouts/{r.id}/promote", {"reason": "canary ok"})
    assert status == 200, body
    hub.wait_rollout(r.id, TERMINAL)
    with pytest.raises(grpc.RpcError) as late:  # a finished rollout cannot be aborted
        as_ops("AbortRollout", r.id, "too late")
    assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # a second rollout: one host fails, a retry of the failed ones succeeds
    sim.rules([{"host": "agent-001", "outcome": "failed"}])
    r2 = hub.call("StartRollout", hpb.StartRolloutRequest(
        version="3.0", strategy=hpb.RolloutStrategy(
            waves=["100%"], seed=1, max_failures_per_wave="1",
            max_failures_total="1"))).rollout
    assert hub.wait_rollout(r2.id, TERMINAL).state == hpb.ROLLOUT_STATE_FAILED
    sim.rules([])
    as_ops("RetryFailed", r2.id, "store fixed")
    assert hub.wait_rollout(r2.id, TERMINAL).state == hpb.ROLLOUT_STATE_SUCCEEDED
    # a third, aborted while it waits for a promote
    r3 = hub.call("StartRollout", hpb.StartRolloutRequest(
        version="4.0", strategy=hpb.RolloutStrategy(waves=["1", "100%"], seed=1,
                                                    pause_until_promote=True))).rollout
    hub.wait_rollout(r3.id, (hpb.ROLLOUT_STATE_WAITING,))
    as_ops("AbortRollout", r3.id, "enough")
    assert hub.wait_rollout(r3.id, TERMINAL).state == hpb.ROLLOUT_STATE_ABORTED
    with pytest.raises(grpc.RpcError) as bogus:
        as_ops("ResumeRollout", "r-no-such-rollout")
    assert bogus.value.code() == grpc.StatusCode.NOT_FOUND

    audits = [e for e in hub_events(hub, kind="audit.rollout.")
              if e.kind != "audit.rollout.start"]
    got = [(e.kind, e.subject, e.actor, e.transport, e.fields.get("reason", ""), e.result)
           for e in audits]
    assert got == [
        ("audit.rollout.pause", f"rollout/{r.id}", "ops", "grpc", "lunch", "ok"),
        ("audit.rollout.resume", f"rollout/{r.id}", "ops", "grpc", "", "ok"),
        ("audit.rollout.promote", f"rollout/{r.id}", "default", "http", "canary ok", "ok"),
        ("audit.rollout.abort", f"rollout/{r.id}", "ops", "grpc", "too late",
         late.value.details()),
        ("audit.rollout.retry_failed", f"rollout/{r2.id}", "ops", "grpc", "store fixed", "ok"),
        ("audit.rollout.abort", f"rollout/{r3.id}", "ops", "grpc", "enough", "ok"),
        ("audit.rollout.resume", "rollout/r-no-such-rollout", "ops", "grpc", "",
         bogus.value.details()),
    ]
    assert all(e.peer.startswith("127.0.0.1:") for e in audits)
    assert audits[0].message == f"ops asked to rollout.pause rollout/{r.id} over grpc: ok"


def test_kill9_of_the_hub_mid_rollout_leaves_every_note_in_the_history(hub_store, procs):
    from backendai.v1 import hub_pb2 as hpb
    from tests.fixtures.hub_procs import TERMINAL, SimManagers

    sim = procs(SimManagers, hosts=4, delay=0.5).start()
    hub = procs(HubProc, sim.hosts, store=hub_store).start()
    r = hub.call("StartRollout", hpb.StartRolloutRequest(
        version="2.0", strategy=hpb.RolloutStrategy(waves=["1", "100%"]))).rollout
    assert_eventually(sim.journal, 10, what="a host is being updated")
    hub.kill9()
    hub.start()
    assert hub.wait_rollout(r.id, TERMINAL).state == hpb.ROLLOUT_STATE_SUCCEEDED
    notes = [n.index for n in hub.events(r.id) if n.kind != "host.step"]
    history = [int(e.fields["index"]) for e in hub_events(hub, kind="rollout.")
               if e.fields["rollout"] == r.id]
    assert history == notes  # each note with its history line, none without
    started = hub_events(hub, kind="hub.started")
    assert len(started) == 2 and not hub_events(hub, kind="hub.stopped")


def test_the_hubs_sink_delivers_its_history(procs, tmp_path):
    from backendai.v1 import hub_pb2 as hpb
    from tests.fixtures.hub_procs import TERMINAL, SimManagers
    from tests.fixtures.receivers import Receiver

    hook = Receiver().start()
    try:
        sim = procs(SimManagers, hosts=2).start()
        hub = procs(HubProc, sim.hosts, extra={"event_sinks": [
            {"type": "webhook", "url": hook.url, "backoff_initial": 0.05,
             "backoff_max": 0.3}]}).start()
        r = hub.call("StartRollout", hpb.StartRolloutRequest(version="2.0")).rollout
        assert hub.wait_rollout(r.id, TERMINAL).state == hpb.ROLLOUT_STATE_SUCCEEDED
        last = hub.call("ListEvents", epb.ListEventsRequest(limit=1)).last_id
        assert_eventually(lambda: hook.first_arrivals()[-1:] == [last], 20)
        assert hook.first_arrivals() == list(range(1, last + 1))
        assert hook.events[1]["source"] == "hub/hub"
        kinds = {e["kind"] for e in hook.events.values()}
        assert {"hub.started", "rollout.created", "rollout.finished",
                "audit.rollout.start"} <= kinds
    finally:
        hook.stop()


def test_kill9_of_the_hub_while_its_sink_is_behind_resumes_from_the_cursor(hub_store, procs):
    """The webhook receiver is down while two rollouts' worth of history piles up; the
    hub is killed -9 with its sink behind. Restarted, and the receiver back, every event
    arrives from the stored cursor: in id order, at least once (a repeat only for the
    batch in flight at the kill)."""
    from backendai.v1 import hub_pb2 as hpb
    from tests.fixtures.hub_procs import TERMINAL, SimManagers
    from tests.fixtures.receivers import Receiver

    hook = Receiver().start()
    try:
        sim = procs(SimManagers, hosts=3, delay=0.05).start()
        hub = procs(HubProc, sim.hosts, store=hub_store, extra={"event_sinks": [
            {"type": "webhook", "url": hook.url, "backoff_initial": 0.05,
             "backoff_max": 0.3, "batch_size": 5}]}).start()

        def last_id() -> int:
            return int(hub.call("ListEvents", epb.ListEventsRequest(limit=1)).last_id)

        r = hub.call("StartRollout", hpb.StartRolloutRequest(version="2.0")).rollout
        assert hub.wait_rollout(r.id, TERMINAL).state == hpb.ROLLOUT_STATE_SUCCEEDED
        assert_eventually(lambda: hook.first_arrivals()[-1:] == [last_id()], 20,
                          what="the first rollout delivered")
        hook.stop()
        delivered = len(hook.first_arrivals())
        r = hub.call("StartRollout", hpb.StartRolloutRequest(version="3.0")).rollout
        assert hub.wait_rollout(r.id, TERMINAL).state == hpb.ROLLOUT_STATE_SUCCEEDED
        behind = last_id()
        assert behind - delivered >= 10, (behind, delivered)  # the sink is well behind
        hub.kill9()
        hub.start()
        assert last_id() > behind  # the restart itself is in the history (hub.started)
        hook.set_mode("ok")
        hook.start()
        assert_eventually(lambda: hook.first_arrivals()[-1:] == [last_id()], 30,
                          what="everything delivered after the restart")
        n = last_id()
        first = hook.first_arrivals()
        assert first == list(range(1, n + 1)), first  # in order, nothing lost
        assert set(hook.arrivals) == set(range(1, n + 1))
        assert len(hook.arrivals) - n <= 5  # at least once: at most the batch in flight
        kinds = [hook.events[i]["kind"] for i in range(delivered + 1, n + 1)]
        assert "rollout.finished" in kinds and kinds.count("hub.started") == 1
    finally:
        hook.stop()
