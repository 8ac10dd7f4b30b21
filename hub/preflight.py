"""What the hub checks at start beyond its config file (backendai/preflight.py), in
the order `HubDaemon.run` checks it: its state directory, its tokens (`auth_token_file`,
`[[auth_tokens]]`: files, modes, names and values; `manager_token_file`), its id
(`state_dir/hub_id`), its SQLite database (readable and writable; no component a newer
hub wrote; pending migrations allowed, else the command that applies them) and its
event sinks' files. The start calls these same functions, so `ai-hub --check-config`
refuses what the start refuses, in the same words.

What the config load itself refuses (and so the start, `--check-config` and a reload
alike) is checked there: `[tls]`, `[manager_tls]` (hub/config.py, backendai/tls.py),
`[store]` for PostgreSQL — the DSN parses and holds no password, `password_file` is
private and readable, the TLS files exist and parse (hub/store_config.py).

Not checked without starting: binding the ports, the state directory's lock (a running
hub holds it), and whether the PostgreSQL server is reachable and its schema current —
`--check-config` never connects to the database (the start waits for a database that
cannot be reached, retrying, and refuses a schema it cannot use; `ai-hub --migrate`
connects and says).
"""

from __future__ import annotations

from backendai.auth import Token, Tokens
from backendai.preflight import check_sinks, check_state_dir, stored_schema_versions
from hub.config import HubConfig
from hub.identity import stored_hub_id
from hub.migrations import pending
from hub.migrations.sqlite import EVENTS, HUB
from hub.store import sqlite_path


def state_dir(cfg: HubConfig) -> None:
    check_state_dir(cfg.state_dir)


def tokens(cfg: HubConfig) -> tuple[Tokens | None, Token | None]:
    """The callers' tokens (auth_token_file: the admin named "default"; [[auth_tokens]])
    and the one sent to managers (manager_token_file, else the admin token)."""
    token = Tokens.load(cfg.auth_token_file, cfg.auth_tokens)
    admin = token.tokens[0] if token is not None and cfg.auth_token_file else None
    manager_token = Token.from_file(cfg.manager_token_file, "manager_token_file") \
        if cfg.manager_token_file else admin
    return token, manager_token


def hub_id(cfg: HubConfig) -> None:
    """`state_dir/hub_id`, when kept there, is readable and a valid id."""
    if not cfg.ha.hub_id:
        stored_hub_id(cfg.state_dir)


def database(cfg: HubConfig) -> None:
    """The SQLite database, if it exists, is one this hub can open and use: readable and
    writable, no component newer than this hub knows, and any pending migration allowed
    (`[store] migrate`); the same decision (`pending`) and words as opening it."""
    if cfg.store.backend != "sqlite":
        return
    path = sqlite_path(cfg.state_dir)
    stored = stored_schema_versions(path)
    if stored is None:
        return  # no database, or nothing recorded yet: the start creates the schema
    for component in (HUB, EVENTS):  # in the order opening the store applies them
        pending(component, stored.get(component.name, 0), migrate=cfg.store.migrate,
                where=str(path))


def sinks(cfg: HubConfig) -> None:
    check_sinks(cfg.event_sinks)


def check(cfg: HubConfig) -> None:
    """--check-config: everything the start checks except binding, the lock and the
    PostgreSQL server itself."""
    state_dir(cfg)
    tokens(cfg)
    hub_id(cfg)
    database(cfg)
    sinks(cfg)
