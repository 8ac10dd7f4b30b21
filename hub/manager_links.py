"""Channels from the hub to managers: one per address, each carrying the manager token
and TLS when configured. Error classification for rollout decisions lives here too."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, cast

import grpc

from backendai.auth import Token
from backendai.channels import open_channel
from backendai.tls import ClientTLS
from backendai.v1 import manager_pb2_grpc as mpb_grpc

# Codes that mean "could not talk to the manager" (as opposed to "it said no").
UNREACHABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                               grpc.StatusCode.CANCELLED})


def is_unreachable(exc: grpc.aio.AioRpcError) -> bool:
    return exc.code() in UNREACHABLE_CODES


def describe(exc: grpc.aio.AioRpcError) -> str:
    return f"{exc.code().name}: {exc.details() or ''}".strip()


# The hub holds a channel to every manager. gRPC's channelz bookkeeping (a debugging
# aid nothing here reads) costs ~4 KB per channel: off for these channels. So is HTTP/2
# BDP probing: it answers received data with PINGs to size the flow-control window,
# which on 10,000 streams of small messages (status keepalives every contact_interval,
# update steps) is extra writes and wake-ups on both sides for windows these streams
# never need (the idle hub at 10,000 hosts: 18.8 -> 15.2 % of a core). The streams keep
# gRPC's default 64 KB window: a StreamLogs over a long-latency link is bounded by it.
MANAGER_CHANNEL_OPTIONS = (("grpc.enable_channelz", 0), ("grpc.http2.bdp_probe", 0))


class _Recorder:
    """Stands in for a channel while the generated stub's constructor runs: each
    callable it asks for is recorded as (channel method, path, keyword arguments)."""

    def __getattr__(self, kind: str) -> Callable[..., tuple[str, str, dict[str, Any]]]:
        return lambda path, **kwargs: (kind, path, kwargs)


# attribute -> how the generated ManagerStub makes its callable
_MANAGER_CALLS: dict[str, tuple[str, str, dict[str, Any]]] = \
    vars(mpb_grpc.ManagerStub(_Recorder()))


# (kind of callable, RPC name, the channel's callable) -> the callable the stub hands out
Instrument = Callable[[str, str, Any], Any]


class _LazyManagerStub:
    """backendai.v1.Manager's stub whose callables are made on first use. The generated
    stub makes one per RPC of the service up front (17, each registered with the
    channel): ~12 KB per manager for the few a hub calls on most hosts."""

    def __init__(self, channel: grpc.aio.Channel, instrument: Instrument | None) -> None:
        self._channel = channel
        self._instrument = instrument

    def __getattr__(self, name: str) -> Any:
        try:
            kind, path, kwargs = _MANAGER_CALLS[name]
        except KeyError:
            raise AttributeError(name) from None
        made = getattr(self._channel, kind)(path, **kwargs)
        if self._instrument is not None:
            made = self._instrument(kind, name, made)
        setattr(self, name, made)  # found directly from now on
        return made


class ManagerLinks:
    def __init__(self, *, token: bytes | Token | None, tls: ClientTLS | None,
                 call_timeout: float,
                 interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
                 instrument: Instrument | None = None) -> None:
        """interceptors: on every channel besides the token's; instrument: wraps each
        callable of a stub (hub/stats.py HubStats.instrument: the call metrics, without
        the cost of an interceptor on every call and stream message)."""
        self.token = token
        self.tls = tls
        self.call_timeout = call_timeout
        self.interceptors = interceptors
        self.instrument = instrument
        self._channels: dict[str, grpc.aio.Channel] = {}
        # a stub per channel, made once (a stub per call cost 15 % of the hub's CPU in a
        # 10,000-host rollout), its callables made on first use
        self._stubs: dict[str, mpb_grpc.ManagerStub] = {}

    def stub(self, address: str) -> mpb_grpc.ManagerStub:
        stub = self._stubs.get(address)
        if stub is None:
            channel = open_channel(address, token=self.token, tls=self.tls,
                                   options=MANAGER_CHANNEL_OPTIONS,
                                   interceptors=self.interceptors)
            self._channels[address] = channel
            stub = self._stubs[address] = cast(mpb_grpc.ManagerStub,
                                                    _LazyManagerStub(channel, self.instrument))
        return stub

    async def close(self) -> None:
        self._stubs = {}
        channels, self._channels = list(self._channels.values()), {}
        await asyncio.gather(*(c.close(grace=None) for c in channels), return_exceptions=True)
