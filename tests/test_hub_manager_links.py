"""The hub's links to managers (hub/manager_links.py): one channel and one stub per
manager, the stub's callables made on first use; against a real Manager servicer on
127.0.0.1 port 0."""

from __future__ import annotations

import pytest

from backendai.grpc_server import GrpcServer
from backendai.listen import ListenAddress
from backendai.v1 import manager_pb2 as mpb
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
