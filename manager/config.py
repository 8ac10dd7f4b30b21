"""Manager configuration: frozen dataclasses loaded from TOML and validated at start.

Every key and its default is documented in docs/CONFIG.md. Unknown keys are errors that
name the key; so is every wrong type or value.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backendai.auth import TokenSpec
from backendai.config import (
    LOG_FORMATS,
    LOG_LEVELS,
    UNSET,
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
from backendai.validate import check_service_name, default_host_name
from manager import instances as service_instances
from manager import start_order

if TYPE_CHECKING:
    from backendai.tls import ClientTLS, ServerTLS
    from manager.health_config import HealthCheck

ROLES = ("agent", "hub")
BACKENDS = ("process", "systemd", "rcd")
RESTART_POLICIES = ("always", "on-failure", "never")
HEALTH_PROBES = ("none", "grpc", "http", "tcp", "command")
MAX_SERVICES = 1000
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the NUL
SYSTEMD_UNIT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9:_.@\\-]{0,240}\.service")


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How a service is started, stopped and restarted: the pure supervisor's policy
    (manager/supervision/supervisor.py), also followed by the rcd backend."""

    start_secs: float = 1.0
    stop_signal: signal.Signals = signal.SIGTERM
    stop_timeout: float = 10.0
    restart: str = "always"
    success_exit_codes: tuple[int, ...] = (0,)
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    backoff_jitter: float = 0.1
    crash_loop_max: int = 5
    crash_loop_window: float = 60.0


@dataclass(frozen=True, slots=True)
class UpdateSource:
    """Where a service's releases come from and the limits on fetching and unpacking
    them (manager/updates/fetch.py, extract.py, updater.py)."""

    package_url: str = ""                 # a template with {version}
    package_credentials_file: str = ""
    package_public_key: str = ""
    package_ca_file: str = ""
    package_client_cert: str = ""
    package_client_key: str = ""
    package_max_bytes: int = 1 << 30
    download_timeout: float = 30.0
    download_retries: int = 3
    download_deadline: float = 3600.0
    extract_max_bytes: int = 4 << 30
    extract_max_files: int = 100_000
    keep_releases: int = 3


@dataclass(frozen=True, slots=True)
class HealthGate:
    """What a new release must pass before an update commits
    (manager/updates/health_probe.py)."""

    health_probe: str = "none"
    health_target: str = ""
    health_command: tuple[str, ...] = ()
    health_version_method: str = ""
    min_healthy_time: float = 5.0
    healthy_deadline: float = 60.0
    health_tls: ClientTLS | None = None  # `[services.health_tls]`: the probe speaks TLS


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """One `[[services]]` table. Its keys are flat in TOML; the restart policy, the
    update source and the health gate are the parts their consumers take whole."""

    name: str
    command: tuple[str, ...] = ()
    package: str = ""                     # the loader's default: the name
    backend: str = "process"
    working_directory: str = ""
    install_root: str = ""                # releases/ and current/ (updates)
    version: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    inherit_env: bool = True
    user: str = ""
    group: str = ""
    autostart: bool = True
    log_max_bytes: int = 10 * 1024 * 1024
    log_backups: int = 5
    # systemd/rcd backends (manager/supervision/systemd_unit.py, rcd_unit.py)
    unit: str = ""                        # the loader's default: NAME.service
    rc_script: str = ""                   # the loader's default: /etc/rc.d/rc.NAME
    systemd_scope: str = "system"
    log_file: str = ""                    # the loader's default for rcd: /var/log/NAME.log
    journal_directory: str = ""
    status_interval: float = 1.0
    call_timeout: float = 30.0
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    update: UpdateSource = field(default_factory=UpdateSource)
    health: HealthGate = field(default_factory=HealthGate)
    # supervision (issue 15): manager/instances.py, manager/start_order.py,
    # manager/health_config.py
    instances: int | None = None          # None: one service, NAME; N: NAME-1 ... NAME-N
    base_port: int | None = None          # {port} of instance i: base_port + i - 1
    after: tuple[str, ...] = ()           # start after these (instances resolved)
    health_check: HealthCheck | None = None  # `[services.health]`
    instance_of: str = ""                 # set on NAME-i: "NAME"
    instance: int = 0                     # set on NAME-i: i


@dataclass(frozen=True, slots=True)
class HubLink:
    """`[hub]`: register this host with a hub (manager/hub_registration.py)."""

    name: str                         # this host's name in the fleet
    address: str = ""                 # the hub's gRPC "HOST:PORT" ...
    addresses: tuple[str, ...] = ()   # ... or several hubs: the leading one is used
    token_file: Path | None = None    # the hub's bearer token
    advertise_address: str = ""       # how the hub reaches this manager; "": grpc_listen
    labels: Mapping[str, str] = field(default_factory=dict)
    register_interval: float = 60.0   # re-register this often (a hub that lost its state)
    tls: ClientTLS | None = None      # `[hub.tls]`: TLS to the hub

    @property
    def hubs(self) -> tuple[str, ...]:
        """The hubs to register with, in order (`addresses`, or the one `address`)."""
        return self.addresses or (self.address,)


@dataclass(frozen=True, slots=True)
class ManagerConfig:
    state_dir: Path
    services: tuple[ServiceConfig, ...]
    role: str = "agent"
    # loopback by default, a hub manager too (seeds: "localhost only for security")
    http_listen: ListenAddress = field(default_factory=lambda: ListenAddress("127.0.0.1", 3081))
    grpc_listen: ListenAddress = field(default_factory=lambda: ListenAddress("127.0.0.1", 3082))
    auth_token_file: Path | None = None
    auth_tokens: tuple[TokenSpec, ...] = ()  # `[[auth_tokens]]`: more named tokens, roles
    insecure_no_auth: bool = False
    log_level: str = "info"
    log_format: str = "auto"
    tls: ServerTLS | None = None  # `[tls]`: the gRPC listener serves TLS / mutual TLS
    http_tls: bool = False  # the HTTP API on http_listen serves HTTPS with `[tls]` too
    grpc_socket: Path | None = None  # also serve gRPC on this unix socket (mode 0600)
    grpc_max_calls: int = 64  # gRPC calls + streams served at once (one thread each)
    metrics_open: bool = False  # GET /metrics without a token from anywhere
    hub: HubLink | None = None
    events: EventsConfig = field(default_factory=EventsConfig)  # `[events]`
    event_sinks: tuple[SinkConfig, ...] = ()  # `[[event_sinks]]`
    source: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)  # `[env]`: under every service's

    @property
    def primary(self) -> ServiceConfig:
        return self.services[0]

    def service(self, name: str) -> ServiceConfig | None:
        for svc in self.services:
            if svc.name == name:
                return svc
        return None

    def members(self, name: str) -> tuple[ServiceConfig, ...]:
        """The instances of a service with `instances` (NAME-1 ... NAME-N), else the
        service of that name alone; () when there is neither."""
        found = tuple(s for s in self.services if s.instance_of == name)
        if found:
            return found
        svc = self.service(name)
        return (svc,) if svc is not None else ()

    def graph(self) -> dict[str, tuple[str, ...]]:
        """Service name -> the services it starts after (manager/start_order.py)."""
        return {s.name: s.after for s in self.services}


def _restart_policy(t: Table) -> RestartPolicy:
    policy = RestartPolicy(
        start_secs=t.number("start_secs", low=0.0, high=3600.0),
        stop_signal=t.signal_name("stop_signal"),
        stop_timeout=t.number("stop_timeout", low=0.0, high=3600.0),
        restart=t.choice("restart", RESTART_POLICIES),
        success_exit_codes=t.exit_codes("success_exit_codes"),
        backoff_initial=t.number("backoff_initial", low=0.0, high=3600.0),
        backoff_max=t.number("backoff_max", low=0.0, high=86400.0),
        backoff_jitter=t.number("backoff_jitter", low=0.0, high=1.0),
        crash_loop_max=t.integer("crash_loop_max", low=0, high=1_000_000),
        crash_loop_window=t.number("crash_loop_window", low=0.0, high=86400.0))
    if policy.backoff_max < policy.backoff_initial:
        raise ConfigError(f"{t.key('backoff_max')}: must be >= backoff_initial")
    return policy


def _update_source(t: Table) -> UpdateSource:
    source = UpdateSource(
        package_url=t.text("package_url"),
        package_credentials_file=t.text("package_credentials_file", absolute_path=True),
        package_public_key=t.text("package_public_key", absolute_path=True),
        package_ca_file=t.text("package_ca_file", absolute_path=True),
        package_client_cert=t.text("package_client_cert", absolute_path=True),
        package_client_key=t.text("package_client_key", absolute_path=True),
        package_max_bytes=t.integer("package_max_bytes", low=1024, high=1 << 40),
        download_timeout=t.number("download_timeout", low=0.1, high=3600.0),
        download_retries=t.integer("download_retries", low=0, high=100),
        download_deadline=t.number("download_deadline", low=1.0, high=7 * 86400.0),
        extract_max_bytes=t.integer("extract_max_bytes", low=1024, high=1 << 40),
        extract_max_files=t.integer("extract_max_files", low=1, high=10_000_000),
        keep_releases=t.integer("keep_releases", low=2, high=1000))
    url = source.package_url
    if url:
        if "{version}" not in url:
            raise ConfigError(f"{t.key('package_url')}: must contain the {{version}} "
                              "placeholder")
        if not re.match(r"(https?|file)://", url):
            raise ConfigError(f"{t.key('package_url')}: must start with http://, https:// "
                              "or file://")
        if "@" in url.split("/")[2]:
            raise ConfigError(f"{t.key('package_url')}: must not hold credentials; use "
                              "package_credentials_file")
    if bool(source.package_client_cert) != bool(source.package_client_key):
        raise ConfigError(f"{t.key('package_client_cert')}: package_client_cert and "
                          "package_client_key go together")
    return source


def _health_gate(t: Table) -> HealthGate:
    gate = HealthGate(
        health_probe=t.choice("health_probe", HEALTH_PROBES),
        health_target=t.text("health_target", max_len=2048),
        health_command=t.argv("health_command"),
        health_version_method=t.text("health_version_method", max_len=256),
        min_healthy_time=t.number("min_healthy_time", low=0.0, high=3600.0),
        healthy_deadline=t.number("healthy_deadline", low=0.1, high=86400.0),
        health_tls=t.tls_client("health_tls"))
    probe, target = gate.health_probe, gate.health_target
    if probe in ("grpc", "http", "tcp") and not target:
        raise ConfigError(f"{t.key('health_target')}: required for health_probe {probe!r}")
    if probe == "http" and not re.match(r"https?://", target):
        raise ConfigError(f"{t.key('health_target')}: must be an http:// or https:// URL")
    if probe == "command" and not gate.health_command:
        raise ConfigError(f"{t.key('health_command')}: required for health_probe \"command\"")
    tls = gate.health_tls
    if tls is not None:
        if probe not in ("grpc", "http"):
            raise ConfigError(f"{t.key('health_tls')}: only the grpc and http probes speak "
                              "TLS")
        if probe == "http" and (not target.startswith("https://") or tls.server_name):
            raise ConfigError(f"{t.key('health_tls')}: the http probe needs an https:// "
                              "health_target and takes no server_name")
    if gate.health_version_method and (
            probe != "grpc"
            or not re.fullmatch(r"[A-Za-z0-9_.]+/[A-Za-z0-9_]+", gate.health_version_method)):
        raise ConfigError(f"{t.key('health_version_method')}: must be "
                          "'package.Service/Method' and needs health_probe = \"grpc\"")
    return gate


def _service(t: Table) -> ServiceConfig:
    name = t.service_name("name")
    backend = t.choice("backend", BACKENDS)
    svc = ServiceConfig(
        name=name,
        command=t.argv("command"),
        package=t.text("package", default=name),
        backend=backend,
        working_directory=t.text("working_directory"),
        install_root=t.text("install_root", absolute_path=True),
        version=t.version("version"),
        env=t.env("env"),
        inherit_env=t.flag("inherit_env"),
        user=t.text("user", max_len=64),
        group=t.text("group", max_len=64),
        autostart=t.flag("autostart"),
        log_max_bytes=t.integer("log_max_bytes", low=4096, high=1 << 40),
        log_backups=t.integer("log_backups", low=0, high=1000),
        unit=t.text("unit", max_len=256, default=f"{name}.service"),
        rc_script=t.text("rc_script", absolute_path=True, default=f"/etc/rc.d/rc.{name}"),
        systemd_scope=t.choice("systemd_scope", ("system", "user")),
        log_file=t.text("log_file", absolute_path=True,
                        default=f"/var/log/{name}.log" if backend == "rcd" else UNSET),
        journal_directory=t.text("journal_directory", absolute_path=True),
        status_interval=t.number("status_interval", low=0.05, high=3600.0),
        call_timeout=t.number("call_timeout", low=0.1, high=3600.0),
        policy=_restart_policy(t.part(RestartPolicy)),
        update=_update_source(t.part(UpdateSource)),
        health=_health_gate(t.part(HealthGate)),
        instances=t.integer("instances", low=1, high=service_instances.MAX_INSTANCES),
        base_port=t.integer("base_port", low=1, high=service_instances.MAX_PORT),
        after=t.custom("after", "a list of service names", lambda v: _after(v, t)),
    )
    if "health" in t.data:  # loaded only where a service has a health check
        from manager.health_config import HealthCheck, read_health_check  # noqa: PLC0415

        health = t.table("health", defaults=HealthCheck)
        if health is not None:
            svc = replace(svc, health_check=read_health_check(health))
    t.done()
    if backend == "process" and not svc.command:
        raise ConfigError(f"{t.key('command')}: required for backend \"process\"")
    if svc.update.package_url and not svc.install_root:
        raise ConfigError(f"{t.key('install_root')}: required with package_url")
    if svc.working_directory and not svc.install_root and not Path(
            svc.working_directory).is_absolute():
        raise ConfigError(f"{t.key('working_directory')}: must be absolute without "
                          "install_root")
    if backend == "systemd" and not SYSTEMD_UNIT_RE.fullmatch(svc.unit):
        raise ConfigError(f"{t.key('unit')}: must be a systemd service name like "
                          f"\"ai-agent.service\", got {svc.unit!r}")
    if backend == "rcd" and not svc.rc_script:
        raise ConfigError(f"{t.key('rc_script')}: must be an absolute path")
    return svc


def _after(value: Any, t: Table) -> tuple[str, ...]:
    key = t.key("after")
    if not isinstance(value, list) or len(value) > MAX_SERVICES:
        raise ConfigError(f"{key}: must be a list of service names")
    names = tuple(check_service_name(v, key) for v in value)
    if len(set(names)) != len(names):
        raise ConfigError(f"{key}: names a service twice")
    return names


def _supervised(raw: list[ServiceConfig],
                global_env: Mapping[str, str]) -> tuple[ServiceConfig, ...]:
    """The services as supervised: instances expanded, [env] applied, names unique,
    `after` resolved and free of cycles (manager/instances.py, start_order.py)."""
    services, origin = service_instances.expand(raw, global_env)
    if len(services) > MAX_SERVICES:
        over = origin[MAX_SERVICES]
        raise ConfigError(f"services[{over}].instances: more than {MAX_SERVICES} services "
                          "in all")
    names = [s.name for s in services]
    seen: set[str] = set()
    for svc, i in zip(services, origin, strict=True):
        if svc.name in seen:
            what = "instance" if svc.instance_of else "service"
            raise ConfigError(f"services[{i}].name: duplicate {what} name {svc.name!r}")
        seen.add(svc.name)
    groups: dict[str, list[str]] = {}
    for svc in services:
        if svc.instance_of:
            groups.setdefault(svc.instance_of, []).append(svc.name)
    for group, i in ((s.instance_of, n) for s, n in zip(services, origin, strict=True)):
        if group and group in seen:
            raise ConfigError(f"services[{i}].name: {group!r} is both a service and a "
                              "service with instances")
    resolved = []
    for svc, i in zip(services, origin, strict=True):
        after, missing = start_order.resolve(svc.after, names, groups)
        if missing:
            raise ConfigError(f"services[{i}].after: no service named {missing!r}")
        resolved.append(replace(svc, after=tuple(after)))
    start_order.check({s.name: s.after for s in resolved},
                      {s.name: f"services[{i}].after" for s, i in
                       zip(resolved, origin, strict=True)})
    return tuple(resolved)


def _hub_link(t: Table) -> HubLink:
    one = t.address("address")
    several = t.addresses("addresses")
    if one and several:
        raise ConfigError(f"{t.key('addresses')}: set address or addresses, not both")
    if not one and not several:
        raise ConfigError(f"{t.key('address')}: required (\"HOST:PORT\"), or "
                          f"{t.key('addresses')} for several hubs")
    link = HubLink(
        address=one, addresses=several,
        name=t.host_name("name", default=default_host_name("host")),
        token_file=t.optional_path("token_file", absolute=True),
        advertise_address=t.address("advertise_address"),
        labels=t.labels("labels"),
        register_interval=t.number("register_interval", low=1.0, high=86400.0),
        tls=t.tls_client("tls"))
    t.done()
    return link


def parse(data: Mapping[str, Any], source: Path | None = None) -> ManagerConfig:
    """Validate a decoded TOML document. Raises ConfigError naming the key."""
    t = Table(data, defaults=ManagerConfig)
    state_dir = t.path("state_dir", absolute=True)
    role = t.choice("role", ROLES)
    http_listen = t.listen("http_listen")
    grpc_listen = t.listen("grpc_listen")
    socket_path = t.optional_path("grpc_socket", absolute=True)
    if socket_path is not None and len(bytes(socket_path)) > MAX_SOCKET_PATH:
        raise ConfigError(f"grpc_socket: must be an absolute path of at most "
                          f"{MAX_SOCKET_PATH} bytes, got {str(socket_path)[:120]!r}")
    hub = t.table("hub", defaults=HubLink)
    global_env = t.env("env")
    raw = [_service(s) for s in t.tables("services", most=MAX_SERVICES, required=True,
                                         defaults=ServiceConfig)]
    auth_token_file = t.optional_path("auth_token_file", absolute=True)
    hub_link = _hub_link(hub) if hub is not None else None
    host = hub_link.name if hub_link is not None else default_host_name("host")
    cfg = ManagerConfig(
        state_dir=state_dir,
        services=_supervised(raw, global_env),
        env=global_env,
        role=role, http_listen=http_listen, grpc_listen=grpc_listen,
        auth_token_file=auth_token_file,
        auth_tokens=t.auth_tokens(default_token=auth_token_file is not None),
        insecure_no_auth=t.flag("insecure_no_auth"),
        log_level=t.choice("log_level", LOG_LEVELS),
        log_format=t.choice("log_format", LOG_FORMATS),
        tls=t.tls_server("tls"),
        http_tls=t.flag("http_tls"),
        grpc_socket=socket_path,
        grpc_max_calls=t.integer("grpc_max_calls", low=4, high=4096),
        metrics_open=t.flag("metrics_open"),
        hub=hub_link,
        events=read_events(t.table("events", defaults=EventsConfig),
                           source=default_source(host, f"{role}-manager")),
        event_sinks=read_sinks(t),
        source=source)
    t.done()
    require_tls_for_https(cfg.http_tls, cfg.tls)
    any_token = cfg.auth_token_file or (cfg.auth_tokens[0].file if cfg.auth_tokens else None)
    require_token_off_loopback({"http_listen": http_listen, "grpc_listen": grpc_listen},
                               any_token, cfg.insecure_no_auth)
    return cfg


def load(path: Path) -> ManagerConfig:
    """Read and validate a TOML config file."""
    return parse(load_toml(path), source=path)
