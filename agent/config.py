"""Agent configuration (`ai-agent --config FILE`): a frozen dataclass from TOML, validated
at start; errors name the key. Keys and defaults: docs/CONFIG.md (Agent).

    name = "agent-1"                     # default: this machine's host name
    grpc_listen = "0.0.0.0:3080"
    hub_address = "10.0.0.2:3000"        # register and heartbeat here (optional); a list
                                         # of hubs: the leading one, failing over
    hub_token_file = "/etc/backend-ai/hub.token"
    manager_address = "10.0.0.11:3082"   # this host's manager, told to the hub
    labels = { group = "edge" }
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from backendai.config import (
    LOG_FORMATS,
    LOG_LEVELS,
    Table,
    load_toml,
    require_token_off_loopback,
)
from backendai.errors import ConfigError
from backendai.listen import ListenAddress
from backendai.tls import ClientTLS, ServerTLS
from backendai.validate import default_host_name


@dataclass(frozen=True, slots=True)
class AgentConfig:
    name: str
    grpc_listen: ListenAddress = field(
        default_factory=lambda: ListenAddress("0.0.0.0", 3080))  # noqa: S104 - the hub calls it
    auth_token_file: Path | None = None
    insecure_no_auth: bool = False
    hub_address: tuple[str, ...] = ()   # one hub, or several (the leader is used)
    hub_token_file: Path | None = None
    manager_address: str = ""
    advertise_address: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    version: str = ""
    heartbeat_interval: float = 10.0
    reconnect_max: float = 30.0
    disk_path: Path = Path("/")
    tls: ServerTLS | None = None
    hub_tls: ClientTLS | None = None
    log_level: str = "info"
    log_format: str = "auto"


def load(path: Path) -> AgentConfig:
    t = Table(load_toml(path), defaults=AgentConfig)
    cfg = AgentConfig(
        name=t.host_name("name", default=default_host_name("agent")),
        grpc_listen=t.listen("grpc_listen"),
        auth_token_file=t.optional_path("auth_token_file", absolute=True),
        insecure_no_auth=t.flag("insecure_no_auth"),
        hub_address=t.addresses("hub_address"),
        hub_token_file=t.optional_path("hub_token_file", absolute=True),
        manager_address=t.address("manager_address"),
        advertise_address=t.address("advertise_address"),
        labels=t.labels("labels"),
        version=t.version("version"),
        heartbeat_interval=t.number("heartbeat_interval", low=0.05, high=3600),
        reconnect_max=t.number("reconnect_max", low=0.1, high=3600),
        disk_path=t.path("disk_path", absolute=True),
        tls=t.tls_server("tls"),
        hub_tls=t.tls_client("hub_tls"),
        log_level=t.choice("log_level", LOG_LEVELS),
        log_format=t.choice("log_format", LOG_FORMATS),
    )
    t.done()
    require_token_off_loopback({"grpc_listen": cfg.grpc_listen}, cfg.auth_token_file,
                               cfg.insecure_no_auth)
    if cfg.hub_address and not cfg.manager_address:
        raise ConfigError("manager_address: required with hub_address (the hub updates this "
                          "host through its manager)")
    return cfg
