"""JSON lines to stdout or a file: one event per line (backendai.events.model.to_json,
with the daemon's `source`), for journald, Vector, Fluent Bit or Loki's promtail.

The file is opened for appending for each batch, so logrotate's move-and-create works
without a signal. Writes happen in a thread of their own, bounded by the sink's
timeout: a stuck pipe or a hung NFS mount delays this sink only, and a write that
never returns is not started again on top of itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import sys
import threading
from collections.abc import Sequence

from backendai.events.model import Event, to_json
from backendai.events.sinks.http_post import DeliveryFailed


def lines(events: Sequence[Event], source: str) -> bytes:
    return b"".join(json.dumps(to_json(ev, source=source), ensure_ascii=False,
                               separators=(",", ":")).encode() + b"\n" for ev in events)


class JsonlSink:
    def __init__(self, name: str, path: str, *, source: str, timeout: float) -> None:
        self.name = name
        self.path = path
        self.source = source
        self.timeout = timeout
        self._busy: threading.Thread | None = None

    @property
    def shown(self) -> str:
        return "stdout" if self.path == "-" else self.path

    def _write(self, data: bytes) -> None:
        if self.path == "-":
            out = sys.stdout.buffer
            out.write(data)
            out.flush()
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)

    async def deliver(self, events: Sequence[Event]) -> int:
        if self._busy is not None and self._busy.is_alive():
            raise DeliveryFailed(f"{self.shown}: the previous write has not returned yet")
        data = lines(events, self.source)
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def write() -> None:
            try:
                self._write(data)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                with contextlib.suppress(concurrent.futures.InvalidStateError):
                    done.set_exception(exc)  # (unless the waiter gave up)
            else:
                with contextlib.suppress(concurrent.futures.InvalidStateError):
                    done.set_result(None)

        self._busy = threading.Thread(target=write, name=f"sink-{self.name}", daemon=True)
        self._busy.start()
        try:
            async with asyncio.timeout(self.timeout):
                await asyncio.wrap_future(done)
        except TimeoutError:
            raise DeliveryFailed(f"{self.shown}: the write did not finish within "
                                 f"{self.timeout:g}s") from None
        except OSError as exc:
            raise DeliveryFailed(f"{self.shown}: {exc.strerror or exc}") from None
        return len(events)

    async def close(self) -> None:
        return None
