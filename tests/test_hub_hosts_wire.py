"""ListHosts from each host's cached bytes (hub/pb_convert.py hosts_response): the answer
equals the message built field by field, any change to a host's view is seen at the next
call, and what moves with every contact or the clock (keepalives, heartbeats,
agent_connected) is in every answer without rebuilding anything."""

from __future__ import annotations

from backendai.v1 import agent_pb2 as apb
from backendai.v1 import hub_pb2 as pb
from backendai.v1 import manager_pb2 as mpb
from hub import pb_convert as conv
from hub.config import HostEntry
from hub.inventory import HostView, Inventory

NOW = 1_000_000.0


def fleet(n: int = 5) -> Inventory:
    inv = Inventory(None, heartbeat_interval=10.0)  # type: ignore[arg-type]  # no watching
    for i in reversed(range(n)):
        view = HostView(HostEntry(f"h{i}", f"10.0.0.{i}:3082", {"group": f"g{i % 2}"}))
        view.reachable, view.last_seen = True, NOW - i
        view.status = mpb.ServiceStatus(name="ai-agent", state=mpb.SERVICE_STATE_RUNNING,
                                        version="1.0", update=mpb.UpdateSummary(
                                            last_operation_id=f"op{i}", last_outcome="succeeded"))
        inv.hosts[view.name] = view
    return inv


def built(inv: Inventory, now: float) -> pb.ListHostsResponse:
    return pb.ListHostsResponse(hosts=[conv.host(v, inv, now) for v in inv.by_name()])


def test_the_cached_answer_equals_the_one_built_field_by_field():
    inv = fleet()
    inv.hosts["h3"].facts = apb.HostFacts(hostname="h3", cpu_count=8)
    inv.hosts["h1"].agent_address, inv.hosts["h1"].agent_heartbeat = "10.0.0.1:3080", NOW - 1
    first = conv.hosts_response(inv.by_name(), inv, NOW)
    assert first == built(inv, NOW)
    assert [h.name for h in first.hosts] == ["h0", "h1", "h2", "h3", "h4"]
    assert first.hosts[1].agent_connected and not first.hosts[0].agent_connected
    assert all(v.wire is not None for v in inv.hosts.values())
    assert conv.hosts_response(inv.by_name(), inv, NOW) == first  # from the cache


def test_a_change_to_a_view_is_in_the_next_answer():
    inv = fleet()
    conv.hosts_response(inv.by_name(), inv, NOW)
    view = inv.hosts["h2"]
    view.status = mpb.ServiceStatus(name="ai-agent", state=mpb.SERVICE_STATE_BACKOFF,
                                    version="2.0", message="crashed")
    assert view.wire is None
    inv.hosts["h4"].reachable, inv.hosts["h4"].message = False, "UNAVAILABLE: gone"
    inv.hosts["h0"].entry = HostEntry("h0", "10.0.9.9:3082", {"group": "moved"})
    again = conv.hosts_response(inv.by_name(), inv, NOW)
    assert again == built(inv, NOW)
    by = {h.name: h for h in again.hosts}
    assert (by["h2"].version, by["h2"].state) == ("2.0", mpb.SERVICE_STATE_BACKOFF)
    assert not by["h2"].update.last_operation_id  # the new status has no update summary
    assert not by["h4"].reachable and by["h4"].message == "UNAVAILABLE: gone"
    assert by["h0"].manager_address == "10.0.9.9:3082" and by["h0"].labels == {"group": "moved"}


def test_agent_connected_follows_the_clock_from_the_same_cached_bytes():
    inv = fleet(1)
    view = inv.hosts["h0"]
    view.agent_heartbeat = NOW
    assert conv.hosts_response([view], inv, NOW).hosts[0].agent_connected
    cached = view.wire
    later = NOW + 3 * inv.heartbeat_interval + 1
    answer = conv.hosts_response([view], inv, later)
    assert not answer.hosts[0].agent_connected
    assert view.wire is cached
    assert answer == built(inv, later)


def test_keepalives_and_heartbeats_keep_the_bytes_and_show_in_the_answer():
    """A manager's keepalive moves last_seen (and the last contact), an agent's heartbeat
    its heartbeat time: every host of a live fleet, every few seconds. Neither rebuilds
    the host's bytes; both are in the next answer, as built field by field."""
    inv = fleet(3)
    inv.hosts["h1"].agent_address = "10.0.0.1:3080"
    conv.hosts_response(inv.by_name(), inv, NOW)
    kept = {name: v.wire for name, v in inv.hosts.items()}
    inv.hosts["h0"].last_seen = NOW + 5.0                      # a keepalive
    inv.hosts["h1"].agent_heartbeat = NOW + 7.0                # a heartbeat
    inv.hosts["h2"].last_seen, inv.hosts["h2"].agent_heartbeat = 0.0, 0.0  # never heard from
    answer = conv.hosts_response(inv.by_name(), inv, NOW + 8.0)
    assert all(v.wire is kept[name] for name, v in inv.hosts.items())
    assert answer == built(inv, NOW + 8.0)
    by = {h.name: h for h in answer.hosts}
    assert by["h0"].last_seen_unix == by["h0"].last_contact_unix == NOW + 5.0
    assert by["h1"].agent_last_heartbeat_unix == by["h1"].last_contact_unix == NOW + 7.0
    assert by["h1"].agent_connected and not by["h0"].agent_connected
    assert (by["h2"].last_seen_unix, by["h2"].last_contact_unix) == (0.0, 0.0)
    assert not by["h2"].HasField("facts")


def test_hosts_sorted_by_name_follow_additions():
    inv = fleet(3)
    assert [v.name for v in inv.by_name()] == ["h0", "h1", "h2"]
    inv.hosts["a0"] = HostView(HostEntry("a0", "10.1.0.1:3082"))
    assert [v.name for v in inv.select({})] == ["a0", "h0", "h1", "h2"]
    assert [v.name for v in inv.select({"group": "g0"})] == ["h0", "h2"]
