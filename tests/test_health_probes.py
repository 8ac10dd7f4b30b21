"""One health check of each kind against real servers and real processes: what passes,
what fails and why, and that a check that hangs or floods is bounded in time and size
(the process group of an exec check that overran is killed)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from manager.health_config import HealthCheck
from manager.supervision.health_probes import MAX_EXEC_OUTPUT, GrpcChecker, run_check
from tests.conftest import assert_eventually

PY = sys.executable
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[int]:
    """A real TCP server on 127.0.0.1:0; its connections are closed when it is."""
    writers: list[asyncio.StreamWriter] = []
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            await handler(reader, writer)

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()
        for task in tasks:
            task.cancel()
        for writer in writers:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await srv.wait_closed()


def answering(status: int, body: bytes = b"ok", *, chunked_mb: int = 0) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        try:
            if chunked_mb:
                writer.write(f"HTTP/1.1 {status} X\r\nTransfer-Encoding: chunked\r\n\r\n"
                             .encode())
                chunk = b"x" * 65536
                for _ in range(chunked_mb * 16):
                    writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
            else:
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n"
                             .encode() + body)
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
    return handle


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(30)  # accepts, never answers
    writer.close()


async def test_http_status_range_and_body():
    async with server(answering(200, b"all good here")) as port:
        url = f"http://127.0.0.1:{port}/health?x=1"
        res = await run_check(HealthCheck(http=url))
        assert (res.ok, res.message) == (True, "http: status 200")
        res = await run_check(HealthCheck(http=url, body="good"))
        assert (res.ok, res.message) == (True, "http: status 200, body matches")
        res = await run_check(HealthCheck(http=url, body="bad"))
        assert not res.ok and res.message == "http: status 200, body does not contain 'bad'"
        res = await run_check(HealthCheck(http=url, status=(204, 204)))
        assert not res.ok and res.message == "http: status 200, expected 204"
    async with server(answering(503)) as port:
        res = await run_check(HealthCheck(http=f"http://127.0.0.1:{port}/"))
        assert not res.ok and res.message == "http: status 503, expected 200-399"


async def test_http_that_hangs_or_refuses_or_speaks_garbage_fails_in_time():
    async with server(silent) as port:
        t0 = time.monotonic()
        res = await run_check(HealthCheck(http=f"http://127.0.0.1:{port}/", timeout=0.3))
        assert not res.ok and res.message == "http check timed out after 0.3s"
        assert time.monotonic() - t0 < 1.5
    async with server(answering(200)) as port:
        pass  # closed: nothing listens there now
    res = await run_check(HealthCheck(http=f"http://127.0.0.1:{port}/", timeout=2))
    assert not res.ok and res.message.startswith(f"http: cannot connect to 127.0.0.1:{port}")

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()
        writer.close()
    async with server(garbage) as port:
        res = await run_check(HealthCheck(http=f"http://127.0.0.1:{port}/", timeout=2))
        assert not res.ok and res.message.startswith("http: bad response")


async def test_http_body_of_megabytes_is_read_only_as_far_as_needed():
    async with server(answering(200, chunked_mb=20)) as port:
        url = f"http://127.0.0.1:{port}/"
        t0 = time.monotonic()
        res = await run_check(HealthCheck(http=url, body="needle", timeout=5))
        assert not res.ok and "(in its first 65536 bytes)" in res.message
        res = await run_check(HealthCheck(http=url, body="xxxx", timeout=5))
        assert res.ok
        assert time.monotonic() - t0 < 3


async def test_https_to_a_plain_server_fails_clearly():
    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()
    async with server(plain) as port:
        res = await run_check(HealthCheck(http=f"https://127.0.0.1:{port}/", timeout=3))
        assert not res.ok and res.message.startswith("http:")


async def test_tcp():
    async with server(silent) as port:
        res = await run_check(HealthCheck(tcp=f"127.0.0.1:{port}"))
        assert (res.ok, res.message) == (True, f"tcp: connected to 127.0.0.1:{port}")
    res = await run_check(HealthCheck(tcp=f"127.0.0.1:{port}", timeout=2))
    assert not res.ok and "cannot connect" in res.message


async def test_exec_exit_codes_output_and_env(tmp_path):
    res = await run_check(HealthCheck(exec=(PY, "-c", "print('fine')")))
    assert (res.ok, res.message) == (True, "exec: exit 0: fine")
    res = await run_check(HealthCheck(exec=(PY, "-c", "import sys; print('no db'); sys.exit(3)")))
    assert (res.ok, res.message) == (False, "exec: exit 3: no db")
    res = await run_check(HealthCheck(exec=(PY, "-c", "import os; print(os.environ['X'], "
                                            "os.getcwd())")),
                          env={**os.environ, "X": "from-env"}, cwd=str(tmp_path))
    assert res.ok and res.message == f"exec: exit 0: from-env {tmp_path}"
    res = await run_check(HealthCheck(exec=(PY, "-c", "print('x' * 5000)")))
    assert res.ok and len(res.message) <= len("exec: exit 0: ") + 200


async def test_exec_whose_program_is_missing_fails_with_the_reason(tmp_path):
    gone = tmp_path / "check.sh"  # configured, then removed (the config check saw it)
    res = await run_check(HealthCheck(exec=(str(gone),)))
    assert not res.ok and res.message == f"exec: cannot run {str(gone)!r}: No such file or " \
                                         "directory"


def _alive(pidfile: Path) -> bool:
    try:
        return psutil.pid_exists(int(pidfile.read_text()))
    except (OSError, ValueError):
        return False


async def test_exec_that_hangs_is_killed_with_its_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    code = ("import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(60)']); open(sys.argv[1], 'w').write(str(c.pid)); "
            "time.sleep(60)")
    t0 = time.monotonic()
    res = await run_check(HealthCheck(exec=(PY, "-c", code, str(pidfile)), timeout=1.0))
    assert not res.ok and res.message == "exec check timed out after 1s"
    assert time.monotonic() - t0 < 3
    assert pidfile.exists()
    await asyncio.to_thread(assert_eventually, lambda: not _alive(pidfile), 5,
                            what="the check's child killed with its group")


async def test_exec_that_prints_megabytes_is_cut_off():
    flood = "import sys\nwhile True: sys.stdout.write('y' * 65536)"
    t0 = time.monotonic()
    res = await run_check(HealthCheck(exec=(PY, "-c", flood), timeout=10))
    assert not res.ok and res.message == f"exec: printed more than {MAX_EXEC_OUTPUT} bytes; " \
                                         "killed"
    assert time.monotonic() - t0 < 5


@contextlib.asynccontextmanager
async def grpc_health_server(status: int) -> AsyncIterator[int]:
    srv = grpc.aio.server()
    hs = health.aio.HealthServicer()
    await hs.set("", status)
    await hs.set("svc", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(hs, srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    try:
        yield port
    finally:
        await srv.stop(0)


async def test_grpc_health():
    async with grpc_health_server(health_pb2.HealthCheckResponse.SERVING) as port:
        checker = GrpcChecker(f"127.0.0.1:{port}", "")
        try:
            res = await run_check(HealthCheck(grpc=f"127.0.0.1:{port}"), grpc=checker)
            assert (res.ok, res.message) == (True, "gRPC health: SERVING")
            res = await run_check(HealthCheck(grpc=f"127.0.0.1:{port}"), grpc=checker)
            assert res.ok  # the channel is kept between checks
        finally:
            await checker.close()
        res = await run_check(HealthCheck(grpc=f"127.0.0.1:{port}", grpc_service="svc"))
        assert (res.ok, res.message) == (False, "gRPC health: NOT_SERVING")
        res = await run_check(HealthCheck(grpc=f"127.0.0.1:{port}", grpc_service="other"))
        assert not res.ok and "NOT_FOUND" in res.message
    t0 = time.monotonic()
    res = await run_check(HealthCheck(grpc=f"127.0.0.1:{port}", timeout=0.5))
    assert not res.ok and time.monotonic() - t0 < 2


@pytest.mark.parametrize("kind", ["http", "tcp"])
async def test_checks_run_on_the_loop_without_blocking_it(kind):
    """Many slow checks at once: the loop keeps turning (ticks every 10 ms; a check that
    blocked it would stall it for its whole 1 s timeout)."""
    async with server(silent) as port:
        hc = HealthCheck(http=f"http://127.0.0.1:{port}/", timeout=1.0) if kind == "http" \
            else HealthCheck(tcp=f"10.255.255.1:{port}", timeout=1.0)
        gaps: list[float] = []

        async def ticker() -> None:
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now
        tick = asyncio.create_task(ticker())
        try:
            results = await asyncio.gather(*(run_check(hc) for _ in range(50)))
        finally:
            tick.cancel()
        assert not any(r.ok for r in results)
        assert max(gaps, default=0.0) < 0.5
