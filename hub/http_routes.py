"""The hub's HTTP JSON API (`http_listen`): the same fleet and rollouts the gRPC API
serves, as JSON for the dashboard and for curl (docs/DASHBOARD.md).

    GET  /api/info                              the hub: version, hosts, active rollout
    GET  /api/hosts[?label=k=v,..&state=&reachable=&role=&search=]
    GET  /api/hosts/{name}[?timeout=]           one host, its services asked live
    POST /api/hosts/{name}/services/{service}/start|stop|restart[?force=&timeout=]
    GET  /api/rollouts[?limit=&active=]         newest first, without host rows
    GET  /api/rollouts/{id}                     waves and every host row, with reasons
    GET  /api/rollouts/{id}/events[?from=&limit=]
    POST /api/rollouts                          start (or {"dry_run": true}: the plan)
    POST /api/rollouts/{id}/pause|resume|promote|abort|retry-failed

Handlers validate, call the hub's objects (Inventory, Fleet, Rollouts) once and render
with hub/json_views.py; errors are the shared `{"success": false, "error": ...}` with
the error's status. A manager's refusal keeps its meaning (409 for an update in
progress, 404 for an unknown service), a manager that cannot be reached is 502/504.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from backendai.errors import InvalidArgument, StoreUnavailable
from backendai.http_query import query_flag, query_int, query_seconds, query_text
from backendai.http_router import Router, json_body
from backendai.http_server import JSON, HttpError, Request
from backendai.v1 import hub_pb2 as pb
from backendai.validate import check_host_name, check_labels, check_service_name
from hub import json_views as views
from hub import pb_convert as conv
from hub.fleet import MAX_STOP_TIMEOUT, Fleet
from hub.inventory import HostView, Inventory
from hub.manager_links import describe
from hub.rollouts import MAX_LIST, Rollouts

MAX_ID = 100
MAX_SEARCH = 200
MAX_EVENTS = 1000
HOST_TIMEOUT = 5.0
INFO_STORE_TIMEOUT = 1.0  # /api/info answers without the active rollout past this
CONTROLS = {"pause": "pause", "resume": "resume", "promote": "promote", "abort": "abort",
            "retry-failed": "retry_failed"}
LIFECYCLE = ("start", "stop", "restart")

# A manager's gRPC refusal, as the HTTP status the hub answers with.
MANAGER_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409, grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.UNIMPLEMENTED: 501, grpc.StatusCode.UNAVAILABLE: 502,
    grpc.StatusCode.UNAUTHENTICATED: 502, grpc.StatusCode.PERMISSION_DENIED: 502,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504, grpc.StatusCode.CANCELLED: 502,
}

START_FIELDS = ("version", "target", "strategy", "dry_run", "service", "include_hub",
                "description", "start_stopped")
TARGET_FIELDS = ("labels", "hosts")
STRATEGY_FIELDS = ("waves", "max_parallel", "min_healthy_seconds", "healthy_deadline_seconds",
                   "step_deadline_seconds", "max_failures_per_wave", "max_failures_total",
                   "pause_seconds", "pause_until_promote", "auto_rollback", "seed")


def _rollout_id(req: Request) -> str:
    rid = req.params["id"]
    if not rid or len(rid) > MAX_ID or not rid.isprintable():
        raise InvalidArgument("id: not a rollout id")
    return rid


def _host_name(req: Request) -> str:
    return check_host_name(req.params["name"], "host")


async def _manager_call(host: str, call: Awaitable[Any]) -> Any:
    """Await a call the hub makes to a host's manager; its refusal becomes an HTTP error
    that names the host and keeps the manager's words."""
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        raise HttpError(MANAGER_STATUS.get(exc.code(), 502),
                        f"host {host}: {describe(exc)}") from None


# ---------------------------------------------------------------- JSON body values

def _object(data: JSON, key: str, allowed: tuple[str, ...]) -> JSON:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise InvalidArgument(f"{key}: expected an object")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise InvalidArgument(f"{key}.{unknown[0][:40]}: unknown field "
                              f"(allowed: {', '.join(allowed)})")
    return value


def _text(data: JSON, key: str, what: str, most: int = 1000) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise InvalidArgument(f"{what}: expected a string")
    if len(value) > most:
        raise InvalidArgument(f"{what}: at most {most} characters")
    return value


def _bool(data: JSON, key: str, what: str) -> bool | None:
    value = data.get(key)
    if value is not None and not isinstance(value, bool):
        raise InvalidArgument(f"{what}: expected true or false")
    return value


def _number(data: JSON, key: str, what: str, high: float) -> float:
    value = data.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or not 0 <= value <= high:
        raise InvalidArgument(f"{what}: expected a number between 0 and {high:g}")
    return float(value)


def _integer(data: JSON, key: str, what: str, high: int) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise InvalidArgument(f"{what}: expected an integer between 0 and {high}")
    return value


def _strings(data: JSON, key: str, what: str, most: int) -> list[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or len(value) > most \
            or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{what}: expected a list of at most {most} strings")
    return value


def start_request(data: JSON) -> pb.StartRolloutRequest:
    """`POST /api/rollouts`'s body as the gRPC request, so both transports share one
    path from here on (defaults, validation, the plan): the JSON mirrors the message."""
    unknown = sorted(set(data) - set(START_FIELDS))
    if unknown:
        raise InvalidArgument(f"unknown field {unknown[0][:40]!r} "
                              f"(allowed: {', '.join(START_FIELDS)})")
    if not isinstance(data.get("version"), str) or not data["version"]:
        raise InvalidArgument("version: required, e.g. {\"version\": \"2.1.44\"}")
    target = _object(data, "target", TARGET_FIELDS)
    s = _object(data, "strategy", STRATEGY_FIELDS)
    labels = target.get("labels", {})
    check_labels(labels, "target.labels")
    strategy = pb.RolloutStrategy(
        waves=_strings(s, "waves", "strategy.waves", 1000),
        max_parallel=_integer(s, "max_parallel", "strategy.max_parallel", 2**32 - 1) or 0,
        min_healthy_seconds=_number(s, "min_healthy_seconds", "strategy.min_healthy_seconds",
                                    1e9),
        healthy_deadline_seconds=_number(s, "healthy_deadline_seconds",
                                         "strategy.healthy_deadline_seconds", 1e9),
        step_deadline_seconds=_number(s, "step_deadline_seconds",
                                      "strategy.step_deadline_seconds", 1e9),
        max_failures_per_wave=_text(s, "max_failures_per_wave",
                                    "strategy.max_failures_per_wave", 40),
        max_failures_total=_text(s, "max_failures_total", "strategy.max_failures_total", 40),
        pause_seconds=_number(s, "pause_seconds", "strategy.pause_seconds", 1e9),
        pause_until_promote=bool(_bool(s, "pause_until_promote",
                                       "strategy.pause_until_promote")))
    auto_rollback = _bool(s, "auto_rollback", "strategy.auto_rollback")
    if auto_rollback is not None:
        strategy.auto_rollback = auto_rollback
    seed = _integer(s, "seed", "strategy.seed", 2**63 - 1)
    if seed is not None:
        strategy.seed = seed
    return pb.StartRolloutRequest(
        version=_text(data, "version", "version", 200),
        target=pb.RolloutTarget(labels=labels,
                                hosts=_strings(target, "hosts", "target.hosts", 100_000)),
        strategy=strategy, dry_run=bool(_bool(data, "dry_run", "dry_run")),
        service=_text(data, "service", "service", 200),
        include_hub=bool(_bool(data, "include_hub", "include_hub")),
        description=_text(data, "description", "description"),
        start_stopped=bool(_bool(data, "start_stopped", "start_stopped")))


# ---------------------------------------------------------------- host filters

def _label_filter(text: str) -> dict[str, str]:
    """`label=group=edge,site=berlin`: every pair must match."""
    pairs: dict[str, str] = {}
    for part in filter(None, text.split(",")):
        key, sep, value = part.partition("=")
        if not sep:
            raise InvalidArgument(f"label must be NAME=VALUE[,NAME=VALUE...], got {part[:40]!r}")
        pairs[key] = value
    return check_labels(pairs, "label")


class HostFilter:
    """`GET /api/hosts`' filters; all given must match."""

    def __init__(self, req: Request) -> None:
        self.labels = _label_filter(query_text(req, "label", 2000))
        state = query_text(req, "state", 40).upper()
        if state and state not in views.SERVICE_STATE_NAMES:
            known = ", ".join(sorted(views.SERVICE_STATE_NAMES))
            raise InvalidArgument(f"state must be one of {known}, got {state[:40]!r}")
        self.state = state
        self.reachable = query_flag(req, "reachable") if "reachable" in req.query else None
        role = query_text(req, "role", 40)
        if role and role not in ("agent", "hub"):
            raise InvalidArgument(f"role must be agent or hub, got {role!r}")
        self.role = role or None
        self.search = query_text(req, "search", MAX_SEARCH).casefold()

    def __call__(self, view: HostView) -> bool:
        if self.reachable is not None and view.reachable != self.reachable:
            return False
        if self.state and views.service_state(
                view.status.state if view.status is not None else 0) != self.state:
            return False
        if not self.search:
            return True
        e = view.entry
        words = [e.name, e.manager_address, view.version, view.message, view.agent_version,
                 *(f"{k}={v}" for k, v in e.labels.items())]
        return any(self.search in w.casefold() for w in words)


# ---------------------------------------------------------------- the routes

class HubRoutes:
    def __init__(self, *, version: str, inventory: Inventory, fleet: Fleet,
                 rollouts: Rollouts) -> None:
        self.version = version
        self.inventory = inventory
        self.fleet = fleet
        self.rollouts = rollouts
        self.started = time.time()
        self.hostname = socket.gethostname()
        r = self.router = Router()
        one_host = "/api/hosts/(?P<name>[^/]+)"
        one_rollout = "/api/rollouts/(?P<id>[^/]+)"
        r.add("GET", "/api/info", self._info)
        r.add("GET", "/api/hosts", self._hosts,
              query=("label", "state", "reachable", "role", "search"))
        r.add("GET", one_host, self._host, query=("timeout",))
        r.add("POST", f"{one_host}/services/(?P<service>[^/]+)/(?P<action>[^/]+)",
              self._lifecycle, query=("force", "timeout"))
        r.add("GET", "/api/rollouts", self._rollouts, query=("limit", "active"))
        r.add("POST", "/api/rollouts", self._start)
        r.add("GET", one_rollout, self._rollout)
        r.add("GET", f"{one_rollout}/events", self._events, query=("from", "limit"))
        r.add("POST", f"{one_rollout}/(?P<command>[^/]+)", self._control)

    # -- hosts ----------------------------------------------------------------------------

    async def _info(self, req: Request) -> JSON:
        try:  # the hub answers even while its database is away
            async with asyncio.timeout(INFO_STORE_TIMEOUT):
                active = await self.rollouts.store.ids(limit=1, active_only=True)
        except (StoreUnavailable, TimeoutError):
            active = []
        lead = self.rollouts.leadership
        ident = req.caller.identity
        return {"version": self.version, "hostname": self.hostname,
                "caller": {"name": ident.name, "role": ident.role.value if ident.role else None},
                "host_count": len(self.inventory.hosts),
                "reachable": sum(1 for v in self.inventory.hosts.values() if v.reachable),
                "active_rollout_id": active[0] if active else "",
                "leader": lead.leading, "leader_address": lead.leader_address(),
                "started": self.started, "server_time": time.time()}

    async def _hosts(self, req: Request) -> JSON:
        keep = HostFilter(req)
        now = time.time()
        found = [v for v in self.inventory.select(keep.labels, role=keep.role) if keep(v)]
        return {"hosts": views.hosts(found, self.inventory, now), "count": len(found),
                "total": len(self.inventory.hosts), "server_time": now}

    async def _host(self, req: Request) -> JSON:
        name = _host_name(req)
        timeout = query_seconds(req, "timeout", HOST_TIMEOUT, 0.1, 60)
        view = self.inventory.get(name)
        live = (await self.fleet.host_status([name], timeout)).hosts[0]
        now = time.time()
        out = views.host(view, self.inventory, now)
        out.update(facts=views.facts(view), services=[views.service(s) for s in live.services],
                   services_error=live.error, server_time=now)
        return out

    async def _lifecycle(self, req: Request) -> JSON:
        name = _host_name(req)
        service = check_service_name(req.params["service"], "service")
        action = req.params["action"]
        if action not in LIFECYCLE:
            raise InvalidArgument(f"action must be one of {', '.join(LIFECYCLE)}, "
                                  f"got {action[:40]!r}")
        force = query_flag(req, "force")
        if action != "stop" and "timeout" in req.query:
            raise InvalidArgument("timeout: only for stop")
        self.inventory.get(name)
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "start": lambda: self.fleet.start(name, service, force=force),
            "restart": lambda: self.fleet.restart(name, service, force=force),
            "stop": lambda: self.fleet.stop(
                name, service, force=force,
                timeout=query_seconds(req, "timeout", 0.0, 0, MAX_STOP_TIMEOUT)),
        }
        st = await _manager_call(name, calls[action]())
        return {"success": True, "host": name, "service": views.service(st)}

    # -- rollouts -------------------------------------------------------------------------

    async def _rollouts(self, req: Request) -> JSON:
        limit = query_int(req, "limit", 20, 1, MAX_LIST)
        found = await self.rollouts.list(limit, query_flag(req, "active"))
        return {"rollouts": [views.rollout_summary(r) for r in found],
                "server_time": time.time()}

    async def _rollout(self, req: Request) -> JSON:
        out = views.rollout(await self.rollouts.get(_rollout_id(req)))
        out["server_time"] = time.time()
        return out

    async def _events(self, req: Request) -> JSON:
        rid = (await self.rollouts.get(_rollout_id(req))).id
        first = query_int(req, "from", 0, 0, 2**62)
        limit = query_int(req, "limit", 200, 1, MAX_EVENTS)
        out: list[JSON] = []
        async for n in self.rollouts.watch(rid, first, follow=False):
            out.append(views.note(n))
            if len(out) >= limit:
                break
        return {"id": rid, "events": out, "next": out[-1]["index"] + 1 if out else first}

    async def _start(self, req: Request) -> JSON:
        request = start_request(json_body(req, START_FIELDS))
        r = await self.rollouts.start(conv.start_request(request))
        out = views.rollout(r)
        out["server_time"] = time.time()
        return out

    async def _control(self, req: Request) -> JSON:
        rid = _rollout_id(req)
        command = CONTROLS.get(req.params["command"])
        if command is None:
            raise InvalidArgument(f"unknown command {req.params['command'][:40]!r} "
                                  f"(allowed: {', '.join(CONTROLS)})")
        reason = ""
        if req.body:
            reason = _text(json_body(req, ("reason",)), "reason", "reason")
        r = await self.rollouts.control(rid, command, reason)
        out = views.rollout_summary(r)
        out["success"] = True
        return out
