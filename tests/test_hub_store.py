"""The hub's SQLite store: a rollout saved and loaded is the same value; events come back
in order from any index; finished rollouts beyond the kept number are pruned; a rollout
saved in one process is there after the process is killed."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap

from hub import rollout_engine as E
from hub.config import HostEntry
from hub.rollout_plan import make_strategy, plan_waves
from hub.store import HubStore
from tests.fixtures.hub_procs import ROOT


def make(rid: str, now: float = 1000.0, hosts=("a", "b", "c")) -> tuple[E.Rollout, list]:
    s = make_strategy(waves=["1", "100%"], max_parallel=2, pause_until_promote=True)
    return E.new_rollout(rollout_id=rid, version="2.0", service="svc", strategy=s,
                         plan=plan_waves(list(hosts), s, 9), now=now,
                         target_labels={"group": "edge"}, target_hosts=tuple(hosts))


def test_roundtrip_and_events(tmp_path):
    store = HubStore(tmp_path / "hub.db")
    r, notes = make("r1")
    store.save(r, r.hosts.values(), notes)
    r2, more, _ = E.transition(r, E.Tick(), 1001)
    store.save(r2, [h for n, h in r2.hosts.items() if r.hosts[n] is not h], more)
    loaded = store.load("r1")
    assert loaded == r2
    assert list(loaded.hosts) == list(r2.hosts)  # plan order kept
    events = store.events("r1", 0)
    assert [e.index for e in events] == list(range(r2.next_event))
    assert store.events("r1", 2) == events[2:]
    assert store.load("nope") is None


def test_prune_keeps_active_and_newest(tmp_path):
    store = HubStore(tmp_path / "hub.db")
    for i in range(5):
        r, notes = make(f"r{i}", now=1000.0 + i)
        if i != 0:  # r0 stays active
            r = dataclasses.replace(r, state=E.RolloutState.SUCCEEDED)
        store.save(r, r.hosts.values(), notes)
    assert store.prune(2) == 2
    assert sorted(store.ids(limit=10)) == ["r0", "r3", "r4"]
    assert store.events("r1", 0) == [] and store.load("r1") is None


def test_registered_hosts_survive(tmp_path):
    store = HubStore(tmp_path / "hub.db")
    store.save_host(HostEntry("n1", "10.0.0.1:3082", {"a": "b"}, source="registered"), 1.0)
    store.save_host(HostEntry("n1", "10.0.0.2:3082", {}, source="registered"), 2.0)
    store.close()
    again = HubStore(tmp_path / "hub.db")
    assert again.registered_hosts() == [HostEntry("n1", "10.0.0.2:3082", {},
                                                  source="registered")]


def test_saved_state_survives_kill9(tmp_path):
    """Write in a child that SIGKILLs itself right after the save returns."""
    code = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from tests.test_hub_store import make
        from hub.store import HubStore
        store = HubStore(__import__("pathlib").Path({str(tmp_path / "hub.db")!r}))
        r, notes = make("r9")
        store.save(r, r.hosts.values(), notes)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=30)
    assert res.returncode == -9
    loaded = HubStore(tmp_path / "hub.db").load("r9")
    assert loaded is not None and loaded == make("r9")[0]
