"""Channels from the hub to managers: one per address, each carrying the manager token
and TLS when configured. Error classification for rollout decisions lives here too."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

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


class ManagerLinks:
    def __init__(self, *, token: bytes | Token | None, tls: ClientTLS | None,
                 call_timeout: float,
                 interceptors: Sequence[grpc.aio.ClientInterceptor] = ()) -> None:
        """interceptors: on every channel besides the token's (hub/stats.py counts)."""
        self.token = token
        self.tls = tls
        self.call_timeout = call_timeout
        self.interceptors = interceptors
        self._channels: dict[str, grpc.aio.Channel] = {}

    def stub(self, address: str) -> mpb_grpc.ManagerStub:
        channel = self._channels.get(address)
        if channel is None:
            channel = open_channel(address, token=self.token, tls=self.tls,
                                   interceptors=self.interceptors)
            self._channels[address] = channel
        return mpb_grpc.ManagerStub(channel)

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        await asyncio.gather(*(c.close(grace=None) for c in channels), return_exceptions=True)
