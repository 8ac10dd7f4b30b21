"""A service's health check (`[services.health]`): what to probe, how often, and what an
unhealthy result does. Read by manager/config.py; run by manager/supervision/
health_monitor.py (the I/O) through the pure manager/supervision/health_state.py.

Exactly one of `http`, `tcp`, `exec`, `grpc` says what is checked. The targets may hold
`{instance}` and `{port}` (services with `instances`, manager/instances.py); `check()`
validates the final, substituted values, so an error names the key either way.
"""

from __future__ import annotations

import os
import shutil
import urllib.parse
from dataclasses import dataclass
from typing import Any

from backendai.config import MAX_TEXT, Table
from backendai.errors import ConfigError, InvalidArgument
from backendai.validate import check_address

KINDS = ("http", "tcp", "exec", "grpc")
ON_UNHEALTHY = ("restart", "none")
MAX_URL = 2048


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """One `[services.health]` table. Defaults here are the documented ones."""

    http: str = ""                        # GET this http:// or https:// URL
    tcp: str = ""                         # connect to "HOST:PORT"
    exec: tuple[str, ...] = ()            # run this argv; exit 0 = healthy
    grpc: str = ""                        # grpc.health.v1.Health/Check at "HOST:PORT"
    grpc_service: str = ""                # the service name the gRPC check asks about
    status: tuple[int, int] = (200, 399)  # http: the expected status range ("200-399")
    body: str = ""                        # http: a substring the body must contain
    interval: float = 10.0                # seconds from one check's start to the next's
    timeout: float = 5.0                  # a check that takes longer fails
    start_period: float = 0.0             # failures this soon after a start do not count
    failures: int = 3                     # consecutive failures before unhealthy
    on_unhealthy: str = "restart"         # "restart" | "none"

    @property
    def kind(self) -> str:
        for kind in KINDS:
            if getattr(self, kind):
                return kind
        return ""

    @property
    def target(self) -> str:
        """What is checked, in words (for messages)."""
        kind = self.kind
        return " ".join(self.exec) if kind == "exec" else str(getattr(self, kind))


def _status_range(value: Any) -> tuple[int, int]:
    """`200`, `"200"` or `"200-399"` -> (low, high), codes 100-599."""
    if isinstance(value, int) and not isinstance(value, bool):
        low = high = value
    elif isinstance(value, str) and len(value) <= 16:
        low_text, _, high_text = value.partition("-")
        high_text = high_text or low_text
        if not (low_text.strip().isdigit() and high_text.strip().isdigit()):
            raise InvalidArgument("")
        low, high = int(low_text), int(high_text)
    else:
        raise InvalidArgument("")
    if not 100 <= low <= high <= 599:
        raise InvalidArgument("")
    return low, high


def read_health_check(t: Table) -> HealthCheck:
    """Read `[services.health]` (type checks; `check()` validates the values)."""
    def status(value: Any) -> tuple[int, int]:
        try:
            return _status_range(value)
        except InvalidArgument:
            raise InvalidArgument(f"{t.key('status')}: must be a status code or a range like "
                                  f"\"200-399\" (100-599), got {str(value)[:40]!r}") from None

    check = HealthCheck(
        http=t.text("http", max_len=MAX_URL),
        tcp=t.text("tcp", max_len=MAX_TEXT),
        exec=t.argv("exec"),
        grpc=t.text("grpc", max_len=MAX_TEXT),
        grpc_service=t.text("grpc_service", max_len=256),
        status=t.custom("status", "a status range like \"200-399\"", status),
        body=t.text("body", max_len=MAX_TEXT),
        interval=t.number("interval", low=0.05, high=86400.0),
        timeout=t.number("timeout", low=0.01, high=3600.0),
        start_period=t.number("start_period", low=0.0, high=86400.0),
        failures=t.integer("failures", low=1, high=1000),
        on_unhealthy=t.choice("on_unhealthy", ON_UNHEALTHY))
    t.done()
    given = [k for k in KINDS if getattr(check, k)]
    if len(given) != 1:
        raise ConfigError(f"{t.prefix}: exactly one of http, tcp, exec, grpc is required, "
                          f"got {', '.join(given) if given else 'none'}")
    kind = given[0]
    if kind != "http" and (check.body or "status" in t.data):
        raise ConfigError(f"{t.key('body' if check.body else 'status')}: only for an http "
                          "check")
    if kind != "grpc" and check.grpc_service:
        raise ConfigError(f"{t.key('grpc_service')}: only for a grpc check")
    return check


def check(hc: HealthCheck, prefix: str, env: dict[str, str] | None = None) -> None:
    """Validate a (substituted) check's target; ConfigError naming the key.

    `env`: the service's environment, whose PATH finds an exec check's program."""
    def key(name: str) -> str:
        return f"{prefix}.{name}"

    hint = " ({port} and {instance} need `instances`)" if "{" in hc.target else ""
    try:
        match hc.kind:
            case "http":
                _check_url(hc.http, key("http"))
            case "tcp":
                check_address(hc.tcp, key("tcp"))
            case "grpc":
                check_address(hc.grpc, key("grpc"))
            case "exec":
                _check_program(hc.exec[0], key("exec"), env or {})
    except InvalidArgument as exc:
        raise ConfigError(f"{exc}{hint}") from None


def _check_url(url: str, what: str) -> None:
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidArgument(f"{what}: not a usable URL ({exc}), got {url[:80]!r}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidArgument(f"{what}: must be an http:// or https:// URL, got "
                              f"{url[:80]!r}")
    if not parts.hostname or any(c.isspace() for c in url) or (port is not None and port < 1):
        raise InvalidArgument(f"{what}: must name a host (and a port 1-65535), got "
                              f"{url[:80]!r}")


def _check_program(program: str, what: str, env: dict[str, str]) -> None:
    """An exec check's program must exist: an absolute path that is an executable file,
    or a bare name found on the service's PATH. (A relative path with "/" is run from
    the service's working directory and may come with a release: not checked here.)"""
    if "/" in program and not program.startswith("/"):
        return
    path = env.get("PATH", os.environ.get("PATH", os.defpath))
    if shutil.which(program, path=path) is None:
        where = "is not an executable file" if program.startswith("/") else \
            "is not found on PATH"
        raise InvalidArgument(f"{what}: the program {program[:120]!r} {where}")
