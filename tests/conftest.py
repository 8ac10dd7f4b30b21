"""Shared test helpers: real ai-manager processes on 127.0.0.1 with port 0, real child
services, real gRPC and HTTP clients. Everything a test starts is torn down."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
import tomli_w

from backendai.v1 import manager_pb2 as pb
from backendai.v1 import manager_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
SERVICE = str(ROOT / "tests" / "fixtures" / "service.py")
PY = sys.executable
TAG_ENV = "AI_TEST_TAG"


def assert_eventually(predicate: Callable[[], Any], timeout: float = 10.0,
                      interval: float = 0.01, what: str = "") -> Any:
    """Poll an external condition with a deadline on the monotonic clock."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"not true within {timeout}s: {what or predicate} (last={last!r})")


def to_toml(top: dict[str, Any], services: list[dict[str, Any]]) -> str:
    """A manager config: top-level keys, then the [[services]] tables."""
    return tomli_w.dumps({**top, "services": services})


def service_cmd(*args: str) -> list[str]:
    return [PY, "-u", SERVICE, *args]


def tagged_processes(tag: str) -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(TAG_ENV) == tag:
                out.append(proc)
    return out


class ManagerProc:
    """One real `ai-manager` process with its config, state and services."""

    def __init__(self, root: Path, services: list[dict[str, Any]],
                 top: dict[str, Any] | None = None) -> None:
        self.root = root
        self.tag = uuid.uuid4().hex
        self.state_dir = root / "state"
        self.config_path = root / "manager.toml"
        self.ready_path = root / "ready.json"
        self.log_path = root / "manager.log"
        self.services = []
        for given in services:
            svc = dict(given)
            svc.setdefault("working_directory", str(root))
            env = dict(svc.get("env", {}))
            env[TAG_ENV] = self.tag
            svc["env"] = env
            self.services.append(svc)
        self.top = {"role": "agent", "http_listen": "127.0.0.1:0",
                    "grpc_listen": "127.0.0.1:0", "state_dir": str(self.state_dir),
                    "log_format": "json", **(top or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}
        self._channel: grpc.Channel | None = None
        self.token: str | None = None
        self.credentials: grpc.ChannelCredentials | None = None  # TLS managers' clients

    def write_config(self) -> None:
        self.config_path.write_text(to_toml(self.top, self.services))

    def start(self, timeout: float = 20.0, *, crash_at: str = "",
              entry: list[str] | None = None) -> ManagerProc:
        """crash_at: run the test-only entry point that dies right after journaling that
        update step's start (tests/fixtures/crashing_manager.py). entry: another
        test-only entry module and its first arguments (`python -m ENTRY...`)."""
        self.write_config()
        with contextlib.suppress(FileNotFoundError):
            self.ready_path.unlink()
        log = self.log_path.open("ab")
        if entry is None:
            entry = (["tests.fixtures.crashing_manager", crash_at] if crash_at
                     else ["manager.main"])
        self.proc = subprocess.Popen(
            [PY, "-m", *entry, "--config", str(self.config_path),
             "--ready-file", str(self.ready_path)],
            stdout=log, stderr=log, cwd=ROOT, start_new_session=True)
        log.close()

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"manager exited {self.proc.returncode}:\n{self.logs()}")
            return self.ready_path.exists()

        assert_eventually(ready, timeout, what="manager ready file")
        self.info = json.loads(self.ready_path.read_text())
        self._channel = None
        return self

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def http_port(self) -> int:
        return int(self.info["http_port"])

    @property
    def grpc_addr(self) -> str:
        return f"127.0.0.1:{self.info['grpc_port']}"

    def stub(self) -> pb_grpc.ManagerStub:
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.grpc_addr) if self.credentials is None \
                else grpc.secure_channel(self.grpc_addr, self.credentials)
        return pb_grpc.ManagerStub(self._channel)

    def metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")] if self.token else []

    def status(self, service: str = "") -> pb.ServiceStatus:
        return self.stub().Status(pb.StatusRequest(service=service), timeout=10,
                                  metadata=self.metadata())

    def http(self, method: str, path: str, body: bytes | str | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=30)
        try:
            hdrs = dict(headers or {})
            if self.token and "Authorization" not in hdrs:
                hdrs["Authorization"] = f"Bearer {self.token}"
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._close_channel()

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        finally:
            self._close_channel()

    def _close_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def service_processes(self) -> list[psutil.Process]:
        return tagged_processes(self.tag)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close_channel()
        for proc in self.service_processes():
            # A process may exit while we look: ProcessLookupError / NoSuchProcess.
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                if proc.pid == os.getpgid(proc.pid):
                    os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(psutil.Error):
                proc.kill()


@pytest.fixture
def make_manager(tmp_path: Path) -> Iterator[Callable[..., ManagerProc]]:
    made: list[ManagerProc] = []

    def make(services: list[dict[str, Any]], top: dict[str, Any] | None = None,
             name: str = "m") -> ManagerProc:
        root = tmp_path / name
        root.mkdir(exist_ok=True)
        m = ManagerProc(root, services, top)
        made.append(m)
        return m

    yield make
    for m in made:
        m.cleanup()


def fast_service(name: str = "svc", *args: str, **over: Any) -> dict[str, Any]:
    """A service config with test-friendly timings."""
    svc: dict[str, Any] = {"name": name, "command": service_cmd(*args), "start_secs": 0.3,
                           "stop_timeout": 3.0, "backoff_initial": 0.1, "backoff_max": 0.5}
    svc.update(over)
    return svc


def service_set_up(m: ManagerProc, pid: int, service: str = "") -> None:
    """Wait until the test service (tests/fixtures/service.py) with `pid` printed its start
    line: its signal handlers (`--ignore-term`) are in place by then. RUNNING alone only
    says it outlived start_secs, which Python's own start can exceed on a loaded machine,
    and a SIGTERM before the handler kills it."""
    assert_eventually(lambda: any(
        line.startswith(f"started pid={pid} ") for line in m.stub().Logs(
            pb.LogsRequest(service=service, lines=1000), timeout=10,
            metadata=m.metadata()).lines), 20, what=f"service {service or '-'} set up")


@pytest.fixture
def env(tmp_path: Path, make_manager: Callable[..., ManagerProc]) -> Iterator[Any]:
    """The update tests' world (tests/update_support.py Env) with its store server."""
    from tests.update_support import Env, reserved_port

    with reserved_port() as port:
        e = Env(tmp_path, make_manager, port)
        yield e
        e.server.close()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """procs(Kind, *args) makes a hub-side process object (tests/fixtures/hub_procs.py)
    rooted in tmp_path; all are cleaned up, last made first."""
    made: list[Any] = []

    def make(kind: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        p = kind(tmp_path, *args, **kwargs)
        made.append(p)
        return p

    yield make
    for p in reversed(made):
        p.cleanup()


@contextlib.contextmanager
def reserved_ports(count: int) -> Iterator[int]:
    """`count` consecutive ports held bound (not listening) with SO_REUSEPORT, so only
    services that set SO_REUSEPORT too can bind them (tests/fixtures/service.py
    --http-port): no other process takes them between the test's choice and the bind.
    Yields the first."""
    import socket

    def hold(port: int, held: list[socket.socket]) -> int:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.append(s)
        s.bind(("127.0.0.1", port))
        return int(s.getsockname()[1])

    for _attempt in range(50):
        held: list[socket.socket] = []
        try:
            base = hold(0, held)
            for port in range(base + 1, min(base + count, 65536)):
                hold(port, held)
        except OSError:
            base = 0
        if not base or base + count - 1 > 65535:
            for s in held:
                s.close()
            continue
        try:
            yield base
        finally:
            for s in held:
                s.close()
        return
    raise AssertionError(f"no {count} consecutive free ports found")


# PostgreSQL for the hub's store tests and a package store for the real fleets (imported
# last: they import assert_eventually above)
from tests.fixtures.pg import hub_store, pg_database, pg_server, store_spec  # noqa: E402, F401
from tests.update_support import store_server  # noqa: E402, F401
