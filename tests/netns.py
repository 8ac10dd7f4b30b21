"""A small lab of Linux network namespaces for multi-host tests.

Each host is a namespace with one veth link into a "switch" namespace, where all links
join a bridge; every host gets an address in 10.250.X.0/24 (X unique per lab) and its
own loopback. Processes run inside a host with `ip netns exec`; every client of a
namespaced server runs inside a namespace too (traffic to those addresses never leaves
the main namespace). A partition is the host's switch port going down. `close()`
deletes every namespace (and with them every veth and the bridge).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IP = shutil.which("ip") or "/usr/sbin/ip"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([IP, *args], capture_output=True, text=True, timeout=30,
                          check=check)


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not Path(IP).exists():
        return "iproute2 (`ip`) is not installed"
    name = f"probe{secrets.token_hex(3)}"
    made = _ip("netns", "add", name, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return None


@dataclass
class Host:
    lab: NetnsLab
    name: str
    netns: str
    address: str
    switch_port: str
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    def argv(self, argv: list[str]) -> list[str]:
        return [IP, "netns", "exec", self.netns, *argv]

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(self.argv(argv), **kwargs)
        self.procs.append(proc)
        return proc

    def run(self, argv: list[str], timeout: float = 60, **kwargs: Any,
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(argv), capture_output=True, text=True,
                              timeout=timeout, check=False, **kwargs)

    def link_down(self) -> None:
        """Cut this host off the network (its switch port goes down)."""
        _ip("-n", self.lab.switch, "link", "set", self.switch_port, "down")

    def link_up(self) -> None:
        _ip("-n", self.lab.switch, "link", "set", self.switch_port, "up")


class NetnsLab:
    def __init__(self) -> None:
        self.tag = secrets.token_hex(3)
        self.subnet = 10 + int(self.tag[:2], 16) % 200
        self.switch = f"bai{self.tag}sw"
        self.hosts: dict[str, Host] = {}
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "set", "lo", "up")
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")

    def add_host(self, name: str) -> Host:
        index = len(self.hosts) + 1
        netns = f"bai{self.tag}h{index}"
        host_end, switch_end = f"bh{self.tag}{index}", f"bs{self.tag}{index}"
        address = f"10.250.{self.subnet}.{index + 10}"
        _ip("netns", "add", netns)
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("link", "add", host_end, "type", "veth", "peer", "name", switch_end)
        _ip("link", "set", host_end, "netns", netns)
        _ip("link", "set", switch_end, "netns", self.switch)
        _ip("-n", self.switch, "link", "set", switch_end, "master", "br0")
        _ip("-n", self.switch, "link", "set", switch_end, "up")
        _ip("-n", netns, "addr", "add", f"{address}/24", "dev", host_end)
        _ip("-n", netns, "link", "set", host_end, "up")
        host = Host(self, name, netns, address, switch_end)
        self.hosts[name] = host
        return host

    def close(self) -> None:
        for host in self.hosts.values():
            for proc in host.procs:
                if proc.poll() is None:
                    proc.kill()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(10)
        for host in self.hosts.values():
            # What the managers supervised outlives them by design: kill everything
            # still running inside the namespace before it goes.
            pids = subprocess.run([IP, "netns", "pids", host.netns], capture_output=True,
                                  text=True, timeout=30, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _ip("netns", "del", host.netns, check=False)
        _ip("netns", "del", self.switch, check=False)
