"""aictl's connection to the hub, or to several (`--hub a:3000,b:3000,c:3000`,
`AICTL_HUB`): each call goes to one hub; when that hub cannot be reached the next is
tried, and when it is a follower (FAILED_PRECONDITION with the `backendai-leader`
trailer) the call goes to the leader it names when listed, else to the next. Reads are
answered by any hub, so most commands stay on the first one that answers.

grpc is imported only when a command runs (`aictl --help` stays fast).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

MAX_HUBS = 16


class HubListError(ValueError):
    pass


def parse_hubs(text: str) -> list[str]:
    """"a:3000,b:3000" -> ["a:3000", "b:3000"]: each a dialable "HOST:PORT", no repeats."""
    from backendai.errors import InvalidArgument  # noqa: PLC0415
    from backendai.validate import check_address  # noqa: PLC0415

    items = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not item for item in items):
        raise HubListError(f"--hub wants HOST:PORT[,HOST:PORT...], got {text[:200]!r}")
    if len(items) > MAX_HUBS:
        raise HubListError(f"--hub: at most {MAX_HUBS} hubs")
    try:
        for item in items:
            check_address(item, "--hub")
    except InvalidArgument as exc:
        raise HubListError(str(exc)) from None
    if len(set(items)) != len(items):
        raise HubListError(f"--hub lists a hub twice: {text[:200]!r}")
    return items


class Hub:
    """Connected hub stubs plus the call metadata (bearer token). `stub.Method(...)`
    fails over between the hubs for unary calls; `stream(...)` does for a stream that
    has not delivered anything yet; `failed(exc)` moves on after a broken stream."""

    def __init__(self, args: argparse.Namespace,
                 channel_for: Callable[[str], Any]) -> None:
        self.addresses = parse_hubs(args.hub)
        self.address = self.addresses[0]
        self.metadata: list[tuple[str, str]] = []
        if args.token_file:
            from backendai.auth import load_token  # noqa: PLC0415

            token = load_token(Path(args.token_file), "--token-file").decode()
            self.metadata.append(("authorization", f"Bearer {token}"))
        self._channel_for = channel_for
        self._channels: dict[str, Any] = {}
        self.stub = _FailoverStub(self)

    @property
    def channel(self) -> Any:
        channel = self._channels.get(self.address)
        if channel is None:
            channel = self._channels[self.address] = self._channel_for(self.address)
        return channel

    def raw_stub(self) -> Any:
        from backendai.v1 import hub_pb2_grpc  # noqa: PLC0415

        return hub_pb2_grpc.HubStub(self.channel)

    def failed(self, exc: BaseException) -> bool:
        """After `exc` from the current hub: True when the next call goes to another."""
        from backendai.hub_endpoints import next_address  # noqa: PLC0415

        target = next_address(self.addresses, self.address, exc)
        moved = target != self.address
        self.address = target
        return moved

    def call(self, method: str, request: Any, **kwargs: Any) -> Any:
        import grpc  # noqa: PLC0415

        last: grpc.RpcError | None = None
        for _ in range(len(self.addresses) + 1):  # every hub once, and the leader named
            try:
                return getattr(self.raw_stub(), method)(request, **kwargs)
            except grpc.RpcError as exc:
                last = exc
                if not self.failed(exc):
                    raise
        assert last is not None  # noqa: S101 - the loop ran
        raise last

    def stream(self, method: str, request: Any, **kwargs: Any) -> FailoverStream:
        return FailoverStream(self, method, request, kwargs)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()


class _FailoverStub:
    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def __getattr__(self, method: str) -> Callable[..., Any]:
        return lambda request, **kwargs: self._hub.call(method, request, **kwargs)


class FailoverStream:
    """A server stream that starts again on the next hub while nothing was received."""

    def __init__(self, hub: Hub, method: str, request: Any, kwargs: dict[str, Any]) -> None:
        self.hub = hub
        self.method = method
        self.request = request
        self.kwargs = kwargs
        self.call: Any = None

    def __iter__(self) -> Iterator[Any]:
        import grpc  # noqa: PLC0415

        for attempt in range(len(self.hub.addresses) + 1):
            self.call = getattr(self.hub.raw_stub(), self.method)(self.request, **self.kwargs)
            received = False
            try:
                for item in self.call:
                    received = True
                    yield item
            except grpc.RpcError as exc:
                if received or attempt == len(self.hub.addresses) or not self.hub.failed(exc):
                    raise
            else:
                return

    def cancel(self) -> None:
        if self.call is not None:
            self.call.cancel()
