"""Hub configuration (`ai-hub --config FILE`): frozen dataclasses from TOML, validated at
start; errors name the key. Keys and defaults are documented in docs/CONFIG.md (Hub).

    grpc_listen = "0.0.0.0:3000"
    state_dir = "/var/lib/backend-ai/hub"
    auth_token_file = "/etc/backend-ai/hub.token"       # callers (aictl, agents) send it
    manager_token_file = "/etc/backend-ai/manager.token" # sent to managers
    inventory_file = "/etc/backend-ai/hosts.toml"        # [[hosts]] entries
    [self]                                               # the hub's own host
    manager_address = "127.0.0.1:3082"
    [[hosts]]
    name = "agent-1"
    manager = "10.0.0.11:3082"
    labels = { group = "edge", site = "berlin" }
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backendai.config_fields import (
    LOG_FORMATS,
    LOG_LEVELS,
    Table,
)
from backendai.errors import ConfigError, InvalidArgument
from backendai.listen import ListenAddress
from backendai.tls import ClientTLS, ServerTLS, load_toml
from backendai.validate import check_host_name

MAX_HOSTS = 100_000


@dataclass(frozen=True, slots=True)
class HostEntry:
    name: str
    manager_address: str
    labels: dict[str, str] = field(default_factory=dict)
    service: str = ""
    role: str = "agent"                 # "agent" | "hub"
    source: str = "inventory"           # "inventory" | "registered"


@dataclass(frozen=True, slots=True)
class HubConfig:
    state_dir: Path
    grpc_listen: ListenAddress = field(
        default_factory=lambda: ListenAddress("0.0.0.0", 3000))  # noqa: S104 - serves the fleet
    auth_token_file: Path | None = None
    insecure_no_auth: bool = False
    manager_token_file: Path | None = None
    hosts: tuple[HostEntry, ...] = ()
    self_host: HostEntry | None = None
    version: str = ""
    heartbeat_interval: float = 10.0
    call_timeout: float = 10.0
    tls: ServerTLS | None = None
    manager_tls: ClientTLS | None = None
    log_level: str = "info"
    log_format: str = "auto"
    tick_seconds: float = 0.25


def _host(table: Any, prefix: str, role: str = "agent") -> HostEntry:
    t = Table(table, prefix)
    try:
        name = check_host_name(t.text("name", "hub" if role == "hub" else ""), t.key("name"))
    except InvalidArgument as exc:
        raise ConfigError(str(exc)) from None
    address = t.address("manager" if role == "agent" else "manager_address")
    if not address:
        raise ConfigError(f"{t.key('manager' if role == 'agent' else 'manager_address')}: "
                          "required (\"HOST:PORT\" of the manager's gRPC)")
    entry = HostEntry(name=name, manager_address=address, labels=t.labels("labels"),
                      service=t.text("service"), role=role)
    t.done()
    return entry


def _hosts(items: Any, prefix: str) -> list[HostEntry]:
    if not isinstance(items, list):
        raise ConfigError(f"{prefix}: expected an array of tables ([[hosts]])")
    return [_host(item, f"{prefix}[{i}]") for i, item in enumerate(items)]


def load(path: Path) -> HubConfig:
    data = load_toml(path)
    t = Table(data)
    state_dir = t.path("state_dir", absolute=True)
    if state_dir is None:
        raise ConfigError("state_dir: required (absolute path)")
    hosts = _hosts(t.raw("hosts") or [], "hosts")
    inventory = t.path("inventory_file")
    if inventory is not None:
        if not inventory.is_absolute():
            inventory = path.parent / inventory
        inv = Table(load_toml(inventory), str(inventory))
        hosts += _hosts(inv.raw("hosts") or [], f"{inventory}: hosts")
        inv.done()
    self_table = t.table("self")
    self_host = _host(self_table, "self", role="hub") if self_table is not None else None
    names = [h.name for h in hosts] + ([self_host.name] if self_host else [])
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"hosts: duplicate host names {', '.join(dupes)}")
    if len(hosts) > MAX_HOSTS:
        raise ConfigError(f"hosts: at most {MAX_HOSTS}")
    tls = t.table("tls")
    manager_tls = t.table("manager_tls")
    cfg = HubConfig(
        state_dir=state_dir,
        grpc_listen=t.listen("grpc_listen", "0.0.0.0:3000"),
        auth_token_file=t.path("auth_token_file"),
        insecure_no_auth=t.flag("insecure_no_auth"),
        manager_token_file=t.path("manager_token_file"),
        hosts=tuple(hosts), self_host=self_host,
        version=t.text("version"),
        heartbeat_interval=t.seconds("heartbeat_interval", 10.0, low=0.05, high=3600),
        call_timeout=t.seconds("call_timeout", 10.0, low=0.1, high=600),
        tick_seconds=t.seconds("tick_seconds", 0.25, low=0.01, high=10),
        tls=ServerTLS.from_table(tls) if tls is not None else None,
        manager_tls=ClientTLS.from_table(manager_tls, "manager_tls")
        if manager_tls is not None else None,
        log_level=t.choice("log_level", LOG_LEVELS, "info"),
        log_format=t.choice("log_format", LOG_FORMATS, "auto"),
    )
    t.done()
    if not cfg.grpc_listen.is_loopback and cfg.auth_token_file is None \
            and not cfg.insecure_no_auth:
        raise ConfigError("auth_token_file: required when grpc_listen is not a loopback "
                          "address (or set insecure_no_auth = true)")
    return cfg
