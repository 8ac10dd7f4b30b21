"""One service's captured output: rotating log files, a fast tail, and `tail -F` followers.

The writer (`LogStore.append`) runs on the event loop and only ever writes complete lines,
with one `os.write` per call. Readers share no in-memory queue with it: `tail` reads the
files backwards in blocks, and each `follow` keeps its own cursor (open file, offset) and
reads the files like `tail -F`, so a slow reader costs the writer one open fd, not memory.

Files are `name.log` (current) and `name.log.1` ... `name.log.N` (older). Every file this
store starts gets a sequence number; the file with sequence `s` sits at index
`current_seq - s` of that list, which is how a follower finds the next newer file once its
own has been rotated away.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

TAIL_BLOCK = 64 * 1024  # backwards read size for tail()
READ_CHUNK = 1024 * 1024  # forward read size for followers
INLINE_READ = 64 * 1024  # fresh data up to this size is read on the loop: a thread hop costs more
_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC
_WRITE_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


class LogStore:
    """The log files of one service: append on the loop, tail and follow from anywhere."""

    def __init__(self, directory: Path, name: str, *, max_bytes: int = 10 * 1024 * 1024,
                 backups: int = 5, max_line: int = 64 * 1024) -> None:
        if not name or "/" in name or name in {".", ".."}:
            raise ValueError(f"invalid log name {name!r}")
        if max_bytes < 1 or backups < 0 or max_line < 1:
            raise ValueError("max_bytes and max_line must be positive and backups >= 0")
        directory.mkdir(parents=True, exist_ok=True, mode=0o750)
        self._name = name
        self._path = directory / f"{name}.log"
        self._max_bytes = max_bytes
        self._backups = backups
        self._max_line = max_line
        self._partial = b""
        self._closed = False
        self._write_failing = False
        self._fd = os.open(self._path, _WRITE_FLAGS, 0o640)
        self._size = os.fstat(self._fd).st_size
        self._opened_size = self._size  # bytes_written counts from here
        self._seq = 0  # sequence number of the current file
        # absolute stream offset of the first byte of each file still on disk, by sequence
        self._starts: dict[int, int] = {0: 0}
        self._waiters: set[asyncio.Future[None]] = set()
        self._followers = 0
        if self._size and not _ends_with_newline(self._path, self._size):
            self._write(b"\n")  # a previous run died mid-line; keep our lines separate

    @property
    def path(self) -> Path:
        """The current log file."""
        return self._path

    @property
    def bytes_written(self) -> int:
        """Bytes written to the log files since this store opened (across rotations);
        computed from the offsets the store keeps anyway, so writing costs nothing more."""
        return self._starts[self._seq] + self._size - self._opened_size

    def reconfigure(self, *, max_bytes: int, backups: int) -> None:
        """New rotation limits (a config reload); they apply from the next write."""
        if max_bytes < 1 or backups < 0:
            raise ValueError("max_bytes must be positive and backups >= 0")
        self._max_bytes = max_bytes
        self._backups = backups

    # ---- writing ----------------------------------------------------------------------

    def append(self, data: bytes) -> None:
        """Add raw output; every line it completes is written at once, partial lines wait."""
        if self._closed:
            raise ValueError("append to a closed LogStore")
        if self._partial:
            data = self._partial + data
        cut = data.rfind(b"\n") + 1
        out, self._partial = data[:cut], data[cut:]
        if len(self._partial) > self._max_line:
            out += self._spill_partial()
        if len(out) > self._max_line and _has_long_line(out, self._max_line):
            out = _wrap_long_lines(out, self._max_line)
        if out:
            self._write(out)

    def flush_partial(self) -> None:
        """Write the pending partial line, if any, as a complete line."""
        if self._partial:
            data, self._partial = self._partial + b"\n", b""
            self._write(data)

    def close(self) -> None:
        """Flush the partial line and close the file; followers drain what is left and end."""
        if self._closed:
            return
        self.flush_partial()
        self._closed = True
        os.close(self._fd)
        self._notify()

    def _spill_partial(self) -> bytes:
        """Take the max_line-sized pieces off an over-long partial line, as one long line."""
        keep = len(self._partial) % self._max_line
        cut = len(self._partial) - keep
        spill, self._partial = self._partial[:cut], self._partial[cut:]
        return spill + b"\n"  # append() then wraps it into max_line-sized lines

    def _write(self, data: bytes) -> None:
        """Write complete lines, rotating first when they would not fit; then wake followers."""
        try:
            if self._size + len(data) > self._max_bytes:
                self._write_rotating(data)
            else:
                self._write_all(data)
        except OSError as exc:
            # The service must not die with its log disk: drop the output, say so once.
            if not self._write_failing:
                log.warning("logstore.write_failed", name=self._name, error=str(exc))
            self._write_failing = True
        else:
            if self._write_failing:
                log.info("logstore.write_recovered", name=self._name)
                self._write_failing = False
        self._notify()

    def _write_rotating(self, data: bytes) -> None:
        """Write data across as many files as it takes, each at most max_bytes."""
        while data:
            if self._size > 0 and self._size + len(data) > self._max_bytes:
                self._rotate()
            room = self._max_bytes - self._size
            cut = len(data)
            if cut > room:
                cut = data.rfind(b"\n", 0, room) + 1 or data.find(b"\n") + 1
            self._write_all(data[:cut])
            data = data[cut:]

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            self._size += written
            view = view[written:]

    def _rotate(self) -> None:
        """Shift name.log -> .1 -> .2 ... (dropping the oldest) and start a new current file."""
        if self._backups == 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
        else:
            for index in range(self._backups - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(self._backup(index), self._backup(index + 1))
            os.replace(self._path, self._backup(1))
        fd = os.open(self._path, _WRITE_FLAGS | os.O_TRUNC, 0o640)
        os.close(self._fd)
        self._fd = fd
        self._starts[self._seq + 1] = self._starts[self._seq] + self._size
        self._seq += 1
        self._starts.pop(self._seq - self._backups - 1, None)
        self._size = 0
        log.debug("logstore.rotated", name=self._name, seq=self._seq)

    def _backup(self, index: int) -> Path:
        return self._path.with_name(f"{self._path.name}.{index}")

    def _path_of(self, seq: int) -> Path:
        index = self._seq - seq
        return self._path if index == 0 else self._backup(index)

    # ---- reading ----------------------------------------------------------------------

    async def tail(self, lines: int) -> list[str]:
        """The last `lines` complete lines, oldest first, across rotated files if needed."""
        if lines <= 0:
            return []
        files = self._open_files(rotated=True)
        try:
            return await asyncio.to_thread(_last_lines, files, lines)
        finally:
            for file, _ in files:
                file.close()

    async def follow(self, tail: int = 0, *, follow: bool = True,
                     batch_lines: int = 1000) -> AsyncGenerator[list[str], None]:
        """Yield the last `tail` lines, then (if follow) every line appended later, in batches.

        The boundary between the two parts is the file and size at the moment iteration
        starts; nothing before it is repeated and nothing after it is skipped, across
        rotations too. A reader that falls so far behind that whole files were deleted gets
        a notice line saying how many bytes it missed, and carries on from the oldest file.
        The iteration ends after close() once everything written has been delivered.
        """
        if batch_lines < 1:
            raise ValueError("batch_lines must be at least 1")
        files = self._open_files(rotated=tail > 0)
        current, boundary = files[0]
        cursor = _Cursor(current, self._seq, boundary, self._starts[self._seq])
        self._followers += 1
        try:
            if tail > 0:
                history = await asyncio.to_thread(_last_lines, files, tail)
                for older, _ in files[1:]:
                    older.close()
                for batch in _batches(history, batch_lines):
                    yield batch
            while follow:
                lines = await self._next_lines(cursor)
                if lines is None:
                    return
                for batch in _batches(lines, batch_lines):
                    yield batch
        finally:
            self._followers -= 1
            cursor.file.close()
            for file, _ in files:
                file.close()

    def _open_files(self, *, rotated: bool) -> list[tuple[_SharedFd, int]]:
        """Open the current file and, if rotated, the older ones: (file, readable size), newest
        first. No await in here, so a rotation cannot rename files under us."""
        files = [(_SharedFd.open(self._path), self._size)]
        try:
            for index in range(1, self._backups + 1 if rotated else 1):
                try:
                    file = _SharedFd.open(self._backup(index))
                except FileNotFoundError:
                    break
                files.append((file, file.size()))
        except BaseException:
            for file, _ in files:
                file.close()
            raise
        return files

    async def _next_lines(self, cur: _Cursor) -> list[str] | None:
        """Wait for the next lines after cur and return them (moving cur past them), or None
        once the store is closed and everything has been read."""
        while True:
            current = cur.seq == self._seq
            end = self._size if current else cur.file.size()
            if cur.offset < end:
                size = min(READ_CHUNK, end - cur.offset)
                before = cur.offset
                if current and size <= INLINE_READ:
                    lines = cur.read_lines(size)
                else:
                    lines = await asyncio.to_thread(cur.read_lines, size)
                if lines:
                    return lines
                if cur.offset == before:  # shorter than we knew: truncated behind our back
                    if self._closed:
                        return None
                    await self._wait()
            elif not current:
                notes = self._advance(cur)
                if notes is None or notes:
                    return notes
            elif self._closed:
                return None
            else:
                await self._wait()

    def _advance(self, cur: _Cursor) -> list[str] | None:
        """Move cur from its finished, rotated-away file to the next newer file on disk.

        Returns the lines to deliver first (an unterminated last line, a notice about files
        deleted before this reader got to them), or None if no file could be opened.
        """
        out = decode_lines(cur.carry + b"\n") if cur.carry else []
        done_at = cur.start + cur.offset
        cur.file.close()
        for seq in range(max(cur.seq + 1, min(self._starts)), self._seq + 1):
            try:
                fd = os.open(self._path_of(seq), _READ_FLAGS)
            except FileNotFoundError:
                continue
            cur.file, cur.seq, cur.offset, cur.carry = _SharedFd(fd), seq, 0, b""
            cur.start = self._starts[seq]
            break
        else:
            log.warning("logstore.follow_lost", name=self._name, path=str(self._path))
            return None
        skipped = cur.start - done_at
        if skipped > 0:
            log.warning("logstore.gap", name=self._name, bytes=skipped)
            out.append(f"[logstore: {skipped} bytes of log were rotated away "
                       "before this reader got them]")
        return out

    def _notify(self) -> None:
        """Wake every follower waiting for data (or for the end)."""
        if self._waiters:
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._waiters.clear()

    async def _wait(self) -> None:
        """Sleep until the next append, rotation or close."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            await waiter
        finally:
            self._waiters.discard(waiter)


class _SharedFd:
    """A read-only fd that worker threads read; really closed once its owner and every
    reader are done. (A follower can be cancelled while a thread is still in pread; closing
    the number right away could let that thread read whatever file reuses it.)"""

    __slots__ = ("_closing", "_fd", "_lock", "_readers")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self._readers = 0
        self._closing = False

    @classmethod
    def open(cls, path: Path) -> _SharedFd:
        return cls(os.open(path, _READ_FLAGS))

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def pread(self, size: int, offset: int) -> bytes:
        """Read from any thread; b"" once the owner has closed it."""
        with self._lock:
            if self._closing:
                return b""
            self._readers += 1
        try:
            return os.pread(self._fd, size, offset)
        finally:
            with self._lock:
                self._readers -= 1
                last = self._closing and self._readers == 0
            if last:
                os.close(self._fd)

    def close(self) -> None:
        """Idempotent; the fd goes when the last reader is done."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            idle = self._readers == 0
        if idle:
            os.close(self._fd)


@dataclass(slots=True)
class _Cursor:
    """Where one follower is: an open file, its sequence number and the next byte to read."""

    file: _SharedFd
    seq: int
    offset: int
    start: int  # absolute stream offset of the file's first byte
    carry: bytes = b""  # bytes after the last newline read so far

    def read_lines(self, size: int) -> list[str]:
        """Read up to size bytes at offset; return the complete lines that finishes."""
        data = self.file.pread(size, self.offset)
        self.offset += len(data)
        if self.carry:
            data = self.carry + data
        cut = data.rfind(b"\n") + 1
        self.carry = data[cut:]
        return decode_lines(data[:cut])


def _last_lines(files: list[tuple[_SharedFd, int]], count: int) -> list[str]:
    """The last count complete lines of files (newest first, each up to its size), oldest
    line first."""
    found: list[bytes] = []
    for file, end in files:
        if len(found) >= count:
            break
        found[:0] = _file_last_lines(file, end, count - len(found))
    return decode_lines(b"\n".join(found) + b"\n") if found else []


def _file_last_lines(file: _SharedFd, end: int, count: int) -> list[bytes]:
    return read_last_lines(file.pread, end, count)


def read_last_lines(pread: Callable[[int, int], bytes], end: int, count: int) -> list[bytes]:
    """The last count complete lines before byte `end` (without their newlines), read
    backwards in TAIL_BLOCK blocks with `pread(size, offset)`: a multi-GB log costs a few
    blocks, not a scan."""
    if count <= 0 or end <= 0:
        return []
    blocks: list[bytes] = []
    pos = end
    newlines = 0
    while pos > 0 and newlines <= count:  # count + 1 newlines delimit count lines
        size = min(TAIL_BLOCK, pos)
        pos -= size
        block = pread(size, pos)
        blocks.append(block)
        newlines += block.count(b"\n")
    data = b"".join(reversed(blocks))
    cut = data.rfind(b"\n")
    if cut < 0:
        return []
    lines = data[:cut].split(b"\n")
    if pos > 0:
        del lines[0]  # may be the end of a line that starts before what we read
    return lines[-count:]


def decode_lines(data: bytes) -> list[str]:
    """Decode newline-terminated lines; invalid UTF-8 becomes U+FFFD, a trailing CR goes."""
    text = data.decode("utf-8", "replace")
    lines = text.split("\n")  # not splitlines(): only "\n" ends a line
    lines.pop()
    if "\r" in text:
        lines = [line.removesuffix("\r") for line in lines]
    return lines


def _has_long_line(data: bytes, limit: int) -> bool:
    """Whether any line of data is longer than limit, in len(data)/limit C-level steps."""
    pos = 0
    while len(data) - pos > limit:
        nl = data.rfind(b"\n", pos, pos + limit + 1)
        if nl < 0:
            return True  # limit + 1 bytes from a line start without a newline
        pos = nl + 1  # every line inside the window was short
    return False


def _wrap_long_lines(data: bytes, limit: int) -> bytes:
    """Split every line of data (which ends with a newline) longer than limit into pieces."""
    out: list[bytes] = []
    for line in data[:-1].split(b"\n"):
        if len(line) <= limit:
            out.append(line)
        else:
            out.extend(line[i:i + limit] for i in range(0, len(line), limit))
    out.append(b"")
    return b"\n".join(out)


def _batches(lines: list[str], size: int) -> Iterator[list[str]]:
    """lines in slices of at most size (none for no lines)."""
    if 0 < len(lines) <= size:
        yield lines
        return
    for i in range(0, len(lines), size):
        yield lines[i:i + size]


def _ends_with_newline(path: Path, size: int) -> bool:
    fd = os.open(path, _READ_FLAGS)
    try:
        return os.pread(fd, 1, size - 1) == b"\n"
    finally:
        os.close(fd)
