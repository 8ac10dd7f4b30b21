"""The I/O of one health check (`[services.health]`), bounded in time and size.

- http: GET over asyncio streams with h11 (no thread, no extra import); the status
  must be in the expected range and, with `body`, the first MAX_BODY bytes of the body
  must contain it. One connection per check (`Connection: close`).
- tcp: an asyncio connect.
- exec: the argv as a child process in its own session (asyncio subprocess: the loop
  only reads its pipe); exit 0 is healthy. The first MAX_MESSAGE_OUTPUT bytes of its
  output go into the message; one that prints more than MAX_EXEC_OUTPUT is killed and
  fails, as is one still running at the timeout (its whole process group).
- grpc: grpc.health.v1.Health/Check on a channel the caller keeps (`GrpcChecker`).

`run_check` never raises for what the check finds: every failure is a `CheckResult`
whose message says why, and every check ends within its `timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import h11

from manager.health_config import HealthCheck

if TYPE_CHECKING:
    import ssl

MAX_BODY = 64 * 1024
MAX_EXEC_OUTPUT = 1 << 20
MAX_MESSAGE_OUTPUT = 200
READ_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    message: str


class GrpcChecker:
    """A gRPC health check's channel, kept between checks (one per monitor)."""

    def __init__(self, target: str, service: str) -> None:
        self.target = target
        self.service = service
        self._channel: Any = None

    async def check(self, timeout: float) -> CheckResult:
        # grpc.aio and the health protos load only where a grpc check is configured.
        import grpc  # noqa: PLC0415
        from grpc_health.v1 import health_pb2  # noqa: PLC0415

        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.target)
        call = self._channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString)
        try:
            resp = await call(health_pb2.HealthCheckRequest(service=self.service),
                              timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return CheckResult(False, f"gRPC health: {exc.code().name}: "
                                      f"{(exc.details() or '')[:120]}")
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
        return CheckResult(resp.status == health_pb2.HealthCheckResponse.SERVING,
                           f"gRPC health: {name}")

    async def close(self) -> None:
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close()


async def run_check(hc: HealthCheck, *, env: Mapping[str, str] | None = None,
                    cwd: str | None = None, grpc: GrpcChecker | None = None) -> CheckResult:
    """One check, within `hc.timeout`."""
    try:
        async with asyncio.timeout(hc.timeout):
            match hc.kind:
                case "http":
                    return await _http(hc)
                case "tcp":
                    return await _tcp(hc.tcp)
                case "exec":
                    return await _exec(hc.exec, env, cwd)
                case "grpc":
                    checker = grpc or GrpcChecker(hc.grpc, hc.grpc_service)
                    try:
                        return await checker.check(hc.timeout)
                    finally:
                        if grpc is None:
                            await checker.close()
    except TimeoutError:
        return CheckResult(False, f"{hc.kind} check timed out after {hc.timeout:g}s")
    return CheckResult(False, "no check configured")


def _oserror(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


_TLS: list[ssl.SSLContext] = []


def _tls() -> ssl.SSLContext:
    if not _TLS:
        import ssl  # noqa: PLC0415 - only https checks need it

        _TLS.append(ssl.create_default_context())
    return _TLS[0]


async def _http(hc: HealthCheck) -> CheckResult:
    url = urllib.parse.urlsplit(hc.http)
    https = url.scheme == "https"
    host = url.hostname or ""
    port = url.port or (443 if https else 80)
    target = (url.path or "/") + (f"?{url.query}" if url.query else "")
    try:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=_tls() if https else None, server_hostname=host if https else None)
    except OSError as exc:
        return CheckResult(False, f"http: cannot connect to {url.netloc}: {_oserror(exc)}")
    try:
        conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=16 * 1024)
        writer.write(conn.send(h11.Request(
            method="GET", target=target.encode("ascii", "replace"),
            headers=[("Host", url.netloc), ("User-Agent", "ai-manager-health"),
                     ("Connection", "close")])))
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()
        status = 0
        body = bytearray()
        seen = 0  # body bytes received; the response is read to its end (so the server
        while True:  # is not cut off mid-write), but at most MAX_BODY of it
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(READ_CHUNK))
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                seen += len(event.data)
                if hc.body:
                    body += event.data[:MAX_BODY - len(body)]
                if seen >= MAX_BODY:
                    break
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
        return _http_result(hc, status, bytes(body), cut=seen >= MAX_BODY)
    except h11.ProtocolError as exc:
        return CheckResult(False, f"http: bad response: {str(exc)[:120]}")
    except OSError as exc:
        return CheckResult(False, f"http: {_oserror(exc)}")
    finally:
        writer.close()
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await writer.wait_closed()


def _http_result(hc: HealthCheck, status: int, body: bytes, *, cut: bool) -> CheckResult:
    low, high = hc.status
    if not low <= status <= high:
        want = str(low) if low == high else f"{low}-{high}"
        return CheckResult(False, f"http: status {status}, expected {want}")
    if not hc.body:
        return CheckResult(True, f"http: status {status}")
    if hc.body.encode() in body:
        return CheckResult(True, f"http: status {status}, body matches")
    return CheckResult(False, f"http: status {status}, body does not contain "
                              f"{hc.body[:60]!r}"
                              + (f" (in its first {MAX_BODY} bytes)" if cut else ""))


async def _tcp(address: str) -> CheckResult:
    host, _, port = address.rpartition(":")
    try:
        _reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
    except OSError as exc:
        return CheckResult(False, f"tcp: cannot connect to {address}: {_oserror(exc)}")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return CheckResult(True, f"tcp: connected to {address}")


def _output(head: bytes) -> str:
    text = head.decode("utf-8", "replace").strip().replace("\n", " | ")
    return f": {text[:MAX_MESSAGE_OUTPUT]}" if text else ""


async def _exec(argv: tuple[str, ...], env: Mapping[str, str] | None,
                cwd: str | None) -> CheckResult:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=dict(env) if env is not None else None,
            cwd=cwd or None, start_new_session=True)
    except OSError as exc:
        return CheckResult(False, f"exec: cannot run {argv[0][:120]!r}: {_oserror(exc)}")
    head = bytearray()
    total = 0
    eof = False
    try:
        assert proc.stdout is not None  # noqa: S101 - stdout=PIPE
        while True:
            chunk = await proc.stdout.read(READ_CHUNK)
            if not chunk:
                eof = True
                break
            total += len(chunk)
            head += chunk[:MAX_MESSAGE_OUTPUT * 4 - len(head)]
            if total > MAX_EXEC_OUTPUT:
                return CheckResult(False, f"exec: printed more than {MAX_EXEC_OUTPUT} bytes; "
                                          "killed")
        code = await proc.wait()
    finally:
        # Timed out, printed too much or cancelled (or something it started still holds
        # the pipe): the whole group goes.
        if not eof or proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                await asyncio.shield(proc.wait())
    if code == 0:
        return CheckResult(True, f"exec: exit 0{_output(bytes(head))}")
    what = f"killed by signal {-code}" if code < 0 else f"exit {code}"
    return CheckResult(False, f"exec: {what}{_output(bytes(head))}")
