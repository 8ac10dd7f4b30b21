"""The one error hierarchy. Each error maps to a gRPC status code and an HTTP status,
so the gRPC servicers and the HTTP shim report the same failure the same way."""

from __future__ import annotations

from typing import ClassVar

import grpc


class BackendAIError(Exception):
    """Base of every error we raise on purpose. `str(err)` is the clear reason."""

    grpc_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    http_status: ClassVar[int] = 500

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        """Machine-readable detail sent with the status (gRPC trailers)."""
        return ()


class InvalidArgument(BackendAIError):
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400


class NotFound(BackendAIError):
    grpc_code = grpc.StatusCode.NOT_FOUND
    http_status = 404


class FailedPrecondition(BackendAIError):
    """The request is valid but the current state forbids it (e.g. an update runs)."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 409


class Unauthenticated(BackendAIError):
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    http_status = 401


class Unavailable(BackendAIError):
    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503


class DeadlineExceeded(BackendAIError):
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
    http_status = 504


class NotConfigured(BackendAIError):
    """A feature the request needs is not set up in this daemon's config."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 501


class Unimplemented(BackendAIError):
    """The RPC or endpoint exists in the contract but this daemon does not serve it."""

    grpc_code = grpc.StatusCode.UNIMPLEMENTED
    http_status = 501


class ServiceFailed(BackendAIError):
    """The service did not reach the state asked for (exited at start, spawn error)."""

    grpc_code = grpc.StatusCode.ABORTED
    http_status = 500


class ConfigError(BackendAIError):
    """Invalid configuration: the message names the key."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400


LEADER_TRAILER = "backendai-leader"  # a follower hub names the leader's address here
RETRY_AFTER_TRAILER = "backendai-retry-after-ms"  # a busy daemon says when to come back


class ResourceExhausted(BackendAIError):
    """The daemon is admitting callers at a bounded rate and this one is beyond it (a
    fleet reconnecting after a restart): come back after `retry_after` seconds, said in
    the `backendai-retry-after-ms` trailer."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return ((RETRY_AFTER_TRAILER, str(max(1, round(self.retry_after * 1000)))),)


class NotLeader(FailedPrecondition):
    """A hub that does not hold the lease was asked to change something. The
    `backendai-leader` trailer says so to clients: the leader's address, or "" when no
    hub leads right now."""

    def __init__(self, message: str, leader_address: str = "") -> None:
        super().__init__(message)
        self.leader_address = leader_address

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return ((LEADER_TRAILER, self.leader_address),)


class StoreUnavailable(Unavailable):
    """The hub's database could not be reached or did not answer in time."""


class LeaseLost(Unavailable):
    """A write fenced by a lease epoch that is no longer current: this hub was deposed
    (or its lease ran out) and must stop acting."""
