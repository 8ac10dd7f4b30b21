"""The rollout service layer: validates requests, picks targets from the inventory,
creates and persists rollouts, runs one runner per active rollout while this hub leads
(resumed when it takes the lead: at start, or after another hub's failure), applies
operator commands (the leader only; a follower answers NotLeader naming it), and serves
the event log to watchers on any hub."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import structlog

from backendai.errors import (
    FailedPrecondition,
    InvalidArgument,
    LeaseLost,
    NotConfigured,
    NotFound,
    NotLeader,
    StoreUnavailable,
)
from backendai.events.audit import audited
from backendai.events.model import cut
from backendai.validate import check_host_name, check_labels, check_service_name, check_version
from hub import rollout_engine as E
from hub.inventory import Inventory
from hub.leadership import Leadership, Term
from hub.manager_links import ManagerLinks
from hub.release_check import check_packages, refuse_missing
from hub.rollout_plan import Strategy, plan_waves
from hub.rollout_runner import RolloutRunner
from hub.store import ChangeFeed, HubStore

if TYPE_CHECKING:
    from backendai.events.log import EventLog

log = structlog.get_logger(__name__)

MAX_LIST = 1000
MAX_SEED = 2**63
KEEP_FINISHED = 200  # finished rollouts kept (with their event logs)
WATCH_POLL = 1.0     # seconds a watcher waits for a wake-up before reading again


@dataclass(frozen=True, slots=True)
class StartRequest:
    version: str
    strategy: Strategy
    labels: Mapping[str, str] = field(default_factory=dict)
    hosts: tuple[str, ...] = ()
    seed: int | None = None
    dry_run: bool = False
    service: str = ""
    include_hub: bool = False
    description: str = ""
    start_stopped: bool = False


def _asked_start(rollouts: Rollouts, req: StartRequest) -> dict[str, object]:
    return {"version": cut(str(req.version), 64), "service": cut(str(req.service), 64) or None,
            "dry_run": req.dry_run or None, "hosts": len(req.hosts) or None}


def _control_action(rollouts: Rollouts, rollout_id: str, command: str, *args: object,
                    **kwargs: object) -> str:
    return f"rollout.{command}"


def _control_subject(rollouts: Rollouts, rollout_id: str, *args: object,
                     **kwargs: object) -> str:
    return f"rollout/{cut(str(rollout_id), 100) or 'active'}"


def _control_reason(rollouts: Rollouts, rollout_id: str, command: str, reason: str = "",
                    **kwargs: object) -> dict[str, object]:
    return {"reason": cut(str(reason), 300) or None}


class Rollouts:
    def __init__(self, *, store: HubStore, links: ManagerLinks, inventory: Inventory,
                 leadership: Leadership, hub_host: str | None, tick: float,
                 before_lead: Callable[[], Awaitable[None]] | None = None,
                 after_rollout: Callable[[], Awaitable[None]] | None = None,
                 events: EventLog | None = None) -> None:
        """before_lead(): brings this hub's view up to date before it leads (the hosts
        other hubs registered); after_rollout(): once a rollout ended (hub/memory.py
        reclaim: what its burst took goes back); events: the audit trail's log."""
        self.events = events
        self.store = store
        self.links = links
        self.inventory = inventory
        self.leadership = leadership
        self.hub_host = hub_host
        self.tick = tick
        self.before_lead = before_lead
        self.after_rollout = after_rollout
        self.runners: dict[str, RolloutRunner] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._term: Term | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()  # starting a rollout, waking a stopped one
        self.led = ChangeFeed()      # a term's runners were started or stopped
        # told every committed batch of events (hub/stats.py counts them for /metrics)
        self.note_observers: list[Callable[[str, list[E.Note]], None]] = []

    async def run(self) -> None:
        """Whenever this hub leads, resume every active rollout (as a restarted hub
        does: Recover reconciles in-flight hosts with their managers), until the term
        ends; then stop every runner and follow. Until cancelled."""
        while True:
            term = await self.leadership.next_term()
            await self._lead(term)

    async def _lead(self, term: Term) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg, self._term = tg, term
                try:
                    if self.before_lead is not None:
                        await self.before_lead()
                    for rid in reversed(await self.store.ids(limit=MAX_LIST, active_only=True)):
                        r = await self.store.load(rid)
                        if r is not None and r.active and rid not in self.runners:
                            log.info("rollout.resume", rollout=rid, state=r.state.value,
                                     epoch=term.epoch)
                            self._start_runner(r, recovered=True)
                except StoreUnavailable as exc:
                    term.end(f"cannot read the active rollouts: {exc}")
                self.led.poke()
                await term.ended.wait()
                for task in list(self._tasks):
                    task.cancel()  # stop acting now; the next leader recovers
        finally:
            self._tg = self._term = None
            self.runners.clear()
            self.led.poke()

    async def wait_leading(self, timeout: float) -> bool:
        """True once the live term's runners are started (bounded by `timeout`)."""
        async with asyncio.timeout(timeout):
            while True:
                generation = self.led.generation
                term = self.leadership.term
                if term is not None and self._term is term:
                    return True
                await self.led.wait_past(generation, 0.5)

    def _live_term(self, what: str) -> Term:
        term = self.leadership.require(what)
        if self._term is not term or self._tg is None:
            raise NotLeader(f"{what}: this hub is taking the lead; retry shortly",
                            self.leadership.leader_address())
        return term

    def _start_runner(self, r: E.Rollout, *, recovered: bool) -> RolloutRunner:
        if self._tg is None or self._term is None:
            raise FailedPrecondition("hub is not leading (or shutting down)")
        runner = RolloutRunner(r, store=self.store, links=self.links, inventory=self.inventory,
                               term=self._term, tick=self.tick, observe=self._observe)
        self.runners[r.id] = runner

        async def go() -> None:
            try:
                await runner.run(recovered=recovered)
                if self.after_rollout is not None and not runner.r.active:
                    await self.after_rollout()
            except (LeaseLost, StoreUnavailable) as exc:
                log.warning("rollout.runner_stopped", rollout=r.id, reason=str(exc))
            except Exception:
                # a bug must not take the hub (inventory, fan-out, other commands) down;
                # the rollout stays active on disk and resumes at the next term
                log.exception("rollout.runner_crashed", rollout=r.id)
            finally:
                if self.runners.get(r.id) is runner:
                    del self.runners[r.id]
                self.store.rollout_changes.poke()

        task = self._tg.create_task(go(), name=f"rollout-{r.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return runner

    def _observe(self, rollout_id: str, notes: list[E.Note]) -> None:
        """Tell the observers (hub/stats.py, for /metrics) a committed batch of events."""
        for observe in self.note_observers:
            observe(rollout_id, notes)

    # ---------------------------------------------------------------- requests

    @audited("rollout.start", lambda self, req: "rollout/new", request=_asked_start,
             result_subject=lambda r: f"rollout/{r.id}" if r.id else "")
    async def start(self, req: StartRequest) -> E.Rollout:
        check_version(req.version, "version")
        labels = check_labels(dict(req.labels), "target.labels")
        if len(req.hosts) > 100_000:
            raise InvalidArgument("target.hosts: too many")
        names = [check_host_name(h, "target.hosts") for h in req.hosts]
        missing = sorted({n for n in names if n not in self.inventory.hosts})
        if missing:
            raise InvalidArgument("target.hosts: not in the inventory: " +
                                  ", ".join(missing[:20]))
        if req.seed is not None and not 0 <= req.seed < MAX_SEED:
            raise InvalidArgument("strategy.seed: out of range")
        if req.service:
            check_service_name(req.service, "service")
        if len(req.description) > 1000:
            raise InvalidArgument("description: at most 1000 characters")
        hub = None
        if req.include_hub:
            if self.hub_host is None:
                raise NotConfigured("include_hub: the hub's own manager is not configured "
                                    "([self] manager_address)")
            hub = self.hub_host
        # labels and names both narrow the agent hosts; naming the hub's own host is
        # the same as include_hub (it goes first, on its own)
        targets = [v.name for v in self.inventory.select(labels, names, role="agent")]
        if self.hub_host is not None and self.hub_host in names:
            hub = self.hub_host
        if not targets and hub is None:
            raise InvalidArgument("target: matches no hosts")
        seed = req.seed if req.seed is not None else secrets.randbelow(2**32)
        plan = plan_waves([*targets, *([hub] if hub else [])], req.strategy, seed, hub=hub)
        # a real start is the leader's: a follower says so before a store check
        term = None if req.dry_run else self._live_term("StartRollout")
        packages = await check_packages(self.inventory, self.links, plan.hosts,
                                        req.version, req.service)
        now = time.time()
        if req.dry_run:  # a preview changes nothing: any hub answers it
            return replace(E.new_rollout(
                rollout_id="", version=req.version, service=req.service,
                strategy=req.strategy, plan=plan, now=now, include_hub=hub is not None,
                description=req.description, target_labels=labels,
                target_hosts=tuple(names), start_stopped=req.start_stopped,
                dry_run=True)[0], packages=packages)
        refuse_missing(req.version, packages)
        assert term is not None  # noqa: S101 - set above for a real start
        async with self._lock, self._as_leader("StartRollout"):
            active = await self.store.ids(limit=1, active_only=True)
            if active:
                raise FailedPrecondition(f"rollout {active[0]} is still active; abort it or "
                                         "wait")
            rid = time.strftime("r%Y%m%d-%H%M%S-", time.gmtime(now)) + secrets.token_hex(3)
            r, notes = E.new_rollout(
                rollout_id=rid, version=req.version, service=req.service,
                strategy=req.strategy, plan=plan, now=now, include_hub=hub is not None,
                description=req.description, target_labels=labels,
                target_hosts=tuple(names), start_stopped=req.start_stopped,
                issuer=_issuer(term))
            await self.store.save(r, r.hosts.values(), notes, fence=term.fence)
            self._observe(r.id, notes)
            await self.store.prune(KEEP_FINISHED, fence=term.fence)
            log.info("rollout.created", rollout=rid, version=req.version, hosts=len(r.hosts),
                     waves=len(plan.waves), seed=seed, epoch=term.epoch)
            runner = self._start_runner(r, recovered=False)
            # the first wave starts before the caller gets an answer
            return replace(await runner.apply(E.Tick()), packages=packages)

    @contextlib.asynccontextmanager
    async def _as_leader(self, what: str) -> AsyncIterator[None]:
        """A write refused by the lease (this hub was deposed meanwhile) answers as a
        follower does: NotLeader, naming the leader when known."""
        try:
            yield
        except LeaseLost:
            raise NotLeader(f"{what}: this hub lost the lead; retry on the leader",
                            self.leadership.leader_address()) from None

    async def get(self, rollout_id: str) -> E.Rollout:
        if not rollout_id:
            ids = await self.store.ids(limit=1)
            if not ids:
                raise NotFound("no rollouts yet")
            rollout_id = ids[0]
        runner = self.runners.get(rollout_id)
        if runner is not None and self.leadership.leading:
            return runner.r
        if len(rollout_id) > 100:
            raise InvalidArgument("id: too long")
        r = await self.store.load(rollout_id)
        if r is None:
            raise NotFound(f"rollout {rollout_id!r}: not found")
        return r

    async def list(self, limit: int, active_only: bool) -> list[E.Rollout]:
        limit = min(limit or 20, MAX_LIST)
        return [await self.get(i)
                for i in await self.store.ids(limit=limit, active_only=active_only)]

    @audited(_control_action, _control_subject, request=_control_reason,
             result_subject=lambda r: f"rollout/{r.id}")
    async def control(self, rollout_id: str, command: str, reason: str = "") -> E.Rollout:
        if len(reason) > 1000:
            raise InvalidArgument("reason: at most 1000 characters")
        term = self._live_term(command)
        async with self._as_leader(command):
            if not rollout_id:
                active = await self.store.ids(limit=1, active_only=True)
                if not active and command != "retry_failed":
                    raise FailedPrecondition("no active rollout")
                rollout_id = active[0] if active else ""
            runner = self.runners.get(rollout_id)
            if runner is not None:
                return await runner.apply(E.Control(command, reason))
            async with self._lock:
                r = replace(await self.get(rollout_id), issuer=_issuer(term))
                # not running: only retry-failed can wake a finished rollout
                new, notes, actions = E.transition(r, E.Control(command, reason), time.time())
                active = await self.store.ids(limit=1, active_only=True)
                if active and active[0] != r.id:
                    raise FailedPrecondition(f"rollout {active[0]} is still active")
                await self.store.save(new, new.hosts.values(), notes, fence=term.fence)
                self._observe(new.id, notes)
                runner = self._start_runner(new, recovered=False)
                for action in actions:
                    runner.act(action)
                return runner.r

    async def watch(self, rollout_id: str, from_index: int,
                    follow: bool) -> AsyncIterator[E.Note]:
        """Every event from `from_index` on, from the store, then live until the final
        one. Woken by the store's change feed (another hub's writes too), but always
        reading by index: a missed wake-up only delays an event by the poll interval."""
        rid, index = (await self.get(rollout_id)).id, from_index
        feed = self.store.rollout_changes
        while True:
            generation = feed.generation
            batch = await self.store.events(rid, index)
            if not batch:
                if not follow:
                    return
                if await self._active(rid):
                    await feed.wait_past(generation, WATCH_POLL)
                    continue
                # it ended: its last events were written with the final state
                batch = await self.store.events(rid, index)
                if not batch:
                    return
            for note in batch:
                yield note
                index = note.index + 1
                if note.final and follow:
                    return

    async def _active(self, rid: str) -> bool:
        if rid in self.runners and self.leadership.leading:
            return True
        return await self.store.is_active(rid)


def _issuer(term: Term) -> str:
    """Who issues a term's calls to managers (the origins' prefix): "hub:<hub id>"."""
    return f"hub:{term.holder}" if term.holder else "hub"
