"""Who asked for an operator action, and the one decorator that records it.

The transports say who is calling, once per request, where they decode it (the HTTP
router, the gRPC handler decorators): `calling(source)` puts the caller (or a function
that works it out when an audit needs it, so reads pay nothing) in a context variable.
The service layer marks each operator action with `@audited("stop", subject)`: the
action is recorded as an `audit.stop` event with who, through which transport, from
where, and the result the caller got ("ok", or the error). A new action gets its audit
by that one line.

While an audited action runs, `acting()` is its caller, so the state writes it causes
(a service's desired state) can name who asked.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ParamSpec, Protocol, TypeVar

from backendai.auth import ANONYMOUS, Identity, Role
from backendai.errors import BackendAIError


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asked, as an audit record names them: the caller's Identity (backendai/auth.py:
    token name or anonymous, peer, transport, TLS client subject) and, when a hub relays
    an operator's request, the operator it acts for (the transport is then "hub")."""

    identity: Identity
    on_behalf_of: str = ""

    @property
    def actor(self) -> str:
        """The token's name, else the TLS client certificate's subject, else
        "anonymous"; "… for OPERATOR" when relayed."""
        ident = self.identity
        who = ident.name if ident.name != ANONYMOUS else (ident.tls_subject or ANONYMOUS)
        return f"{who} for {self.on_behalf_of}" if self.on_behalf_of else who

    @property
    def transport(self) -> str:
        return "hub" if self.on_behalf_of else self.identity.transport

    @property
    def peer(self) -> str:
        peer = self.identity.peer
        for prefix in ("ipv4:", "ipv6:"):
            if peer.startswith(prefix):
                return peer[len(prefix):]
        return peer

    @property
    def cert_subject(self) -> str:
        return self.identity.tls_subject


def internal(transport: str = "internal") -> Caller:
    """The daemon itself (a signal, a caller outside any transport)."""
    return Caller(Identity(ANONYMOUS, Role.ADMIN, "", transport))


INTERNAL = internal()
CallerSource = Caller | Callable[[], Caller]
_REQUEST: contextvars.ContextVar[CallerSource | None] = contextvars.ContextVar(
    "backendai_request_caller", default=None)
_ACTING: contextvars.ContextVar[Caller | None] = contextvars.ContextVar(
    "backendai_acting_caller", default=None)


class calling:  # (lowercase: it reads as a function, `with calling(source):`)
    """The caller of the request handled inside the block (a transport sets it; on every
    request, so a plain class: ~0.2 us, where a generator context manager costs ~1 us)."""

    __slots__ = ("_source", "_token")

    def __init__(self, source: CallerSource) -> None:
        self._source = source
        self._token: contextvars.Token[CallerSource | None] | None = None

    def __enter__(self) -> None:
        self._token = _REQUEST.set(self._source)

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _REQUEST.reset(self._token)


def request_caller() -> Caller | None:
    source = _REQUEST.get()
    if source is None or isinstance(source, Caller):
        return source
    return source()


def acting() -> Caller | None:
    """The caller of the audited action running now (None outside one)."""
    return _ACTING.get()


def outcome(exc: BaseException) -> str:
    """The result an audit records for a failed action: the error the caller got."""
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, BackendAIError):
        return str(exc) or type(exc).__name__
    return "internal error"


class Recorder(Protocol):
    def emit(self, kind: str, subject: str, message: str = "",
             fields: Mapping[str, object] | None = None, *, who: Caller | None = None,
             result: str = "") -> None: ...


FLUSH_WAIT = 2.0  # seconds an action's answer waits for its audit record to be stored


async def _stored(events: Recorder) -> None:
    """Commit the audit record before the caller gets the answer (when the log can): an
    answered action is in the history. A store that cannot take it within FLUSH_WAIT
    leaves it queued for the log's own retries; the answer is not held up longer."""
    flush = getattr(events, "flush", None)
    if flush is None:
        return
    try:
        async with asyncio.timeout(FLUSH_WAIT):
            await flush()
    except Exception:  # noqa: BLE001 - the action happened; its record stays queued
        return


R = TypeVar("R")
P = ParamSpec("P")


def audited(action: str | Callable[..., str], subject: Callable[..., str], *,
            request: Callable[..., Mapping[str, object]] | None = None,
            detail: Callable[[Any], Mapping[str, object]] | None = None,
            result_subject: Callable[[Any], str] | None = None,
            ) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Record every call of a service-layer method as `audit.<action>` (`action` may be
    worked out from the call's arguments, as `subject` is). `subject(self, *args,
    **kwargs)` names what it acts on, `request(self, *args, **kwargs)` adds fields of
    what was asked, `detail(result)` fields of what it did and `result_subject(result)`
    a better subject (e.g. the id of what it created) on success. The object's `events`
    attribute (an EventLog, or None) receives the event."""
    def wrap(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(fn)
        async def run(*args: P.args, **kwargs: P.kwargs) -> R:
            events: Recorder | None = getattr(args[0], "events", None)
            if events is None:
                return await fn(*args, **kwargs)
            who = request_caller() or INTERNAL
            verb = action(*args, **kwargs) if callable(action) else action
            what = subject(*args, **kwargs)
            asked = dict(request(*args, **kwargs)) if request else {}
            token = _ACTING.set(who)
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                _record(events, verb, what, who, result=outcome(exc), fields=asked)
                if not isinstance(exc, asyncio.CancelledError):
                    await _stored(events)
                raise
            finally:
                _ACTING.reset(token)
            if detail is not None:
                asked.update(detail(result))
            if result_subject is not None:
                what = result_subject(result) or what
            _record(events, verb, what, who, result="ok", fields=asked)
            await _stored(events)
            return result
        return run
    return wrap


def _record(events: Recorder, action: str, subject: str, who: Caller, *, result: str,
            fields: Mapping[str, object]) -> None:
    extra = dict(fields)
    if who.cert_subject and who.identity.name != ANONYMOUS:
        extra["cert_subject"] = who.cert_subject
    events.emit(f"audit.{action}", subject, f"{who.actor} asked to {action} {subject} over "
                f"{who.transport}: {result}", extra, who=who, result=result)
