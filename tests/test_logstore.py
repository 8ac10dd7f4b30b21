"""LogStore against real files: line assembly, rotation, tail, and `tail -F` followers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from manager.supervision import logstore
from manager.supervision.logstore import LogStore

DEADLINE = 30.0


def numbered(start: int, stop: int, width: int = 6) -> list[str]:
    return [f"line-{i:0{width}d}" for i in range(start, stop)]


def encode(lines: list[str]) -> bytes:
    return "".join(f"{line}\n" for line in lines).encode()


def files_of(store: LogStore) -> list[Path]:
    """All files of the store, oldest first."""
    backups = sorted(store.path.parent.glob(f"{store.path.name}.*"),
                     key=lambda p: int(p.suffix[1:]), reverse=True)
    return [*backups, store.path]


def lines_on_disk(store: LogStore) -> list[str]:
    return [line for path in files_of(store) for line in path.read_text().splitlines()]


async def collect(agen: AsyncIterator[list[str]], want: int,
                  until: Callable[[list[str]], bool] | None = None) -> list[str]:
    """Read batches until `want` lines (or `until`) arrived, with a deadline."""
    got: list[str] = []
    async with asyncio.timeout(DEADLINE):
        while len(got) < want and not (until and until(got)):
            got.extend(await anext(agen))
    return got


def parked(store: LogStore, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """An event set whenever a follower of store goes to sleep waiting for new data."""
    event = asyncio.Event()
    real_wait = store._wait

    async def wait() -> None:
        event.set()
        await real_wait()

    monkeypatch.setattr(store, "_wait", wait)
    return event


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LogStore]:
    s = LogStore(tmp_path / "logs", "svc")
    yield s
    s.close()


# ---- writing -----------------------------------------------------------------------------

def test_split_chunks_make_complete_lines(store: LogStore) -> None:
    for chunk in (b"hel", b"lo\nwor", b"ld\nsecond", b" half", b"\n", b"pend"):
        store.append(chunk)
    assert store.path.read_bytes() == b"hello\nworld\nsecond half\n"
    store.flush_partial()
    assert store.path.read_bytes() == b"hello\nworld\nsecond half\npend\n"
    store.flush_partial()  # nothing pending: no empty line
    assert store.path.read_bytes().count(b"\n") == 4


def test_directory_mode_and_restart_continues_file(tmp_path: Path) -> None:
    directory = tmp_path / "deep" / "logs"
    first = LogStore(directory, "svc")
    first.append(b"one\ntwo\npartial-at-exit")
    first.close()
    first.close()  # idempotent
    assert directory.stat().st_mode & 0o777 == 0o750 & ~_umask()
    with (directory / "svc.log").open("ab") as f:
        f.write(b"torn write from a crash")
    second = LogStore(directory, "svc")
    second.append(b"three\n")
    second.close()
    assert (directory / "svc.log").read_bytes() == (
        b"one\ntwo\npartial-at-exit\ntorn write from a crash\nthree\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_append_after_close_is_an_error(store: LogStore) -> None:
    store.close()
    with pytest.raises(ValueError, match="closed"):
        store.append(b"late\n")


def test_max_line_splits_long_lines(tmp_path: Path) -> None:
    s = LogStore(tmp_path, "svc", max_line=10)
    s.append(b"x" * 25)  # partial over max_line: two full pieces go out, 5 bytes wait
    assert s.path.read_bytes() == b"x" * 10 + b"\n" + b"x" * 10 + b"\n"
    s.append(b"yy\n")
    s.append(b"z" * 23 + b"\nshort\n")  # a complete long line inside one chunk
    s.append(b"a" * 8)
    s.append(b"b" * 8 + b"\n")  # long only once joined with the pending part
    s.close()
    assert s.path.read_bytes().split(b"\n") == [
        b"x" * 10, b"x" * 10, b"xxxxxyy", b"z" * 10, b"z" * 10, b"zzz", b"short",
        b"a" * 8 + b"bb", b"b" * 6, b""]


def test_has_long_line_scan() -> None:
    limit = 10
    for lines in ([b"a" * 10] * 5, [b"", b"a" * 11], [b"b" * 3] * 20 + [b"c" * 11],
                  [b"d" * 10, b"e" * 10, b"f"]):
        data = b"\n".join(lines) + b"\n"
        expected = any(len(line) > limit for line in lines)
        assert logstore._has_long_line(data, limit) is expected, lines


def test_rotation_keeps_backups_and_respects_max_bytes(tmp_path: Path) -> None:
    s = LogStore(tmp_path, "svc", max_bytes=1000, backups=3)
    written = numbered(0, 2000)
    for i in range(0, len(written), 7):
        s.append(encode(written[i:i + 7]))
    s.append(encode(numbered(2000, 2300)))  # one append bigger than max_bytes
    s.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["svc.log", "svc.log.1", "svc.log.2", "svc.log.3"]
    for path in files_of(s):
        data = path.read_bytes()
        assert 0 < len(data) <= 1000
        assert data.endswith(b"\n")
    kept = lines_on_disk(s)
    assert kept == (written + numbered(2000, 2300))[-len(kept):]
    assert len(kept) > 3 * 1000 // 12


def test_rotation_without_backups_recreates(tmp_path: Path) -> None:
    s = LogStore(tmp_path, "svc", max_bytes=100, backups=0)
    s.append(encode(numbered(0, 30)))
    s.close()
    assert [p.name for p in tmp_path.iterdir()] == ["svc.log"]
    assert s.path.read_text().splitlines() == numbered(24, 30)


# ---- tail --------------------------------------------------------------------------------

async def test_tail_across_rotated_files(tmp_path: Path) -> None:
    s = LogStore(tmp_path, "svc", max_bytes=100, backups=3)
    lines = numbered(0, 30)
    for line in lines:  # 12 bytes each: 8 per file
        s.append(f"{line}\n".encode())
    s.append(b"pending")
    assert len(files_of(s)) == 4
    assert len(s.path.read_text().splitlines()) < 10
    assert await s.tail(10) == lines[-10:]
    assert await s.tail(1) == lines[-1:]
    assert await s.tail(0) == []
    s.close()
    assert await s.tail(2) == [lines[-1], "pending"]


async def test_tail_more_than_everything(tmp_path: Path) -> None:
    s = LogStore(tmp_path, "svc", max_bytes=1000, backups=4)
    s.append(encode(numbered(0, 50)))
    assert await s.tail(10_000) == numbered(0, 50)
    s.append(encode(numbered(50, 1000)))
    assert await s.tail(10_000) == lines_on_disk(s)
    empty = LogStore(tmp_path / "other", "svc")
    assert await empty.tail(5) == []
    s.close()
    empty.close()


async def test_tail_of_multi_block_lines(tmp_path: Path) -> None:
    s = LogStore(tmp_path, "svc", max_line=1 << 20)
    big = ["a" * 200_000, "", "b" * 70_000, "c"]
    s.append(encode(big))
    assert await s.tail(3) == big[1:]
    assert await s.tail(4) == big
    s.close()


@pytest.fixture
def roomy_dir(tmp_path: Path) -> Iterator[Path]:
    """tmp_path, emptied afterwards: pytest keeps old tmp dirs and this one holds a GiB."""
    yield tmp_path
    for leftover in tmp_path.glob("svc.log*"):
        leftover.unlink()


@pytest.mark.slow
async def test_tail_of_1gb_file_is_fast(roomy_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    block = encode(numbered(0, 4 * 1024 * 1024 // 12))  # ~4 MiB of 12-byte lines
    with (roomy_dir / "svc.log").open("wb") as f:
        for _ in range(256):
            f.write(block)
    s = LogStore(roomy_dir, "svc", max_bytes=2 << 30)
    last = numbered(1_000_000, 1_000_150, width=7)
    s.append(encode(last))
    assert s.path.stat().st_size > 1 << 30

    read = 0
    real_pread = logstore._SharedFd.pread

    def counting_pread(self: logstore._SharedFd, size: int, offset: int) -> bytes:
        nonlocal read
        read += size
        return real_pread(self, size, offset)

    monkeypatch.setattr(logstore._SharedFd, "pread", counting_pread)
    started = time.monotonic()
    assert await s.tail(100) == last[-100:]
    assert time.monotonic() - started < 5
    assert read <= 2 * logstore.TAIL_BLOCK
    s.close()


async def test_invalid_utf8_and_crlf(store: LogStore) -> None:
    store.append(b"ok\xff\xfebad\r\ncut \xe2\x82\ntail\r\n")
    assert await store.tail(3) == ["ok\ufffd\ufffdbad", "cut \ufffd", "tail"]
    async with contextlib.aclosing(store.follow(tail=3, follow=False)) as agen:
        assert [line async for batch in agen for line in batch] == [
            "ok\ufffd\ufffdbad", "cut \ufffd", "tail"]


# ---- follow ------------------------------------------------------------------------------

async def test_follow_history_then_live_without_gaps(store: LogStore) -> None:
    store.append(encode(numbered(0, 500)))
    live = numbered(500, 3000)

    async def writer() -> None:
        for i in range(0, len(live), 25):
            store.append(encode(live[i:i + 25]))
            await asyncio.sleep(0)

    async with contextlib.aclosing(store.follow(tail=100, batch_lines=7)) as agen:
        task = asyncio.create_task(writer())  # runs only once we await below
        first = await anext(agen)  # the boundary is taken before the writer runs
        assert first == numbered(400, 407)
        got = first + await collect(agen, 100 + len(live) - 7)
        await task
        assert got == numbered(400, 3000)


async def test_follow_batches_what_is_available(store: LogStore) -> None:
    store.append(b"start\n")
    async with contextlib.aclosing(store.follow(tail=1, batch_lines=1000)) as agen:
        assert await anext(agen) == ["start"]
        store.append(encode(numbered(0, 2500)))
        sizes = [len(await anext(agen)) for _ in range(3)]
        assert sizes == [1000, 1000, 500]


async def test_follow_without_follow_returns_history_only(store: LogStore) -> None:
    store.append(encode(numbered(0, 10)))
    assert [b async for b in store.follow(tail=4, follow=False)] == [numbered(6, 10)]
    assert [b async for b in store.follow(tail=0, follow=False)] == []
    assert store._followers == 0


async def test_follow_across_rotations_gets_every_line(tmp_path: Path) -> None:
    s = LogStore(tmp_path, "svc", max_bytes=4096, backups=2)
    s.append(b"marker\n")
    agen = s.follow(tail=1)
    assert await anext(agen) == ["marker"]  # subscribed: everything after this is live
    lines = numbered(0, 20_000)
    received: list[str] = []
    progress = asyncio.Condition()

    async def reader() -> None:
        async for batch in agen:
            received.extend(batch)
            async with progress:
                progress.notify_all()

    def received_at_least(count: int) -> Callable[[], bool]:
        return lambda: len(received) >= count

    task = asyncio.create_task(reader())
    async with asyncio.timeout(DEADLINE):
        for i in range(0, len(lines), 30):
            s.append(encode(lines[i:i + 30]))
            # Flow control (not a sleep), so the reader stays within the files kept on disk.
            async with progress:
                await progress.wait_for(received_at_least(i - 300))
        s.close()
        await task
    assert received == lines
    assert len(files_of(s)) == 3


async def test_slow_follower_gets_a_gap_notice_not_a_crash(tmp_path: Path) -> None:
    s = LogStore(tmp_path, "svc", max_bytes=1200, backups=2)  # 100 lines of 12 bytes a file
    lines = numbered(0, 1000)
    s.append(encode(lines[:10]))
    agen = s.follow(tail=1)
    assert await anext(agen) == ["line-000009"]  # suspended at a yield, holding file 0
    for i in range(10, len(lines), 10):
        s.append(encode(lines[i:i + 10]))
    on_disk = lines_on_disk(s)
    assert len(on_disk) == 300
    s.close()
    got = await collect(agen, 10**9, until=lambda got: bool(got) and got[-1] == lines[-1])
    await agen.aclose()
    first_file = lines[10:100]  # the rest of the file it held open
    gap = (len(lines) - 100 - len(on_disk)) * 12
    assert got == [*first_file,
                   f"[logstore: {gap} bytes of log were rotated away before this reader got them]",
                   *on_disk]


async def test_slow_follower_reads_from_disk_not_memory(store: LogStore) -> None:
    store.append(b"first\n")
    agen = store.follow(tail=1)
    assert await anext(agen) == ["first"]  # the follower is now paused at a yield
    lines = numbered(0, 100_000)
    chunks = [encode(lines[i:i + 1000]) for i in range(0, len(lines), 1000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for chunk in chunks:
            store.append(chunk)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # ~1.3 MB were written; the writer holds on to none of it for the paused reader.
    assert grown < 64 * 1024
    assert not store._waiters
    assert store._followers == 1
    for value in vars(store).values():
        if isinstance(value, bytes | bytearray | list | dict | set):
            assert len(value) < 64, value
    got = await collect(agen, len(lines))
    await agen.aclose()
    assert got == lines


async def test_follower_that_stops_early_unregisters(
        store: LogStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.append(encode(numbered(0, 5)))
    async with contextlib.aclosing(store.follow(tail=5)) as agen:
        async for _batch in agen:
            break
    assert store._followers == 0
    assert not store._waiters

    waiting_for_data = parked(store, monkeypatch)
    agen = store.follow()
    waiting = asyncio.ensure_future(anext(agen))
    async with asyncio.timeout(DEADLINE):
        await waiting_for_data.wait()
    assert store._followers == 1
    assert len(store._waiters) == 1
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert store._followers == 0
    assert not store._waiters

    agen = store.follow(tail=2)
    assert await anext(agen) == numbered(3, 5)
    await agen.aclose()
    assert store._followers == 0
    assert not store._waiters


async def test_close_ends_followers_after_draining(
        store: LogStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.append(b"a\n")
    waiting_for_data = parked(store, monkeypatch)

    async def read_all() -> list[str]:
        return [line async for batch in store.follow(tail=1) for line in batch]

    task = asyncio.create_task(read_all())
    async with asyncio.timeout(DEADLINE):
        await waiting_for_data.wait()
        store.append(b"b\nunterminated")
        store.close()
        assert await task == ["a", "b", "unterminated"]
    assert store._followers == 0
    assert not store._waiters
    assert [b async for b in store.follow(tail=1)] == [["unterminated"]]
