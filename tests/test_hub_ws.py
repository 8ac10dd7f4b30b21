"""The hub's WebSockets (hub/fleet_ws.py) with a plain client (`websockets`) against a
real ai-hub process and simulated managers (FAKE managers: tests/fixtures/sim_manager.py
says why): message shapes, auth (a 1008 close before any data), coalescing for a
dashboard that reads slowly or never, bad frames and floods, the log tail."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from backendai.auth import write_token
from backendai.v1 import hub_pb2 as pb
from tests.fixtures.hub_procs import (
    TERMINAL,
    HubProc,
    SimManagers,
    assert_no_secret_logged,
    wait_for,
)

TOKEN, VIEWER = "hub-ws-admin-1", "hub-ws-viewer-2"


@pytest.fixture
def fleet(procs, tmp_path):
    sim = procs(SimManagers, hosts=6, delay=0.4).start()
    write_token(tmp_path / "viewer.token", VIEWER)
    hub = procs(HubProc, sim.hosts, token=TOKEN, extra={"auth_tokens": [
        {"name": "viewer", "file": str(tmp_path / "viewer.token"), "role": "read"}]}).start()
    wait_for(lambda: hub.http("GET", "/api/info")[1]["reachable"] == 6, 20)
    return sim, hub


def url(hub, path, token=TOKEN):
    sep = "&" if "?" in path else "?"
    return f"ws://127.0.0.1:{hub.info['http_port']}{path}" + (
        f"{sep}token={token}" if token else "")


async def recv(ws, timeout=10.0):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def close_code(ws, timeout=10.0):
    """Read until the server closes; the code it closed with."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed as exc:
        return exc.rcvd.code


async def test_snapshot_then_changes_of_a_rollout(fleet):
    sim, hub = fleet
    async with connect(url(hub, "/api/fleet/ws")) as ws:
        snap = await recv(ws)
        assert snap["type"] == "snapshot" and snap["rollouts"] == []
        assert snap["interval"] == 0.25 and snap["server_time"] > 0
        assert [h["name"] for h in snap["hosts"]] == sorted(sim.hosts)
        host = snap["hosts"][0]
        for key in ("reachable", "role", "labels", "state", "version", "last_seen",
                    "message", "service", "agent"):
            assert key in host
        status, r = hub.http("POST", "/api/rollouts", {"version": "2.0",
                                                       "strategy": {"waves": ["1", "100%"]}})
        assert status == 200
        states, versions, times = [], {}, []
        while not states or states[-1] not in ("SUCCEEDED", "FAILED"):
            msg = await recv(ws)
            times.append(time.monotonic())
            assert msg["type"] == "changes"
            for ro in msg.get("rollouts", []):
                assert ro["id"] == r["id"] and "hosts" not in ro  # summaries only
                states.append(ro["state"])
            versions.update({h["name"]: h["version"] for h in msg.get("hosts", [])})
        assert states[-1] == "SUCCEEDED" and set(versions.values()) == {"2.0"}
        assert len(versions) == 6
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(g > 0.15 for g in gaps), gaps  # one message per interval at most


async def test_watching_one_rollout_sends_its_rows_with_reasons(fleet):
    sim, hub = fleet
    sim.rules([{"host": "agent-003", "version": "2.0", "outcome": "rolled_back"}])
    r = hub.call("StartRollout", pb.StartRolloutRequest(
        version="2.0", target=pb.RolloutTarget(hosts=["agent-003", "agent-004"]),
        strategy=pb.RolloutStrategy(waves=["100%"], max_parallel=1, seed=1))).rollout
    async with connect(url(hub, f"/api/fleet/ws?rollout={r.id}", token=VIEWER)) as ws:
        snap = await recv(ws)
        detail = snap["rollout"]
        assert detail["id"] == r.id and [w["spec"] for w in detail["waves"]] == ["100%"]
        assert sorted(h["name"] for h in detail["hosts"]) == ["agent-003", "agent-004"]
        rows = {h["name"]: h for h in detail["hosts"]}
        state = detail["state"]
        while state not in ("ROLLED_BACK", "FAILED", "SUCCEEDED"):
            msg = await recv(ws)
            if "rollout" in msg:
                assert {"waves", "hosts", "counts", "state"} <= set(msg["rollout"])
                rows.update({h["name"]: h for h in msg["rollout"]["hosts"]})
                state = msg["rollout"]["state"]
        bad = rows["agent-003"]
        assert bad["state"] == "ROLLED_BACK" and bad["failed_step"] == "health"
        assert bad["reason"] == "simulated health gate failure"


async def test_without_or_with_a_wrong_token_closed_1008_before_any_data(fleet):
    _, hub = fleet
    for path in ("/api/fleet/ws", "/api/hosts/agent-000/logs/ws", "/api/fleet/ws?rollout=x",
                 "/api/hosts/ghost/logs/ws"):
        for token in ("", "wrong-token"):
            async with connect(url(hub, path, token=token)) as ws:
                with pytest.raises(ConnectionClosed) as err:
                    await asyncio.wait_for(ws.recv(), 10)
                assert err.value.rcvd.code == 1008
                assert "bearer token" in err.value.rcvd.reason
    # the header works as well as the query parameter; a read-only token may watch
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with connect(url(hub, "/api/fleet/ws", token=""), additional_headers=headers) as ws:
        assert (await recv(ws))["type"] == "snapshot"
    async with connect(url(hub, "/api/fleet/ws", token=VIEWER)) as ws:
        assert (await recv(ws))["type"] == "snapshot"
    # ... and read, but not act
    assert hub.http("GET", "/api/hosts", token=VIEWER)[0] == 200
    status, doc = hub.http("POST", "/api/rollouts", {"version": "2.0"}, token=VIEWER)
    assert status == 403 and "read-only" in doc["error"]
    status, _ = hub.http("POST", "/api/hosts/agent-000/services/ai-agent/stop", token=VIEWER)
    assert status == 403
    assert hub.http("GET", "/api/rollouts")[1]["rollouts"] == []
    # the log socket with the token in the query and in the header, an action with each
    async with connect(url(hub, "/api/hosts/agent-000/logs/ws")) as ws:
        assert (await recv(ws))["type"]
    async with connect(url(hub, "/api/hosts/agent-000/logs/ws", token=""),
                       additional_headers=headers) as ws:
        assert (await recv(ws))["type"]
    assert hub.http("POST", f"/api/hosts/agent-000/services/ai-agent/restart?token={TOKEN}",
                    token="")[0] == 401  # an action wants the header
    assert hub.http("POST", "/api/hosts/agent-000/services/ai-agent/restart")[0] == 200
    # none of the tokens, right or wrong, is in the hub's log or its stores
    assert_no_secret_logged(hub, TOKEN, VIEWER, "wrong-token")


async def test_the_feed_sends_the_last_contact(procs):
    """The page's "Last contact" (a host's `last_seen`, then the feed's `contact`
    stamps) is the last contact: an agent's heartbeat counts as much as the manager's
    stream, as gRPC's Host.last_contact_unix."""
    sim = procs(SimManagers, hosts=1).start()
    hub = procs(HubProc, sim.hosts, extra={"contact_interval": 3600.0}).start()
    wait_for(lambda: hub.http("GET", "/api/info")[1]["reachable"] == 1, 20)
    first = hub.call("ListHosts", pb.ListHostsRequest()).hosts[0]
    wait_for(lambda: time.time() > first.last_seen_unix + 0.2, 5)
    hub.call("Heartbeat", pb.HeartbeatRequest(name="agent-000", version="1.0"))
    beat = hub.call("ListHosts", pb.ListHostsRequest()).hosts[0].last_contact_unix
    assert beat > first.last_seen_unix
    async with connect(url(hub, "/api/fleet/ws", token="")) as ws:
        snap = await recv(ws)
        assert snap["hosts"][0]["last_seen"] == beat
        wait_for(lambda: time.time() > beat + 0.2, 5)
        hub.call("Heartbeat", pb.HeartbeatRequest(name="agent-000", version="1.0"))
        again = hub.call("ListHosts", pb.ListHostsRequest()).hosts[0]
        assert again.last_seen_unix == first.last_seen_unix  # the stream stayed quiet
        # the page's copy moves to the new contact: a host doc (the agent's connected
        # flag changed) or the feed's contact stamps, whichever comes
        shown, deadline = 0.0, time.monotonic() + 15
        while shown != again.last_contact_unix and time.monotonic() < deadline:
            msg = await recv(ws, 15)
            for h in msg.get("hosts", []):
                shown = h["last_seen"]
            shown = msg.get("contact", {}).get("agent-000", [shown])[0]
        assert shown == again.last_contact_unix


async def test_a_dashboard_that_never_reads_stays_bounded(fleet):
    """A client with a tiny receive window that reads nothing while a rollout runs:
    the hub keeps one merged message for it, and once it reads it gets the final state
    in a handful of messages, not one per event."""
    sim, hub = fleet
    sim.rules([{"version": "2.0", "outcome": "succeeded", "delay": 1.0}])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", hub.info["http_port"]))
    async with connect(url(hub, "/api/fleet/ws"), sock=sock, max_queue=1) as ws:
        await recv(ws)
        r = hub.call("StartRollout", pb.StartRolloutRequest(
            version="2.0", strategy=pb.RolloutStrategy(waves=["1", "2", "100%"],
                                                       max_parallel=1)))
        done = hub.wait_rollout(r.rollout.id, TERMINAL, 60)
        events = done.next_event_index
        assert events > 40
        got = []
        while True:
            try:
                msg = await recv(ws, timeout=1.5)
            except TimeoutError:
                break
            got.append(msg)
        final = [ro for m in got for ro in m.get("rollouts", [])]
        assert final[-1]["state"] == "SUCCEEDED"
        assert len(got) < events / 2, (len(got), events)
        assert {h["version"] for m in got for h in m.get("hosts", [])} >= {"2.0"}


async def test_bad_frames_and_floods_close_the_socket_and_the_hub_stays_up(fleet):
    _, hub = fleet
    cases = [(b"\x00\x01binary", 1003), ("x" * 10_000, 1009)]
    for payload, code in cases:
        async with connect(url(hub, "/api/fleet/ws")) as ws:
            await recv(ws)
            await ws.send(payload)
            assert await close_code(ws) == code
    async with connect(url(hub, "/api/fleet/ws")) as ws:
        await recv(ws)
        with contextlib.suppress(ConnectionClosed):
            for _ in range(2000):
                await ws.send('{"type": "ping"}')
        assert await close_code(ws) == 1008
    # garbage text is read and ignored: the socket stays open and useful
    async with connect(url(hub, "/api/fleet/ws")) as ws:
        await recv(ws)
        for text in ("not json", "{}", '{"type": "subscribe", "rollout": "../../x"}', ""):
            await ws.send(text)
        hub.http("POST", "/api/hosts/agent-001/services/ai-agent/stop")
        msg = await recv(ws)
        assert msg["hosts"][0]["name"] == "agent-001" and msg["hosts"][0]["state"] == "STOPPED"
    assert hub.http("GET", "/api/info")[0] == 200


@pytest.mark.parametrize(("path", "status"), [
    ("/api/fleet/ws?rollout=" + "x" * 200, 400),
    ("/api/fleet/ws?bogus=1", 400),
    ("/api/hosts/ghost/logs/ws", 404),
    ("/api/hosts/..%2F..%2Fetc/logs/ws", 400),
    ("/api/hosts/agent-000/logs/ws?tail=99999", 400),
    ("/api/hosts/agent-000/logs/ws?tail=-1", 400),
    ("/api/hosts/agent-000/logs/ws?service=bad%20name", 400),
])
async def test_bad_socket_parameters_are_refused_before_the_upgrade(fleet, path, status):
    _, hub = fleet
    with pytest.raises(InvalidStatus) as err:
        async with connect(url(hub, path)):
            pass
    assert err.value.response.status_code == status


async def test_events_socket_of_the_hub_and_of_a_host(fleet):
    """WS /api/events/ws on the hub: its own history (a rollout's events: its notes and
    the audit of who started it, then new ones live), and with host=NAME the host's
    manager's (these simulated managers keep none: the socket says so in the manager's
    words and stays open, asking again)."""
    _, hub = fleet
    status, r = hub.http("POST", "/api/rollouts", {"version": "3.0", "strategy": {
        "waves": ["1", "100%"], "pause_until_promote": True}})
    assert status == 200
    wait_for(lambda: hub.http("GET", f"/api/rollouts/{r['id']}")[1]["state"] == "WAITING", 30)
    async with connect(url(hub, f"/api/events/ws?subject=rollout/{r['id']}&limit=50",
                           token=VIEWER)) as ws:
        first = await recv(ws)
        assert first["type"] == "events" and first["recent"] is True
        kinds = [e["kind"] for e in first["events"]]
        assert {"audit.rollout.start", "rollout.created"} <= set(kinds), kinds
        start = next(e for e in first["events"] if e["kind"] == "audit.rollout.start")
        assert (start["actor"], start["transport"], start["result"]) == ("default", "http", "ok")
        assert {e["subject"] for e in first["events"]} == {f"rollout/{r['id']}"}
        assert hub.http("POST", f"/api/rollouts/{r['id']}/promote",
                        {"reason": "canary fine"})[0] == 200
        live: list[dict] = []
        while not any(e["kind"] == "rollout.finished" for e in live):
            msg = await recv(ws, 30)
            assert msg["type"] == "events" and "recent" not in msg
            live += msg["events"]
        promote = next(e for e in live if e["kind"] == "audit.rollout.promote")
        assert promote["fields"]["reason"] == "canary fine"
        ids = [e["id"] for e in first["events"] + live]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
    async with connect(url(hub, "/api/events/ws?host=agent-001&subject=service/*")) as ws:
        msg = await recv(ws)
        assert msg["type"] == "error" and msg["error"].startswith("host agent-001: "), msg
        with pytest.raises(asyncio.TimeoutError):  # still open: it asks again later
            await asyncio.wait_for(ws.recv(), 0.5)
    async with connect(url(hub, "/api/events/ws", token="")) as ws:
        assert await close_code(ws) == 1008
    assert hub.http("GET", "/api/info")[0] == 200


@pytest.mark.parametrize(("path", "status"), [
    ("/api/events/ws?host=ghost", 404),
    ("/api/events/ws?host=..%2Fx", 400),
    ("/api/events/ws?host=" + "h" * 300, 400),
    ("/api/events/ws?limit=0", 400),
    ("/api/events/ws?limit=500", 400),
    ("/api/events/ws?kind=NOPE", 400),
    ("/api/events/ws?subject=rollout/[", 400),
    ("/api/events/ws?since=5", 400),
])
async def test_events_socket_bad_parameters_are_refused_before_the_upgrade(
        fleet, path, status):
    _, hub = fleet
    with pytest.raises(InvalidStatus) as err:
        async with connect(url(hub, path)):
            pass
    assert err.value.response.status_code == status


async def test_an_unknown_rollout_is_said_and_closed(fleet):
    _, hub = fleet
    async with connect(url(hub, "/api/fleet/ws?rollout=nope")) as ws:
        msg = await recv(ws)
        assert msg["type"] == "error" and "not found" in msg["error"]
        with pytest.raises(ConnectionClosed) as err:
            await asyncio.wait_for(ws.recv(), 10)
        assert err.value.rcvd.code == 1000


async def test_log_tail_then_follow(fleet):
    _, hub = fleet
    async with connect(url(hub, "/api/hosts/agent-002/logs/ws?tail=3")) as ws:
        first = await recv(ws)
        assert first == {"type": "lines", "lines": [
            f"agent-002 sim log line {i} version 1.0" for i in range(3)]}
        follow = await recv(ws)
        assert follow["type"] == "lines" and "follow line 1" in follow["lines"][0]
    async with connect(url(hub, "/api/hosts/agent-002/logs/ws?service=other-svc",
                           token=VIEWER)) as ws:
        msg = await recv(ws)
        assert msg["type"] in ("lines", "error")  # the sim ignores the service name


async def test_log_tail_of_an_unreachable_manager_says_why(procs):
    sim = procs(SimManagers, hosts=1).start()
    hub = procs(HubProc, sim.hosts).start()
    wait_for(lambda: hub.http("GET", "/api/info")[1]["reachable"] == 1, 20)
    sim.kill9()
    async with connect(url(hub, "/api/hosts/agent-000/logs/ws", token="")) as ws:
        msg = await recv(ws, timeout=20)
        assert msg["type"] == "error" and msg["error"].startswith("host agent-000: UNAVAILABLE")
        with pytest.raises(ConnectionClosed) as err:
            await asyncio.wait_for(ws.recv(), 10)
        assert err.value.rcvd.code == 1000


async def test_hub_stopping_says_going_away(procs):
    sim = procs(SimManagers, hosts=1).start()
    hub = procs(HubProc, sim.hosts).start()
    async with connect(url(hub, "/api/fleet/ws", token="")) as ws:
        await recv(ws)
        stopping = asyncio.create_task(asyncio.to_thread(hub.stop))
        assert await close_code(ws) == 1001
        assert await stopping == 0


async def test_a_follower_hub_shows_the_leaders_rollout_live_and_refuses_actions(
        pg_database, procs):
    """Two hubs on one PostgreSQL: a dashboard on the follower sees the rollout the
    leader runs, row by row, from the shared store; the follower's API reads, and
    refuses to act, naming the leader."""
    from tests.test_hub_ha import start_hubs, wait_leader

    sim = procs(SimManagers, hosts=4, delay=0.3).start()
    hubs = start_hubs(procs, pg_database, sim.hosts, n=2)
    leader = wait_leader(hubs)
    follower = next(h for h in hubs if h is not leader)
    status, doc = follower.http("POST", "/api/rollouts", {"version": "2.0"})
    assert status == 409 and leader.address in doc["error"], doc
    status, doc = follower.http("POST", "/api/hosts/agent-000/services/ai-agent/restart")
    assert status == 409 and leader.address in doc["error"], doc
    info = follower.http("GET", "/api/info")[1]
    assert not info["leader"] and info["leader_address"] == leader.address
    status, r = leader.http("POST", "/api/rollouts", {
        "version": "2.0", "strategy": {"waves": ["1", "100%"], "max_parallel": 1}})
    assert status == 200, r
    async with connect(url(follower, f"/api/fleet/ws?rollout={r['id']}", token="")) as ws:
        snap = await recv(ws)
        states = {h["name"]: h["state"] for h in snap["rollout"]["hosts"]}
        seen = set(states.values())
        state = snap["rollout"]["state"]
        while state != "SUCCEEDED":
            msg = await recv(ws, timeout=20)
            if "rollout" in msg:
                state = msg["rollout"]["state"]
                for h in msg["rollout"]["hosts"]:
                    states[h["name"]] = h["state"]
                    seen.add(h["state"])
        assert set(states.values()) == {"SUCCEEDED"}
        assert seen & {"UPDATING", "VERIFYING"}, seen  # it moved while watched
    assert follower.http("GET", f"/api/rollouts/{r['id']}")[1]["counts"]["succeeded"] == 4
