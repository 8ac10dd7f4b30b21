"""Manager configuration: frozen dataclasses loaded from TOML and validated at start.

Every key and its default is documented in docs/CONFIG.md. Unknown keys are errors that
name the key; so is every wrong type or value.
"""

from __future__ import annotations

import re
import signal
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from backendai.config_fields import Table
from backendai.errors import ConfigError, InvalidArgument
from backendai.listen import ListenAddress
from backendai.tls import ClientTLS, ServerTLS
from backendai.validate import (
    SERVICE_NAME_RE,
    check_env,
    check_host_name,
    default_host_name,
)

ROLES = ("agent", "hub")
BACKENDS = ("process", "systemd", "rcd")
RESTART_POLICIES = ("always", "on-failure", "never")
HEALTH_PROBES = ("none", "grpc", "http", "tcp", "command")
MAX_CONFIG_BYTES = 1 << 20
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the NUL

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    name: str
    command: tuple[str, ...] = ()
    package: str = ""
    backend: str = "process"
    working_directory: str = ""
    install_root: str = ""
    package_url: str = ""
    version: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    inherit_env: bool = True
    user: str = ""
    group: str = ""
    stop_signal: signal.Signals = signal.SIGTERM
    stop_timeout: float = 10.0
    start_secs: float = 1.0
    autostart: bool = True
    restart: str = "always"
    success_exit_codes: tuple[int, ...] = (0,)
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    backoff_jitter: float = 0.1
    crash_loop_max: int = 5
    crash_loop_window: float = 60.0
    log_max_bytes: int = 10 * 1024 * 1024
    log_backups: int = 5
    unit: str = ""
    rc_script: str = ""
    systemd_scope: str = "system"  # systemd/rcd backends (manager/systemd_unit.py, rcd_unit.py)
    log_file: str = ""
    journal_directory: str = ""
    status_interval: float = 1.0
    call_timeout: float = 30.0
    keep_releases: int = 3
    # updates (manager/updater.py; docs/CONFIG.md "Updates")
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
    health_probe: str = "none"
    health_target: str = ""
    health_command: tuple[str, ...] = ()
    health_version_method: str = ""
    min_healthy_time: float = 5.0
    healthy_deadline: float = 60.0
    health_tls: ClientTLS | None = None  # `[services.health_tls]`: the probe speaks TLS


@dataclass(frozen=True, slots=True)
class HubLink:
    """`[hub]`: register this host with a hub (manager/hub_registration.py)."""

    address: str                      # the hub's gRPC "HOST:PORT"
    name: str                         # this host's name in the fleet
    token_file: Path | None = None    # the hub's bearer token
    advertise_address: str = ""       # how the hub reaches this manager; "": grpc_listen
    labels: Mapping[str, str] = field(default_factory=dict)
    register_interval: float = 60.0   # re-register this often (a hub that lost its state)
    tls: ClientTLS | None = None      # `[hub.tls]`: TLS to the hub


@dataclass(frozen=True, slots=True)
class ManagerConfig:
    role: str
    http_listen: ListenAddress
    grpc_listen: ListenAddress
    state_dir: Path
    services: tuple[ServiceConfig, ...]
    auth_token_file: Path | None = None
    insecure_no_auth: bool = False
    log_level: str = "info"
    log_format: str = "auto"
    tls: ServerTLS | None = None  # `[tls]`: the gRPC listener serves TLS / mutual TLS
    grpc_socket: Path | None = None  # also serve gRPC on this unix socket (mode 0600)
    grpc_max_calls: int = 64  # gRPC calls + streams served at once (one thread each)
    hub: HubLink | None = None
    source: Path | None = None

    @property
    def primary(self) -> ServiceConfig:
        return self.services[0]

    def service(self, name: str) -> ServiceConfig | None:
        for svc in self.services:
            if svc.name == name:
                return svc
        return None


class _Table:
    """Typed reads from one TOML table, each error naming the full key."""

    def __init__(self, data: Mapping[str, Any], prefix: str) -> None:
        self.data = data
        self.prefix = prefix
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def get(self, name: str, kind: type[T] | tuple[type, ...], default: T, what: str) -> T:
        self.seen.add(name)
        if name not in self.data:
            return default
        value = self.data[name]
        # bool is an int in Python; never accept one for the other.
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
            raise ConfigError(f"{self.key(name)}: must be {what}, got {value!r}")
        return value  # type: ignore[return-value]

    def number(self, name: str, default: float, *, minimum: float, maximum: float) -> float:
        value = self.get(name, (int, float), default, "a number")
        if not minimum <= float(value) <= maximum:
            raise ConfigError(f"{self.key(name)}: must be between {minimum} and {maximum}, "
                              f"got {value!r}")
        return float(value)

    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        value = self.get(name, int, default, "an integer")
        if not minimum <= value <= maximum:
            raise ConfigError(f"{self.key(name)}: must be between {minimum} and {maximum}, "
                              f"got {value!r}")
        return value

    def string(self, name: str, default: str, *, max_len: int = 4096) -> str:
        value = self.get(name, str, default, "a string")
        if len(value) > max_len or "\x00" in value:
            raise ConfigError(f"{self.key(name)}: too long or contains NUL")
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.string(name, default)
        if value not in choices:
            raise ConfigError(f"{self.key(name)}: must be one of {', '.join(choices)}, "
                              f"got {value!r}")
        return value

    def converted(self, name: str, default: T, convert: Callable[[Any], T], what: str) -> T:
        self.seen.add(name)
        if name not in self.data:
            return default
        try:
            return convert(self.data[name])
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"{self.key(name)}: must be {what}: {exc}") from None

    def tls_client(self, name: str) -> ClientTLS | None:
        self.seen.add(name)
        if name not in self.data:
            return None
        return ClientTLS.from_table(self.data[name], self.key(name))

    def tls_server(self, name: str) -> ServerTLS | None:
        self.seen.add(name)
        if name not in self.data:
            return None
        return ServerTLS.from_table(self.data[name], self.key(name))

    def reject_unknown(self) -> None:
        for name in self.data:
            if name not in self.seen:
                raise ConfigError(f"{self.key(name)}: unknown key")


def _listen(value: Any) -> ListenAddress:
    if not isinstance(value, str):
        raise TypeError(f"got {value!r}")
    return ListenAddress.parse(value)


def _signal(value: Any) -> signal.Signals:
    if not isinstance(value, str):
        raise TypeError(f"got {value!r}")
    name = value.upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    if name not in signal.Signals.__members__:
        raise ValueError(f"unknown signal {value!r}")
    return signal.Signals[name]


def _command(value: Any) -> tuple[str, ...]:
    if (not isinstance(value, list) or not value
            or not all(isinstance(v, str) and v and "\x00" not in v for v in value)):
        raise TypeError("a non-empty list of non-empty strings")
    if len(value) > 1000:
        raise ValueError("at most 1000 arguments")
    return tuple(value)


def _env(value: Any) -> dict[str, str]:
    try:
        return check_env(value, "env")
    except InvalidArgument as exc:
        raise ValueError(str(exc).removeprefix("env: ")) from None


def _exit_codes(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value):
        raise TypeError("a list of integers 0-255")
    return tuple(value)


SYSTEMD_UNIT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:_.@\\-]{0,240}\.service$")


def _check_host_keys(svc: ServiceConfig, prefix: str) -> None:
    """The systemd and rcd backends' keys (names that become argv must not be options)."""
    if svc.backend == "systemd" and not SYSTEMD_UNIT_RE.fullmatch(svc.unit):
        raise ConfigError(f"{prefix}unit: must be a systemd service name like "
                          f"\"ai-agent.service\", got {svc.unit!r}")
    if svc.backend == "rcd" and not Path(svc.rc_script).is_absolute():
        raise ConfigError(f"{prefix}rc_script: must be an absolute path")
    if svc.log_file and not Path(svc.log_file).is_absolute():
        raise ConfigError(f"{prefix}log_file: must be an absolute path")
    if svc.journal_directory and not Path(svc.journal_directory).is_absolute():
        raise ConfigError(f"{prefix}journal_directory: must be an absolute path")


def _service(data: Any, index: int, state_dir: Path) -> ServiceConfig:
    prefix = f"services[{index}]."
    if not isinstance(data, dict):
        raise ConfigError(f"services[{index}]: must be a table")
    t = _Table(data, prefix)
    if "name" not in data:
        raise ConfigError(f"{prefix}name: required")
    name = t.string("name", "")
    if not SERVICE_NAME_RE.fullmatch(name):
        raise ConfigError(f"{prefix}name: must match {SERVICE_NAME_RE.pattern}, got {name!r}")
    backend = t.choice("backend", "process", BACKENDS)
    no_command: tuple[str, ...] = ()
    command = t.converted("command", no_command, _command, "a non-empty list of strings")
    if backend == "process" and not command:
        raise ConfigError(f"{prefix}command: required for backend \"process\"")
    svc = ServiceConfig(
        name=name,
        command=command,
        backend=backend,
        package=t.string("package", name),
        working_directory=t.string("working_directory", ""),
        install_root=t.string("install_root", ""),
        package_url=t.string("package_url", ""),
        version=t.string("version", "", max_len=128),
        env=t.converted("env", {}, _env, "a table of NAME = \"value\""),
        inherit_env=t.get("inherit_env", bool, True, "true or false"),
        user=t.string("user", "", max_len=64),
        group=t.string("group", "", max_len=64),
        stop_signal=t.converted("stop_signal", signal.SIGTERM, _signal, "a signal name"),
        stop_timeout=t.number("stop_timeout", 10.0, minimum=0.0, maximum=3600.0),
        start_secs=t.number("start_secs", 1.0, minimum=0.0, maximum=3600.0),
        autostart=t.get("autostart", bool, True, "true or false"),
        restart=t.choice("restart", "always", RESTART_POLICIES),
        success_exit_codes=t.converted("success_exit_codes", (0,), _exit_codes,
                                       "a list of exit codes"),
        backoff_initial=t.number("backoff_initial", 1.0, minimum=0.0, maximum=3600.0),
        backoff_max=t.number("backoff_max", 30.0, minimum=0.0, maximum=86400.0),
        backoff_jitter=t.number("backoff_jitter", 0.1, minimum=0.0, maximum=1.0),
        crash_loop_max=t.integer("crash_loop_max", 5, minimum=0, maximum=1_000_000),
        crash_loop_window=t.number("crash_loop_window", 60.0, minimum=0.0, maximum=86400.0),
        log_max_bytes=t.integer("log_max_bytes", 10 * 1024 * 1024, minimum=4096,
                                maximum=1 << 40),
        log_backups=t.integer("log_backups", 5, minimum=0, maximum=1000),
        unit=t.string("unit", f"{name}.service", max_len=256),
        rc_script=t.string("rc_script", f"/etc/rc.d/rc.{name}"),
        systemd_scope=t.choice("systemd_scope", "system", ("system", "user")),
        log_file=t.string("log_file", f"/var/log/{name}.log" if backend == "rcd" else ""),
        journal_directory=t.string("journal_directory", ""),
        status_interval=t.number("status_interval", 1.0, minimum=0.05, maximum=3600.0),
        call_timeout=t.number("call_timeout", 30.0, minimum=0.1, maximum=3600.0),
        keep_releases=t.integer("keep_releases", 3, minimum=2, maximum=1000),
        package_credentials_file=t.string("package_credentials_file", ""),
        package_public_key=t.string("package_public_key", ""),
        package_ca_file=t.string("package_ca_file", ""),
        package_client_cert=t.string("package_client_cert", ""),
        package_client_key=t.string("package_client_key", ""),
        package_max_bytes=t.integer("package_max_bytes", 1 << 30, minimum=1024,
                                    maximum=1 << 40),
        download_timeout=t.number("download_timeout", 30.0, minimum=0.1, maximum=3600.0),
        download_retries=t.integer("download_retries", 3, minimum=0, maximum=100),
        download_deadline=t.number("download_deadline", 3600.0, minimum=1.0,
                                   maximum=7 * 86400.0),
        extract_max_bytes=t.integer("extract_max_bytes", 4 << 30, minimum=1024,
                                    maximum=1 << 40),
        extract_max_files=t.integer("extract_max_files", 100_000, minimum=1,
                                    maximum=10_000_000),
        health_probe=t.choice("health_probe", "none", HEALTH_PROBES),
        health_target=t.string("health_target", "", max_len=2048),
        health_command=t.converted("health_command", no_command, _command,
                                   "a non-empty list of strings"),
        health_version_method=t.string("health_version_method", "", max_len=256),
        min_healthy_time=t.number("min_healthy_time", 5.0, minimum=0.0, maximum=3600.0),
        healthy_deadline=t.number("healthy_deadline", 60.0, minimum=0.1, maximum=86400.0),
        health_tls=t.tls_client("health_tls"),
    )
    t.reject_unknown()
    _check_update_keys(svc, prefix)
    if svc.backoff_max < svc.backoff_initial:
        raise ConfigError(f"{prefix}backoff_max: must be >= backoff_initial")
    if svc.working_directory and not svc.install_root and not Path(
            svc.working_directory).is_absolute():
        raise ConfigError(f"{prefix}working_directory: must be absolute without install_root")
    if svc.install_root and not Path(svc.install_root).is_absolute():
        raise ConfigError(f"{prefix}install_root: must be an absolute path")
    _check_host_keys(svc, prefix)
    del state_dir
    return svc


def _check_update_keys(svc: ServiceConfig, prefix: str) -> None:
    if svc.package_url:
        if "{version}" not in svc.package_url:
            raise ConfigError(f"{prefix}package_url: must contain the {{version}} placeholder")
        if not re.match(r"^(https?|file)://", svc.package_url):
            raise ConfigError(f"{prefix}package_url: must start with http://, https:// "
                              "or file://")
        if "@" in svc.package_url.split("/")[2]:
            raise ConfigError(f"{prefix}package_url: must not hold credentials; use "
                              "package_credentials_file")
        if not svc.install_root:
            raise ConfigError(f"{prefix}install_root: required with package_url")
    if bool(svc.package_client_cert) != bool(svc.package_client_key):
        raise ConfigError(f"{prefix}package_client_cert: package_client_cert and "
                          "package_client_key go together")
    for key in ("package_credentials_file", "package_public_key", "package_ca_file",
                "package_client_cert", "package_client_key"):
        value = getattr(svc, key)
        if value and not Path(value).is_absolute():
            raise ConfigError(f"{prefix}{key}: must be an absolute path")
    if svc.health_probe in ("grpc", "http", "tcp") and not svc.health_target:
        raise ConfigError(f"{prefix}health_target: required for health_probe "
                          f"{svc.health_probe!r}")
    if svc.health_probe == "http" and not re.match(r"^https?://", svc.health_target):
        raise ConfigError(f"{prefix}health_target: must be an http:// or https:// URL")
    if svc.health_probe == "command" and not svc.health_command:
        raise ConfigError(f"{prefix}health_command: required for health_probe \"command\"")
    tls = svc.health_tls
    if tls is not None:
        if svc.health_probe not in ("grpc", "http"):
            raise ConfigError(f"{prefix}health_tls: only the grpc and http probes speak TLS")
        if svc.health_probe == "http" and (
                not svc.health_target.startswith("https://") or tls.server_name):
            raise ConfigError(f"{prefix}health_tls: the http probe needs an https:// "
                              "health_target and takes no server_name")
    if svc.health_version_method and (
            svc.health_probe != "grpc"
            or not re.fullmatch(r"[A-Za-z0-9_.]+/[A-Za-z0-9_]+", svc.health_version_method)):
        raise ConfigError(f"{prefix}health_version_method: must be 'package.Service/Method' "
                          "and needs health_probe = \"grpc\"")


def _hub_link(data: Any) -> HubLink:
    t = Table(data, "hub")
    address = t.address("address")
    if not address:
        raise ConfigError("hub.address: required in [hub] (the hub's gRPC \"HOST:PORT\")")
    try:
        name = check_host_name(t.text("name") or default_host_name("host"), "hub.name")
    except InvalidArgument as exc:
        raise ConfigError(str(exc)) from None
    tls = t.table("tls")
    link = HubLink(
        address=address, name=name, token_file=t.path("token_file", absolute=True),
        advertise_address=t.address("advertise_address"), labels=t.labels("labels"),
        register_interval=t.seconds("register_interval", 60.0, low=1.0, high=86400.0),
        tls=ClientTLS.from_table(tls, "hub.tls") if tls is not None else None)
    t.done()
    return link


def parse(data: Mapping[str, Any], source: Path | None = None) -> ManagerConfig:
    """Validate a decoded TOML document. Raises ConfigError naming the key."""
    t = _Table(data, "")
    role = t.choice("role", "agent", ROLES)
    if "state_dir" not in data:
        raise ConfigError("state_dir: required")
    state_dir = Path(t.string("state_dir", ""))
    if not state_dir.is_absolute():
        raise ConfigError(f"state_dir: must be an absolute path, got {str(state_dir)!r}")
    # A hub manager binds loopback by default (seeds: "localhost only for security").
    default_host = "127.0.0.1"
    http_listen = t.converted("http_listen", ListenAddress(default_host, 3081), _listen,
                              "\"HOST:PORT\"")
    grpc_listen = t.converted("grpc_listen", ListenAddress(default_host, 3082), _listen,
                              "\"HOST:PORT\"")
    token_file = t.string("auth_token_file", "")
    insecure = t.get("insecure_no_auth", bool, False, "true or false")
    log_level = t.choice("log_level", "info", ("debug", "info", "warning", "error"))
    log_format = t.choice("log_format", "auto", ("auto", "json", "console"))
    tls = t.tls_server("tls")
    max_calls = t.integer("grpc_max_calls", 64, minimum=4, maximum=4096)
    t.seen.add("hub")
    hub = _hub_link(data["hub"]) if "hub" in data else None
    socket_path = t.string("grpc_socket", "")
    if socket_path and (not Path(socket_path).is_absolute()
                        or len(socket_path.encode()) > MAX_SOCKET_PATH):
        raise ConfigError(f"grpc_socket: must be an absolute path of at most "
                          f"{MAX_SOCKET_PATH} bytes, got {socket_path[:120]!r}")
    t.seen.add("services")
    raw_services = data.get("services")
    if not isinstance(raw_services, list) or not raw_services:
        raise ConfigError("services: at least one [[services]] table is required")
    if len(raw_services) > 1000:
        raise ConfigError("services: at most 1000 services")
    services = tuple(_service(s, i, state_dir) for i, s in enumerate(raw_services))
    t.reject_unknown()
    names = [s.name for s in services]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise ConfigError(f"services[{i}].name: duplicate service name {n!r}")
    exposed = not (http_listen.is_loopback and grpc_listen.is_loopback)
    if exposed and not token_file and not insecure:
        raise ConfigError(
            "auth_token_file: required when http_listen or grpc_listen is not a loopback "
            "address (or set insecure_no_auth = true to accept unauthenticated commands)")
    return ManagerConfig(
        role=role, http_listen=http_listen, grpc_listen=grpc_listen, state_dir=state_dir,
        services=services, auth_token_file=Path(token_file) if token_file else None,
        insecure_no_auth=insecure, log_level=log_level, log_format=log_format, tls=tls,
        grpc_socket=Path(socket_path) if socket_path else None, grpc_max_calls=max_calls,
        hub=hub, source=source)


def load(path: Path) -> ManagerConfig:
    """Read and validate a TOML config file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config {str(path)!r}: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config {str(path)!r} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config {str(path)!r} is not valid TOML: {exc}") from None
    return parse(data, source=path)
