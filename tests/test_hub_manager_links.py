"""The hub's links to managers (hub/manager_links.py): one channel and one stub per
manager, the stub's callables made on first use; and the inventory opening status
streams a few at a time (hub/inventory.py, `[admission] watch_connects`); against real
Manager servicers on 127.0.0.1 port 0."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from backendai.grpc_server import GrpcServer
from backendai.listen import ListenAddress
from backendai.v1 import manager_pb2 as mpb
from hub import inventory as inventory_mod
from hub.config import HostEntry
from hub.inventory import Inventory
from hub.manager_links import ManagerLinks
from tests.fixtures.sim_manager import Rules, SimHost


async def test_one_stub_per_manager_its_callables_made_on_first_use():
    host = SimHost("agent-1", "1.0", Rules(None, 0.1), None)
    server = GrpcServer(ListenAddress("127.0.0.1", 0), token=None,
                        services=[("backendai.v1.Manager", host.add_to)])
    _, port = await server.start()
    links = ManagerLinks(token=None, tls=None, call_timeout=5.0)
    try:
        address = f"127.0.0.1:{port}"
        stub = links.stub(address)
        assert links.stub(address) is stub
        assert "Status" not in vars(stub) and "Update" not in vars(stub)
        st = await stub.Status(mpb.StatusRequest(), timeout=5)
        assert (st.name, st.version) == ("ai-agent", "1.0")
        assert stub.Status is stub.Status and "Status" in vars(stub)
        assert "Update" not in vars(stub)
        first = await anext(aiter(stub.WatchStatus(mpb.WatchStatusRequest(), timeout=5)))
        assert first.version == "1.0"
        with pytest.raises(AttributeError):
            stub.NoSuchMethod  # noqa: B018 - the access is the test
    finally:
        await links.close()
        await server.stop(0)


async def test_status_streams_open_a_few_at_a_time_and_a_silent_manager_keeps_none_waiting(
        monkeypatch: pytest.MonkeyPatch):
    """Inventory(watch_connects=1): streams are opened one at a time, and one to a
    manager that accepts the connection and never answers does not keep the others
    from connecting."""
    monkeypatch.setattr(inventory_mod, "CONNECT_HOLD", 0.3)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts in the kernel's backlog; never speaks HTTP/2
    hosts = [SimHost(f"agent-{i}", "1.0", Rules(None, 0.1), None) for i in range(4)]
    servers = []
    for h in hosts:
        server = GrpcServer(ListenAddress("127.0.0.1", 0), token=None,
                            services=[("backendai.v1.Manager", h.add_to)])
        servers.append((server, (await server.start())[1]))
    links = ManagerLinks(token=None, tls=None, call_timeout=5.0)
    inv = Inventory(links, heartbeat_interval=10.0, watch_connects=1)
    inv.add(HostEntry("a-silent", f"127.0.0.1:{silent.getsockname()[1]}"))
    for h, (_, port) in zip(hosts, servers, strict=True):
        inv.add(HostEntry(h.name, f"127.0.0.1:{port}"))
    task = asyncio.create_task(inv.run())
    try:
        async with asyncio.timeout(15):
            while inv.connected < len(hosts):
                inv.changed.clear()
                await inv.changed.wait()
        assert not inv.hosts["a-silent"].reachable, inv.hosts["a-silent"].message
        assert inv._connecting is not None and inv._connecting._value <= 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await links.close()
        for server, _ in servers:
            await server.stop(0)
        silent.close()


async def test_a_place_among_the_streams_being_opened_is_given_back_after_the_hold(
        monkeypatch: pytest.MonkeyPatch):
    """A stream that neither answers nor fails holds its place CONNECT_HOLD at most;
    giving it back twice is harmless."""
    monkeypatch.setattr(inventory_mod, "CONNECT_HOLD", 0.2)
    gate = asyncio.Semaphore(1)
    first = await inventory_mod._Permit.take(gate)
    started = asyncio.get_running_loop().time()
    second = await inventory_mod._Permit.take(gate)  # waits for the hold to run out
    assert asyncio.get_running_loop().time() - started >= 0.15
    second.release()
    second.release()
    first.release()  # already given back by its timer: no second release
    assert gate._value == 1
    assert (await inventory_mod._Permit.take(None)).gate is None  # no limit: no gate
