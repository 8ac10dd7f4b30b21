"""The rollout service layer: validates requests, picks targets from the inventory,
creates and persists rollouts, runs one runner per active rollout (resumed after a hub
restart), applies operator commands, and serves the event log to watchers."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

import structlog

from backendai.errors import FailedPrecondition, InvalidArgument, NotConfigured, NotFound
from backendai.validate import check_host_name, check_labels, check_service_name, check_version
from hub import rollout_engine as E
from hub.inventory import Inventory
from hub.manager_links import ManagerLinks
from hub.rollout_plan import Strategy, plan_waves
from hub.rollout_runner import RolloutRunner
from hub.store import HubStore

log = structlog.get_logger(__name__)

MAX_LIST = 1000
MAX_SEED = 2**63
KEEP_FINISHED = 200  # finished rollouts kept (with their event logs)


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


class Rollouts:
    def __init__(self, *, store: HubStore, links: ManagerLinks, inventory: Inventory,
                 hub_host: str | None, tick: float) -> None:
        self.store = store
        self.links = links
        self.inventory = inventory
        self.hub_host = hub_host
        self.tick = tick
        self.runners: dict[str, RolloutRunner] = {}
        self.changed = asyncio.Condition()
        self._tg: asyncio.TaskGroup | None = None
        # told every committed batch of events (hub/stats.py counts them for /metrics)
        self.note_observers: list[Callable[[str, list[E.Note]], None]] = []

    async def run(self) -> None:
        """Resume every rollout that was active when the hub stopped; run until cancelled."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            try:
                for rid in reversed(self.store.ids(limit=MAX_LIST, active_only=True)):
                    r = self.store.load(rid)
                    if r is not None and r.active:
                        log.info("rollout.resume", rollout=rid, state=r.state.value)
                        self._start_runner(r, recovered=True)
                await asyncio.Event().wait()
            finally:
                self._tg = None

    def _start_runner(self, r: E.Rollout, *, recovered: bool) -> RolloutRunner:
        if self._tg is None:
            raise FailedPrecondition("hub is shutting down")
        runner = RolloutRunner(r, store=self.store, links=self.links, inventory=self.inventory,
                               publish=self._publish, tick=self.tick)
        self.runners[r.id] = runner

        async def go() -> None:
            try:
                await runner.run(recovered=recovered)
            except Exception:
                # a bug must not take the hub (inventory, fan-out, other commands) down;
                # the rollout stays active on disk and resumes at the next hub start
                log.exception("rollout.runner_crashed", rollout=r.id)
            finally:
                self.runners.pop(r.id, None)
                await self._notify()

        self._tg.create_task(go(), name=f"rollout-{r.id}")
        if not recovered:
            runner.apply(E.Tick())  # the first wave starts before the caller gets an answer
        return runner

    def _publish(self, rollout_id: str, notes: list[E.Note]) -> None:
        for observe in self.note_observers:
            observe(rollout_id, notes)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    # ---------------------------------------------------------------- requests

    def start(self, req: StartRequest) -> E.Rollout:
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
        active = self.store.ids(limit=1, active_only=True)
        if active and not req.dry_run:
            raise FailedPrecondition(f"rollout {active[0]} is still active; abort it or wait")
        now = time.time()
        rid = "" if req.dry_run else time.strftime("r%Y%m%d-%H%M%S-", time.gmtime(now)) + \
            secrets.token_hex(3)
        r, notes = E.new_rollout(
            rollout_id=rid, version=req.version, service=req.service, strategy=req.strategy,
            plan=plan, now=now, include_hub=hub is not None, description=req.description,
            target_labels=labels, target_hosts=tuple(names), dry_run=req.dry_run)
        if req.dry_run:
            return r
        self.store.save(r, r.hosts.values(), notes)
        self.store.prune(KEEP_FINISHED)
        log.info("rollout.created", rollout=rid, version=req.version, hosts=len(r.hosts),
                 waves=len(plan.waves), seed=seed)
        return self._start_runner(r, recovered=False).r

    def get(self, rollout_id: str) -> E.Rollout:
        if not rollout_id:
            ids = self.store.ids(limit=1)
            if not ids:
                raise NotFound("no rollouts yet")
            rollout_id = ids[0]
        runner = self.runners.get(rollout_id)
        if runner is not None:
            return runner.r
        if len(rollout_id) > 100:
            raise InvalidArgument("id: too long")
        r = self.store.load(rollout_id)
        if r is None:
            raise NotFound(f"rollout {rollout_id!r}: not found")
        return r

    def list(self, limit: int, active_only: bool) -> list[E.Rollout]:
        limit = min(limit or 20, MAX_LIST)
        return [self.get(i) for i in self.store.ids(limit=limit, active_only=active_only)]

    def control(self, rollout_id: str, command: str, reason: str = "") -> E.Rollout:
        if len(reason) > 1000:
            raise InvalidArgument("reason: at most 1000 characters")
        if not rollout_id:
            active = self.store.ids(limit=1, active_only=True)
            if not active and command != "retry_failed":
                raise FailedPrecondition("no active rollout")
            rollout_id = active[0] if active else ""
        runner = self.runners.get(rollout_id)
        if runner is not None:
            return runner.apply(E.Control(command, reason))
        r = self.get(rollout_id)
        # not running: only retry-failed can wake a finished rollout
        new, notes, actions = E.transition(r, E.Control(command, reason), time.time())
        active = self.store.ids(limit=1, active_only=True)
        if active and active[0] != r.id:
            raise FailedPrecondition(f"rollout {active[0]} is still active")
        self.store.save(new, new.hosts.values(), notes)
        self._publish(new.id, notes)
        runner = self._start_runner(new, recovered=False)
        for action in actions:
            runner.act(action)
        return runner.r

    async def watch(self, rollout_id: str, from_index: int,
                    follow: bool) -> AsyncIterator[E.Note]:
        """Every event from `from_index` on, from the store, then live until the final
        one. Reads happen under the condition's lock, so no notification is missed."""
        rid, index = self.get(rollout_id).id, from_index
        while True:
            async with self.changed:
                batch = self.store.events(rid, index)
                if not batch:
                    if not follow or not self._active(rid):
                        return
                    try:
                        async with asyncio.timeout(1.0):
                            await self.changed.wait()
                    except TimeoutError:
                        pass
                    continue
            for note in batch:
                yield note
                index = note.index + 1
                if note.final and follow:
                    return

    def _active(self, rid: str) -> bool:
        if rid in self.runners:
            return True
        stored = self.store.load(rid)
        return stored is not None and stored.active
