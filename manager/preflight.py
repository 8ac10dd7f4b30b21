"""What the manager checks at start beyond its config file (backendai/preflight.py):
its token files, its state directory and database, and its event sinks' files.
`ManagerDaemon.run` and `ai-manager --check-config` call these same functions."""

from __future__ import annotations

from backendai.auth import Token, Tokens
from backendai.events.sqlite_store import SCHEMA_VERSION as EVENTS_SCHEMA_VERSION
from backendai.preflight import check_sinks, check_state_dir
from manager.config import ManagerConfig
from manager.statestore import SCHEMA_VERSION, check_database

DATABASE = "manager.db"


def tokens(cfg: ManagerConfig) -> tuple[Tokens | None, Token | None]:
    """The tokens the manager accepts (auth_token_file, [[auth_tokens]]) and the hub's
    ([hub] token_file), read and checked."""
    token = Tokens.load(cfg.auth_token_file, cfg.auth_tokens)
    hub_token = Token.from_file(cfg.hub.token_file, "hub.token_file") \
        if cfg.hub is not None and cfg.hub.token_file else None
    return token, hub_token


def state_dir(cfg: ManagerConfig) -> None:
    check_state_dir(cfg.state_dir)


def check(cfg: ManagerConfig) -> None:
    """--check-config: everything the start checks except binding and the lock, in the
    start's order (ManagerDaemon.run)."""
    state_dir(cfg)
    tokens(cfg)
    # in the order the start opens them: the services, the event history, the journal
    known = {"services": SCHEMA_VERSION, "events": EVENTS_SCHEMA_VERSION}
    if any(s.install_root for s in cfg.services):  # only a manager that updates opens it
        # (imported here: the daemon, which imports this module, loads the updates wing
        # only where updates are configured)
        from manager.updates.journal import SCHEMA_VERSION as JOURNAL  # noqa: PLC0415

        known["update_journal"] = JOURNAL
    check_database(cfg.state_dir / DATABASE, known)
    check_sinks(cfg.event_sinks)  # built after the history opens, as the start builds them
