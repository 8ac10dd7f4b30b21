"""The hub process's memory: how its cyclic garbage collector runs, and giving back what a
rollout's burst took once the rollout is over.

A hub holds ~150 objects the collector tracks per host (channels, status streams, their
tasks), so the collector's defaults made it walk a 10,000-host fleet's worth of objects
over and over during a rollout (a third of the hub's CPU, seconds at a time with the
event loop stopped). `tune_gc` freezes what start-up made and looks at young objects
every 50,000 allocations instead of 700: a rollout's short-lived calls, rows and events
die by reference counting before a collection can promote them.

What a rollout's burst leaves behind (measured at 3,000 hosts, docs/BENCHMARKS.md "Hub
scale"): the finished calls of the last wave, which grpc.aio keeps in reference cycles
that only a full collection (two passes: finalizers free more) reclaims, and the
allocators' high-water mark (free chunks inside glibc's heap, partly used pymalloc
arenas). `reclaim` runs the full collections and hands free heap pages back to the OS
(`malloc_trim`, glibc only; in a thread, it walks the heap), after every rollout.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)

GC_THRESHOLDS = (50_000, 50, 50)
FULL_PASSES = 2  # the first pass's finalizers free objects the second one collects


def tune_gc() -> None:
    """Process-wide: the `ai-hub` entry point calls it, not the daemon class (tests run
    hubs in-process)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _malloc_trim() -> Callable[[], object] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


TRIM = _malloc_trim()


async def reclaim() -> None:
    """Collect the cyclic garbage of a finished burst and give free heap pages back."""
    started = time.monotonic()
    collected = sum(gc.collect() for _ in range(FULL_PASSES))
    collect_seconds = time.monotonic() - started
    if TRIM is not None:
        await asyncio.to_thread(TRIM)
    log.info("hub.memory_reclaimed", objects=collected,
             collect_seconds=round(collect_seconds, 3),
             seconds=round(time.monotonic() - started, 3))
