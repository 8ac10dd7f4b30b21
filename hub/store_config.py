"""`[store]` (where the hub keeps its state) and `[ha]` (several hubs sharing one
PostgreSQL, one of them leading) of the hub's config. Keys and defaults:
docs/CONFIG_HUB_AGENT.md.

    [store]
    backend = "postgresql"                 # default "sqlite": state_dir/hub.db
    dsn = "postgresql://hub@db1.example:5432/hub?sslmode=verify-full"
    password_file = "/etc/backend-ai/hub-db.password"
    sslrootcert = "/etc/backend-ai/db-ca.pem"
    [ha]
    lease_ttl = 10.0
    advertise_address = "hub-1.example:3000"

The DSN never holds the password (it is refused naming the key): the password comes
from `password_file` (or libpq's own `passfile`, or a client certificate). psycopg is
imported here only for a `postgresql` backend, to parse the DSN with libpq's own rules.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backendai.config import Table
from backendai.errors import ConfigError

BACKENDS = ("sqlite", "postgresql")
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
TLS_KEYS = ("sslmode", "sslrootcert", "sslcert", "sslkey")
MAX_DSN = 2000
MAX_PASSWORD_BYTES = 1024


@dataclass(frozen=True, slots=True)
class StoreConfig:
    backend: str = "sqlite"
    dsn: str = ""                        # libpq URI or key=value string, without a password
    password_file: Path | None = None
    sslmode: str = ""                    # "": libpq's default (prefer), or the DSN's
    sslrootcert: Path | None = None
    sslcert: Path | None = None
    sslkey: Path | None = None
    pool_size: int = 10                  # connections per hub (at most)
    timeout: float = 10.0                # seconds per database operation, connecting included
    migrate: bool = True                 # apply pending schema migrations at start

    def connect_kwargs(self) -> dict[str, Any]:
        """libpq parameters beside the DSN: the TLS keys that are set, and the password
        read from `password_file` now (never kept in the config)."""
        out: dict[str, Any] = {"connect_timeout": max(1, round(self.timeout))}
        for key in TLS_KEYS:
            value = getattr(self, key)
            if value:
                out[key] = str(value)
        if self.password_file is not None:
            out["password"] = read_password(self.password_file)
        return out


@dataclass(frozen=True, slots=True)
class HAConfig:
    lease_ttl: float = 10.0              # seconds a leader's lease lasts unless renewed
    hub_id: str = ""                     # "": generated once, kept in state_dir/hub_id
    advertise_address: str = ""          # "": grpc_listen (a wildcard host: this host's name)


def read_password(path: Path) -> str:
    """The database password: the file's first line, the file readable by its owner
    only (as the token files)."""
    try:
        st = path.stat()
        raw = path.read_bytes()[:MAX_PASSWORD_BYTES + 1]
    except OSError as exc:
        raise ConfigError(f"store.password_file: cannot read {str(path)!r}: "
                          f"{exc.strerror}") from None
    if st.st_mode & 0o077:
        raise ConfigError(f"store.password_file: {str(path)!r} must not be readable or "
                          "writable by others (chmod 600)")
    if len(raw) > MAX_PASSWORD_BYTES:
        raise ConfigError(f"store.password_file: {str(path)!r} is larger than "
                          f"{MAX_PASSWORD_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"store.password_file: {str(path)!r} is not UTF-8 text") from None
    lines = text.splitlines()
    password = lines[0] if lines else ""
    if not password or "\x00" in password:
        raise ConfigError(f"store.password_file: {str(path)!r} must hold the password on "
                          "its first line")
    return password


def describe_dsn(dsn: str) -> str:
    """Where a DSN points, for logs and errors: "host:port/dbname" (never the password;
    the DSN holds none, and only these three parts are shown)."""
    params = parse_dsn(dsn)
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    return f"{host}:{port}/{params.get('dbname') or params.get('user') or ''}"


def parse_dsn(dsn: str) -> dict[str, str]:
    from psycopg import conninfo  # noqa: PLC0415 - only a postgresql backend needs psycopg
    from psycopg import errors as pg_errors  # noqa: PLC0415

    try:
        return {k: str(v) for k, v in conninfo.conninfo_to_dict(dsn).items()}
    except pg_errors.Error as exc:
        # libpq's message quotes the bad part of the DSN, which holds no password
        raise ConfigError(f"store.dsn: not a PostgreSQL connection string: "
                          f"{str(exc).strip()[:200]}") from None


def load_store(t: Table | None) -> StoreConfig:
    if t is None:
        return StoreConfig()
    backend = t.choice("backend", BACKENDS)
    dsn = t.text("dsn", max_len=MAX_DSN)
    cfg = StoreConfig(
        backend=backend, dsn=dsn,
        password_file=t.optional_path("password_file", absolute=True),
        sslmode=t.choice("sslmode", ("", *SSLMODES)),
        sslrootcert=t.optional_path("sslrootcert", absolute=True),
        sslcert=t.optional_path("sslcert", absolute=True),
        sslkey=t.optional_path("sslkey", absolute=True),
        pool_size=t.integer("pool_size", low=2, high=200),
        timeout=t.number("timeout", low=0.5, high=300),
        migrate=t.flag("migrate"))
    t.done()
    if backend == "sqlite":
        given = [k for k in ("dsn", "password_file", *TLS_KEYS) if getattr(cfg, k)]
        if given:
            raise ConfigError(f"store.{given[0]}: only for backend = \"postgresql\" (the "
                              "sqlite backend keeps hub.db in state_dir)")
        return cfg
    if not dsn.strip():
        raise ConfigError("store.dsn: required with backend = \"postgresql\" (e.g. "
                          "\"postgresql://hub@db.example:5432/hub\")")
    params = parse_dsn(dsn)
    if params.get("password"):
        raise ConfigError("store.dsn: must not hold the password; put it in "
                          "store.password_file (a file readable by the hub only)")
    for key in TLS_KEYS:
        if getattr(cfg, key) and key in params:
            raise ConfigError(f"store.{key}: also set in store.dsn; set it in one place")
    if cfg.password_file is not None:
        read_password(cfg.password_file)  # refuse a bad file at start, not at connect
    check_tls_files(cfg, params)
    return cfg


def check_tls_files(cfg: StoreConfig, params: dict[str, str]) -> None:
    """The TLS files libpq will read (from the keys, or from the DSN) exist and are
    usable, so a wrong path or a key others can read is refused when the config is read
    (the start, --check-config, a reload) instead of the start retrying a connection
    libpq can never make. `sslrootcert = "system"` (libpq 16: the system's CA store) names
    no file. libpq's own rule for the key file's mode is applied."""
    def where(key: str) -> tuple[str, str]:
        value = getattr(cfg, key)
        return (str(value), f"store.{key}") if value else \
            (params.get(key, ""), f"store.dsn's {key}")

    root, root_key = where("sslrootcert")
    if root and root != "system":
        _check_certificates(Path(root), root_key)
    (cert, cert_key), (key, key_key) = where("sslcert"), where("sslkey")
    if bool(cert) != bool(key):
        missing, given = ("sslkey", cert_key) if cert else ("sslcert", key_key)
        raise ConfigError(f"store.{missing}: required with {given} (a client certificate "
                          "and its key go together)")
    if cert:
        _check_client_pair(Path(cert), cert_key, Path(key), key_key)


def _check_certificates(path: Path, key: str) -> None:
    import ssl  # noqa: PLC0415 - only a postgresql backend with TLS files pays for it

    from backendai.tls import read_pem  # noqa: PLC0415

    read_pem(path, key)
    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, ValueError):
        raise ConfigError(f"{key}: {str(path)!r} holds no valid certificate") from None


def _check_client_pair(cert: Path, cert_key: str, key: Path, key_key: str) -> None:
    from backendai.tls import check_files, read_pem  # noqa: PLC0415

    read_pem(cert, cert_key)
    read_pem(key, key_key)
    st = key.stat()
    # libpq's rule: no group or world access when the file is this user's (0600 or
    # less), group read at most when another user's, such as root's (0640 or less)
    own = st.st_uid == os.geteuid()
    if st.st_mode & (0o077 if own else 0o037):
        raise ConfigError(f"{key_key}: {str(key)!r} has group or world access (libpq refuses "
                          f"it): chmod {'600' if own else '640'}")
    check_files(cert, key, None, (cert_key, key_key, ""))


def load_ha(t: Table | None) -> HAConfig:
    if t is None:
        return HAConfig()
    cfg = HAConfig(
        lease_ttl=t.number("lease_ttl", low=1.0, high=300.0),
        hub_id=t.host_name("hub_id"),
        advertise_address=t.address("advertise_address"))
    t.done()
    return cfg
