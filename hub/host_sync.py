"""Keeps this hub's inventory in step with the hosts that registered through any hub
(they are in the shared store): read by sequence number, woken by the store's change
feed (PostgreSQL: NOTIFY), and at least every `interval` seconds. Rows are re-read with
an overlap, since registrations committed out of sequence order (a few concurrent
transactions at most) would otherwise be skipped; adding an unchanged host is a no-op.
The static inventory wins for the names it lists, as at start."""

from __future__ import annotations

import asyncio

import structlog

from backendai.errors import StoreUnavailable
from hub.config import HostEntry
from hub.inventory import Inventory
from hub.store import HubStore

log = structlog.get_logger(__name__)

OVERLAP = 256      # sequence numbers re-read each time
MIN_GAP = 0.2      # seconds between reads, however many wake-ups arrive


class HostSync:
    def __init__(self, store: HubStore, inventory: Inventory, static_names: frozenset[str],
                 *, interval: float = 5.0) -> None:
        self.store = store
        self.inventory = inventory
        self.static_names = static_names
        self.interval = interval
        self.seq = 0

    async def full(self) -> None:
        """Every registered host (at start, and before this hub takes the lead)."""
        entries, self.seq = await self.store.hosts_since(0)
        self._add(entries)

    async def _since(self) -> None:
        entries, top = await self.store.hosts_since(max(0, self.seq - OVERLAP))
        self.seq = max(self.seq, top)
        self._add(entries)

    def _add(self, entries: list[HostEntry]) -> None:
        for entry in entries:
            if entry.name not in self.static_names:
                self.inventory.add(entry)

    async def run(self) -> None:
        feed = self.store.host_changes
        while True:
            generation = feed.generation
            await feed.wait_past(generation, self.interval)
            try:
                await self._since()
            except StoreUnavailable as exc:
                log.info("hosts.sync_failed", reason=str(exc))
            await asyncio.sleep(MIN_GAP)
