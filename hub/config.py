"""Hub configuration (`ai-hub --config FILE`): frozen dataclasses from TOML, validated at
start; errors name the key. Keys and defaults are documented in docs/CONFIG.md (Hub).

    grpc_listen = "0.0.0.0:3000"
    http_listen = "127.0.0.1:3001"                       # dashboard, /api (JSON, WebSocket)
    http_tls = true                                      # ... over HTTPS with [tls]
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

from backendai.auth import TokenSpec
from backendai.config import (
    LOG_FORMATS,
    LOG_LEVELS,
    Table,
    load_toml,
    require_tls_for_https,
    require_token_off_loopback,
)
from backendai.errors import ConfigError
from backendai.events.config import (
    EventsConfig,
    SinkConfig,
    default_source,
    read_events,
    read_sinks,
)
from backendai.listen import ListenAddress
from backendai.tls import ClientTLS, ServerTLS
from hub.admission import AdmissionConfig, load_admission
from hub.store_config import HAConfig, StoreConfig, load_ha, load_store

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
    http_listen: ListenAddress = field(
        default_factory=lambda: ListenAddress("127.0.0.1", 3001))
    auth_token_file: Path | None = None
    auth_tokens: tuple[TokenSpec, ...] = ()  # `[[auth_tokens]]`: more named tokens, roles
    insecure_no_auth: bool = False
    manager_token_file: Path | None = None
    hosts: tuple[HostEntry, ...] = ()
    self_host: HostEntry | None = None
    version: str = ""
    heartbeat_interval: float = 10.0
    contact_interval: float = 5.0       # managers re-send their status this often when idle
    call_timeout: float = 10.0
    tls: ServerTLS | None = None
    http_tls: bool = False  # the HTTP listener on http_listen serves HTTPS with `[tls]` too
    manager_tls: ClientTLS | None = None
    log_level: str = "info"
    log_format: str = "auto"
    tick_seconds: float = 0.25
    store: StoreConfig = field(default_factory=StoreConfig)  # [store]: hub/store_config.py
    ha: HAConfig = field(default_factory=HAConfig)           # [ha]: several hubs, one leader
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)  # [admission]
    events: EventsConfig = field(default_factory=EventsConfig)  # [events]: backendai/events
    event_sinks: tuple[SinkConfig, ...] = ()                    # [[event_sinks]]
    metrics_open: bool = False  # GET /metrics without a token from anywhere


def _host(t: Table, role: str = "agent") -> HostEntry:
    """A `[[hosts]]` entry (`manager = "HOST:PORT"`) or `[self]`, the hub's own host
    (`manager_address`, named "hub" unless it says otherwise)."""
    entry = HostEntry(
        name=t.host_name("name", default="hub") if role == "hub" else t.host_name("name"),
        manager_address=t.address("manager" if role == "agent" else "manager_address"),
        labels=t.labels("labels"), service=t.text("service"), role=role)
    t.done()
    return entry


def _hosts(t: Table) -> list[HostEntry]:
    return [_host(h) for h in t.tables("hosts", most=MAX_HOSTS, defaults=HostEntry)]


def load(path: Path) -> HubConfig:
    t = Table(load_toml(path), defaults=HubConfig)
    state_dir = t.path("state_dir", absolute=True)
    hosts = _hosts(t)
    inventory = t.optional_path("inventory_file")
    if inventory is not None:
        if not inventory.is_absolute():
            inventory = path.parent / inventory
        inv = Table(load_toml(inventory), f"{inventory}:")
        hosts += _hosts(inv)
        inv.done()
    self_table = t.table("self", defaults=HostEntry)
    self_host = _host(self_table, role="hub") if self_table is not None else None
    names = [h.name for h in hosts] + ([self_host.name] if self_host else [])
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"hosts: duplicate host names {', '.join(dupes)}")
    if len(hosts) > MAX_HOSTS:
        raise ConfigError(f"hosts: at most {MAX_HOSTS}")
    auth_token_file = t.optional_path("auth_token_file", absolute=True)
    cfg = HubConfig(
        state_dir=state_dir,
        grpc_listen=t.listen("grpc_listen"),
        http_listen=t.listen("http_listen"),
        auth_token_file=auth_token_file,
        auth_tokens=t.auth_tokens(default_token=auth_token_file is not None),
        insecure_no_auth=t.flag("insecure_no_auth"),
        manager_token_file=t.optional_path("manager_token_file", absolute=True),
        hosts=tuple(hosts), self_host=self_host,
        version=t.version("version"),
        heartbeat_interval=t.number("heartbeat_interval", low=0.05, high=3600),
        contact_interval=t.number("contact_interval", low=1, high=3600),
        call_timeout=t.number("call_timeout", low=0.1, high=600),
        tick_seconds=t.number("tick_seconds", low=0.01, high=10),
        metrics_open=t.flag("metrics_open"),
        tls=t.tls_server("tls"),
        http_tls=t.flag("http_tls"),
        manager_tls=t.tls_client("manager_tls"),
        log_level=t.choice("log_level", LOG_LEVELS),
        log_format=t.choice("log_format", LOG_FORMATS),
        store=load_store(t.table("store", defaults=StoreConfig)),
        ha=load_ha(t.table("ha", defaults=HAConfig)),
        admission=load_admission(t.table("admission", defaults=AdmissionConfig)),
        # one name for every hub on a shared database (the history is theirs together)
        events=read_events(t.table("events", defaults=EventsConfig), source=default_source(
            self_host.name if self_host else "hub", "hub")),
        event_sinks=read_sinks(t),
    )
    t.done()
    require_tls_for_https(cfg.http_tls, cfg.tls)
    any_token = cfg.auth_token_file or (cfg.auth_tokens[0].file if cfg.auth_tokens else None)
    require_token_off_loopback({"grpc_listen": cfg.grpc_listen, "http_listen": cfg.http_listen},
                               any_token, cfg.insecure_no_auth)
    return cfg
