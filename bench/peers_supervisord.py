"""supervisord for the benchmark: installed from PyPI into bench/.venv-peers (never a
project dependency), run in the foreground with its XML-RPC API on a unix socket.

Gotchas (FACTS.md): a failed XML-RPC connection leaves the transport unusable, so a new
proxy is made after any error; its output goes to a file so it cannot hold a terminal.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUPERVISOR_VERSION = "4.3.0"
PEERS_VENV = Path(__file__).resolve().parent / ".venv-peers"


def ensure_supervisord(venv: Path = PEERS_VENV) -> Path:
    """The supervisord executable, installing supervisor into its own venv if missing."""
    exe = venv / "bin" / "supervisord"
    if exe.exists():
        return exe
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q",
                    f"supervisor=={SUPERVISOR_VERSION}"], check=True)
    return exe


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(self.path)
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    """HTTP/1.1 keep-alive XML-RPC over a unix socket (as supervisorctl talks to it)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        if self._connection and host == self._connection[0] and self._connection[1]:
            return self._connection[1]
        conn = _UnixConnection(self.path)
        self._connection = host, conn
        return conn


@dataclass(frozen=True)
class Program:
    name: str
    argv: list[str]
    startsecs: int = 1  # supervisord only takes whole seconds
    stopwaitsecs: int = 10
    autostart: bool = True


class Supervisord:
    def __init__(self, root: Path, programs: list[Program]) -> None:
        self.root = root
        self.programs = programs
        self.sock = root / "supervisor.sock"
        self.conf = root / "supervisord.conf"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self._proxy: Any = None

    def write_config(self) -> None:
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        lines = [
            "[unix_http_server]", f"file={self.sock}", "",
            "[supervisord]", f"logfile={self.root / 'supervisord.log'}",
            f"pidfile={self.root / 'supervisord.pid'}", "nodaemon=true",
            f"childlogdir={logs}", "loglevel=warn", "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "",
        ]
        for prog in self.programs:
            lines += [
                f"[program:{prog.name}]", f"command={shlex.join(prog.argv)}",
                f"autostart={'true' if prog.autostart else 'false'}", "autorestart=true",
                f"startsecs={prog.startsecs}", f"stopwaitsecs={prog.stopwaitsecs}",
                "startretries=1000", "redirect_stderr=true",
                f"stdout_logfile={logs / (prog.name + '.log')}", "",
            ]
        self.conf.write_text("\n".join(lines))

    def start(self, exe: Path, timeout: float = 20.0) -> float:
        """Start in the foreground; returns seconds until XML-RPC says RUNNING."""
        self.write_config()
        out = (self.root / "supervisord.out").open("ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen([str(exe), "-n", "-c", str(self.conf)], stdout=out,
                                     stderr=out, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        out.close()
        self.pid = self.proc.pid
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("supervisord exited: "
                                   + (self.root / "supervisord.out").read_text()[-2000:])
            if self.sock.exists():
                try:
                    if self.rpc().supervisor.getState()["statecode"] == 1:
                        return time.monotonic() - t0
                except (OSError, xmlrpc.client.Fault, http.client.HTTPException):
                    self._proxy = None  # the transport never recovers: make a new one
            time.sleep(0.002)
        raise TimeoutError("supervisord did not answer in time")

    def rpc(self) -> Any:
        if self._proxy is None:
            self._proxy = xmlrpc.client.ServerProxy(
                "http://localhost", transport=_UnixTransport(str(self.sock)))
        return self._proxy

    def info(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.rpc().supervisor.getProcessInfo(name)
        return result

    def all_info(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.rpc().supervisor.getAllProcessInfo()
        return result

    def close(self) -> None:
        """Tear down fast: SIGKILL supervisord, then the programs it had running (its
        own orderly shutdown of 50 programs takes seconds, which measures nothing)."""
        if self.proc is None:
            return
        programs = _children(self.proc.pid)
        self.proc.kill()
        self.proc.wait(10)
        for pid in programs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # supervisord puts each in its own group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(c) for c in path.read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []
