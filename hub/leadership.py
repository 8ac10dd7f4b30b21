"""Which hub leads: the lease row in the store (holder, address, epoch, expiry in the
database's time), taken when free or expired, renewed every third of `lease_ttl`.

A `Term` is one stretch of leading under one epoch. Only a hub in a live term runs
rollouts and calls managers to change anything; every rollout write carries the term's
epoch and the store refuses it once the epoch is not current (LeaseLost).

A term ends — the hub steps down at once: stops acting, cancels its in-flight work and
follows — when a renewal finds the lease gone (another hub took it), when a fenced write
is refused, or when no renewal succeeded for `ACT_FRACTION` of the TTL on this hub's
monotonic clock (the database is unreachable, or the process was paused). The last rule
makes a paused leader stop before any other hub can take over: the lease runs out no
earlier than TTL after the start of the last renewal that succeeded, by the database's
clock, and this hub stops acting at 3/4 of that by its own, so clock skew between hubs
never matters and clock *rates* would have to differ by 25 % to.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from backendai.backoff import reconnect_delay
from backendai.errors import NotLeader, StoreUnavailable
from hub.store import ChangeFeed, Fence, HubStore, Lease

log = structlog.get_logger(__name__)

ACT_FRACTION = 0.75     # act until this share of the TTL after a renewal started
RENEW_FRACTION = 1 / 3  # renew this often (share of the TTL)
TAKEOVER_SLACK = 0.05   # seconds past a lease's expiry before a follower tries again
BACKOFF_BASE = 0.25


@dataclass(slots=True)
class Term:
    """One epoch of leading. `may_act()` is checked before every call that changes a
    manager and is what every write's epoch stands for."""

    epoch: int
    act_until: float                    # this hub's monotonic clock
    holder: str = ""                    # this hub's id
    clock: Callable[[], float] = time.monotonic
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    why: str = ""

    @property
    def fence(self) -> Fence:
        return Fence(self.holder, self.epoch)

    def may_act(self) -> bool:
        return not self.ended.is_set() and self.clock() < self.act_until

    def end(self, why: str) -> None:
        if not self.ended.is_set():
            self.why = why
            self.ended.set()
            log.warning("leader.stepped_down", epoch=self.epoch, reason=why)


class Leadership:
    def __init__(self, store: HubStore, *, hub_id: str, address: Callable[[], str],
                 ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.hub_id = hub_id
        self.address = address
        self.ttl = ttl
        self.clock = clock
        self.term: Term | None = None
        self.lease: Lease | None = None   # as this hub last saw it
        self.changes = ChangeFeed()       # a term started or ended
        self.stopping = False             # released: never lead again in this process
        # Another process took the lease under this hub's id (a cloned machine or
        # state_dir, a copied config): why. This hub then takes the lease only once it
        # has expired, never from a live holder of its id, so the two stop deposing
        # each other at every renewal, and the fleet keeps a leader.
        self.conflict = ""

    # ---------------------------------------------------------------- queries

    @property
    def leading(self) -> bool:
        return self.term is not None and self.term.may_act()

    def leader_address(self) -> str:
        if self.leading:
            return self.address()
        lease = self.lease
        if lease is not None and (lease.holder != self.hub_id or self.conflict):
            return lease.address
        return ""

    def require(self, what: str) -> Term:
        """The live term, or NotLeader naming the leader (FAILED_PRECONDITION with the
        leader's address in the `backendai-leader` trailer)."""
        term = self.term
        if term is not None and term.may_act():
            return term
        leader = self.leader_address()
        lease = self.lease
        if leader and lease is not None:
            raise NotLeader(f"{what}: this hub ({self.hub_id}) is not the leader; the "
                            f"leader is {lease.holder} at {leader}", leader)
        raise NotLeader(f"{what}: this hub ({self.hub_id}) is not the leader and no leader "
                        "holds the lease right now; retry shortly")

    async def next_term(self) -> Term:
        """Wait until this hub leads; the live term."""
        while True:
            generation = self.changes.generation
            term = self.term
            if term is not None and not term.ended.is_set():
                return term
            await self.changes.wait_past(generation, 1.0)

    # ---------------------------------------------------------------- the loop

    async def run(self) -> None:
        """Take the lease when it is free, keep it while leading; until cancelled."""
        failures = 0
        while True:
            term = self.term
            if term is not None and not term.ended.is_set():
                await self._keep(term)
                continue
            if term is not None:
                self.term = None
                self.changes.poke()
            generation = self.store.lease_changes.generation
            try:
                wait = await self.try_acquire()
                failures = 0
            except StoreUnavailable as exc:
                failures += 1
                wait = reconnect_delay(failures, base=BACKOFF_BASE, cap=self.ttl / 2,
                                       roll=random.random)
                log.warning("leader.store_unavailable", reason=str(exc), retry_in=round(wait, 2))
            if wait > 0:
                await self.store.lease_changes.wait_past(generation, wait)

    async def try_acquire(self) -> float:
        """One attempt to lead; the seconds to wait before the next one (0: leading)."""
        if self.stopping:
            return self.ttl
        started = self.clock()
        lease, mine = await self.store.acquire_lease(self.hub_id, self.address(), self.ttl,
                                                     only_if_expired=bool(self.conflict))
        self.lease = lease
        if mine:
            self.term = Term(lease.epoch, started + self.ttl * ACT_FRACTION, self.hub_id,
                             self.clock)
            self.changes.poke()
            log.info("leader.elected", hub_id=self.hub_id, epoch=lease.epoch,
                     address=lease.address)
            return 0.0
        return min(lease.remaining, self.ttl) + TAKEOVER_SLACK

    async def _keep(self, term: Term) -> None:
        """Renew every third of the TTL until the term ends."""
        renew_every = self.ttl * RENEW_FRACTION
        last_try = self.clock()
        while not term.ended.is_set():
            now = self.clock()
            wait = min(renew_every - (now - last_try), term.act_until - now)
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await term.ended.wait()
                continue
            started = self.clock()
            if started >= term.act_until:
                term.end("the lease was not renewed in time")
                break
            last_try = started
            try:
                async with asyncio.timeout(term.act_until - started):
                    lease = await self.store.renew_lease(self.hub_id, term.epoch, self.ttl)
            except TimeoutError:
                term.end("the lease was not renewed in time")
                break
            except StoreUnavailable as exc:
                log.warning("leader.renew_failed", epoch=term.epoch, reason=str(exc))
                last_try = started - renew_every * 2 / 3  # try again sooner
                continue
            if lease is None:
                term.end("the lease is gone: another hub leads, or it ran out")
                await self._check_conflict(term)
                break
            self.lease = lease
            term.act_until = started + self.ttl * ACT_FRACTION

    async def _check_conflict(self, term: Term) -> None:
        """After losing the lease: was it taken under this hub's own id?"""
        try:
            lease = await self.store.read_lease()
        except StoreUnavailable:
            return
        if lease is None:
            return
        self.lease = lease
        if lease.holder == self.hub_id and lease.epoch > term.epoch and not self.conflict:
            self.conflict = (f"another hub process holds the lease under this hub's id "
                             f"{self.hub_id!r} (at {lease.address or 'an unknown address'}, "
                             f"epoch {lease.epoch}); give every hub its own [ha] hub_id")
            log.error("leader.same_hub_id", hub_id=self.hub_id, other=lease.address,
                      epoch=lease.epoch, reason=self.conflict)

    async def release(self) -> None:
        """On a graceful stop: end the term and let the lease run out now, so a follower
        takes over without waiting for the TTL."""
        self.stopping = True
        term, self.term = self.term, None
        if term is None:
            return
        term.end("shutting down")
        self.changes.poke()
        try:
            await self.store.release_lease(self.hub_id, term.epoch)
            log.info("leader.released", epoch=term.epoch)
        except StoreUnavailable as exc:
            log.warning("leader.release_failed", epoch=term.epoch, reason=str(exc))
