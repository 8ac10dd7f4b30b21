"""Host facts read with psutil (hostname, CPUs, load, memory, disk)."""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path

import psutil

from backendai.v1 import agent_pb2 as pb


def read_facts(disk_path: Path) -> pb.HostFacts:
    """Blocking (reads /proc and statvfs): call it in a thread from async code."""
    load1, load5, load15 = os.getloadavg()
    mem = psutil.virtual_memory()
    try:
        disk = psutil.disk_usage(str(disk_path))
        total, free = disk.total, disk.free
    except OSError:
        total = free = 0
    return pb.HostFacts(
        hostname=socket.gethostname(), cpu_count=psutil.cpu_count() or 0,
        load1=load1, load5=load5, load15=load15, memory_total_bytes=mem.total,
        memory_available_bytes=mem.available, disk_path=str(disk_path),
        disk_total_bytes=total, disk_free_bytes=free, boot_time_unix=psutil.boot_time(),
        platform=platform.platform(), cpu_percent=psutil.cpu_percent(interval=None))
