"""The seeds' HTTP JSON API on :3081, translated into ManagerControl calls.

Only the routes and their JSON shapes live here; the transport (h11, limits,
keep-alive, errors as JSON, graceful stop) is `backendai/http_server.py`, shared with
the hub. Each handler validates its request fully, calls the service layer once and
renders the answer; the lifecycle logic lives in control.py, shared with the gRPC
servicer. Failures answer `{"success": false, "error": "..."}` with the error's
`http_status`.

Beyond the seeds: `?force=true` on /start, /stop, /restart (and /api/services/NAME/...)
cancels a running update of the service first (without it such a request is a 409
naming the operation); `GET /update[?service=]` and `GET /update/{operationId}` report
an operation step by step; `GET /status` carries an `update` summary; `POST /update`
takes optional `"origin"` and `"start_stopped"` and answers `"started"`.
"""

from __future__ import annotations

import math
import re
import time
from typing import TYPE_CHECKING, Any

from backendai.auth import Token, Tokens
from backendai.errors import InvalidArgument
from backendai.http_router import Router, json_body
from backendai.http_server import JSON, HttpServer, Request
from backendai.listen import ListenAddress
from manager.api.control import (
    DEFAULT_LOG_LINES,
    MAX_LOG_LINES,
    MAX_STOP_TIMEOUT,
    ManagerControl,
    is_pattern,
)
from manager.api.events_routes import add_event_routes
from manager.api.metrics_routes import add_metrics_routes
from manager.api.ui_routes import add_ui_routes
from manager.api.ws_routes import LiveRoutes
from manager.supervision.states import ServiceStatus, State, UpdateSummary

if TYPE_CHECKING:  # the updates wing loads only where updates are configured
    from manager.updates.results import OperationReport

# What GET /api/services reports as "status" (seed 004) for each supervisor state.
SIMPLE_STATUS = {State.STARTING: "running", State.RUNNING: "running", State.STOPPING: "running",
                 State.STOPPED: "stopped", State.EXITED: "stopped",
                 State.BACKOFF: "failed", State.FATAL: "failed"}


def manager_http_server(control: ManagerControl, listen: ListenAddress, *,
                        token: bytes | Token | Tokens | None = None,
                        **options: Any) -> HttpServer:
    """The manager's HTTP server: its routes on the shared transport. `options` are
    HttpServer's (max_connections, request_timeout, ssl_context for HTTPS, ...)."""
    return HttpServer(listen, ManagerRoutes(control).router, token=token, **options)


def _service(req: Request) -> str:
    """The service a request names: the path's {name}, else ?service= (primary)."""
    return req.params.get("name") or req.query.get("service", "")


def _int(req: Request, key: str, default: int, low: int, high: int) -> int:
    text = req.query.get(key)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 18 and low <= int(text) <= high):
        raise InvalidArgument(f"{key} must be an integer between {low} and {high}, "
                              f"got {text[:40]!r}")
    return int(text)


def _seconds(req: Request, key: str, low: float, high: float) -> float | None:
    text = req.query.get(key)
    if text is None:
        return None
    if not re.fullmatch(r"[0-9]{1,9}(\.[0-9]{1,9})?", text) or not low <= float(text) <= high:
        raise InvalidArgument(f"{key} must be a number of seconds between {low:g} and "
                              f"{high:g}, got {text[:40]!r}")
    return float(text)


def _flag(req: Request, key: str) -> bool:
    text = req.query.get(key, "false")
    if text not in ("true", "false", "1", "0"):
        raise InvalidArgument(f"{key} must be true or false, got {text[:40]!r}")
    return text in ("true", "1")


def service_json(st: ServiceStatus, now: float) -> JSON:
    """One service as GET /api/services (seed 004) reports it."""
    return {"name": st.name, "status": SIMPLE_STATUS[st.state], "state": st.state.value,
            "pid": st.pid or None, "restarts": st.restarts,
            "uptime_seconds": round(max(0.0, now - st.started_at), 3) if st.started_at else 0.0,
            "exit_code": st.exit_code, "version": st.version, "package": st.package,
            "backend": st.backend, "message": st.message,
            # seed 004's health: healthy | unhealthy | unknown (also without a check)
            "health": st.health or "unknown", "health_message": st.health_message}


def _many(control: ManagerControl, pattern: str, done: str) -> JSON:
    """The answer to a lifecycle request on every service a glob matched."""
    found = control.list(pattern)
    names = ", ".join(st.name for st in found)
    return {"success": True, "services": [st.name for st in found],
            "message": f"{len(found)} services {done}: {names}"}


def summary_json(u: UpdateSummary) -> JSON:
    """The update summary GET /status carries (UpdateSummary, in the seeds' camelCase)."""
    return {"runningOperationId": u.running_operation_id, "runningVersion": u.running_version,
            "runningStep": u.running_step, "runningOrigin": u.running_origin,
            "lastOperationId": u.last_operation_id, "lastOutcome": u.last_outcome,
            "lastMessage": u.last_message, "lastVersion": u.last_version,
            "lastOrigin": u.last_origin}


def operation_json(r: OperationReport) -> JSON:
    """One operation as GET /update answers it."""
    op = r.op
    return {"success": True, "operationId": op.id, "service": op.service,
            "kind": op.kind.value, "version": op.to_version, "fromVersion": op.from_version,
            "state": op.state, "step": r.step,
            "outcome": op.outcome.value if op.outcome else "", "message": op.message,
            "origin": op.origin, "leaveStopped": op.leave_stopped,
            "cancelledBy": op.cancel_request, "createdAt": round(op.created, 3),
            "finishedAt": round(op.finished, 3),
            "steps": [{"step": s.step, "status": s.status, "message": s.message,
                       "startedAt": round(s.started, 3),
                       "elapsedSeconds": round(s.elapsed, 3)} for s in r.steps]}


class ManagerRoutes:
    """The seeds' seven endpoints and seed 004's /api/services, as a Router."""

    def __init__(self, control: ManagerControl) -> None:
        self.control = control
        seed = ("service",)
        one = "/api/services/(?P<name>[^/]+)"
        r = self.router = Router()
        r.add("GET", "/status", self._status, query=seed)
        r.add("POST", "/start", self._start, query=(*seed, "force"))
        r.add("POST", "/stop", self._stop, query=(*seed, "timeout", "force"))
        r.add("POST", "/restart", self._restart, query=(*seed, "force"))
        r.add("POST", "/update", self._update, query=seed)
        r.add("GET", "/update", self._get_update, query=seed)
        r.add("GET", "/update/(?P<op>[^/]+)", self._get_operation)
        r.add("GET", "/version", self._version, query=seed)
        r.add("GET", "/logs", self._logs, query=(*seed, "lines"))
        r.add("GET", "/api/services", self._list, query=("page", "page_size", "pattern"))
        r.add("GET", f"{one}/status", self._api_status)
        r.add("POST", f"{one}/start", self._api_start, query=("force",))
        r.add("POST", f"{one}/stop", self._api_stop, query=("timeout", "force"))
        r.add("POST", f"{one}/restart", self._api_restart, query=("force",))
        r.add("GET", f"{one}/logs", self._api_logs, query=("lines",))
        self.metrics = add_metrics_routes(r, control)  # GET /metrics (docs/METRICS.md)
        r.add("POST", "/reload", self._reload)  # the config file and secrets, as SIGHUP
        LiveRoutes(control).add_to(r)  # the dashboard's WebSockets (ws_routes.py)
        add_ui_routes(r)  # GET /ui/ (ui_routes.py)
        add_event_routes(r, control)  # GET /api/events (events_routes.py)

    # -- the seeds' endpoints -------------------------------------------------------------

    async def _status(self, req: Request) -> JSON:
        st = self.control.status(_service(req))
        out: JSON = {"running": st.running, "managerVersion": self.control.manager_version,
                     "workingDirectory": self.control.working_directory,
                     "service": st.name, "state": st.state.value, "pid": st.pid or None,
                     "update": summary_json(st.update)}
        if st.health:  # extra keys (the seeds allow them) when a health check is set
            out.update(health=st.health, healthMessage=st.health_message)
        return out

    async def _start(self, req: Request) -> JSON:
        await self.control.start(_service(req), force=_flag(req, "force"))
        return {"success": True}

    async def _stop(self, req: Request) -> JSON:
        timeout = _seconds(req, "timeout", 1, MAX_STOP_TIMEOUT)
        await self.control.stop(_service(req), timeout=timeout, force=_flag(req, "force"))
        return {"success": True}

    async def _restart(self, req: Request) -> JSON:
        await self.control.restart(_service(req), force=_flag(req, "force"))
        return {"success": True}

    async def _update(self, req: Request) -> JSON:
        data = json_body(req, ("version", "service", "origin", "start_stopped"))
        version, service = data.get("version"), data.get("service", _service(req))
        origin, start_stopped = data.get("origin", ""), data.get("start_stopped", False)
        if not isinstance(version, str):
            raise InvalidArgument("version must be a string, e.g. {\"version\": \"2.1.44\"}")
        if not isinstance(service, str):
            raise InvalidArgument("service must be a string")
        if "service" in data and "service" in req.query and service != req.query["service"]:
            raise InvalidArgument("service differs between the query and the body")
        if not isinstance(origin, str):
            raise InvalidArgument("origin must be a string")
        if not isinstance(start_stopped, bool):
            raise InvalidArgument("start_stopped must be true or false")
        started = await self.control.update(service, version, origin=origin,
                                            start_stopped=start_stopped)
        hub = "Hub update" if self.control.role == "hub" else "Update"
        message = (f"{hub} to version {started.version} started" if started.started
                   else f"Already on version {started.version}")
        return {"success": True, "message": message, "operationId": started.operation_id,
                "started": started.started}

    async def _get_update(self, req: Request) -> JSON:
        return operation_json(self.control.get_update(_service(req)))

    async def _get_operation(self, req: Request) -> JSON:
        return operation_json(self.control.get_update("", req.params["op"]))

    async def _version(self, req: Request) -> JSON:
        info = self.control.version(_service(req))
        return {"version": info.version, "name": info.name, "service": info.service}

    async def _logs(self, req: Request) -> JSON:
        lines = _int(req, "lines", DEFAULT_LOG_LINES, 1, MAX_LOG_LINES)
        name = self.control.unit(_service(req)).name
        text = "\n".join(await self.control.logs(name, lines))
        return {"service": name, "lines": lines, "logs": text}

    # -- seed 004: /api/services ----------------------------------------------------------

    async def _list(self, req: Request) -> JSON:
        page = _int(req, "page", 1, 1, 1_000_000)
        size = _int(req, "page_size", 50, 1, 500)
        listed = self.control.count(req.query.get("pattern", ""))
        found = listed.services
        now = time.time()
        chunk = found[(page - 1) * size:page * size]
        return {"success": True, "services": [service_json(st, now) for st in chunk],
                "count": len(chunk), "meta": {"page": page, "page_size": size,
                                              "total": len(found),
                                              "pages": math.ceil(len(found) / size)},
                "counts": listed.counts}

    async def _api_status(self, req: Request) -> JSON:
        st = self.control.status(req.params["name"])
        return {"success": True, "service": service_json(st, time.time())}

    async def _api_start(self, req: Request) -> JSON:
        name = req.params["name"]
        st = await self.control.start(name, force=_flag(req, "force"))
        if is_pattern(name):
            return _many(self.control, name, "started")
        return {"success": True, "pid": st.pid or None,
                "message": f"Service '{st.name}' started successfully"}

    async def _api_stop(self, req: Request) -> JSON:
        timeout = _seconds(req, "timeout", 1, 300)
        name = req.params["name"]
        st = await self.control.stop(name, timeout=timeout, force=_flag(req, "force"))
        if is_pattern(name):
            return _many(self.control, name, "stopped")
        return {"success": True, "message": f"Service '{st.name}' stopped"}

    async def _api_restart(self, req: Request) -> JSON:
        name = req.params["name"]
        st = await self.control.restart(name, force=_flag(req, "force"))
        if is_pattern(name):
            return _many(self.control, name, "restarted")
        return {"success": True, "pid": st.pid or None,
                "message": f"Service '{st.name}' restarted"}

    async def _reload(self, req: Request) -> JSON:
        done = await self.control.reload()
        return {"success": True, "message": done.message, "added": done.added,
                "removed": done.removed, "changed": done.changed, "unchanged": done.unchanged}

    async def _api_logs(self, req: Request) -> JSON:
        lines = _int(req, "lines", DEFAULT_LOG_LINES, 1, MAX_LOG_LINES)
        name = self.control.unit(req.params["name"]).name
        text = "\n".join(await self.control.logs(name, lines))
        return {"success": True, "service": name, "lines": lines, "logs": text}
