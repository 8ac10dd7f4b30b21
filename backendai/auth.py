"""Who a caller is, in one place: named bearer tokens with roles, for HTTP, WebSocket
and gRPC alike.

A daemon accepts a set of `Tokens`: `auth_token_file` is the admin token named
"default"; `[[auth_tokens]]` adds more, each with a name and a role ("admin" acts,
"read" only looks). `Tokens.identify` turns what a caller presented into an `Identity`
(token name or "anonymous", role, peer, transport, TLS client subject). With no token
configured every caller is the anonymous admin, as before (a daemon off loopback
refuses to start that way unless `insecure_no_auth`). A read-only caller may call only
read methods: gRPC methods named like reads (`is_read_method`), HTTP GET/HEAD and the
WebSockets. SIGHUP re-reads every token file (`Token.reread`, through
daemon_support.Secrets).
"""

from __future__ import annotations

import contextvars
import enum
import os
import re
import stat
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from backendai.errors import ConfigError

# Health and reflection stay open so probes and `grpcurl list` work without a token.
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
MAX_TOKEN_BYTES = 4096
MAX_TOKENS = 64
DEFAULT_NAME = "default"  # the name of the token in auth_token_file
ANONYMOUS = "anonymous"
TOKEN_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
# gRPC methods a read-only token may call: status, list, version, logs, streams,
# watches and gets (Manager/Status, ListServices, StreamLogs, WatchStatus, GetUpdate,
# ListEvents; Hub/ListHosts, GetRollout, WatchRollout, HostStatus, StreamHostLogs, ...).
READ_METHOD_RE = re.compile(r"(Get|List|Watch|Stream)[A-Z0-9]\w*|\w*Status|Version|Logs")
READ_HTTP_METHODS = ("GET", "HEAD")


class Role(enum.Enum):
    ADMIN = "admin"  # may look and act
    READ = "read"  # may look only


ROLES = tuple(r.value for r in Role)


def load_token(path: Path, key: str = "auth_token_file") -> bytes:
    """Read a token file; refuse files others can read or that are empty."""
    try:
        st = path.stat()
        raw = path.read_bytes()[:MAX_TOKEN_BYTES + 1]
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {str(path)!r}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO) & ~stat.S_IRGRP:
        raise ConfigError(f"{key}: {str(path)!r} must not be writable or readable by others "
                          f"(chmod 600)")
    token = raw.strip()
    if not token or len(token) > MAX_TOKEN_BYTES or not token.isascii() or b" " in token:
        raise ConfigError(f"{key}: {str(path)!r} must hold one token of printable ASCII")
    return token


class Token:
    """A bearer token that can change while the daemon runs: SIGHUP re-reads its file
    (`reread()`), and every check and every outgoing call uses the current value.
    `name` and `role` say who presents it (server side)."""

    def __init__(self, value: bytes, path: Path | None = None,
                 key: str = "auth_token_file", *, name: str = DEFAULT_NAME,
                 role: Role = Role.ADMIN) -> None:
        self.value = value
        self.path = path
        self.key = key
        self.name = name
        self.role = role

    @classmethod
    def from_file(cls, path: Path, key: str = "auth_token_file", *,
                  name: str = DEFAULT_NAME, role: Role = Role.ADMIN) -> Token:
        return cls(load_token(path, key), path, key, name=name, role=role)

    def reread(self) -> bytes:
        """The file's token now (ConfigError if it is unusable); assign it to `value`."""
        return load_token(self.path, self.key) if self.path is not None else self.value


def as_token(token: bytes | Token | None) -> Token | None:
    return Token(token) if isinstance(token, bytes) else token


@dataclass(frozen=True, slots=True)
class TokenSpec:
    """One `[[auth_tokens]]` table: a named token in a file, with a role."""

    name: str
    file: Path
    role: Role = Role.READ  # least privilege unless the operator says "admin"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who made a call. `role` is None for a caller that must be turned away (tokens are
    configured and it presented none that matches). Never holds the token itself."""

    name: str  # the token's name, or "anonymous"
    role: Role | None
    peer: str = ""  # "ip:port" (HTTP) or gRPC's peer string ("ipv4:1.2.3.4:5678")
    transport: str = ""  # "http", "websocket" or "grpc"
    tls_subject: str = ""  # the TLS client certificate's subject, when there is one

    @property
    def authenticated(self) -> bool:
        return self.role is not None

    @property
    def can_act(self) -> bool:
        return self.role is Role.ADMIN

    def describe(self) -> str:
        """How error messages and audit records name the caller."""
        return ANONYMOUS if self.name == ANONYMOUS else f"token {self.name!r}"


def bearer_value(header: str | bytes | None) -> bytes | None:
    """The token of an `Authorization: Bearer …` value (None for another scheme)."""
    if header is None:
        return None
    value = header.encode("latin-1", "replace") if isinstance(header, str) else header
    scheme, _, given = value.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    return given.strip()


def _same(given: bytes, token: bytes) -> bool:
    # hmac (with hashlib and OpenSSL's digests) costs ~0.7 MB RSS: only daemons that
    # check tokens load it (docs/BENCHMARKS.md).
    import hmac  # noqa: PLC0415

    return hmac.compare_digest(given, token)


def bearer_ok(header: str | bytes | None, token: bytes) -> bool:
    """Constant-time check of an `Authorization: Bearer …` value."""
    given = bearer_value(header)
    return given is not None and _same(given, token)


def check_distinct(tokens: Sequence[Token], values: Sequence[bytes]) -> None:
    """ConfigError unless every token's value (`values`, in the order of `tokens`: the
    values in use, or the ones a reload read) differs: a value two names share could
    not say who called."""
    for i, value in enumerate(values):
        if value in values[:i]:
            raise ConfigError(f"{tokens[i].key}: the same token as "
                              f"{tokens[values.index(value)].name!r}; every named "
                              "token must differ")


class Tokens:
    """The tokens a server accepts. Every check compares the presented value with every
    token (constant time each); the first match in config order names the caller."""

    def __init__(self, tokens: Iterable[Token]) -> None:
        self.tokens = tuple(tokens)
        names = [t.name for t in self.tokens]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ConfigError(f"auth_tokens: two tokens named {name!r}")
        check_distinct(self.tokens, [t.value for t in self.tokens])

    @classmethod
    def load(cls, auth_token_file: Path | None,
             specs: Sequence[TokenSpec] = ()) -> Tokens | None:
        """The tokens of a daemon's config (None when it has none: everyone is let in)."""
        tokens = [Token.from_file(auth_token_file)] if auth_token_file is not None else []
        for i, spec in enumerate(specs):
            tokens.append(Token.from_file(spec.file, f"auth_tokens[{i}].file",
                                          name=spec.name, role=spec.role))
        return cls(tokens) if tokens else None

    def match(self, given: bytes | None) -> Token | None:
        if not given:
            return None
        found = None
        for token in self.tokens:  # no early exit: the time does not tell which matched
            if _same(given, token.value) and found is None:
                found = token
        return found

    def identify(self, given: bytes | None, *, peer: str = "", transport: str = "",
                 tls_subject: str = "") -> Identity:
        token = self.match(given)
        if token is None:
            return Identity(ANONYMOUS, None, peer, transport, tls_subject)
        return Identity(token.name, token.role, peer, transport, tls_subject)


def as_tokens(token: bytes | Token | Tokens | None) -> Tokens | None:
    """What a server was given (a bare token is the admin named "default")."""
    if token is None or isinstance(token, Tokens):
        return token
    return Tokens([as_token(token)])  # type: ignore[list-item]


def identify(tokens: Tokens | None, given: bytes | None, *, peer: str = "",
             transport: str = "", tls_subject: str = "") -> Identity:
    """The caller: with no tokens configured, the anonymous admin."""
    if tokens is None:
        return Identity(ANONYMOUS, Role.ADMIN, peer, transport, tls_subject)
    return tokens.identify(given, peer=peer, transport=transport, tls_subject=tls_subject)


def is_read_method(method: str) -> bool:
    """Whether a full gRPC method name ("/pkg.Service/Method") only reads."""
    return READ_METHOD_RE.fullmatch(method.rpartition("/")[2]) is not None


def write_token(path: Path, token: str) -> None:
    """Create a token file readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")


DENIED = "missing or invalid bearer token"


def read_only(identity: Identity, what: str) -> str:
    """The refusal a read-only caller gets for an action."""
    return f"{identity.describe()} is read-only: {what} needs an admin token"


# ---- gRPC ------------------------------------------------------------------------------

# The caller of the RPC in progress, set by the interceptor. gRPC runs the interceptor
# and the method in the same contextvars.Context (one per RPC: the thread-pool server's
# `state.context`, grpc.aio's task), so the servicer sees what the interceptor decided.
_GRPC_CALLER: contextvars.ContextVar[tuple[str, Role]] = contextvars.ContextVar(
    "backendai_grpc_caller")


def grpc_identity(context: Any) -> Identity:
    """Who is calling the RPC whose servicer context this is (servicers call this, e.g.
    for the audit trail). Without tokens configured: the anonymous admin."""
    name, role = _GRPC_CALLER.get((ANONYMOUS, Role.ADMIN))
    peer = tls = ""
    try:
        peer = str(context.peer() or "")
        auth = context.auth_context() or {}
        subject = auth.get("x509_subject") or auth.get("x509_common_name") or ()
        tls = subject[0].decode("utf-8", "replace") if subject else ""
    except (AttributeError, RuntimeError, ValueError):
        pass
    return Identity(name, role, peer, "grpc", tls)


# OpenSSL's short names for the attributes Python's ssl module names by their long name.
_SHORT_NAMES = {
    "commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
    "countryName": "C", "stateOrProvinceName": "ST", "localityName": "L",
    "streetAddress": "street", "domainComponent": "DC", "userId": "UID",
    "surname": "SN", "givenName": "GN",
}
_RFC2253_SPECIAL = frozenset(',+"\\<>;')


def _rfc2253_value(value: str) -> str:
    out = []
    data = value.encode("utf-8", "replace")
    for i, byte in enumerate(data):
        char = chr(byte)
        if byte < 0x20 or byte >= 0x7F:
            out.append(f"\\{byte:02X}")
        elif char in _RFC2253_SPECIAL or (i == 0 and char in "# ") \
                or (i == len(data) - 1 and char == " "):
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def certificate_subject(peercert: Any) -> str:
    """A TLS client certificate's subject (from `SSLObject.getpeercert()`), written as
    OpenSSL writes RFC 2253 and so as gRPC's `x509_subject` names the same certificate:
    the last attribute first, short names, special characters escaped (`CN=alice,O=Ops`).
    "" without a verified certificate."""
    if not isinstance(peercert, dict):
        return ""
    rdns = peercert.get("subject") or ()
    return ",".join("+".join(f"{_SHORT_NAMES.get(name, name)}={_rfc2253_value(value)}"
                             for name, value in reversed(rdn))
                    for rdn in reversed(rdns))


class _TokenCheck:
    def __init__(self, tokens: bytes | Token | Tokens, open_methods: tuple[str, ...] = (),
                 read_methods: Callable[[str], bool] = is_read_method) -> None:
        """open_methods: full method names that need no token besides health and
        reflection (e.g. a read-only version RPC a local health probe calls);
        read_methods: which methods a read-only token may call."""
        found = as_tokens(tokens)
        assert found is not None  # noqa: S101 - a checker without tokens is a bug
        self._tokens = found
        self._open = OPEN_SERVICES + tuple(open_methods)
        self._reads = read_methods

    def check(self, handler: Any, details: Any) -> tuple[grpc.StatusCode, str] | None:
        """None to let the call in (after noting its caller), else the refusal."""
        if handler is None or details.method.startswith(self._open):
            return None
        metadata = dict(details.invocation_metadata or ())
        token = self._tokens.match(bearer_value(metadata.get("authorization")))
        if token is None:
            return grpc.StatusCode.UNAUTHENTICATED, DENIED
        if token.role is not Role.ADMIN and not self._reads(details.method):
            method = details.method.rpartition("/")[2]
            return grpc.StatusCode.PERMISSION_DENIED, read_only(
                Identity(token.name, token.role), method)
        _GRPC_CALLER.set((token.name, token.role))
        return None


class TokenInterceptor(_TokenCheck, grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Rejects calls to our services without a valid bearer token (UNAUTHENTICATED), and
    actions by a read-only token (PERMISSION_DENIED)."""

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any,
    ) -> Any:
        handler = await continuation(details)
        refused = self.check(handler, details)
        if refused is None:
            return handler
        return _like(handler, _aborting(*refused), _aborting_gen(*refused))


class SyncTokenInterceptor(_TokenCheck, grpc.ServerInterceptor):  # type: ignore[misc]
    """The same check for a thread-pool `grpc.server`."""

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        refused = self.check(handler, details)
        if refused is None:
            return handler
        return _like(handler, _aborting_sync(*refused), _aborting_sync(*refused))


def _aborting(code: grpc.StatusCode, message: str) -> Any:
    async def abort(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)
    return abort


def _aborting_gen(code: grpc.StatusCode, message: str) -> Any:
    async def abort(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator
    return abort


def _aborting_sync(code: grpc.StatusCode, message: str) -> Any:
    def abort(request: Any, context: grpc.ServicerContext) -> None:
        context.abort(code, message)
    return abort


def _like(handler: Any, unary: Any, streaming: Any) -> Any:
    """A handler of the same kind as `handler` that runs `unary` (or, answering with a
    stream, `streaming`) instead."""
    kwargs = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming, **kwargs)
    return grpc.unary_unary_rpc_method_handler(unary, **kwargs)
