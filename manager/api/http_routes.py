"""The seeds' HTTP JSON API on :3081, translated into ManagerControl calls.

Only the routes and their JSON shapes live here; the transport (h11, limits,
keep-alive, errors as JSON, graceful stop) is `backendai/http_server.py`, shared with
the hub. Each handler validates its request fully, calls the service layer once and
renders the answer; the lifecycle logic lives in control.py, shared with the gRPC
servicer. Failures answer `{"success": false, "error": "..."}` with the error's
`http_status`.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

from backendai.auth import Token, Tokens
from backendai.errors import InvalidArgument
from backendai.http_router import Router, json_body
from backendai.http_server import JSON, HttpServer, Request
from backendai.listen import ListenAddress
from manager.api.control import DEFAULT_LOG_LINES, MAX_LOG_LINES, MAX_STOP_TIMEOUT, ManagerControl
from manager.api.events_routes import add_event_routes
from manager.api.ui_routes import add_ui_routes
from manager.api.ws_routes import LiveRoutes
from manager.supervision.states import ServiceStatus, State

# What GET /api/services reports as "status" (seed 004) for each supervisor state.
SIMPLE_STATUS = {State.STARTING: "running", State.RUNNING: "running", State.STOPPING: "running",
                 State.STOPPED: "stopped", State.EXITED: "stopped",
                 State.BACKOFF: "failed", State.FATAL: "failed"}


def manager_http_server(control: ManagerControl, listen: ListenAddress, *,
                        token: bytes | Token | Tokens | None = None,
                        **options: Any) -> HttpServer:
    """The manager's HTTP server: its routes on the shared transport. `options` are
    HttpServer's (max_connections, request_timeout, ...)."""
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
            "backend": st.backend, "message": st.message}


class ManagerRoutes:
    """The seeds' seven endpoints and seed 004's /api/services, as a Router."""

    def __init__(self, control: ManagerControl) -> None:
        self.control = control
        seed = ("service",)
        one = "/api/services/(?P<name>[^/]+)"
        r = self.router = Router()
        r.add("GET", "/status", self._status, query=seed)
        r.add("POST", "/start", self._start, query=seed)
        r.add("POST", "/stop", self._stop, query=(*seed, "timeout", "force"))
        r.add("POST", "/restart", self._restart, query=seed)
        r.add("POST", "/update", self._update, query=seed)
        r.add("GET", "/version", self._version, query=seed)
        r.add("GET", "/logs", self._logs, query=(*seed, "lines"))
        r.add("GET", "/api/services", self._list, query=("page", "page_size", "pattern"))
        r.add("GET", f"{one}/status", self._api_status)
        r.add("POST", f"{one}/start", self._api_start)
        r.add("POST", f"{one}/stop", self._api_stop, query=("timeout", "force"))
        r.add("POST", f"{one}/restart", self._api_restart)
        r.add("GET", f"{one}/logs", self._api_logs, query=("lines",))
        LiveRoutes(control).add_to(r)  # the dashboard's WebSockets (ws_routes.py)
        add_ui_routes(r)  # GET /ui/ (ui_routes.py)
        add_event_routes(r, control)  # GET /api/events (events_routes.py)

    # -- the seeds' endpoints -------------------------------------------------------------

    async def _status(self, req: Request) -> JSON:
        st = self.control.status(_service(req))
        return {"running": st.running, "managerVersion": self.control.manager_version,
                "workingDirectory": self.control.working_directory,
                "service": st.name, "state": st.state.value, "pid": st.pid or None}

    async def _start(self, req: Request) -> JSON:
        await self.control.start(_service(req))
        return {"success": True}

    async def _stop(self, req: Request) -> JSON:
        timeout = _seconds(req, "timeout", 1, MAX_STOP_TIMEOUT)
        await self.control.stop(_service(req), timeout=timeout, force=_flag(req, "force"))
        return {"success": True}

    async def _restart(self, req: Request) -> JSON:
        await self.control.restart(_service(req))
        return {"success": True}

    async def _update(self, req: Request) -> JSON:
        data = json_body(req, ("version", "service"))
        version, service = data.get("version"), data.get("service", _service(req))
        if not isinstance(version, str):
            raise InvalidArgument("version must be a string, e.g. {\"version\": \"2.1.44\"}")
        if not isinstance(service, str):
            raise InvalidArgument("service must be a string")
        if "service" in data and "service" in req.query and service != req.query["service"]:
            raise InvalidArgument("service differs between the query and the body")
        started = await self.control.update(service, version)
        hub = "Hub update" if self.control.role == "hub" else "Update"
        message = (f"{hub} to version {started.version} started" if started.operation_id
                   else f"Already on version {started.version}")
        return {"success": True, "message": message, "operationId": started.operation_id}

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
        found = self.control.list(req.query.get("pattern", ""))
        now = time.time()
        chunk = found[(page - 1) * size:page * size]
        return {"success": True, "services": [service_json(st, now) for st in chunk],
                "count": len(chunk), "meta": {"page": page, "page_size": size,
                                              "total": len(found),
                                              "pages": math.ceil(len(found) / size)}}

    async def _api_status(self, req: Request) -> JSON:
        st = self.control.status(req.params["name"])
        return {"success": True, "service": service_json(st, time.time())}

    async def _api_start(self, req: Request) -> JSON:
        st = await self.control.start(req.params["name"])
        return {"success": True, "pid": st.pid or None,
                "message": f"Service '{st.name}' started successfully"}

    async def _api_stop(self, req: Request) -> JSON:
        timeout = _seconds(req, "timeout", 1, 300)
        st = await self.control.stop(req.params["name"], timeout=timeout,
                                     force=_flag(req, "force"))
        return {"success": True, "message": f"Service '{st.name}' stopped"}

    async def _api_restart(self, req: Request) -> JSON:
        st = await self.control.restart(req.params["name"])
        return {"success": True, "pid": st.pid or None,
                "message": f"Service '{st.name}' restarted"}

    async def _api_logs(self, req: Request) -> JSON:
        lines = _int(req, "lines", DEFAULT_LOG_LINES, 1, MAX_LOG_LINES)
        name = self.control.unit(req.params["name"]).name
        text = "\n".join(await self.control.logs(name, lines))
        return {"success": True, "service": name, "lines": lines, "logs": text}
