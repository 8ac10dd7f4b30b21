"""Fleet helpers (pure): the address an agent listening on a wildcard is shown under."""

from __future__ import annotations

import pytest

from hub.fleet import advertised_address


@pytest.mark.parametrize(("address", "peer", "shown"), [
    ("0.0.0.0:3080", "ipv4:10.1.2.3:5555", "10.1.2.3:3080"),
    ("[::]:3080", "ipv6:[fd00::5]:4444", "[fd00::5]:3080"),
    ("10.0.0.9:3080", "ipv4:1.2.3.4:1", "10.0.0.9:3080"),   # a real address is kept
    ("0.0.0.0:3080", "unix:/run/x.sock", "0.0.0.0:3080"),   # nothing better known
    ("0.0.0.0:3080", "", "0.0.0.0:3080"),
])
def test_wildcard_agent_address_takes_the_peer_ip(address, peer, shown):
    assert advertised_address(address, peer) == shown
