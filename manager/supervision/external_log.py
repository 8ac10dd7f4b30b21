"""Reading a log file that another program writes (a systemd unit's
`StandardOutput=append:FILE`, an Unraid rc script's `>> /var/log/NAME.log`).

Unlike `logstore.LogStore` we are not the writer, so nobody tells us about new data:
`follow` checks the file every `poll_interval` seconds (an fstat, plus a stat of the path
to notice rotation), like `tail -F`. A truncated file is read again from its start; a
file replaced by a new one (rotation) is read to its end, then the new one is followed.
Only the current file is read: rotated copies (`FILE.1`, ...) are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncGenerator
from pathlib import Path

from manager.supervision.logstore import TAIL_BLOCK, decode_lines, read_last_lines

READ_CHUNK = 1024 * 1024
BATCH_LINES = 1000


def last_lines(fd: int, end: int, count: int) -> list[str]:
    """The last `count` complete lines before byte `end`, read backwards in blocks."""
    lines = read_last_lines(lambda size, pos: os.pread(fd, size, pos), end, count)
    return decode_lines(b"\n".join(lines) + b"\n") if lines else []


def line_boundary(fd: int, end: int) -> int:
    """The offset just after the last newline before `end` (where a follower starts, so
    an unfinished last line is delivered whole once it is finished)."""
    pos = end
    while pos > 0 and end - pos < READ_CHUNK:
        size = min(TAIL_BLOCK, pos)
        pos -= size
        cut = os.pread(fd, size, pos).rfind(b"\n")
        if cut >= 0:
            return pos + cut + 1
    return 0 if pos == 0 else end


def _open(path: Path) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None


class ExternalLog:
    def __init__(self, path: Path, *, poll_interval: float = 0.25) -> None:
        self.path = path
        self.poll_interval = poll_interval

    async def tail(self, lines: int) -> list[str]:
        """The last `lines` complete lines of the file (none if it does not exist)."""
        fd = _open(self.path)
        if fd is None:
            return []
        try:
            return await asyncio.to_thread(last_lines, fd, os.fstat(fd).st_size, lines)
        finally:
            os.close(fd)

    async def follow(self, tail: int = 0, *,
                     follow: bool = True) -> AsyncGenerator[list[str], None]:
        """The last `tail` lines, then (if follow) every complete line written later."""
        fd = _open(self.path)
        offset = 0
        carry = b""
        try:
            if fd is not None:
                offset = await asyncio.to_thread(line_boundary, fd, os.fstat(fd).st_size)
                history = await asyncio.to_thread(last_lines, fd, offset, tail)
                for i in range(0, len(history), BATCH_LINES):
                    yield history[i:i + BATCH_LINES]
            while follow:
                if fd is None:
                    fd = _open(self.path)
                    offset, carry = 0, b""
                if fd is not None:
                    size = os.fstat(fd).st_size
                    if size < offset:  # truncated behind our back: start over
                        offset, carry = 0, b""
                    if size > offset:
                        data = await asyncio.to_thread(
                            os.pread, fd, min(READ_CHUNK, size - offset), offset)
                        offset += len(data)
                        data = carry + data
                        cut = data.rfind(b"\n") + 1
                        carry = data[cut:]
                        lines = decode_lines(data[:cut])
                        for i in range(0, len(lines), BATCH_LINES):
                            yield lines[i:i + BATCH_LINES]
                        if size > offset:
                            continue  # more to read right away
                    elif self._replaced(fd):
                        os.close(fd)
                        fd = None
                        if carry:
                            yield decode_lines(carry + b"\n")
                        continue
                await asyncio.sleep(self.poll_interval)
        finally:
            if fd is not None:
                os.close(fd)

    def _replaced(self, fd: int) -> bool:
        """Whether the path now names another file than fd (rotated or deleted)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return True
        with contextlib.suppress(OSError):
            own = os.fstat(fd)
            return (st.st_dev, st.st_ino) != (own.st_dev, own.st_ino)
        return True
