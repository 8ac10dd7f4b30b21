"""Helpers for the update tests: a source tree with a tiny versioned service, releases
built with the real `aictl release build`, a real HTTP package store on 127.0.0.1 (GET
with Range, PUT, fault modes), and manager service configs for updates."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import socket
import ssl
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backendai.v1 import manager_pb2 as pb
from tests.conftest import PY, ROOT, ManagerProc, assert_eventually

# The service our test releases run (as agent/main.py): reads its release's VERSION and
# behaviour file, serves GET /health -> {"version": ...} on HEALTH_PORT (SO_REUSEPORT, so
# the test can hold the port reserved without a race), and misbehaves on request.
SERVICE_MAIN = r'''
import json, os, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
version = (root / "VERSION").read_text().strip()
beh_path = root / "agent" / "behavior.json"
behavior = json.loads(beh_path.read_text()) if beh_path.exists() else {}
print(f"service starting version={version} pid={os.getpid()}", flush=True)
if behavior.get("crash") or str(behavior.get("crash_instance", "")) == os.environ.get(
        "INSTANCE", "-"):  # crash_instance: only that instance of `instances = N` crashes
    print("crashing at start", flush=True)  # (before the heavier imports: soon after spawn)
    sys.exit(3)

import signal
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
import socket, time
from http.server import BaseHTTPRequestHandler, HTTPServer
reported = behavior.get("report_version", version)


class H(BaseHTTPRequestHandler):
    def do_GET(self):
        code = 503 if behavior.get("unhealthy") else 200
        body = json.dumps({"version": reported}).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


class S(HTTPServer):
    def server_bind(self):
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


gport = int(os.environ.get("GRPC_PORT", "0"))
if gport:  # grpc.health.v1 plus test.Info/Get answering a VersionReport-shaped message
    from concurrent import futures
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    server = grpc.server(futures.ThreadPoolExecutor(4))
    hs = health.HealthServicer()
    hs.set("", health_pb2.HealthCheckResponse.NOT_SERVING if behavior.get("unhealthy")
           else health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(hs, server)
    raw = reported.encode()
    # field 1 (string) = version, field 2 (varint) = something the prober must ignore
    body = b"\x0a" + bytes([len(raw)]) + raw + b"\x10\x07"
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Info", {
        "Get": grpc.unary_unary_rpc_method_handler(lambda req, ctx: body)}),))
    server.add_insecure_port(f"127.0.0.1:{gport}")
    server.start()
port = int(os.environ.get("HEALTH_PORT", "0"))
if port:
    S(("127.0.0.1", port), H).serve_forever()
while True:
    time.sleep(3600)
'''


def make_source(root: Path) -> Path:
    """A source tree shaped like this repo, whose agent is the test service."""
    src = root / "src"
    for pkg in ("agent", "hub", "backendai"):
        (src / pkg).mkdir(parents=True, exist_ok=True)
        (src / pkg / "__init__.py").write_text("")
    (src / "agent" / "main.py").write_text(SERVICE_MAIN)
    (src / "hub" / "main.py").write_text(SERVICE_MAIN)
    return src


def build_release(src: Path, out: Path, version: str, *, behavior: dict[str, Any] | None = None,
                  key: Path | None = None, blob_bytes: int = 0) -> Path:
    """Build with the real CLI (`aictl release build`); return OUT/VERSION."""
    (src / "agent" / "behavior.json").write_text(json.dumps(behavior or {}))
    blob = src / "agent" / "blob.bin"
    if blob_bytes:
        with blob.open("wb") as fh:
            fh.write(os.urandom(blob_bytes))
    else:
        blob.unlink(missing_ok=True)
    cmd = [PY, "-m", "aictl.main", "release", "build", version, "--out", str(out),
           "--source", str(src)]
    if key is not None:
        cmd += ["--key", str(key)]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return out / version


def publish_release(out: Path, version: str, store_root: Path) -> None:
    """Publish OUT/VERSION with the real CLI (`aictl release publish`) to the file://
    store in `store_root` (a StoreServer serves that folder)."""
    res = subprocess.run([PY, "-m", "aictl.main", "release", "publish", version, "--out",
                          str(out), "--to", store_root.as_uri()], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def install(install_root: Path, archive: Path, version: str) -> None:
    """What the installer does for the first release: extract it and point current at it."""
    from manager.config import UpdateSource
    from manager.updates.extract import extract_release
    from manager.updates.release_dirs import ReleaseDirs

    extract_release(archive, install_root / "releases", version, UpdateSource())
    ReleaseDirs(str(install_root)).switch(version)


@contextlib.contextmanager
def reserved_port() -> Iterator[int]:
    """A port held bound (not listening) with SO_REUSEPORT: only our service can bind it."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", 0))
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def update_service(install_root: Path, package_url: str, port: int,
                   **over: Any) -> dict[str, Any]:
    svc: dict[str, Any] = {
        "name": "agent", "command": ["bin/ai-agent"], "install_root": str(install_root),
        "package_url": package_url, "health_probe": "http",
        "health_target": f"http://127.0.0.1:{port}/health", "min_healthy_time": 0.5,
        "healthy_deadline": 8.0, "start_secs": 0.3, "stop_timeout": 3.0,
        "backoff_initial": 0.1, "backoff_max": 0.3, "crash_loop_max": 2,
        "download_timeout": 5.0, "download_retries": 1,
        "env": {"HEALTH_PORT": str(port), "AI_PYTHON": PY}}
    svc.update(over)
    return svc


class StoreServer(http.server.ThreadingHTTPServer):
    """A package store: GET (Range), PUT, optional auth, and injected faults."""

    daemon_threads = True

    def __init__(self, root: Path, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _StoreHandler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.root = root
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.truncate = 0          # truncate this many next GET responses
        self.ranges = True         # honour Range
        self.require_auth = ""     # exact Authorization value required, if set
        self.throttle = 0.0        # seconds to pause after each 64 KiB sent (a slow store)
        self.head = False          # answer HEAD (else 501, as http.server does)
        # A fault for downloads only (a GET that is not the one-byte existence check):
        # an HTTP status to answer, or "drop" to hang up; the store "loses" the release
        # between the manager's check and its download.
        self.download_fault: int | str = 0
        self.hang = 0.0            # seconds to stall every request before answering
        # Downloads (GETs other than the one-byte existence check) wait until this event
        # is set: an update held in its download step, for as long as a test needs.
        self.hold: threading.Event | None = None
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server_address[1]}"

    @property
    def package_url(self) -> str:
        """A service's package_url template for the agent releases in this store."""
        return f"{self.url}/{{version}}/agent-{{version}}.tar.gz"

    def close(self) -> None:
        self.shutdown()
        self.server_close()

    def __exit__(self, *exc: object) -> None:
        self.close()  # `with StoreServer(...)`: stop serving, then close the socket

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-response (a killed manager) is expected here."""


@pytest.fixture
def store_server(tmp_path: Path) -> Iterator[StoreServer]:
    """A package store serving tmp_path/store over HTTP (a fixture: conftest imports it)."""
    (tmp_path / "store").mkdir()
    with StoreServer(tmp_path / "store") as server:
        yield server


class _StoreHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: StoreServer

    def log_message(self, *args: Any) -> None:
        pass

    def _path(self) -> Path | None:
        rel = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        p = (self.server.root / rel).resolve()
        return p if p.is_relative_to(self.server.root.resolve()) else None

    def _authorized(self) -> bool:
        want = self.server.require_auth
        if want and self.headers.get("Authorization") != want:
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False
        return True

    def do_HEAD(self) -> None:
        self.server.requests.append(("HEAD", self.path, dict(self.headers)))
        if self.server.hang:
            import time

            time.sleep(self.server.hang)
        if not self.server.head:
            self.send_response(501)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if not self._authorized():
            return
        p = self._path()
        self.send_response(200 if p is not None and p.is_file() else 404)
        self.send_header("Content-Length", str(p.stat().st_size) if p and p.is_file() else "0")
        self.end_headers()

    def do_GET(self) -> None:
        self.server.requests.append(("GET", self.path, dict(self.headers)))
        if self.server.hang:
            import time

            time.sleep(self.server.hang)
        if not self._authorized():
            return
        hold = self.server.hold
        if hold is not None and self.headers.get("Range") != "bytes=0-0":
            hold.wait(60)
        fault = self.server.download_fault
        if fault and self.headers.get("Range") != "bytes=0-0":
            if fault == "drop":
                self.close_connection = True
                return
            self.send_response(int(fault))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        p = self._path()
        if p is None or not p.is_file():
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = p.read_bytes()
        start = 0
        end = len(data)
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes=") and rng.endswith("-") and self.server.ranges:
            start = int(rng[6:-1])
        elif rng == "bytes=0-0" and self.server.ranges:  # the existence check
            if not data:
                self.send_response(416)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            end = 1
        body = data[start:end]
        partial = bool(start) or end < len(data)
        self.send_response(206 if partial else 200)
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.server.truncate > 0:
            self.server.truncate -= 1
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if self.server.throttle:
            import time

            for i in range(0, len(body), 1 << 16):
                self.wfile.write(body[i:i + (1 << 16)])
                time.sleep(self.server.throttle)
            return
        self.wfile.write(body)

    def do_PUT(self) -> None:
        self.server.requests.append(("PUT", self.path, dict(self.headers)))
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if not self._authorized():
            return
        p = self._path()
        if p is None:
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(body)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()


def watch_op(m: ManagerProc, op_id: str, timeout: float = 60.0) -> list[pb.UpdateEvent]:
    """Every event of an operation until its final one (WatchUpdate)."""
    events = []
    for ev in m.stub().WatchUpdate(pb.WatchUpdateRequest(operation_id=op_id),
                                   timeout=timeout, metadata=m.metadata()):
        events.append(ev)
        if ev.final:
            break
    return events


def steps(events: list[pb.UpdateEvent]) -> list[str]:
    return [f"{e.step}:{e.status}" for e in events]


def running_version(port: int) -> str:
    """The version the running service itself reports over HTTP."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
        return str(json.loads(r.read())["version"])


def self_signed_tls(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context with a fresh self-signed certificate for 127.0.0.1, and the
    certificate's path (the CA bundle a client must be given to trust it)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test store")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "store.crt", directory / "store.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_path, key_path)
    return ctx, cert_path


class Env:
    """One update test's world: a source tree, releases, a real HTTP store, an install
    root and the managers that update it."""

    def __init__(self, tmp_path: Path, make_manager, port: int) -> None:
        self.tmp = tmp_path
        self.src = make_source(tmp_path)
        self.out = tmp_path / "out"
        self.store_root = tmp_path / "store"
        self.store_root.mkdir()
        self.server = StoreServer(self.store_root)
        self.install_root = tmp_path / "opt" / "ai-agent"
        self.port = port
        self.make_manager = make_manager
        self.url = self.server.package_url

    def build(self, version: str, *, publish: bool = True, **kw) -> Path:
        d = build_release(self.src, self.out, version, **kw)
        if publish:
            publish_release(self.out, version, self.store_root)
        return d

    def install(self, version: str) -> None:
        install(self.install_root, self.out / version / f"agent-{version}.tar.gz", version)

    def manager(self, top: dict | None = None, *, crash_at: str = "", **over):
        """crash_at: the manager dies right after journaling that update step's start."""
        svc = update_service(self.install_root, over.pop("package_url", self.url), self.port,
                             **over)
        return self.make_manager([svc], top).start(crash_at=crash_at)

    def leftovers(self) -> list[str]:
        out = [p.name for p in (self.install_root / "releases").iterdir()
               if p.name.startswith(".")]
        if (self.install_root / ".downloads").exists():
            out.append(".downloads")
        return out

    def on_disk(self) -> list[str]:
        return sorted(p.name for p in (self.install_root / "releases").iterdir())


def started(env: Env, m) -> int:
    """Wait until the service answers its health URL; return its pid."""
    assert_eventually(lambda: m.status().state == pb.SERVICE_STATE_RUNNING, 20,
                      what="service running")
    assert_eventually(lambda: _answers(env.port), 10, what="service answers")
    return m.status().pid


def _answers(port: int) -> bool:
    return bool(running_version_safe(port))


def running_version_safe(port: int) -> str:
    try:
        return running_version(port)
    except OSError:
        return ""


def update(m, version: str) -> str:
    resp = m.stub().Update(pb.UpdateRequest(version=version), timeout=10)
    return resp.operation_id


def assert_on(env: Env, m, version: str) -> None:
    st = m.status()
    assert st.state == pb.SERVICE_STATE_RUNNING, st
    assert st.version == version
    assert_eventually(lambda: running_version_safe(env.port) == version, 10,
                      what=f"service reports {version}")
    assert env.leftovers() == []
    assert len(m.service_processes()) == 1
