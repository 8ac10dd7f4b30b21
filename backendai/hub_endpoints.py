"""Several hubs for one client (an agent's or a manager's registration): calls go to one
hub at a time; after a call that failed because that hub is not the one to talk to, the
next call goes elsewhere.

- The hub could not be reached (UNAVAILABLE, a timeout): the next address in the list.
- A follower answered FAILED_PRECONDITION with the `backendai-leader` trailer: the
  leader it names when that is one of the configured addresses, else the next. A hub
  never sends a client (and its token) to an address the client was not given.
- Any other answer is the hub's real answer: asking another would change nothing. A
  busy leader's "later" (RESOURCE_EXHAUSTED with a retry hint, `retry_after`) is one:
  the caller waits as told and asks the same hub again.

The wait between attempts stays the caller's (backendai/registration_loop.py: full
jitter), so a fleet moving to a new leader after a failover arrives spread out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from backendai.auth import Token
from backendai.channels import open_channel
from backendai.errors import LEADER_TRAILER, RETRY_AFTER_TRAILER
from backendai.tls import ClientTLS
from backendai.v1 import hub_pb2_grpc as pb_grpc

UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def not_leader(exc: BaseException) -> str | None:
    """None unless `exc` is a follower's NotLeader answer; then the leader's address it
    names ("" when no hub leads right now). Works for sync and aio gRPC errors alike."""
    if not isinstance(exc, grpc.RpcError) or \
            exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
        return None
    return _trailer(exc, LEADER_TRAILER)


MAX_RETRY_AFTER = 3600.0  # seconds: a hint beyond this is taken as this


def retry_after(exc: BaseException) -> float | None:
    """None unless `exc` is a busy hub's "later" (RESOURCE_EXHAUSTED with the
    `backendai-retry-after-ms` trailer, hub/admission.py); then the seconds it asks the
    caller to wait (a garbled or hostile hint: None; clamped to 0-3600)."""
    if not isinstance(exc, grpc.RpcError) or \
            exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return None
    value = _trailer(exc, RETRY_AFTER_TRAILER)
    if value is None or not value.isdigit() or len(value) > 12:
        return None
    return min(int(value) / 1000.0, MAX_RETRY_AFTER)


def _trailer(exc: grpc.RpcError, key: str) -> str | None:
    trailers = getattr(exc, "trailing_metadata", None)
    try:
        pairs: Any = (trailers() if callable(trailers) else None) or ()
    except Exception:  # noqa: BLE001 - a call that never started has no trailers
        return None
    for k, value in pairs:
        if k == key:
            return value if isinstance(value, str) else value.decode("ascii", "replace")
    return None


def next_address(addresses: Sequence[str], current: str, exc: BaseException) -> str:
    """Where the next call goes after `exc` from `current` (pure): another hub when
    this one could not be reached (a timeout included) or is a follower; else the same."""
    if len(addresses) < 2:
        return current
    leader = not_leader(exc)
    if leader is None:
        reached = isinstance(exc, grpc.RpcError) and \
            exc.code() not in UNREACHABLE
        if reached or not isinstance(exc, grpc.RpcError | TimeoutError):
            return current  # the hub answered and meant it
    elif leader and leader != current and leader in addresses:
        return leader
    i = addresses.index(current) if current in addresses else -1
    return addresses[(i + 1) % len(addresses)]


class HubEndpoints:
    def __init__(self, addresses: Sequence[str], *, token: bytes | Token | None,
                 tls: ClientTLS | None) -> None:
        if not addresses:
            raise ValueError("at least one hub address")
        self.addresses = tuple(addresses)
        self.current = self.addresses[0]
        self.token = token
        self.tls = tls
        self._channel: grpc.aio.Channel | None = None

    def stub(self) -> pb_grpc.HubStub:
        if self._channel is None:
            self._channel = open_channel(self.current, token=self.token, tls=self.tls)
        return pb_grpc.HubStub(self._channel)

    async def failed(self, exc: BaseException) -> bool:
        """After a failed call: True when the next call goes to another hub."""
        target = next_address(self.addresses, self.current, exc)
        if target == self.current:
            return False
        await self.close()
        self.current = target
        return True

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close(grace=None)
