"""Admission control with a real `ai-hub` process: a burst of registrations beyond the
rate is answered "later" (RESOURCE_EXHAUSTED with a retry hint, each refused caller a
later slot) and changes nothing for the refused; the real agent and manager registration
loops wait as told and are all admitted in the end."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from structlog.testing import capture_logs

from agent.config import AgentConfig
from agent.registration import Registration
from backendai.errors import RETRY_AFTER_TRAILER
from backendai.v1 import agent_pb2 as apb
from backendai.v1 import hub_pb2 as pb
from manager.config import HubLink
from manager.hub_registration import HubRegistration
from tests.fixtures.hub_procs import HubProc, SimManagers, wait_for


def test_a_burst_beyond_the_rate_is_answered_later_with_growing_hints(procs):
    sim = procs(SimManagers, hosts=1).start()
    manager = sim.hosts["agent-000"]
    hub = procs(HubProc, {}, extra={"admission": {
        "register_rate": 2.0, "register_burst": 3, "max_retry_after": 30.0}}).start()

    def register(i: int) -> tuple[grpc.StatusCode, float, str]:
        try:
            hub.call("Register", pb.RegisterRequest(name=f"h{i:02d}", role="agent",
                                                    manager_address=manager))
        except grpc.RpcError as exc:
            hint = dict(exc.trailing_metadata() or ()).get(RETRY_AFTER_TRAILER, "0")
            return exc.code(), int(hint) / 1000, exc.details()
        return grpc.StatusCode.OK, 0.0, ""

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(register, range(12)))
    admitted = [a for a in answers if a[0] == grpc.StatusCode.OK]
    refused = [a for a in answers if a[0] == grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert all("register: the hub admits 2 per second" in why for _, _, why in refused)
    later = sorted(hint for _, hint, _ in refused)
    # the burst (3), plus at most one token refilled while the calls arrive
    assert 3 <= len(admitted) <= 4 and len(admitted) + len(later) == 12
    assert later[0] == pytest.approx(0.5, abs=0.3)
    # every refused caller got its own slot, half a second (1/rate) after the previous
    steps = [b - a for a, b in itertools.pairwise(later)]
    assert all(s == pytest.approx(0.5, abs=0.1) for s in steps), later
    # nothing was recorded for the refused
    names = {h.name for h in hub.call("ListHosts", pb.ListHostsRequest()).hosts}
    assert len(names) == len(admitted)
    assert "admission.refusing" in hub.logs()
    # GetInfo is never refused
    for _ in range(20):
        hub.info_now()


async def facts() -> apb.HostFacts:
    return apb.HostFacts(hostname="sim")


async def test_real_agents_and_managers_told_later_are_all_admitted(procs):
    sim = procs(SimManagers, hosts=1).start()
    manager = sim.hosts["agent-000"]
    hub = procs(HubProc, {}, extra={"admission": {
        "register_rate": 15.0, "register_burst": 5}}).start()
    agents = [Registration(AgentConfig(name=f"agent-{i:02d}", hub_address=(hub.address,),
                                       manager_address=manager, heartbeat_interval=0.5,
                                       reconnect_max=2.0),
                           token=None, version="1.0", facts=facts, started=time.time())
              for i in range(40)]
    managers = [HubRegistration(HubLink(name=f"mgr-{i:02d}", address=hub.address,
                                        register_interval=30.0),
                                token=None, manager_address=lambda: manager,
                                version=lambda: "1.0")
                for i in range(10)]
    with capture_logs() as logs:
        tasks = [asyncio.create_task(r.run()) for r in [*agents, *managers]]
        try:
            def all_in() -> bool:
                if not all(r.registered for r in [*agents, *managers]):
                    return False
                hosts = hub.call("ListHosts", pb.ListHostsRequest()).hosts
                return len(hosts) == 50 and \
                    sum(h.agent_connected for h in hosts) == 40

            await asyncio.to_thread(wait_for, all_in, 60, "every agent and manager admitted")
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    busy = [e for e in logs if e["event"] in ("agent.hub_busy", "manager.hub_busy")]
    assert busy, "the burst was beyond the rate: some were told to come back"
    assert all(0 < e["retry_in"] <= 60 for e in busy)
    # a busy hub is not a lost one: nobody gave up on it or moved on
    assert not [e for e in logs if e["event"] in ("agent.hub_lost", "agent.hub_next",
                                                  "manager.register_failed")]
    assert "admission.refusing" in hub.logs()


def test_no_admission_section_admits_the_default_rates(procs):
    """The defaults admit a small fleet's registrations at once."""
    sim = procs(SimManagers, hosts=1).start()
    hub: HubProc = procs(HubProc, {}).start()
    for i in range(30):
        hub.call("Register", pb.RegisterRequest(name=f"h{i}", role="agent",
                                                manager_address=sim.hosts["agent-000"]))
    assert len(hub.call("ListHosts", pb.ListHostsRequest()).hosts) == 30


def test_a_registration_that_changes_nothing_writes_nothing_and_is_not_held_back(procs):
    """A fleet coming back to a restarted hub re-registers what the store has: no write,
    and the registrations' rate does not apply (only the heartbeats')."""
    sim = procs(SimManagers, hosts=1).start()
    manager = sim.hosts["agent-000"]
    hub = procs(HubProc, {}, extra={"admission": {"register_rate": 0.01, "register_burst": 1}})
    hub.start()
    hub.call("Register", pb.RegisterRequest(name="h1", role="agent", manager_address=manager,
                                            labels={"group": "a"}))

    def seq() -> list[tuple[str, int]]:
        with sqlite3.connect(hub.state_dir / "hub.db") as db:
            return db.execute("SELECT name, seq FROM registered_hosts").fetchall()

    written = seq()
    for _ in range(20):
        hub.call("Register", pb.RegisterRequest(name="h1", role="agent", manager_address=manager,
                                                labels={"group": "a"}))
        hub.call("Register", pb.RegisterRequest(name="h1", role="manager",
                                                manager_address=manager, labels={"group": "a"}))
    assert seq() == written
    # a change is a write, and those are held to their rate
    with pytest.raises(grpc.RpcError) as refused:
        hub.call("Register", pb.RegisterRequest(name="h1", role="agent",
                                                manager_address=manager, labels={"group": "b"}))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as refused:
        hub.call("Register", pb.RegisterRequest(name="h2", role="agent", manager_address=manager))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert seq() == written
    assert hub.call("ListHosts", pb.ListHostsRequest()).hosts[0].labels == {"group": "a"}
