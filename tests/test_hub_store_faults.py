"""The hub's store when things go wrong, with real hubs and a real PostgreSQL of the
test's own (it is stopped and started here): a database unreachable at start (retried
with backoff, named without the password), a database that goes away mid-rollout (the
leader steps down, nothing half-written, the rollout finishes once it is back), schema
versions the hub does not run with (refused naming what to run), `ai-hub --migrate`,
and a SQLite file from before schemas were versioned."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time

import pytest

from backendai.v1 import hub_pb2 as pb
from tests.conftest import PY, ROOT
from tests.fixtures.components import PostgresServer
from tests.fixtures.hub_procs import TERMINAL, HubProc, SimManagers, make_certs, wait_for
from tests.test_hub_store import make


@pytest.fixture
def own_pg(tmp_path):
    """A PostgreSQL server this test may stop and start."""
    pg = PostgresServer(tmp_path / "own-pg").start()
    yield pg
    pg.remove()


def store_table(pg: PostgresServer, **extra) -> dict:
    return {"backend": "postgresql", "dsn": pg.dsn, "password_file": str(pg.password_file),
            **extra}


def log_events(proc, event: str) -> list[dict]:
    out = []
    for line in proc.logs().splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            out.append(json.loads(line))
    return out


def run_hub(config_path, *args, timeout=60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "hub.main", "--config", str(config_path), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_unreachable_database_at_start_is_retried_and_named_without_password(own_pg, procs):
    own_pg.stop()
    hub = procs(HubProc, {}, store=store_table(own_pg, timeout=2.0)).start(wait=False)
    wait_for(lambda: len(log_events(hub, "store.unreachable")) >= 2, 30, "two attempts")
    seen = log_events(hub, "store.unreachable")
    assert {e["database"] for e in seen} == {f"127.0.0.1:{own_pg.port}/hub"}
    assert [e["attempt"] for e in seen[:2]] == [1, 2] and seen[0]["retry_in"] >= 0
    assert own_pg.password not in hub.logs()
    assert not hub.ready_path.exists()
    own_pg.restart()
    hub.wait_ready(60)
    assert hub.info_now().leader
    # a hub asked to stop while it waits for its database stops cleanly
    own_pg.stop()
    other = procs(HubProc, {}, name="waiting", store=store_table(own_pg)).start(wait=False)
    wait_for(lambda: log_events(other, "store.unreachable"), 30, "waiting for the database")
    assert other.stop() == 0
    assert own_pg.password not in other.logs()


@pytest.mark.slow
def test_database_lost_mid_rollout_leader_steps_down_then_finishes(own_pg, procs):
    sim = procs(SimManagers, hosts=6, delay=1.0).start()
    hub = procs(HubProc, sim.hosts, store=store_table(own_pg, timeout=2.0),
                ha={"lease_ttl": 3.0}).start()
    r = hub.call("StartRollout", pb.StartRolloutRequest(version="2.0", strategy=pb.RolloutStrategy(
        waves=["2", "100%"], seed=1, max_parallel=2))).rollout
    wait_for(lambda: any(h.state == pb.HOST_ROLLOUT_STATE_UPDATING and h.operation_id
                         for h in hub.rollout(r.id).hosts), 30, "an update in flight")
    epoch = hub.info_now().epoch
    own_pg.stop()
    wait_for(lambda: not hub.info_now().leader, 15, "the leader steps down")
    assert log_events(hub, "leader.stepped_down")
    # while the database is away nothing more is asked of the managers
    calls = len(sim.journal())
    time.sleep(2.0)  # a window in which a leader that kept acting would start hosts
    assert len(sim.journal()) == calls
    own_pg.restart()
    wait_for(lambda: hub.info_now().leader, 60, "it leads again once the database is back")
    assert hub.info_now().epoch > epoch
    done = hub.wait_rollout(r.id, TERMINAL, timeout=90)
    assert done.state == pb.ROLLOUT_STATE_SUCCEEDED, done
    assert sim.updates_per_host() == dict.fromkeys(sim.hosts, 1)
    events = hub.events(r.id)
    assert [e.index for e in events] == list(range(len(events)))
    assert any(e.kind == "rollout.recovered" for e in events)


def test_schema_newer_or_unmigrated_is_refused_naming_what_to_run(pg_database, procs):
    hub = procs(HubProc, {}, store=pg_database.store_table(migrate=False))
    hub.write_config()
    res = run_hub(hub.config_path, "--ready-file", str(hub.ready_path))
    assert res.returncode == 1
    assert "this hub needs version 1" in res.stderr and "--migrate" in res.stderr, res.stderr
    assert "version 0" in res.stderr and pg_database.name in res.stderr
    assert pg_database.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'rollouts'") \
        == "0"  # nothing created

    res = run_hub(hub.config_path, "--migrate")
    assert res.returncode == 0, res.stderr
    assert "schema 'hub' at version 1" in res.stdout
    assert pg_database.psql("SELECT version FROM schema_versions WHERE component = 'hub'") \
        == "1"
    assert run_hub(hub.config_path, "--migrate").returncode == 0  # again: nothing to do
    hub.start()  # migrate = false, and nothing left to migrate
    assert hub.info_now().store_backend == "postgresql"
    hub.stop()

    pg_database.psql("UPDATE schema_versions SET version = 99 WHERE component = 'hub'")
    for args in ((), ("--migrate",)):
        res = run_hub(hub.config_path, *args)
        assert res.returncode == 1, res.stderr
        assert "version 99, newer than this hub knows (version 1)" in res.stderr, res.stderr
    assert pg_database.psql("SELECT version FROM schema_versions WHERE component = 'hub'") \
        == "99"


async def test_sqlite_file_from_before_versioning_is_migrated_and_kept(tmp_path):
    from hub.migrations.sqlite import HUB
    from hub.store import Fence, encode_core, encode_host, encode_note
    from hub.store_sqlite import SqliteStore

    r, notes = make("r-old")
    db = sqlite3.connect(tmp_path / "hub.db")
    db.executescript(HUB.migrations[0].sql)  # the schema hubs wrote before versions
    db.execute("INSERT INTO rollouts VALUES (?,?,?,?,?)",
               (r.id, r.created_at, r.state.value, 1, encode_core(r)))
    db.executemany("INSERT INTO rollout_hosts VALUES (?,?,?)",
                   [(r.id, h.name, encode_host(h)) for h in r.hosts.values()])
    db.executemany("INSERT INTO rollout_events VALUES (?,?,?)",
                   [(r.id, n.index, encode_note(n)) for n in notes])
    db.execute("INSERT INTO registered_hosts VALUES (?,?,?)",
               ("n1", '{"name": "n1", "manager_address": "10.0.0.1:3082", "labels": {}, '
                      '"service": "", "role": "agent", "source": "registered"}', 1.0))
    db.commit()
    db.close()
    from backendai.errors import FailedPrecondition

    with pytest.raises(FailedPrecondition, match=r"needs version 2.*--migrate.*2 \(leader"):
        SqliteStore(tmp_path / "hub.db", migrate=False)
    store = SqliteStore(tmp_path / "hub.db")
    try:
        assert await store.load("r-old") == r
        assert [n.index for n in await store.events("r-old", 0)] == [n.index for n in notes]
        assert [e.name for e in await store.registered_hosts()] == ["n1"]
        lease, mine = await store.acquire_lease("hub-x", "127.0.0.1:3000", 10.0)
        assert mine
        await store.save(r, [], [], fence=Fence("hub-x", lease.epoch))
    finally:
        await store.close()
    version = sqlite3.connect(tmp_path / "hub.db").execute(
        "SELECT version FROM schema_versions WHERE component = 'hub'").fetchone()
    assert version == (2,)


def test_migrate_refuses_a_sqlite_file_a_running_hub_holds(procs):
    hub = procs(HubProc, {}).start()
    res = run_hub(hub.config_path, "--migrate")
    assert res.returncode == 1 and "in use by pid" in res.stderr, res.stderr
    hub.stop()
    res = run_hub(hub.config_path, "--migrate")
    assert res.returncode == 0 and "at version 2" in res.stdout, res.stderr


@pytest.mark.slow
def test_tls_to_the_database_verified_and_a_wrong_ca_refused(tmp_path, procs):
    (tmp_path / "certs").mkdir()
    (tmp_path / "other-ca").mkdir()
    certs = make_certs(tmp_path / "certs")
    other = make_certs(tmp_path / "other-ca")
    pg = PostgresServer(tmp_path / "tls-pg").use_tls(tmp_path / "certs").start()
    try:
        hub = procs(HubProc, {}, store=store_table(
            pg, sslmode="verify-full", sslrootcert=str(certs / "ca.pem"))).start()
        assert hub.info_now().leader
        ssl = pg.psql("SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a "
                      "USING (pid) WHERE a.application_name = 'ai-hub'")
        assert ssl == "t"  # every connection of the hub is TLS
        hub.stop()
        # the DSN may carry the TLS settings instead of the keys
        dsn = f"{pg.dsn}?sslmode=verify-full&sslrootcert={other / 'ca.pem'}"
        wrong = procs(HubProc, {}, name="wrong-ca", store={
            "backend": "postgresql", "dsn": dsn, "password_file": str(pg.password_file),
            "timeout": 2.0}).start(wait=False)
        wait_for(lambda: log_events(wrong, "store.unreachable"), 30, "refused")
        reason = log_events(wrong, "store.unreachable")[0]["reason"]
        assert "certificate verify failed" in reason, reason
        assert not wrong.ready_path.exists()
        assert wrong.stop() == 0
    finally:
        pg.remove()


def test_a_read_only_database_is_refused_clearly(pg_database, procs):
    """A DSN that reaches a standby (or a read-only database): the hub says so and stops
    (its service manager restarts it; docs/DEPLOY.md: target_session_attrs)."""
    pg_database.psql(f"ALTER DATABASE {pg_database.name} SET default_transaction_read_only = on")
    hub = procs(HubProc, {}, store=pg_database.store_table())
    hub.write_config()
    res = run_hub(hub.config_path)
    assert res.returncode == 1
    assert "schema check failed" in res.stderr and "read-only" in res.stderr, res.stderr
    assert pg_database.name in res.stderr
