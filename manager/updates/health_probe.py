"""The update health gate (a service's `health`, manager/config.py `HealthGate`): the
service stays up for `min_healthy_time`, its configured probe passes within
`healthy_deadline`, and it reports the expected version.

Probes: gRPC health (`grpc.health.v1.Health/Check`, plus an optional `version_method`
called with an empty request whose response field 1 is the version), HTTP GET (2xx; a
JSON object body with "version" must equal the target), TCP connect, or a command (exit
0; run with the service's `env` plus AI_EXPECTED_VERSION; a JSON object on stdout with
"version" must match).

Which check the gate uses: the `health_probe` keys when `health_probe` is not "none"
(they can also check the version); else the service's `[services.health]` check when
it has one (the same check that watches it while it runs,
manager/supervision/health_probes.py); else none (the service only has to stay up).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

from backendai.channels import open_channel
from backendai.errors import BackendAIError
from backendai.v1 import manager_pb2 as pb
from manager.config import HealthGate
from manager.health_config import HealthCheck
from manager.supervision.health_probes import run_check

PROBE_TIMEOUT = 5.0
READY_FILE = "ready-file:"
INTERVAL = 0.2
MAX_BODY = 64 * 1024


class HealthFailed(BackendAIError):
    """The new release did not become healthy: the update rolls back."""


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """A service's health gate as probed, with the service's `env` (the command probe
    runs with it)."""

    gate: HealthGate
    env: Mapping[str, str] = field(default_factory=dict)
    check: HealthCheck | None = None  # `[services.health]`, used when health_probe is none
    cwd: str | None = None  # where an exec check runs

    @property
    def timeout(self) -> float:
        """One probe's timeout: PROBE_TIMEOUT, or less when the whole gate is shorter."""
        return min(PROBE_TIMEOUT, self.gate.healthy_deadline)

    @property
    def kind(self) -> str:
        """The probe in words: the health_probe, else "health check KIND", else none."""
        if self.gate.health_probe != "none" or self.check is None:
            return f"{self.gate.health_probe} probe"
        return f"{self.check.kind} health check"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    message: str = ""
    version: str | None = None    # the version the service reported, when it reports one


def resolve_target(target: str) -> str | None:
    """The address to probe. `ready-file:/PATH` names the JSON ready file the service
    writes once serving (`ai-hub`/`ai-agent --ready-file`); its "grpc" key is the address,
    so services listening on port 0 can be probed. None while there is no such file."""
    if not target.startswith(READY_FILE):
        return target
    try:
        data = json.loads(Path(target.removeprefix(READY_FILE)).read_text())
    except (OSError, ValueError):
        return None
    address = data.get("grpc") if isinstance(data, dict) else None
    return address if isinstance(address, str) and address else None


def _json_version(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(data, dict) and isinstance(data.get("version"), str):
        return str(data["version"])
    return None


async def probe_once(spec: ProbeSpec, expected: str) -> ProbeResult:
    try:
        async with asyncio.timeout(spec.timeout):
            match spec.gate.health_probe:
                case "grpc":
                    return await _grpc(spec)
                case "http":
                    return await asyncio.to_thread(_http, spec)
                case "tcp":
                    return await _tcp(spec)
                case "command":
                    return await _command(spec, expected)
                case _ if spec.check is not None:
                    env = {**os.environ, **spec.env}
                    result = await run_check(spec.check, env=env, cwd=spec.cwd)
                    return ProbeResult(result.ok, result.message)
                case _:
                    return ProbeResult(True)
    except TimeoutError:
        return ProbeResult(False, f"{spec.gate.health_probe} probe timed out after "
                                  f"{spec.timeout:g}s")


async def _grpc(spec: ProbeSpec) -> ProbeResult:
    gate = spec.gate
    target = resolve_target(gate.health_target)
    if target is None:
        ready_file = gate.health_target.removeprefix(READY_FILE)
        return ProbeResult(False, f"no address yet in {ready_file}")
    async with open_channel(target, tls=gate.health_tls) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString)
        try:
            resp = await check(health_pb2.HealthCheckRequest(service=""),
                               timeout=spec.timeout)
        except grpc.aio.AioRpcError as exc:
            return ProbeResult(False, f"gRPC health check failed: {exc.code().name}: "
                                      f"{(exc.details() or '')[:200]}")
        if resp.status != health_pb2.HealthCheckResponse.SERVING:
            return ProbeResult(False, "gRPC health says "
                               f"{health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)}")
        if not gate.health_version_method:
            return ProbeResult(True)
        call = channel.unary_unary(
            "/" + gate.health_version_method.lstrip("/"),
            request_serializer=lambda b: b,
            response_deserializer=pb.VersionReport.FromString)
        try:
            report = await call(b"", timeout=spec.timeout)
        except grpc.aio.AioRpcError as exc:
            return ProbeResult(False, f"{gate.health_version_method} failed: {exc.code().name}")
        return ProbeResult(True, version=report.version)


def _http(spec: ProbeSpec) -> ProbeResult:
    # urllib.request (with http.client, email, ssl) costs ~2 MB RSS: only http probes pay.
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    tls = spec.gate.health_tls
    req = urllib.request.Request(spec.gate.health_target,  # noqa: S310 - config-checked URL
                                 method="GET")
    try:
        context = None
        if tls is not None:
            import ssl  # noqa: PLC0415 - only https probes with health_tls need it

            ca = tls.ca.decode("ascii", "replace") if tls.ca is not None else None
            context = ssl.create_default_context(cadata=ca)
            if tls.cert_files is not None:  # the service wants mutual TLS
                context.load_cert_chain(*tls.cert_files)
        with urllib.request.urlopen(req, timeout=spec.timeout,  # noqa: S310
                                    context=context) as resp:
            body = resp.read(MAX_BODY)
            return ProbeResult(True, version=_json_version(body))
    except urllib.error.HTTPError as exc:
        exc.close()
        return ProbeResult(False, f"HTTP probe got status {exc.code}")
    except (urllib.error.URLError, OSError) as exc:
        return ProbeResult(False, f"HTTP probe failed: {getattr(exc, 'reason', exc)}")


async def _tcp(spec: ProbeSpec) -> ProbeResult:
    configured = spec.gate.health_target
    target = resolve_target(configured)
    if target is None:
        return ProbeResult(False, f"no address yet in {configured.removeprefix(READY_FILE)}")
    host, _, port = target.rpartition(":")
    try:
        _reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
    except (OSError, ValueError) as exc:
        return ProbeResult(False, f"TCP connect to {configured} failed: {exc}")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return ProbeResult(True)


async def _command(spec: ProbeSpec, expected: str) -> ProbeResult:
    env = {**os.environ, **spec.env, "AI_EXPECTED_VERSION": expected}
    try:
        proc = await asyncio.create_subprocess_exec(
            *spec.gate.health_command, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, env=env)
    except OSError as exc:
        return ProbeResult(False, f"health command cannot run: {exc}")
    try:
        out, _ = await proc.communicate()
    except asyncio.CancelledError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        return ProbeResult(False, f"health command exited {proc.returncode}")
    return ProbeResult(True, version=_json_version(out[:MAX_BODY]))


async def health_gate(spec: ProbeSpec, expected: str, *,
                      down_reason: Callable[[], str | None]) -> str:
    """Return a summary once healthy; raise HealthFailed when not within the deadline.

    `down_reason()` says why the service is not up (crashed, restarted), or None.
    """
    min_healthy_time, deadline = spec.gate.min_healthy_time, spec.gate.healthy_deadline
    started = time.monotonic()
    last = "no probe result yet"
    try:
        async with asyncio.timeout(deadline):
            while True:
                why = down_reason()
                if why is not None:
                    raise HealthFailed(why)
                result = await probe_once(spec, expected)
                if result.version is not None and result.version != expected:
                    raise HealthFailed(f"service reports version {result.version[:64]!r}, "
                                       f"expected {expected!r}")
                up_for = time.monotonic() - started
                if result.ok and up_for >= min_healthy_time:
                    why = down_reason()
                    if why is not None:
                        raise HealthFailed(why)
                    return f"healthy ({spec.kind}) after {up_for:.2f}s"
                if not result.ok:
                    last = result.message
                wait = INTERVAL if not result.ok else min(
                    INTERVAL, max(0.0, min_healthy_time - up_for))
                await asyncio.sleep(wait)
    except TimeoutError:
        raise HealthFailed(f"not healthy within {deadline:g}s: {last}") from None
