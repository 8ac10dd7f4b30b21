"""`aictl demo`: the main job, on one machine. Builds two releases of this repository
(plus a deliberately broken third) into a local package store, starts a hub with its
manager and N agent hosts each with its own manager (loopback, ephemeral ports, one
directory), rolls the fleet from the first version to the second in waves with live
progress, then shows a rollout of the broken version halted at the canary and rolled
back. `--once` exits when done (non-zero on any unexpected outcome); otherwise the
fleet stays up for poking at with curl, grpcurl and aictl until Ctrl-C.

A signal at any moment (building, starting, watching a rollout) tears down everything
the demo started and exits 128 + the signal's number; once the demo is done and the
fleet just runs, Ctrl-C or SIGTERM is the way to stop it (exit 0 when the demo went as
it should). Every manager listens on the ports it got at its first start (pinned in its
config), so one restarted with its demo command line is where the hub looks for it."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import secrets
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from aictl.demo_fleet import (
    RUN_TAG,
    Daemon,
    DemoError,
    Interrupted,
    Signals,
    install_release,
    manager_argv,
    repo_root,
    stable_ports,
    sweep,
    wait_for,
)

FIRST, SECOND, BROKEN = "1.0.0", "1.1.0", "1.2.0"
HUB_PACKAGE, AGENT_PACKAGE = "@backend-ai/hub", "@backend-ai/agent"
GROUPS = ("canary", "edge", "core")


def say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


@dataclass
class HostSetup:
    """One demo host: a manager supervising one service (ai-hub or ai-agent)."""

    name: str
    role: str  # "hub" | "agent"
    root: Path
    labels: dict[str, str] = field(default_factory=dict)
    manager: Daemon | None = None

    @property
    def service(self) -> str:
        return "ai-hub" if self.role == "hub" else "ai-agent"

    @property
    def install_root(self) -> Path:
        return self.root / "opt" / self.service

    @property
    def service_config(self) -> Path:
        return self.root / f"{self.role}.toml"

    @property
    def service_ready(self) -> Path:
        return self.root / f"{self.role}-ready.json"

    def manager_grpc(self) -> str:
        assert self.manager is not None  # noqa: S101 - set by start_manager
        return f"127.0.0.1:{self.manager.info['grpc_port']}"

    def manager_http(self) -> str:
        assert self.manager is not None  # noqa: S101
        return f"127.0.0.1:{self.manager.info['http_port']}"


class DemoFleet:
    def __init__(self, root: Path, agents: int) -> None:
        self.root = root
        self.store = root / "store"
        self.hub = HostSetup("hub", "hub", root / "hub")
        self.agents = [HostSetup(f"agent-{i}", "agent", root / f"agent-{i}",
                                 {"group": GROUPS[min(i - 1, 2)] if agents > 2
                                  else "edge", "site": "demo"})
                       for i in range(1, agents + 1)]
        self.hub_address = ""
        self.hub_http = ""
        self.aictl = [sys.executable, "-m", "aictl.main"]
        self.tag = secrets.token_hex(8)  # in every process's environment (sweep)

    # ---- releases ------------------------------------------------------------------

    def build_releases(self) -> None:
        from aictl import release  # noqa: PLC0415

        for version in (FIRST, SECOND):
            release.build(version, self.store)
        release.build(BROKEN, self.store)
        break_release(self.store / BROKEN, BROKEN)

    # ---- processes -----------------------------------------------------------------

    def _manager_config(self, host: HostSetup, ports: tuple[int, int] | None = None) -> Path:
        """ports: (gRPC, HTTP) to listen on; None: any free ones."""
        pkg = "hub" if host.role == "hub" else "agent"
        service: dict[str, Any] = {
            "name": host.service,
            "package": HUB_PACKAGE if host.role == "hub" else AGENT_PACKAGE,
            "command": [f"bin/ai-{pkg}", "--config", str(host.service_config),
                        "--ready-file", str(host.service_ready)],
            "install_root": str(host.install_root),
            "package_url": f"file://{self.store}/{{version}}/{pkg}-{{version}}.tar.gz",
            # The releases are built without vendored packages: run them with this
            # Python, which has the pinned ones (bin/ai-* honour AI_PYTHON).
            "env": {"AI_PYTHON": sys.executable, RUN_TAG: self.tag},
            "autostart": False, "start_secs": 0.5, "stop_timeout": 5.0,
            "backoff_initial": 0.2, "backoff_max": 2.0, "crash_loop_max": 3,
            "min_healthy_time": 1.0, "healthy_deadline": 20.0,
            "health_probe": "grpc", "health_target": "ready-file:" + str(host.service_ready),
            "health_version_method": ("backendai.v1.Hub/GetInfo" if host.role == "hub"
                                      else "backendai.v1.Agent/GetInfo"),
        }
        grpc_port, http_port = ports or (0, 0)
        path = host.root / "manager.toml"
        path.write_text(tomli_w.dumps(
            {"role": host.role, "http_listen": f"127.0.0.1:{http_port}",
             "grpc_listen": f"127.0.0.1:{grpc_port}",
             "state_dir": str(host.root / "manager-state"), "log_format": "json",
             "services": [service]}))
        return path

    def start_manager(self, host: HostSetup) -> None:
        host.root.mkdir(parents=True, exist_ok=True)
        install_release(self.store / FIRST / f"{host.role}-{FIRST}.tar.gz",
                        host.install_root, FIRST)
        config = self._manager_config(host)
        ready = host.root / "ready.json"
        host.manager = Daemon(f"{host.name} manager", manager_argv(config, ready), ready,
                              host.root / "manager.log", env={RUN_TAG: self.tag})
        host.manager.start(repo_root())
        # Keep the ports the kernel picked: a manager restarted with the same command
        # line is where the hub (and endpoints.json) look for it.
        info = host.manager.info
        self._manager_config(host, (int(info["grpc_port"]), int(info["http_port"])))

    def start(self) -> None:
        for host in [self.hub, *self.agents]:
            self.start_manager(host)
        hosts = [{"name": a.name, "manager": a.manager_grpc(), "labels": a.labels}
                 for a in self.agents]
        # Fixed ports (outside the kernel's ephemeral range, see stable_ports): when the
        # hub updates itself and restarts, the agents, aictl and an open dashboard find
        # it where it was.
        grpc_port, http_port = stable_ports(2)
        self.hub_address = f"127.0.0.1:{grpc_port}"
        self.hub_http = f"127.0.0.1:{http_port}"
        self._write_hub_config(hosts, self.hub_address, self.hub_http)
        self._start_service(self.hub)
        wait_for(lambda: _read_json(self.hub.service_ready), 30, "the hub to be ready")
        for agent in self.agents:
            agent.service_config.write_text(tomli_w.dumps(
                {"name": agent.name, "grpc_listen": "127.0.0.1:0",
                 "hub_address": self.hub_address, "manager_address": agent.manager_grpc(),
                 "labels": agent.labels, "heartbeat_interval": 1.0, "log_format": "json"}))
            self._start_service(agent)
        wait_for(self._all_connected, 60, "every agent to report to the hub")

    def _write_hub_config(self, hosts: list[dict[str, Any]], listen: str,
                          http_listen: str) -> None:
        self.hub.service_config.write_text(tomli_w.dumps(
            {"grpc_listen": listen, "http_listen": http_listen,
             "state_dir": str(self.hub.root / "hub-state"),
             "heartbeat_interval": 1.0, "log_format": "json",
             "self": {"name": "hub", "manager_address": self.hub.manager_grpc()},
             "hosts": hosts}))

    def _start_service(self, host: HostSetup) -> None:
        code = self.run_aictl_manager(host, "Start")
        if code:
            raise DemoError(f"{host.name}: {host.service} did not start; see {host.root}")

    def run_aictl_manager(self, host: HostSetup, method: str, timeout: float = 60.0) -> int:
        import grpc  # noqa: PLC0415

        from backendai.v1 import manager_pb2 as mpb  # noqa: PLC0415
        from backendai.v1 import manager_pb2_grpc as mgrpc  # noqa: PLC0415

        request = mpb.StartRequest() if method == "Start" else mpb.StopRequest(force=True)
        with grpc.insecure_channel(host.manager_grpc()) as channel:
            stub = mgrpc.ManagerStub(channel)
            try:
                getattr(stub, method)(request, timeout=timeout)
            except grpc.RpcError as exc:
                print(f"{host.name}: {method}: {exc.details()}", file=sys.stderr)
                return 1
        return 0

    def _all_connected(self) -> bool:
        hosts = self.list_agents()
        return len(hosts) == len(self.agents) and all(
            h["reachable"] and h["version"] == FIRST and h["agent_connected"] for h in hosts)

    def list_agents(self) -> list[dict[str, Any]]:
        from aictl import main as aictl_main  # noqa: PLC0415

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = aictl_main.main(["agents", "--hub", self.hub_address, "--json"])
        if code:
            return []
        hosts: list[dict[str, Any]] = json.loads(out.getvalue())
        return hosts

    def stop(self, hurry: Callable[[], bool] = lambda: False) -> None:
        """End everything this run started: each service through its manager (so
        nothing restarts it), each manager by its pid, then whatever still carries this
        run's tag. `hurry()`: skip the graceful steps and kill."""
        hosts = [self.hub, *self.agents]
        for host in hosts:  # the services first, so nothing restarts them
            if hurry():
                break
            if host.manager is not None and host.manager.proc is not None \
                    and host.manager.proc.poll() is None and host.manager.info:
                with contextlib.suppress(Exception):
                    self.run_aictl_manager(host, "Stop", timeout=10.0)
        for host in hosts:
            if host.manager is not None:
                host.manager.stop(hurry=hurry)
        # a service whose manager died, or anything else of this run still there
        configs = frozenset(str(p) for h in hosts
                            for p in (h.root / "manager.toml", h.service_config))
        deadline = time.monotonic() + 10.0
        while sweep(self.tag, configs) and time.monotonic() < deadline:
            time.sleep(0.1)

    def endpoints(self) -> dict[str, Any]:
        def host_info(h: HostSetup) -> dict[str, Any]:
            service = _read_json(h.service_ready) or {}
            return {"name": h.name, "role": h.role, "labels": h.labels,
                    "manager_http": f"http://{h.manager_http()}",
                    "manager_grpc": h.manager_grpc(),
                    "service_grpc": f"127.0.0.1:{service['grpc_port']}"
                    if "grpc_port" in service else "",
                    "directory": str(h.root)}

        return {"hub": self.hub_address, "dashboard": f"http://{self.hub_http}/ui/",
                "store": f"file://{self.store}",
                "hosts": [host_info(h) for h in [self.hub, *self.agents]],
                # how each manager was started: run it again (in that directory) to
                # restart it, on the same ports
                "managers": {h.name: {"argv": h.manager.argv, "cwd": str(repo_root())}
                             for h in [self.hub, *self.agents] if h.manager is not None},
                "try": [f"curl http://{self.hub.manager_http()}/status",
                        f"grpcurl -plaintext {self.hub_address} list",
                        f"grpcurl -plaintext {self.hub_address} backendai.v1.Hub/ListAgents",
                        f"aictl agents --hub {self.hub_address}",
                        f"aictl rollout list --hub {self.hub_address}"]}

    def rollout(self, version: str, extra: list[str]) -> int:
        from aictl import main as aictl_main  # noqa: PLC0415

        return aictl_main.main(["rollout", "start", version, "--hub", self.hub_address,
                                "--watch", *extra])


def break_release(directory: Path, version: str) -> None:
    """Make VERSION's agent package one that crashes at start, and re-sum it: a release
    that passes verification but fails at the update's start step (the process exits
    before start_secs) — what the canary is for."""
    name = f"agent-{version}.tar.gz"
    archive = directory / name
    patched = directory / f".{name}.tmp"
    crash = b"#!/bin/sh\necho 'ai-agent: broken build, exiting' >&2\nexit 3\n"
    with tarfile.open(archive) as src, tarfile.open(patched, "w:gz") as dst:
        for member in src.getmembers():
            if member.name.lstrip("./") == "bin/ai-agent":
                member.size = len(crash)
                dst.addfile(member, io.BytesIO(crash))
            else:
                dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    patched.replace(archive)
    sums = directory / "SHA256SUMS"
    lines = []
    for line in sums.read_text().splitlines():
        digest, _, fname = line.partition("  ")
        if fname == name:
            digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        lines.append(f"{digest}  {fname}")
    sums.write_text("\n".join(lines) + "\n")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.agents <= 50:
        print("aictl demo: --agents must be between 1 and 50", file=sys.stderr)
        return 2
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="aictl-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    fleet = DemoFleet(root, args.agents)
    signals = Signals()
    signals.install()
    ok = False
    interrupted: Interrupted | None = None
    try:
        ok = _show(fleet, args)
        if not args.once:
            say(f"the fleet keeps running; try: aictl agents --hub {fleet.hub_address}  "
                "(Ctrl-C to stop)")
            with contextlib.suppress(Interrupted):  # the way to end it: not a failure
                while True:
                    time.sleep(1.0)
    except Interrupted as exc:
        interrupted = exc
        print(f"\naictl demo: interrupted by {exc}", file=sys.stderr, flush=True)
    except DemoError as exc:
        print(f"aictl demo: {exc}", file=sys.stderr)
    finally:
        signals.teardown()
        say("stopping the fleet" + (" (hurrying)" if signals.hurry() else ""))
        fleet.stop(signals.hurry)
        signals.restore()
        if not args.keep and not args.dir:
            shutil.rmtree(root, ignore_errors=True)
        elif args.keep:
            print(f"kept {root}")
    if interrupted is not None:
        return 128 + interrupted.signum
    return 0 if ok else 1


def _show(fleet: DemoFleet, args: argparse.Namespace) -> bool:
    """Build, start, roll out the good release, then the broken one; True when every
    outcome was the expected one."""
    root = fleet.root
    say(f"building releases {FIRST}, {SECOND} and a broken {BROKEN} into {fleet.store}")
    fleet.build_releases()
    say(f"starting the hub and {args.agents} agent hosts (each with its manager) "
        f"on {FIRST}, in {root}")
    fleet.start()
    endpoints = Path(args.endpoints) if args.endpoints else root / "endpoints.json"
    endpoints.write_text(json.dumps(fleet.endpoints(), indent=2) + "\n")
    say(f"every endpoint is in {endpoints}")
    waves = "1,50%,100%" if args.agents > 2 else "1,100%"
    say(f"rolling out {SECOND} as the seeds do: the hub updates itself first, "
        f"then the agents in waves {waves} (the first is the canary)")
    good = fleet.rollout(SECOND, ["--waves", waves, "--min-healthy", "1", "--include-hub",
                                  "--description", "demo: good release"])
    say(f"rolling out the broken {BROKEN}: the canary's new ai-agent exits as soon as it "
        "starts, so its manager's update fails at the start step and puts it back on "
        f"{SECOND}; the rollout halts and no other host is touched")
    bad = fleet.rollout(BROKEN, ["--waves", waves, "--min-healthy", "1",
                                 "--healthy-deadline", "15",
                                 "--description", "demo: broken release"])
    hosts = fleet.list_agents()
    on_second = all(h["version"] == SECOND for h in hosts) and len(hosts) == args.agents
    ok = good == 0 and bad != 0 and on_second
    say("done: " + ("the good release went out, the broken one was stopped at the canary "
                    f"and every agent runs {SECOND}" if ok else
                    "UNEXPECTED OUTCOME — see the logs under " + str(root)))
    return ok


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run a local demo fleet and a staged rollout")
    p.add_argument("--agents", type=int, default=4, help="agent hosts (default 4)")
    p.add_argument("--once", action="store_true",
                   help="exit when the demo is done (non-zero on any unexpected outcome)")
    p.add_argument("--dir", default="", help="work directory (default: a new temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--endpoints", default="", help="write every endpoint here as JSON")
    p.set_defaults(func=run)

