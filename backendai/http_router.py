"""Routes for `HttpServer`: (method, path regex, allowed query parameters, handler).

The router is an `App`: it finds the route, checks the route's auth policy (the bearer
token by default: 401 with `WWW-Authenticate: Bearer`), refuses a read-only token
anything but GET and HEAD (403; WebSockets are GETs), answers 404 for an unknown path
and 405 with `Allow` for a known path and a wrong method, parses the query string
strictly (an unknown or repeated parameter is a 400) and decodes the path's named
groups into `Request.params`. A handler returns a JSON object (sent as 200
application/json), a `Response` or an `Upgrade`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from urllib.parse import parse_qsl, unquote

from backendai.auth import DENIED, READ_HTTP_METHODS, read_only
from backendai.errors import InvalidArgument, NotFound
from backendai.events.audit import Caller, calling
from backendai.http_server import (
    JSON,
    HttpError,
    Request,
    Response,
    Upgrade,
    take_query_token,
)

Handler = Callable[[Request], Awaitable[JSON | Response | Upgrade]]
# Decides whether a request may reach a route: True lets it through, False answers 401.
# A policy may raise an HttpError itself (e.g. 403 for a read-only caller).
AuthPolicy = Callable[[Request], bool]

MAX_QUERY_FIELDS = 32


def require_token(request: Request) -> bool:
    """The default: the server's bearer token (everyone when it has none)."""
    return request.caller.authenticated


def open_access(request: Request) -> bool:
    """No token needed (health probes)."""
    return True


def loopback_or_token(request: Request) -> bool:
    """No token needed from this host (e.g. a local Prometheus scraping /metrics)."""
    return request.caller.is_loopback or request.caller.authenticated


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: re.Pattern[str]  # matched in full against the still-encoded path
    query: tuple[str, ...]  # the query parameters it accepts
    handler: Handler
    auth: AuthPolicy = require_token


class Router:
    def __init__(self, *, auth: AuthPolicy = require_token) -> None:
        """auth: the policy for requests no route matches (404 and 405 answers), so an
        unauthenticated caller cannot probe which paths exist."""
        self.routes: list[Route] = []
        self.auth = auth

    def add(self, method: str, path: str, handler: Handler, *, query: Iterable[str] = (),
            auth: AuthPolicy = require_token) -> None:
        """Add a route; the first match wins. `path` is a regular expression matched in
        full; its named groups, percent-decoded, become `Request.params`."""
        self.routes.append(Route(method, re.compile(path), tuple(query), handler, auth))

    async def __call__(self, request: Request) -> Response | Upgrade:
        route, match = self._find(request)
        if not route.auth(request):
            raise _denied(request)
        identity = request.caller.identity
        if identity.authenticated and not identity.can_act \
                and route.method not in READ_HTTP_METHODS:
            raise HttpError(403, read_only(identity, f"{route.method} {request.path[:200]}"))
        try:
            params = {key: unquote(value, errors="strict")
                      for key, value in match.groupdict().items()}
            pairs = parse_qsl(request.query_string, keep_blank_values=True,
                              strict_parsing=True, errors="strict",
                              max_num_fields=MAX_QUERY_FIELDS) if request.query_string else []
        except ValueError:
            raise InvalidArgument("malformed path or query string") from None
        query: dict[str, str] = {}
        for key, value in pairs:
            if key not in route.query:
                raise InvalidArgument(f"unknown query parameter {key[:40]!r}"
                                      f" (allowed: {', '.join(route.query) or 'none'})")
            if key in query:
                raise InvalidArgument(f"query parameter {key[:40]!r} given more than once")
            query[key] = value
        with calling(lambda: Caller(request.caller.identity)):
            answer = await route.handler(replace(request, query=query, params=params))
        return Response.json(answer) if isinstance(answer, dict) else answer

    def _find(self, request: Request) -> tuple[Route, re.Match[str]]:
        """The route for a request, or the 401/404/405 answer."""
        matches = [(route, m) for route in self.routes
                   if (m := route.pattern.fullmatch(request.path))]
        for route, m in matches:
            if route.method == request.method:
                return route, m
        # A caller one of the path's routes lets in may learn its methods (405); anyone
        # else gets the same 401 as for an unknown path.
        if not (self.auth(request) or any(route.auth(request) for route, _ in matches)):
            raise _denied(request)
        if not matches:
            raise NotFound(f"no endpoint {request.path[:200]!r}")
        allow = ", ".join(sorted({route.method for route, _ in matches}))
        raise HttpError(405, f"method {request.method} not allowed here (allowed: {allow})",
                        [("Allow", allow)])


def _denied(request: Request) -> HttpError:
    message = DENIED
    if request.method not in READ_HTTP_METHODS and take_query_token(request.query_string)[1]:
        message += (" (a token in the query counts on GET only: send Authorization: Bearer "
                    "TOKEN)")
    return HttpError(401, message, [("WWW-Authenticate", "Bearer")])


def json_body(request: Request, allowed: Iterable[str]) -> JSON:
    """The request's body as a JSON object with only `allowed` keys: 415 unless it is
    sent as application/json, 400 for invalid JSON, a non-object or an unknown key."""
    allowed = tuple(allowed)
    media_type = request.headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    if media_type != b"application/json":
        raise HttpError(415, "Content-Type must be application/json")
    try:
        data = json.loads(request.body)
    except (ValueError, RecursionError):
        raise InvalidArgument("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidArgument("request body must be a JSON object")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise InvalidArgument(f"unknown field {unknown[0][:40]!r} (allowed: {', '.join(allowed)})")
    return data
