"""Several real hubs on one real PostgreSQL (a private server, tests/fixtures/pg.py),
driving simulated managers in another real process (FAKE managers: see
tests/fixtures/sim_manager.py; the same with real managers is in
tests/test_hub_ha_real.py).

One hub leads (holds the lease), the others follow: they serve reads from the shared
store and answer changes with FAILED_PRECONDITION naming the leader. The leader killed
-9 mid-wave: another takes over within the lease's TTL and finishes the rollout, each
host updated once, the event log without a gap. The leader paused past its TTL and
resumed: it writes nothing and follows."""

from __future__ import annotations

import secrets
import signal
import time

import grpc
import pytest

from backendai.errors import LEADER_TRAILER
from backendai.v1 import hub_pb2 as pb
from tests.fixtures.hub_procs import TERMINAL, HubProc, SimManagers, wait_for

TTL = 3.0


def start_hubs(procs, db, hosts, n=3, ttl=TTL, **kwargs) -> list[HubProc]:
    return [procs(HubProc, hosts, name=f"hub{i}", store=db.store_table(),
                  ha={"lease_ttl": ttl, "hub_id": f"hub-{i}"}, **kwargs).start()
            for i in range(n)]


def infos(hubs) -> dict[str, pb.HubInfo]:
    out = {}
    for hub in hubs:
        try:
            out[hub.name] = hub.info_now()
        except grpc.RpcError:
            continue
    return out


def wait_leader(hubs, timeout=20.0) -> HubProc:
    """The one hub of `hubs` that leads, once the others agree it does."""
    def one() -> HubProc | None:
        seen = infos(hubs)
        leaders = [h for h in hubs if h.name in seen and seen[h.name].leader]
        if len(leaders) != 1 or len(seen) != len(hubs):
            return None
        addresses = {i.leader_address for i in seen.values()}
        return leaders[0] if addresses == {leaders[0].address} else None
    found: HubProc = wait_for(one, timeout, "one leader the others agree on")
    return found


def refused(hub, method, request):
    with pytest.raises(grpc.RpcError) as caught:
        hub.call(method, request)
    exc = caught.value
    assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION, exc
    return exc.details(), dict(exc.trailing_metadata() or ())


def start_rollout(hub, waves=("1", "50%", "100%"), **strategy):
    return hub.call("StartRollout", pb.StartRolloutRequest(
        version="2.0", strategy=pb.RolloutStrategy(waves=list(waves), seed=1, **strategy))
    ).rollout


def events_of(db, aggregate: str, epoch: int) -> str:
    """count/min/max of the event indexes written under `epoch` (straight from SQL)."""
    column = "*" if aggregate == "count" else "idx"
    return db.psql(f"SELECT {aggregate}({column}) FROM rollout_events "  # noqa: S608 - ints
                   f"WHERE epoch = {int(epoch)}")


def assert_no_gap(events):
    assert [e.index for e in events] == list(range(len(events)))


def test_one_leader_followers_serve_reads_and_name_the_leader(pg_database, procs):
    sim = procs(SimManagers, hosts=4, delay=0.1).start()
    hubs = start_hubs(procs, pg_database, sim.hosts)
    leader = wait_leader(hubs)
    followers = [h for h in hubs if h is not leader]
    seen = infos(hubs)
    assert {i.store_backend for i in seen.values()} == {"postgresql"}
    assert sorted(i.hub_id for i in seen.values()) == ["hub-0", "hub-1", "hub-2"]
    assert len({i.epoch for i in seen.values()}) == 1 and seen[leader.name].epoch >= 1
    assert seen[leader.name].lease_expires_unix > time.time() - 60

    # every change a follower is asked for: refused, naming the leader
    follower = followers[0]
    for method, request in (
            ("StartRollout", pb.StartRolloutRequest(version="2.0")),
            ("PauseRollout", pb.RolloutControlRequest()),
            ("RetryFailed", pb.RolloutControlRequest(id="r1")),
            ("RestartService", pb.RestartServiceRequest(host="agent-000")),
            ("Register", pb.RegisterRequest(name="new-host", role="manager",
                                            manager_address="127.0.0.1:1")),
            ("Heartbeat", pb.HeartbeatRequest(name="agent-000"))):
        details, trailers = refused(follower, method, request)
        assert "not the leader" in details and leader.address in details, (method, details)
        assert trailers[LEADER_TRAILER] == leader.address, method
    # a dry run changes nothing: any hub answers it
    plan = follower.call("StartRollout", pb.StartRolloutRequest(
        version="2.0", dry_run=True, strategy=pb.RolloutStrategy(seed=1))).rollout
    assert plan.state == pb.ROLLOUT_STATE_PLANNED and len(plan.hosts) == 4
    assert len(follower.call("ListAgents", pb.ListHostsRequest()).hosts) == 4

    # a rollout started on the leader, followed live through a follower
    wait_for(lambda: all(h.reachable for h in follower.call(
        "ListAgents", pb.ListHostsRequest()).hosts), what="hosts reachable from a follower")
    r = start_rollout(leader)
    watched = list(follower.stub().WatchRollout(pb.WatchRolloutRequest(id=r.id), timeout=60))
    assert_no_gap(watched)
    assert watched[-1].final and watched[-1].state == pb.ROLLOUT_STATE_SUCCEEDED
    for hub in hubs:
        got = hub.rollout(r.id)
        assert got.state == pb.ROLLOUT_STATE_SUCCEEDED and got.counts.succeeded == 4
        assert [e.kind for e in hub.events(r.id)] == [e.kind for e in watched]
        assert hub.info_now().active_rollout_id == ""
    assert sim.updates_per_host() == dict.fromkeys(sim.hosts, 1)
    listed = followers[1].call("ListRollouts", pb.ListRolloutsRequest()).rollouts
    assert [x.id for x in listed] == [r.id]


@pytest.mark.slow
def test_leader_killed_mid_wave_another_takes_over_within_the_ttl(pg_database, procs):
    sim = procs(SimManagers, hosts=8, delay=1.0).start()
    hubs = start_hubs(procs, pg_database, sim.hosts)
    leader = wait_leader(hubs)
    epoch = leader.info_now().epoch
    r = start_rollout(leader, waves=("2", "50%", "100%"), max_parallel=2)
    wait_for(lambda: any(h.state == pb.HOST_ROLLOUT_STATE_UPDATING and h.operation_id
                         for h in leader.rollout(r.id).hosts), 30, "an update in flight")
    killed = time.monotonic()
    leader.kill9()
    rest = [h for h in hubs if h is not leader]
    new = wait_leader(rest, timeout=TTL + 10)
    took = time.monotonic() - killed
    assert took <= TTL + 1.5, f"takeover took {took:.2f}s with a {TTL}s lease"
    info = new.info_now()
    assert info.epoch == epoch + 1 and info.leader_address == new.address
    done = new.wait_rollout(r.id, TERMINAL, timeout=60)
    assert done.state == pb.ROLLOUT_STATE_SUCCEEDED, done
    assert sim.updates_per_host() == dict.fromkeys(sim.hosts, 1)
    events = new.events(r.id)
    assert_no_gap(events)
    recovered = [e for e in events if e.kind == "rollout.recovered"]
    assert len(recovered) == 1 and f"epoch {epoch + 1}" in recovered[0].message
    # the survivor that follows serves the same log
    other = next(h for h in rest if h is not new)
    assert [e.index for e in other.events(r.id)] == [e.index for e in events]
    # the killed hub comes back as a follower and sees the finished rollout
    leader.start()
    wait_for(lambda: leader.info_now().leader_address == new.address, 20, "it follows")
    assert leader.rollout(r.id).state == pb.ROLLOUT_STATE_SUCCEEDED


@pytest.mark.slow
def test_leader_paused_past_its_ttl_writes_nothing_and_follows(pg_database, procs):
    sim = procs(SimManagers, hosts=6, delay=1.0).start()
    hubs = start_hubs(procs, pg_database, sim.hosts)
    leader = wait_leader(hubs)
    old_epoch = leader.info_now().epoch
    r = start_rollout(leader, waves=("2", "100%"), max_parallel=2)
    wait_for(lambda: any(h.state == pb.HOST_ROLLOUT_STATE_UPDATING and h.operation_id
                         for h in leader.rollout(r.id).hosts), 30, "an update in flight")
    leader.proc.send_signal(signal.SIGSTOP)
    try:
        rest = [h for h in hubs if h is not leader]
        new = wait_leader(rest, timeout=TTL + 30)  # generous: a loaded machine
        assert new.info_now().epoch == old_epoch + 1
        # let the new leader write under its epoch before the old one wakes up
        wait_for(lambda: int(events_of(pg_database, "count", old_epoch + 1)) > 0,
                 20, "the new leader's first events")
    finally:
        leader.proc.send_signal(signal.SIGCONT)
    resumed = time.time()
    wait_for(lambda: not leader.info_now().leader and
             leader.info_now().leader_address == new.address, 20, "the old leader follows")
    done = new.wait_rollout(r.id, TERMINAL, timeout=60)
    assert done.state == pb.ROLLOUT_STATE_SUCCEEDED, done
    # nothing under the old epoch after the new leader's first write
    first_new = int(events_of(pg_database, "min", old_epoch + 1))
    last_old = int(events_of(pg_database, "max", old_epoch))
    assert last_old < first_new
    assert pg_database.psql("SELECT DISTINCT epoch FROM rollouts") == str(old_epoch + 1)
    assert sim.updates_per_host() == dict.fromkeys(sim.hosts, 1)
    assert not [e for e in sim.journal() if e["at"] > resumed and e["call"] == "rollback"]
    assert_no_gap(new.events(r.id))
    logs = leader.logs()
    assert '"leader.stepped_down"' in logs
    # it tried nothing as a leader after waking: its step-down is what it logged
    assert leader.info_now().epoch >= old_epoch + 1


def test_two_hubs_under_one_hub_id_stop_deposing_each_other(pg_database, procs):
    """A cloned machine: two hub processes with the same [ha] hub_id. The second takes
    the lease from the first (as a restarted hub does); the first sees its id holding the
    lease at a newer epoch, says so, and from then on takes the lease only once it has
    expired: one leader, the epoch settles, and the first still takes over when the
    leader dies."""
    sim = procs(SimManagers, hosts=2, delay=0.1).start()
    first = procs(HubProc, sim.hosts, name="first", store=pg_database.store_table(),
                  ha={"lease_ttl": TTL, "hub_id": "same"}).start()
    wait_for(lambda: first.info_now().leader, 20, "the first hub leads")
    second = procs(HubProc, sim.hosts, name="second", store=pg_database.store_table(),
                   ha={"lease_ttl": TTL, "hub_id": "same"}).start()
    wait_for(lambda: '"leader.same_hub_id"' in first.logs(), 20,
             "the first hub finds its id held by another process")
    assert "give every hub its own [ha] hub_id" in first.logs()
    leader = wait_leader([first, second])
    assert leader is second
    epoch = second.info_now().epoch
    # they no longer depose each other: several TTLs (one renewal every TTL/3) pass with
    # the same leader at the same epoch
    deadline = time.monotonic() + 3 * TTL
    while time.monotonic() < deadline:
        seen = infos([first, second])
        assert seen["second"].leader and seen["second"].epoch == epoch, seen
        assert not seen["first"].leader and seen["first"].leader_address == second.address
        time.sleep(0.2)  # sampling the state over a window, not waiting for an event
    r = start_rollout(second, waves=("100%",))
    assert second.wait_rollout(r.id, TERMINAL).state == pb.ROLLOUT_STATE_SUCCEEDED
    second.kill9()
    wait_for(lambda: first.info_now().leader, 4 * TTL, "the first hub takes over")
    assert first.info_now().epoch > epoch
    assert sim.updates_per_host() == dict.fromkeys(sim.hosts, 1)


def test_two_hubs_on_different_databases_each_lead_their_own(pg_server, procs):
    """A misconfiguration the lease cannot see: each database has its own lease, so
    each hub leads (docs/DEPLOY.md says to give every hub the same DSN)."""
    from tests.fixtures.pg import PgDatabase

    hubs, names = [], [f"split_{i}_{secrets.token_hex(4)}" for i in range(2)]
    try:
        for i, name in enumerate(names):
            pg_server.psql(f"CREATE DATABASE {name} OWNER {pg_server.user}")
            db = PgDatabase(pg_server, name)
            hubs.append(procs(HubProc, {}, name=f"split{i}", store=db.store_table(),
                              ha={"lease_ttl": TTL, "hub_id": f"split-{i}"}).start())
        seen = [h.info_now() for h in hubs]
        assert [i.leader for i in seen] == [True, True]
        assert [i.leader_address for i in seen] == [h.address for h in hubs]
    finally:
        for h in hubs:
            h.cleanup()
        for name in names:
            pg_server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
