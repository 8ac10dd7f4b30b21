"""The rollout engine's I/O shell: feeds events into the pure state machine, persists
each result BEFORE carrying out its actions, and carries them out against the managers'
gRPC API (Status, Update, WatchUpdate, Rollback). One task per host at a time.

Events from host tasks go through one queue, so the machine sees them in order; the
loop ticks every `tick` seconds with observations of the hosts being verified.

A runner works for one leader's term (hub/leadership.py): every write carries the
term's epoch (a deposed hub's write is refused and ends the term), and no call that
changes a manager is made once the term may no longer act. A write that fails for any
store reason ends the term too: nothing was written, so nothing may be acted on.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

import grpc
import structlog

from backendai.deadlines import step_deadline
from backendai.errors import DeadlineExceeded, LeaseLost, NotFound, StoreUnavailable
from backendai.v1 import manager_pb2 as mpb
from hub import rollout_engine as E
from hub.inventory import Inventory
from hub.leadership import Term
from hub.manager_links import ManagerLinks, describe, is_unreachable
from hub.store import HubStore

log = structlog.get_logger(__name__)

RECONCILE_BACKOFF_MAX = 5.0
MAX_BATCH = 2000


def _call_failed(host: str, exc: grpc.aio.AioRpcError | DeadlineExceeded) -> E.CallFailed:
    if isinstance(exc, DeadlineExceeded):  # the manager did not answer in time
        return E.CallFailed(host, True, str(exc))
    return E.CallFailed(host, is_unreachable(exc), describe(exc))


class RolloutRunner:
    def __init__(self, rollout: E.Rollout, *, store: HubStore, links: ManagerLinks,
                 inventory: Inventory, term: Term, tick: float,
                 observe: Callable[[str, list[E.Note]], None] | None = None) -> None:
        # origins name the hub that issues the calls (recorded with each host's state)
        issuer = f"hub:{term.holder}" if term.holder else "hub"
        self.r = rollout if rollout.issuer == issuer else replace(rollout, issuer=issuer)
        self.observe = observe  # told every committed batch of events (hub/stats.py)
        self.store = store
        self.links = links
        self.inventory = inventory
        self.term = term
        self.tick = tick
        # the hosts being verified, kept as commits change them: each tick observes
        # them without a pass over every host of the rollout
        self._verifying = {name for name, h in self.r.hosts.items()
                           if h.state == E.HostState.VERIFYING}
        self.queue: asyncio.Queue[E.Event] = asyncio.Queue()
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.timeout = links.call_timeout
        self._writing = asyncio.Lock()  # one transition at a time: each starts from the last

    # ---------------------------------------------------------------- the loop

    async def run(self, *, recovered: bool) -> None:
        """Run until the rollout ends. Runs in its own task: the rollout id bound here is
        on every log line of this task and of the host tasks it starts."""
        structlog.contextvars.bind_contextvars(rollout=self.r.id)
        log.info("rollout.run", recovered=recovered, state=self.r.state.value,
                 epoch=self.term.epoch)
        try:
            await self.apply(E.Recover(f"new leader (epoch {self.term.epoch})")
                             if recovered else E.Tick(self._observations()))
            while self.r.active:
                try:
                    async with asyncio.timeout(self.tick):
                        first = await self.queue.get()
                except TimeoutError:
                    first = E.Tick(self._observations())
                batch = [first]
                while len(batch) < MAX_BATCH and not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                await self.apply_batch(batch)
        finally:
            tasks = list(self.tasks.values())
            self.tasks.clear()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        log.info("rollout.done", state=self.r.state.value,
                 message=self.r.message)

    async def apply(self, event: E.Event) -> E.Rollout:
        """One transition: persist, then act. Raises what the machine raises for a
        control request the state forbids (then nothing changed)."""
        async with self._writing:
            return await self._commit(self.r, *E.transition(self.r, event, time.time()))

    async def apply_batch(self, events: list[E.Event]) -> E.Rollout:
        async with self._writing:
            return await self._commit(self.r, *E.transition_batch(self.r, events,
                                                                   time.time()))

    async def _commit(self, old: E.Rollout, new: E.Rollout, notes: list[E.Note],
                      actions: list[E.Action]) -> E.Rollout:
        changed = E.changed_hosts(old, new)
        if not notes and not actions and not changed and new.state == old.state:
            self.r = new  # only the clock moved: nothing to persist
            return new
        try:  # durable before any action is carried out
            await self.store.save(new, changed, notes, fence=self.term.fence)
        except (LeaseLost, StoreUnavailable) as exc:
            self.term.end(f"rollout {new.id}: write refused: {exc}")
            raise
        self.r = new
        for h in changed:
            if h.state == E.HostState.VERIFYING:
                self._verifying.add(h.name)
            else:
                self._verifying.discard(h.name)
        if self.observe is not None and notes:
            self.observe(new.id, notes)
        for action in actions:
            self.act(action)
        return new

    def _observations(self) -> dict[str, E.Observation]:
        out = {}
        for name in self._verifying:
            view = self.inventory.hosts.get(name)
            if view is not None and view.status is not None:
                out[name] = E.Observation(view.reachable, view.running, view.version)
        return out

    # ---------------------------------------------------------------- actions

    def act(self, action: E.Action) -> None:
        if isinstance(action, E.CancelHost):
            self._cancel(action.host)
        elif isinstance(action, E.UpdateHost):
            self._spawn(action.host, self._update(action.host, action.version, action.service))
        elif isinstance(action, E.WatchOperation):
            self._spawn(action.host, self._watch(action.host, action.operation_id,
                                                  action.skip))
        elif isinstance(action, E.ReconcileHost):
            self._spawn(action.host, self._reconcile(action.host, action.service))
        elif isinstance(action, E.AwaitOperation):
            self._spawn(action.host, self._await(action.host, action.operation_id))
        elif isinstance(action, E.RollbackHost):
            self._spawn(action.host, self._rollback(action.host, action.service))

    def _cancel(self, host: str) -> None:
        task = self.tasks.pop(host, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _spawn(self, host: str, coro: Coroutine[Any, Any, None]) -> None:
        self._cancel(host)
        task = asyncio.get_running_loop().create_task(self._guard(host, coro),
                                                      name=f"rollout-{host}")
        self.tasks[host] = task

    async def _guard(self, host: str, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except NotFound as exc:  # the host left the inventory (config edit + restart)
            self.queue.put_nowait(E.CallFailed(host, False, str(exc)))
        except Exception as exc:
            log.exception("rollout.host_task_error", host=host)
            self.queue.put_nowait(E.ConnectionLost(host, f"internal error: {exc!r}"))
        finally:
            if self.tasks.get(host) is asyncio.current_task():
                del self.tasks[host]

    def _address(self, host: str) -> str:
        return self.inventory.get(host).entry.manager_address

    async def _status(self, host: str, service: str) -> mpb.ServiceStatus:
        stub = self.links.stub(self._address(host))
        async with step_deadline(f"status of {service or 'the service'} on host {host}",
                                 self.timeout):
            result: mpb.ServiceStatus = await stub.Status(mpb.StatusRequest(service=service))
            return result

    @staticmethod
    def _report(st: mpb.ServiceStatus, own: E.OwnOperation | None = None,
                previous: str | None = None) -> E.ManagerReport:
        u = st.update
        return E.ManagerReport(version=st.version,
                               running_operation_id=u.running_operation_id,
                               last_operation_id=u.last_operation_id,
                               last_outcome=u.last_outcome, last_version=u.last_version,
                               last_message=u.last_message, running_origin=u.running_origin,
                               running_version=u.running_version,
                               running_step=u.running_step, last_origin=u.last_origin,
                               own=own, previous=previous)

    def _row(self, host: str) -> E.HostRun | None:
        """The host's row as last written (the transition that asked for an action wrote
        what the action needs: its origin, its operation id)."""
        return self.r.hosts.get(host)

    async def _update(self, host: str, version: str, service: str) -> None:
        """Ask for the update straight away: a manager refuses an Update while an
        operation runs (FAILED_PRECONDITION), and only then is its Status asked whose
        the operation is (the engine decides: its own is watched, anyone else's waited
        for; never a second one). The answer names the version the host updates from;
        asking Status before every Update cost a 10,000-host rollout ~5 % of the
        hub's CPU."""
        stub = self.links.stub(self._address(host))
        row = self._row(host)
        origin = row.origin if row is not None else ""
        if not self.term.may_act():
            return  # deposed (or paused past the lease): the next leader reconciles
        try:
            async with step_deadline(f"update of {service or 'the service'} on host {host} "
                                     f"to {version}", self.timeout):
                resp = await stub.Update(mpb.UpdateRequest(
                    service=service, version=version, origin=origin,
                    start_stopped=self.r.start_stopped))
        except (grpc.aio.AioRpcError, DeadlineExceeded) as exc:
            if isinstance(exc, grpc.aio.AioRpcError) and \
                    exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                # an operation runs there (or began since): its Status says whose
                with contextlib.suppress(grpc.aio.AioRpcError, DeadlineExceeded):
                    st = await self._status(host, service)
                    if st.update.running_operation_id:
                        self.queue.put_nowait(E.Reconciled(host, self._report(st)))
                        return
            self.queue.put_nowait(_call_failed(host, exc))
            return
        from_version = resp.from_version or (
            version if not resp.operation_id else
            await self._from_version(host, service, resp.operation_id))
        self.queue.put_nowait(E.UpdateAccepted(host, resp.operation_id, from_version))
        if resp.operation_id:
            await self._watch(host, resp.operation_id)

    async def _from_version(self, host: str, service: str, op_id: str) -> str:
        """What a manager older than UpdateResponse.from_version updates from: its
        operation's own record ("" when it cannot be read now: the engine then
        has no version to roll that host back to, and never guesses one)."""
        stub = self.links.stub(self._address(host))
        try:
            async with step_deadline(f"update state of {service or 'the service'} on host "
                                     f"{host}", self.timeout):
                op: mpb.UpdateOperation = await stub.GetUpdate(
                    mpb.GetUpdateRequest(service=service, operation_id=op_id))
        except (grpc.aio.AioRpcError, DeadlineExceeded) as exc:
            log.warning("rollout.from_version_unknown", host=host, operation=op_id,
                        reason=str(exc))
            return ""
        return op.from_version

    async def _rollback(self, host: str, service: str) -> None:
        stub = self.links.stub(self._address(host))
        row = self._row(host)
        if not self.term.may_act():
            return  # deposed (or paused past the lease): the next leader reconciles
        try:
            async with step_deadline(f"rollback of {service or 'the service'} on host {host}",
                                     self.timeout):
                # the manager refuses unless its rollback goes to the recorded version
                resp = await stub.Rollback(mpb.RollbackRequest(
                    service=service, origin=row.origin if row is not None else "",
                    version=row.from_version if row is not None else ""))
        except (grpc.aio.AioRpcError, DeadlineExceeded) as exc:
            self.queue.put_nowait(_call_failed(host, exc))
            return
        self.queue.put_nowait(E.RollbackAccepted(host, resp.operation_id, resp.version))
        await self._watch(host, resp.operation_id)

    async def _watch(self, host: str, op_id: str, skip: int = 0) -> None:
        """Follow an operation to its final event; `skip`: step events already recorded
        (a re-attached watch gets the whole operation replayed)."""
        stub = self.links.stub(self._address(host))
        call = stub.WatchUpdate(mpb.WatchUpdateRequest(operation_id=op_id))
        try:
            async for ev in call:
                if ev.final:
                    self.queue.put_nowait(E.OperationFinished(host, op_id, ev.outcome,
                                                              ev.message))
                    return
                if skip > 0:
                    skip -= 1
                    continue
                self.queue.put_nowait(E.OperationStep(host, op_id, ev.step, ev.status,
                                                      ev.message))
            reason = "update stream ended before the outcome"
        except grpc.aio.AioRpcError as exc:
            reason = describe(exc)
        finally:
            call.cancel()
        self.queue.put_nowait(E.ConnectionLost(host, reason))

    async def _reconcile(self, host: str, service: str) -> None:
        """Ask the manager for its own update state until it answers (the engine's step
        deadline cancels this when the manager stays away)."""
        backoff = 0.2
        while True:
            try:
                report = await self._ask(host, service)
            except (grpc.aio.AioRpcError, DeadlineExceeded) as exc:
                why = describe(exc) if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
                log.info("rollout.reconcile_retry", host=host, reason=why)
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))  # noqa: S311 - jitter
                backoff = min(backoff * 2, RECONCILE_BACKOFF_MAX)
                continue
            self.queue.put_nowait(E.Reconciled(host, report))
            return

    async def _ask(self, host: str, service: str) -> E.ManagerReport:
        """Status; the host's own operation by its recorded id or origin when Status does
        not name it; the manager's previous release for a host rolling back."""
        st = await self._status(host, service)
        row = self._row(host)
        own: E.OwnOperation | None = None
        previous: str | None = None
        if row is not None:
            u = st.update
            named = {u.running_operation_id, u.last_operation_id} - {""}
            # by origin whenever the id was never recorded: its from_version is needed
            if (row.operation_id and row.operation_id not in named) or \
                    (not row.operation_id and row.origin):
                own = await self._own(host, service, row)
            if row.state == E.HostState.ROLLING_BACK:
                previous = await self._previous(host, service)
        return self._report(st, own, previous)

    async def _own(self, host: str, service: str, row: E.HostRun) -> E.OwnOperation | None:
        stub = self.links.stub(self._address(host))
        request = mpb.GetUpdateRequest(service=service, operation_id=row.operation_id) \
            if row.operation_id else mpb.GetUpdateRequest(service=service, origin=row.origin)
        try:
            async with step_deadline(f"update state of {service or 'the service'} on host "
                                     f"{host}", self.timeout):
                op: mpb.UpdateOperation = await stub.GetUpdate(request)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None  # the manager has no such operation
            raise
        return E.OwnOperation(operation_id=op.operation_id, origin=op.origin,
                              running=op.state == "running", outcome=op.outcome,
                              message=op.message, from_version=op.from_version,
                              to_version=op.to_version)

    async def _previous(self, host: str, service: str) -> str:
        stub = self.links.stub(self._address(host))
        async with step_deadline(f"releases of {service or 'the service'} on host {host}",
                                 self.timeout):
            resp: mpb.ListReleasesResponse = await stub.ListReleases(
                mpb.ListReleasesRequest(service=service))
        return next((r.version for r in resp.releases if r.previous), "")

    async def _await(self, host: str, op_id: str) -> None:
        """Follow an operation this rollout did not start until its final event."""
        stub = self.links.stub(self._address(host))
        call = stub.WatchUpdate(mpb.WatchUpdateRequest(operation_id=op_id))
        try:
            async for ev in call:
                if ev.final:
                    self.queue.put_nowait(E.OperationEnded(host, op_id, ev.outcome))
                    return
            reason = "update stream ended before the outcome"
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:  # gone from the journal: ended
                self.queue.put_nowait(E.OperationEnded(host, op_id))
                return
            reason = describe(exc)
        finally:
            call.cancel()
        self.queue.put_nowait(E.ConnectionLost(host, reason))
