"""The manager daemon's lifecycle: run() returns only when fully stopped; shutdown() is
idempotent; `async with ManagerDaemon(...)` wraps both.

Graceful stop order: health NOT_SERVING, stop accepting HTTP, gRPC stop with grace,
then the units' background work, then the event log and its sinks. Supervised services
keep running: a restarted manager re-adopts them.

What the ready file (and the `manager.ready` log line) means: gRPC (and `grpc_socket`)
and HTTP are bound and answer every call; every unit is ready (its service re-adopted or
found gone, its first observation done, autostart services without `after` spawned, or
asked to start); the updater, where configured, has recovered its interrupted
operations; a reload is accepted. What may still be starting then, by design: services
with `after` (started in order once what they follow is up) and services' own start-up
(`start_secs`, health not known yet); the event log's flusher and pruner (events emitted
until then are queued, or committed with a state write, and are listed once flushed,
within a loop turn); the event sinks (each resumes from its durable cursor); the sweep
that stops services the state names and the config no longer does; the registration with
the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from backendai.auth import Token
from backendai.daemon_support import DaemonLifecycle, InstanceLock, Secrets, write_ready_file
from backendai.errors import BackendAIError, ConfigError, Unavailable
from backendai.events.audit import acting, internal
from backendai.events.log import EventLog, Retention
from backendai.grpc_server import GrpcServer
from backendai.listen import ListenAddress
from backendai.loop_bridge import LoopBridge
from manager import preflight
from manager.api.control import ManagerControl
from manager.api.grpc_api import SERVICE_NAME, ManagerServicer
from manager.api.http_routes import manager_http_server
from manager.config import ManagerConfig, ServiceConfig
from manager.statestore import StateStore
from manager.supervision.history import ServiceHistory
from manager.supervision.process_unit import ProcessUnit
from manager.supervision.unit import ServiceUnit
from manager.supervision.units import SupervisedUnits

if TYPE_CHECKING:
    from backendai.events.sinks.runner import SinkRunner
    from backendai.tls import ReloadableServerCredentials
    from manager.api.control import ReloadResult
    from manager.config_reload import ConfigReloader
    from manager.supervision.health_monitor import HealthMonitor
    from manager.updates.faults import UpdateFaults
    from manager.updates.updater import Updater

log = structlog.get_logger(__name__)

GRACE = 2.0
READY_MARGIN = 10.0  # seconds beyond the longest call_timeout for the units to get ready


def monitor_for(unit: ServiceUnit) -> HealthMonitor | None:
    """A service's health monitor; the health modules load only where one is needed."""
    if unit.config.health_check is None:
        return None
    from manager.supervision import health_monitor  # noqa: PLC0415

    return health_monitor.for_unit(unit)


class LazyReloader:
    """The config reload (config_reload.py), loaded at the first reload; each reload's
    outcome is a `config.reload` event."""

    def __init__(self, make: Callable[[], ConfigReloader],
                 record: Callable[[bool, str], None] = lambda ok, detail: None) -> None:
        self.make = make
        self.record = record
        self.reloader: ConfigReloader | None = None

    async def reload(self) -> ReloadResult:
        if self.reloader is None:
            self.reloader = self.make()
        try:
            result = await self.reloader.reload()
        except BackendAIError as exc:
            self.record(False, str(exc))
            raise
        self.record(True, result.message)
        return result


async def wait_ready(units: Mapping[str, ServiceUnit], updater: Updater | None,
                     limit: float) -> None:
    """Wait until every unit is ready and the updater has recovered; Unavailable naming
    what is not ready after `limit` seconds."""
    try:
        async with asyncio.timeout(limit):
            for unit in units.values():
                await unit.ready.wait()
            if updater is not None:
                await updater.recovered.wait()
    except TimeoutError:
        late = [repr(u.name) for u in units.values() if not u.ready.is_set()]
        what = (f"services not ready within {limit:g}s: {', '.join(late)}" if late else
                f"the updater did not recover its operations within {limit:g}s")
        raise Unavailable(f"{what}; not opening the ports") from None


class ManagerDaemon(DaemonLifecycle):
    def __init__(self, config: ManagerConfig, *, ready_file: Path | None = None,
                 faults: UpdateFaults | None = None) -> None:
        """faults: the updater's fault points (tests only; None in production)."""
        super().__init__()
        self.config = config
        self.ready_file = ready_file
        self.faults = faults
        self.control: ManagerControl | None = None
        self.events: EventLog | None = None
        self.history: ServiceHistory | None = None  # status changes -> events
        self.reloader: LazyReloader | None = None  # set once serving
        self.updater: Updater | None = None
        self.grpc_port = 0
        self.http_port = 0
        self._tg: asyncio.TaskGroup | None = None

    def _make_unit(self, svc: ServiceConfig, store: StateStore) -> ServiceUnit:
        unit = self._new_unit(svc, store)
        if self.history is not None:  # (a unit a reload adds too)
            self.history.track(unit)
        return unit

    def _new_unit(self, svc: ServiceConfig, store: StateStore) -> ServiceUnit:
        # The systemd and rcd backends are imported only when used (~1 MB, ~20 ms).
        if svc.backend == "systemd":
            from manager.supervision.systemd_unit import SystemdUnit  # noqa: PLC0415
            return SystemdUnit(svc)
        if svc.backend == "rcd":
            from manager.supervision.rcd_unit import RcdUnit  # noqa: PLC0415
            return RcdUnit(svc, store)
        if svc.backend == "process":
            return ProcessUnit(svc, state_dir=self.config.state_dir, store=store)
        raise ConfigError(f"services.{svc.name}.backend: {svc.backend!r} "
                          "is not available in this build")

    def _make_units(self, store: StateStore) -> dict[str, ServiceUnit]:
        return {svc.name: self._make_unit(svc, store) for svc in self.config.services}

    def _updates(self, config: ManagerConfig | None, supervised: SupervisedUnits,
                 store: StateStore) -> Updater | None:
        """The updater; with a config (a reload's) that has an updatable service and no
        updater yet, one is made and started."""
        if config is None or self.updater is not None or self._tg is None \
                or not any(s.install_root for s in config.services):
            return self.updater
        from manager.updates.updater import Updater  # noqa: PLC0415

        updater = self.updater = Updater(config, supervised.units, store, faults=self.faults)
        self._tg.create_task(updater.run(), name="updater")
        if self.control is not None:
            self.control.updater = updater
        return updater

    @staticmethod
    async def _leftovers(store: StateStore, cfg: ManagerConfig) -> None:
        """Stop and forget services the records name and the config no longer does
        (supervision/leftovers.py), in the background."""
        from manager.supervision.leftovers import stop_removed  # noqa: PLC0415

        try:
            await stop_removed(store, (s.name for s in cfg.services))
        except (OSError, BackendAIError) as exc:
            log.warning("manager.leftovers_failed", error=str(exc))

    def _reloader(self, source: Path, supervised: SupervisedUnits, control: ManagerControl,
                  store: StateStore) -> ConfigReloader:
        from manager.config_reload import ConfigReloader  # noqa: PLC0415

        return ConfigReloader(source, supervised=supervised, control=control, secrets=self.secrets,
                              store=store, make_unit=lambda svc: self._make_unit(svc, store),
                              updates=lambda new: self._updates(new, supervised, store))

    def _open_events(self, store: StateStore) -> EventLog:
        """The event history in the state database; state writes commit its events."""
        cfg = self.config.events
        events = self.events = EventLog(
            store.event_store(), retention=Retention(cfg.retention_count, cfg.retention_days),
            source=cfg.source)
        store.attach_events(events)
        self.history = ServiceHistory(events)
        return events

    def _make_sinks(self, events: EventLog) -> list[SinkRunner]:
        if not self.config.event_sinks:
            return []
        # Only a manager with sinks loads them (ssl, hmac, the HTTP client).
        from backendai.events.sinks.runner import SinkRunner, make_sink  # noqa: PLC0415

        return [SinkRunner(events, make_sink(c, source=events.source), c)
                for c in self.config.event_sinks]

    def reload(self) -> bool:
        """SIGHUP before the manager serves: the secrets alone (recorded)."""
        ok = super().reload()
        self.record_reload(ok)
        return ok

    def record_reload(self, ok: bool, detail: str = "") -> None:
        """The `config.reload` event (any thread): who asked (an operator's Reload, else
        SIGHUP) and what changed, or why nothing did."""
        if self.events is None:
            return
        who = acting() or internal("signal")
        what = detail or ("reloaded" if ok else "reload failed; what was in use stays")
        self.events.emit("config.reload", "manager", what, {"ok": ok}, who=who,
                         result="ok" if ok else detail or "failed")

    async def perform_reload(self) -> None:
        """SIGHUP: the config file and the secrets (config_reload.py) once serving; the
        secrets alone before that."""
        if self.reloader is None:
            await asyncio.to_thread(self.reload)
            return
        with contextlib.suppress(BackendAIError):  # logged by the reloader
            await self.reloader.reload()

    async def run(self) -> None:
        started = time.monotonic()
        cfg = self.config
        lock = InstanceLock(cfg.state_dir / "manager.lock")
        store: StateStore | None = None
        try:
            # the checks --check-config makes too (manager/preflight.py), in its words
            preflight.state_dir(cfg)
            lock.acquire()
            token, hub_token = preflight.tokens(cfg)
            tls: ReloadableServerCredentials | None = None
            if cfg.tls is not None:  # only a manager with TLS loads it
                from backendai.tls import ReloadableServerCredentials  # noqa: PLC0415

                tls = ReloadableServerCredentials(cfg.tls)
            self.secrets = Secrets([*(token.tokens if token else ()), hub_token], tls,
                                   server=token)
            store = StateStore(cfg.state_dir / preflight.DATABASE)
            events = self._open_events(store)
            await events.open()
            sinks = self._make_sinks(events)
            units = self._make_units(store)
            supervised = SupervisedUnits(cfg, units, monitor_for)
            updater: Updater | None = None
            if any(s.install_root for s in cfg.services):
                # Only a manager that updates loads the updater (and urllib, tarfile, ...).
                from manager.updates.updater import Updater  # noqa: PLC0415
                updater = self.updater = Updater(cfg, units, store, faults=self.faults)
            control = self.control = ManagerControl(cfg, units, updater, supervised=supervised,
                                                    events=events)
            servicer = ManagerServicer(control, LoopBridge(asyncio.get_running_loop()))
            grpc_server = GrpcServer(cfg.grpc_listen, token=token,
                                     services=[(SERVICE_NAME, servicer.add_to)],
                                     credentials=tls.credentials() if tls else None,
                                     threads=cfg.grpc_max_calls,
                                     unix_socket=cfg.grpc_socket)
            http = manager_http_server(
                control, cfg.http_listen, token=token,
                ssl_context=tls.ssl_context() if tls is not None and cfg.http_tls else None)
            # Bind both ports before any service starts: a taken port fails the start
            # cleanly instead of leaving a freshly spawned service behind.
            grpc_server.bind()
            await http.bind()
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                events.emit("manager.started", "manager",
                            f"manager {control.manager_version} started (pid {os.getpid()})",
                            {"pid": os.getpid(), "version": control.manager_version})
                supervised.launch(tg)
                if updater is not None:  # it waits for the units to be ready
                    tg.create_task(updater.run(), name="updater")
                events_task: asyncio.Task[None] | None = None  # the event log's writer
                sink_tasks: list[tuple[SinkRunner, asyncio.Task[None]]] = []
                chores: list[asyncio.Task[None]] = []  # the leftovers' sweep, registration
                try:
                    # Serve only once the units know their services (re-adopted, first
                    # observation done) and the updater knows its interrupted operations.
                    await wait_ready(units, updater, self._ready_timeout())
                    supervised.autostart()  # services that start after others, in order
                    source = cfg.source
                    if source is not None:
                        self.reloader = control.reloader = LazyReloader(
                            lambda: self._reloader(source, supervised, control, store),
                            self.record_reload)
                    _, self.grpc_port = await grpc_server.start()
                    _, self.http_port = await http.start()
                    self._announce(started)
                    # Ready (see the module doc): what answering does not need starts
                    # now, off the start's critical path.
                    events_task = tg.create_task(events.run(), name="events")
                    sink_tasks = [(s, tg.create_task(s.run(), name=f"sink-{s.name}"))
                                  for s in sinks]
                    chores = [tg.create_task(self._leftovers(store, cfg), name="leftovers"),
                              *self._register(tg, control, hub_token)]
                    await self._stop.wait()
                    log.info("manager.stopping")
                finally:
                    self.reloader = None
                    for task in chores:
                        task.cancel()
                    await grpc_server.not_serving()
                    await http.stop(GRACE)
                    await grpc_server.stop(GRACE)
                    if self.updater is not None:
                        await self.updater.shutdown()
                    await supervised.shutdown()
                    events.emit("manager.stopped", "manager", "manager stopped",
                                {"pid": os.getpid()})
                    # deliveries in flight end and store their cursors: a clean restart
                    # sends nothing twice
                    for runner, task in sink_tasks:
                        await runner.stop(task, GRACE)
                    if events_task is not None:
                        events_task.cancel()
        finally:
            if self.events is not None:
                await self.events.close()
            if store is not None:
                store.close()
            lock.release()
            self._done.set()
            log.info("manager.stopped")

    def _ready_timeout(self) -> float:
        """A unit is ready after at most one host call (call_timeout) and some local work."""
        return max((s.call_timeout for s in self.config.services), default=0.0) + READY_MARGIN

    def _register(self, tg: asyncio.TaskGroup, control: ManagerControl,
                  token: Token | None) -> list[asyncio.Task[None]]:
        """With `[hub]`: register this host with the hub, in the background."""
        link = self.config.hub
        if link is None:
            return []
        # Only a manager that registers loads the hub's protos.
        from manager.hub_registration import HubRegistration  # noqa: PLC0415

        listen = self.config.grpc_listen
        registration = HubRegistration(
            link, token=token,
            manager_address=lambda: str(ListenAddress(listen.host, self.grpc_port)),
            version=lambda: control.status().version)
        return [tg.create_task(registration.run(), name="hub-registration")]

    def _announce(self, started: float) -> None:
        cfg = self.config
        info = {
            "pid": os.getpid(),
            "role": cfg.role,
            "http": f"{cfg.http_listen.host}:{self.http_port}",
            "http_scheme": "https" if cfg.http_tls else "http",
            "grpc": f"{cfg.grpc_listen.host}:{self.grpc_port}",
            "http_port": self.http_port,
            "grpc_port": self.grpc_port,
            "state_dir": str(cfg.state_dir),
        }
        if cfg.grpc_socket is not None:
            info["grpc_socket"] = str(cfg.grpc_socket)
        if self.ready_file is not None:
            write_ready_file(self.ready_file, info)
        log.info("manager.ready", startup_seconds=round(time.monotonic() - started, 3),
                 **{k: v for k, v in info.items() if k != "pid"})
