"""`ai-hub --config FILE --migrate`: apply the store's pending schema migrations and
exit, for operators who run migrations apart from starting the hubs (then `[store]
migrate = false` on the hubs). Safe beside running hubs and with several at once: each
migration is one transaction under an advisory lock (PostgreSQL), or under the state
directory's lock (SQLite: refused while that hub runs)."""

from __future__ import annotations

import asyncio
import sys

from backendai.daemon_support import InstanceLock
from hub.config import HubConfig
from hub.migrations import sqlite as sqlite_schema
from hub.store import HubStore, open_store

CONNECT_ATTEMPTS = 5


async def _run(cfg: HubConfig) -> HubStore:
    if cfg.store.backend == "postgresql":
        from hub.store_postgres import PostgresStore  # noqa: PLC0415

        return await PostgresStore.open(cfg.store, migrate=True, attempts=CONNECT_ATTEMPTS)
    return await open_store(cfg, migrate=True)


def migrate(cfg: HubConfig) -> int:
    lock = InstanceLock(cfg.state_dir / "hub.lock") if cfg.store.backend == "sqlite" else None
    if lock is not None:
        lock.acquire()  # a running hub owns its SQLite file

    async def go() -> str:
        store = await _run(cfg)
        try:
            return store.where
        finally:
            await store.close()

    try:
        where = asyncio.run(go())
    finally:
        if lock is not None:
            lock.release()
    latest = sqlite_schema.HUB.latest if cfg.store.backend == "sqlite" else _pg_latest()
    print(f"ai-hub: {where}: schema 'hub' at version {latest}", file=sys.stdout)
    return 0


def _pg_latest() -> int:
    from hub.migrations import postgresql  # noqa: PLC0415

    return postgresql.HUB.latest
