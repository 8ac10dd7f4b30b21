"""Agent configuration (`ai-agent --config FILE`): a frozen dataclass from TOML, validated
at start; errors name the key. Keys and defaults: docs/CONFIG.md (Agent).

    name = "agent-1"                     # default: this machine's host name
    grpc_listen = "0.0.0.0:3080"
    hub_address = "10.0.0.2:3000"        # register and heartbeat here (optional)
    hub_token_file = "/etc/backend-ai/hub.token"
    manager_address = "10.0.0.11:3082"   # this host's manager, told to the hub
    labels = { group = "edge" }
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from backendai.config_fields import (
    LOG_FORMATS,
    LOG_LEVELS,
    Table,
)
from backendai.errors import ConfigError, InvalidArgument
from backendai.listen import ListenAddress
from backendai.tls import ClientTLS, ServerTLS, load_toml
from backendai.validate import check_host_name, default_host_name


@dataclass(frozen=True, slots=True)
class AgentConfig:
    name: str
    grpc_listen: ListenAddress = field(
        default_factory=lambda: ListenAddress("0.0.0.0", 3080))  # noqa: S104 - the hub calls it
    auth_token_file: Path | None = None
    insecure_no_auth: bool = False
    hub_address: str = ""
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
    t = Table(load_toml(path))
    try:
        name = check_host_name(t.text("name") or default_host_name("agent"), "name")
    except InvalidArgument as exc:
        raise ConfigError(str(exc)) from None
    tls = t.table("tls")
    hub_tls = t.table("hub_tls")
    cfg = AgentConfig(
        name=name,
        grpc_listen=t.listen("grpc_listen", "0.0.0.0:3080"),
        auth_token_file=t.path("auth_token_file"),
        insecure_no_auth=t.flag("insecure_no_auth"),
        hub_address=t.address("hub_address"),
        hub_token_file=t.path("hub_token_file"),
        manager_address=t.address("manager_address"),
        advertise_address=t.address("advertise_address"),
        labels=t.labels("labels"),
        version=t.text("version"),
        heartbeat_interval=t.seconds("heartbeat_interval", 10.0, low=0.05, high=3600),
        reconnect_max=t.seconds("reconnect_max", 30.0, low=0.1, high=3600),
        disk_path=t.path("disk_path", absolute=True) or Path("/"),
        tls=ServerTLS.from_table(tls) if tls is not None else None,
        hub_tls=ClientTLS.from_table(hub_tls, "hub_tls") if hub_tls is not None else None,
        log_level=t.choice("log_level", LOG_LEVELS, "info"),
        log_format=t.choice("log_format", LOG_FORMATS, "auto"),
    )
    t.done()
    if not cfg.grpc_listen.is_loopback and cfg.auth_token_file is None \
            and not cfg.insecure_no_auth:
        raise ConfigError("auth_token_file: required when grpc_listen is not a loopback "
                          "address (or set insecure_no_auth = true)")
    if cfg.hub_address and not cfg.manager_address:
        raise ConfigError("manager_address: required with hub_address (the hub updates this "
                          "host through its manager)")
    return cfg
