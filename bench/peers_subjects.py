"""The benchmark's subjects behind one small interface: our ai-manager, supervisord and
systemd --user, each started from the same list of service specs (see `svc()` in
manager_vs_peers.py) and asked the same questions."""

from __future__ import annotations

import abc
import http.client
import shlex
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peers_ours import OurManager, pb
from peers_supervisord import Program, Supervisord
from peers_systemd import SystemdUser


class Subject(abc.ABC):
    name = ""
    pid = 0  # the daemon's

    @abc.abstractmethod
    def start(self) -> float:
        """Start the daemon; seconds until its API answers."""

    @abc.abstractmethod
    def running_pid(self, svc: str) -> int:
        """The service's pid when RUNNING, else 0."""

    @abc.abstractmethod
    def status_calls(self, svc: str) -> dict[str, Callable[[], Any]]:
        """One status call per transport."""

    @abc.abstractmethod
    def status_all_calls(self) -> dict[str, Callable[[], Any]]:
        """One all-services status call per transport."""

    @abc.abstractmethod
    def start_service(self, svc: str) -> None: ...

    @abc.abstractmethod
    def stop_service(self, svc: str) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...


class Ours(Subject):
    name = "ours"

    def __init__(self, root: Path, services: list[dict[str, Any]],
                 scrape_every: float = 0.0) -> None:
        """scrape_every: GET /metrics this often while it runs, as Prometheus would."""
        self.scrape_every = scrape_every
        self.scraping = threading.Event()
        self.scraper: threading.Thread | None = None
        conf = [{"name": s["name"], "command": s["argv"], "start_secs": float(s["start_secs"]),
                 "stop_timeout": float(s["stop_timeout"]), "autostart": s["autostart"],
                 "crash_loop_window": 0.0, "crash_loop_max": 0, "working_directory": str(root),
                 **({"restart": "never"} if s.get("once") else {})} for s in services]
        self.m = OurManager(root, conf)

    def start(self) -> float:
        took = self.m.start()
        self.pid = self.m.pid
        if self.scrape_every > 0:
            self.scraper = threading.Thread(target=self._scrape, daemon=True)
            self.scraper.start()
        return took

    def _scrape(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.m.info["http_port"], timeout=30)
        try:
            while not self.scraping.wait(self.scrape_every):
                conn.request("GET", "/metrics")
                conn.getresponse().read()
        except OSError:
            pass  # the manager stopped
        finally:
            conn.close()

    def running_pid(self, svc: str) -> int:
        st = self.m.status(svc)
        return st.pid if st.state == pb.SERVICE_STATE_RUNNING else 0

    def status_calls(self, svc: str) -> dict[str, Callable[[], Any]]:
        req = pb.StatusRequest(service=svc)
        stub = self.m.grpc()
        unix = self.m.grpc_unix()
        return {"grpc": lambda: stub.Status(req, timeout=30),
                "http": lambda: self.m.get(f"/status?service={svc}"),
                "grpc_unix": lambda: unix.Status(req, timeout=30)}

    def status_all_calls(self) -> dict[str, Callable[[], Any]]:
        req = pb.ListServicesRequest()
        stub = self.m.grpc()
        return {"grpc": lambda: stub.ListServices(req, timeout=30),
                "http": lambda: self.m.get("/api/services?page_size=50")}

    def start_service(self, svc: str) -> None:
        self.m.grpc().Start(pb.StartRequest(service=svc), timeout=30)

    def stop_service(self, svc: str) -> None:
        self.m.grpc().Stop(pb.StopRequest(service=svc), timeout=30)

    def close(self) -> None:
        self.scraping.set()
        if self.scraper is not None:
            self.scraper.join(10)
        self.m.close()


class SupervisordSubject(Subject):
    name = "supervisord"

    def __init__(self, root: Path, services: list[dict[str, Any]], exe: Path) -> None:
        self.exe = exe
        self.s = Supervisord(root, [
            Program(s["name"], s["argv"], startsecs=int(s["start_secs"]),
                    stopwaitsecs=int(s["stop_timeout"]), autostart=s["autostart"])
            for s in services if not s.get("once")])

    def start(self) -> float:
        took = self.s.start(self.exe)
        self.pid = self.s.pid
        return took

    def running_pid(self, svc: str) -> int:
        info = self.s.info(svc)
        return int(info["pid"]) if info["statename"] == "RUNNING" else 0

    def status_calls(self, svc: str) -> dict[str, Callable[[], Any]]:
        return {"xmlrpc": lambda: self.s.info(svc)}

    def status_all_calls(self) -> dict[str, Callable[[], Any]]:
        return {"xmlrpc": self.s.all_info}

    def start_service(self, svc: str) -> None:
        self.s.rpc().supervisor.startProcess(svc)

    def stop_service(self, svc: str) -> None:
        self.s.rpc().supervisor.stopProcess(svc)

    def close(self) -> None:
        self.s.close()


class SystemdSubject(Subject):
    name = "systemd"

    def __init__(self, root: Path, services: list[dict[str, Any]]) -> None:
        self.sd = SystemdUser(root)
        self.services = [s for s in services if not s.get("once")]
        for s in self.services:
            self.sd.write_unit(s["name"], "\n".join([
                "[Unit]", "StartLimitIntervalSec=0", "[Service]",
                f"ExecStart={shlex.join(s['argv'])}", "Restart=always", "RestartSec=100ms",
                f"TimeoutStopSec={s['stop_timeout']}", ""]))

    def start(self) -> float:
        took = self.sd.start()
        self.pid = self.sd.pid
        auto = [s["name"] + ".service" for s in self.services if s["autostart"]]
        if auto:
            self.sd.systemctl("start", *auto)
        return took

    def running_pid(self, svc: str) -> int:
        info = self.sd.show(svc + ".service")[0]
        return int(info["MainPID"]) if info.get("SubState") == "running" else 0

    def status_calls(self, svc: str) -> dict[str, Callable[[], Any]]:
        return {"systemctl": lambda: self.sd.show(svc + ".service")}

    def status_all_calls(self) -> dict[str, Callable[[], Any]]:
        units = [s["name"] + ".service" for s in self.services]
        return {"systemctl": lambda: self.sd.show(*units)}

    def start_service(self, svc: str) -> None:
        self.sd.systemctl("start", svc + ".service")

    def stop_service(self, svc: str) -> None:
        self.sd.systemctl("stop", svc + ".service")

    def close(self) -> None:
        self.sd.close()
