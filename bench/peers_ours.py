"""Our `ai-manager` as a benchmark subject: a real process on 127.0.0.1 port 0, its
bound ports read from `--ready-file`, with sync gRPC and keep-alive HTTP clients."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import psutil
import tomli_w

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backendai.v1 import manager_pb2 as pb  # noqa: E402 - after the path set-up
from backendai.v1 import manager_pb2_grpc as pb_grpc  # noqa: E402

TAG_ENV = "AI_BENCH_TAG"
__all__ = ["TAG_ENV", "OurManager", "pb"]


class OurManager:
    def __init__(self, root: Path, services: list[dict[str, Any]]) -> None:
        self.root = root
        self.tag = f"{os.getpid()}-{time.monotonic_ns()}"
        self.services = [{**s, "env": {**s.get("env", {}), TAG_ENV: self.tag}}
                         for s in services]
        self.state_dir = root / "state"
        self.config = root / "manager.toml"
        self.ready = root / "ready.json"
        self.socket = root / "grpc.sock"  # local clients, as supervisorctl's unix socket
        self.unix_channel: grpc.Channel | None = None
        self.unix_stub: pb_grpc.ManagerStub | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self.info: dict[str, Any] = {}
        self.channel: grpc.Channel | None = None
        self.stub: pb_grpc.ManagerStub | None = None
        self.http: http.client.HTTPConnection | None = None
        self.code_root = ROOT  # run the manager of this tree (another: a baseline's code)
        self.extra: dict[str, Any] = {}  # more top-level config (e.g. event_sinks)

    def write_config(self) -> None:
        self.config.write_text(tomli_w.dumps({
            "role": "agent", "http_listen": "127.0.0.1:0", "grpc_listen": "127.0.0.1:0",
            "grpc_socket": str(self.socket), "state_dir": str(self.state_dir),
            "log_format": "json", **self.extra, "services": self.services}))

    def start(self, timeout: float = 20.0) -> float:
        """Start `ai-manager`; returns seconds from spawn to the ready file (both listeners up)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.write_config()
        log = (self.root / "manager.log").open("ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "manager.main", "--config", str(self.config),
             "--ready-file", str(self.ready)], cwd=self.code_root, stdout=log, stderr=log,
            stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.pid = self.proc.pid
        deadline = t0 + timeout
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("ai-manager did not become ready: "
                                   + (self.root / "manager.log").read_text()[-2000:])
            time.sleep(0.001)
        took = time.monotonic() - t0
        self.info = json.loads(self.ready.read_text())
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.info['grpc_port']}")
        self.stub = pb_grpc.ManagerStub(self.channel)
        self.unix_channel = grpc.insecure_channel(f"unix:{self.socket}")
        self.unix_stub = pb_grpc.ManagerStub(self.unix_channel)
        self.http = http.client.HTTPConnection("127.0.0.1", self.info["http_port"], timeout=30)
        return took

    def grpc(self) -> pb_grpc.ManagerStub:
        assert self.stub is not None
        return self.stub

    def grpc_unix(self) -> pb_grpc.ManagerStub:
        assert self.unix_stub is not None
        return self.unix_stub

    def get(self, path: str) -> Any:
        assert self.http is not None
        self.http.request("GET", path)
        resp = self.http.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET {path}: {resp.status} {body[:200]!r}")
        return json.loads(body)

    def status(self, name: str) -> pb.ServiceStatus:
        st: pb.ServiceStatus = self.grpc().Status(pb.StatusRequest(service=name), timeout=30)
        return st

    def close(self) -> None:
        pids = []
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(grpc.RpcError):
                pids = [s.pid for s in self.grpc().ListServices(
                    pb.ListServicesRequest(), timeout=10).services if s.pid]
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.http is not None:
            self.http.close()
        for channel in (self.channel, self.unix_channel):
            if channel is not None:
                channel.close()
        # The manager leaves its services running on stop (a restart re-adopts them).
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if proc.environ().get(TAG_ENV) == self.tag:
                    proc.kill()
