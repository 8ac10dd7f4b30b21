"""From the `[[services]]` tables as written to the services the manager supervises.

- `instances = N` makes NAME-1 ... NAME-N, each supervised on its own (seed 003's
  StartN). In `command`, `env` and the health check, `{instance}` becomes 1...N and
  `{port}` becomes `base_port + instance - 1`. Other braces are left as they are; a
  service without `instances` keeps `{instance}` and `{port}` literally.
- The manager-wide `[env]` goes under every service's own `env` (seed 003's
  SetGlobalEnv): a process then starts from the manager's environment (when
  `inherit_env`), then `[env]`, then the service's `env`, the later winning.

Errors name the `[[services]]` table the service came from (`services[2].base_port`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from backendai.errors import ConfigError
from backendai.validate import MAX_NAME_LEN, is_service_name

if TYPE_CHECKING:
    from manager.config import ServiceConfig

MAX_INSTANCES = 256
MAX_PORT = 65535


def substitute(text: str, instance: int, port: int) -> str:
    text = text.replace("{instance}", str(instance))
    return text.replace("{port}", str(port)) if port else text


def _uses_port(svc: ServiceConfig) -> str:
    """The key of the first place `{port}` is used, or ""."""
    if any("{port}" in a for a in svc.command):
        return "command"
    if any("{port}" in v for v in svc.env.values()):
        return "env"
    hc = svc.health_check
    if hc is not None and ("{port}" in hc.target or "{port}" in hc.body):
        return f"health.{hc.kind}"
    return ""


def _instance(svc: ServiceConfig, n: int) -> ServiceConfig:
    port = svc.base_port + n - 1 if svc.base_port is not None else 0
    hc = svc.health_check
    if hc is not None:
        hc = dataclasses.replace(
            hc, http=substitute(hc.http, n, port), tcp=substitute(hc.tcp, n, port),
            grpc=substitute(hc.grpc, n, port), body=substitute(hc.body, n, port),
            exec=tuple(substitute(a, n, port) for a in hc.exec))
    return dataclasses.replace(
        svc, name=f"{svc.name}-{n}", instance_of=svc.name, instance=n,
        command=tuple(substitute(a, n, port) for a in svc.command),
        env={k: substitute(v, n, port) for k, v in svc.env.items()},
        unit=f"{svc.name}-{n}.service" if svc.unit == f"{svc.name}.service" else svc.unit,
        health_check=hc)


def expand(services: Sequence[ServiceConfig],
           global_env: Mapping[str, str]) -> tuple[list[ServiceConfig], list[int]]:
    """The services to supervise, and for each the index of the table it came from."""
    out: list[ServiceConfig] = []
    origin: list[int] = []
    for i, written in enumerate(services):
        key = f"services[{i}]"
        svc = dataclasses.replace(written, env={**global_env, **written.env}) \
            if global_env else written
        count = svc.instances
        if svc.base_port is not None and count is None:
            raise ConfigError(f"{key}.base_port: only with instances")
        if count is not None and svc.backend != "process":
            raise ConfigError(f"{key}.instances: only for backend \"process\" (got "
                              f"{svc.backend!r})")
        if count is not None:
            used = _uses_port(svc)
            if used and svc.base_port is None:
                raise ConfigError(f"{key}.{used}: uses {{port}}, which needs base_port")
            if svc.base_port is not None and svc.base_port + count - 1 > MAX_PORT:
                raise ConfigError(f"{key}.base_port: {svc.base_port} + {count} instances "
                                  f"reaches port {svc.base_port + count - 1}, beyond "
                                  f"{MAX_PORT}")
            longest = f"{svc.name}-{count}"
            if len(longest) > MAX_NAME_LEN or not is_service_name(longest):
                raise ConfigError(f"{key}.instances: instance names like {longest!r} must "
                                  f"be at most {MAX_NAME_LEN} characters")
            members = [_instance(svc, n) for n in range(1, count + 1)]
        else:
            members = [svc]
        for member in members:
            if member.health_check is not None:
                from manager import health_config  # noqa: PLC0415 - only with a check

                health_config.check(member.health_check, f"{key}.health", dict(member.env))
            out.append(member)
            origin.append(i)
    return out, origin
