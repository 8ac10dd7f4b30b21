"""backendai.v1.Agent over gRPC."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from agent.registration import Registration
from backendai.grpc_handlers import unary
from backendai.v1 import agent_pb2 as pb
from backendai.v1 import agent_pb2_grpc as pb_grpc

SERVICE_NAME = "backendai.v1.Agent"


class AgentServicer(pb_grpc.AgentServicer):
    def __init__(self, *, name: str, version: str, hub_address: str, started: float,
                 facts: Callable[[], Awaitable[pb.HostFacts]],
                 registration: Registration | None) -> None:
        self.name = name
        self.version = version
        self.hub_address = hub_address
        self.started = started
        self.facts = facts
        self.registration = registration

    def add_to(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_AgentServicer_to_server(self, server)

    @unary
    async def GetInfo(self, request: pb.GetInfoRequest, context: Any) -> pb.AgentInfo:
        reg = self.registration
        return pb.AgentInfo(
            version=self.version, uptime_seconds=time.time() - self.started,
            facts=await self.facts(), name=self.name,
            hub_address=reg.hub.current if reg else self.hub_address,
            registered=bool(reg and reg.registered), started_unix=self.started,
            last_heartbeat_unix=reg.last_heartbeat if reg else 0.0)
