"""Event sinks against real receivers (tests/fixtures/receivers.py): a webhook endpoint
and an OpenSearch `_bulk` server that go down, answer 500, hang, trickle and come back;
every event arrives, in order, at least once. Also JSON lines to a file, the durable
cursor across a restart and a kill -9 of a real manager, bounded batches, a daemon
that keeps answering while its sink hangs, and the sinks' config refused when wrong.
Over HTTPS: a webhook trusting its ca_file, mutual TLS with a client certificate (a
real manager whose sink has none is refused, keeps everything and delivers it once
configured), and OpenSearch credentials checked by the receiver."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import time
from pathlib import Path

import pytest
import structlog

from backendai.auth import write_token
from backendai.config import Table
from backendai.errors import ConfigError
from backendai.events.config import SinkConfig, read_sinks
from backendai.events.log import EventLog, Retention
from backendai.events.sinks.runner import SinkRunner, make_sink, retry_delay
from backendai.events.sinks.webhook import signature
from backendai.v1 import manager_pb2 as pb
from manager import config as manager_config
from manager.statestore import StateStore
from tests.conftest import assert_eventually, fast_service
from tests.fixtures.hub_procs import make_certs
from tests.fixtures.receivers import BulkReceiver, Receiver, refused_port, tls_server_context

SOURCE = "test-host/agent-manager"


class World:
    """A daemon's event log on a real SQLite file, with sinks run as tasks."""

    def __init__(self, path: Path, retention: int = 100_000) -> None:
        self.path = path
        self.retention = retention
        self.store: StateStore | None = None
        self.log: EventLog | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.runners: list[SinkRunner] = []

    async def open(self) -> World:
        self.store = StateStore(self.path)
        self.log = EventLog(self.store.event_store(), retention=Retention(self.retention, 0),
                            source=SOURCE)
        self.store.attach_events(self.log)
        await self.log.open()
        self.tasks.append(asyncio.create_task(self.log.run()))
        return self

    def sink(self, **cfg) -> SinkRunner:
        assert self.log is not None
        c = SinkConfig(**{"backoff_initial": 0.05, "backoff_max": 0.2, "timeout": 2.0,
                          "name": cfg["type"], **cfg})
        runner = SinkRunner(self.log, make_sink(c, source=SOURCE), c)
        self.runners.append(runner)
        self.tasks.append(asyncio.create_task(runner.run()))
        return runner

    async def emit(self, n: int, kind: str = "service.state") -> None:
        assert self.log is not None
        for i in range(n):
            self.log.emit(kind, f"service/s{i % 7}", f"event {i}", {"i": i})
        await self.log.flush()

    async def close(self) -> None:
        """A clean stop, as a daemon's: the sinks end their deliveries, then the log."""
        log_task, *sink_tasks = self.tasks
        for runner, task in zip(self.runners, sink_tasks, strict=True):
            await runner.stop(task, 5.0)
            assert not task.cancelled()  # ended within the grace, cursor stored
        log_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await log_task
        self.tasks.clear()
        self.runners.clear()
        if self.log is not None:
            await self.log.close()
        if self.store is not None:
            self.store.close()


@pytest.fixture
async def world(tmp_path):
    w = await World(tmp_path / "daemon.db").open()
    yield w
    await w.close()


@pytest.fixture
def receiver():
    r = Receiver(secret=b"s3cret-for-tests").start()
    yield r
    r.stop()


@pytest.fixture
def bulk():
    r = BulkReceiver().start()
    yield r
    r.stop()


async def eventually(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def in_order_at_least_once(arrivals: list[int], first: list[int], n: int) -> None:
    assert first == list(range(1, n + 1)), first[:20]
    assert set(arrivals) == set(range(1, n + 1))


def secret_file(tmp_path: Path) -> str:
    path = tmp_path / "hook.secret"
    write_token(path, "s3cret-for-tests")
    return str(path)


# ---- webhook ------------------------------------------------------------------------------

async def test_webhook_through_500s_an_outage_and_back(world, receiver, tmp_path):
    runner = world.sink(type="webhook", url=receiver.url, secret_file=secret_file(tmp_path),
                        batch_size=50)
    await world.emit(120)
    await eventually(lambda: len(receiver.first_arrivals()) == 120)
    receiver.set_mode("500")
    await world.emit(80)
    await eventually(lambda: runner.failures >= 2)
    receiver.stop()  # refused
    await world.emit(100)
    await eventually(lambda: runner.failures >= 4)
    assert runner.last_error.endswith(": Connection refused"), runner.last_error
    receiver.set_mode("ok")
    receiver.start()
    await eventually(lambda: len(receiver.first_arrivals()) == 300)
    in_order_at_least_once(receiver.arrivals, receiver.first_arrivals(), 300)
    assert receiver.bad_signatures == 0
    assert receiver.events[1]["source"] == SOURCE and receiver.events[1]["fields"]["i"] == "0"
    assert runner.cursor == 300 and await world.log.store.cursor("webhook") == 300


async def test_a_bad_signature_is_refused_and_retried(world, tmp_path):
    receiver = Receiver(secret=b"another-secret").start()
    try:
        runner = world.sink(type="webhook", url=receiver.url, secret_file=secret_file(tmp_path))
        await world.emit(3)
        await eventually(lambda: runner.failures >= 2)
        assert receiver.bad_signatures >= 2 and receiver.arrivals == []
        assert "HTTP 401" in runner.last_error
    finally:
        receiver.stop()
    # the header is GitHub's form: sha256= and the hex HMAC-SHA256 of the exact body
    assert signature(b"key", b"The quick brown fox jumps over the lazy dog") == (
        "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8")


@pytest.mark.parametrize("mode", ["hang", "trickle"])
async def test_a_receiver_that_hangs_or_trickles_costs_a_timeout_and_the_daemon_answers(
        world, receiver, mode, tmp_path):
    receiver.trickle_gap = 0.4
    receiver.set_mode(mode)
    runner = world.sink(type="webhook", url=receiver.url, timeout=0.5,
                        secret_file=secret_file(tmp_path))
    await world.emit(10)
    # while deliveries hang, the event loop stays free: measure its lag
    worst = 0.0
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        await asyncio.sleep(0.01)
        worst = max(worst, time.monotonic() - t0 - 0.01)
    # a delivery that blocked the loop would stall it for a whole trickle gap (0.4 s) or
    # timeout (0.5 s); a loaded machine's scheduling lag stays well below that
    assert worst < 0.3, worst
    await eventually(lambda: runner.failures >= 2)
    assert "no complete answer within 0.5s" in runner.last_error
    receiver.set_mode("ok")
    await eventually(lambda: len(receiver.first_arrivals()) == 10)
    in_order_at_least_once(receiver.arrivals, receiver.first_arrivals(), 10)


async def test_a_refused_url_is_retried_with_capped_backoff(world):
    runner = world.sink(type="webhook", url=f"http://127.0.0.1:{refused_port()}/x",
                        backoff_initial=0.01, backoff_max=0.05)
    await world.emit(1)
    await eventually(lambda: runner.failures >= 5)
    assert runner.cursor == 0
    assert all(0.025 <= retry_delay(n, 0.01, 0.05, roll) <= 0.05
               for n in (4, 10, 100) for roll in (0.0, 0.5, 0.999))
    assert retry_delay(1, 1.0, 60.0, 0.0) == 0.5 and retry_delay(30, 1.0, 60.0, 0.99) <= 60


async def test_a_sink_far_behind_reads_bounded_batches(world, receiver, tmp_path):
    await world.emit(2000)
    sizes: list[int] = []
    runner = world.sink(type="webhook", url=receiver.url, batch_size=300,
                        secret_file=secret_file(tmp_path))
    original = runner.sink.deliver

    async def counting(events):
        sizes.append(len(events))
        return await original(events)

    runner.sink.deliver = counting  # type: ignore[method-assign]
    await eventually(lambda: len(receiver.first_arrivals()) == 2000)
    assert max(sizes) <= 300
    in_order_at_least_once(receiver.arrivals, receiver.first_arrivals(), 2000)


async def test_the_cursor_survives_a_restart_without_repeats(tmp_path, receiver):
    secret = secret_file(tmp_path)
    w = await World(tmp_path / "d.db").open()
    w.sink(type="webhook", url=receiver.url, secret_file=secret)
    await w.emit(50)
    await eventually(lambda: len(receiver.arrivals) == 50)
    await w.close()
    w = await World(tmp_path / "d.db").open()
    try:
        w.sink(type="webhook", url=receiver.url, secret_file=secret)
        await w.emit(25)
        await eventually(lambda: len(receiver.first_arrivals()) == 75)
        assert receiver.arrivals == list(range(1, 76))  # nothing delivered twice
    finally:
        await w.close()


async def test_start_now_and_a_sink_behind_retention(tmp_path, receiver):
    w = await World(tmp_path / "d.db", retention=100).open()
    try:
        await w.emit(40)
        runner = w.sink(type="webhook", url=receiver.url, start="now", name="fresh",
                        secret_file=secret_file(tmp_path), batch_size=10)
        await eventually(lambda: runner.cursor == 40)
        await w.emit(5)
        await eventually(lambda: len(receiver.arrivals) == 5)
        assert receiver.arrivals == [41, 42, 43, 44, 45]
        receiver.stop()
        await w.emit(400)  # the sink is down while retention prunes what it has not sent
        await w.log.prune()
        receiver.set_mode("ok")
        with structlog.testing.capture_logs() as logs:
            receiver.start()
            await eventually(lambda: receiver.first_arrivals()[-1:] == [445])
        # what the sink had in hand is delivered; the rest resumes at the oldest kept, and
        # the events pruned before it could send them are counted in the log
        first = receiver.first_arrivals()
        assert first == sorted(first) and first[:5] == [41, 42, 43, 44, 45]
        assert set(range(346, 446)) <= set(first)
        missed = sum(e["missed"] for e in logs if e["event"] == "events.sink_gap")
        assert missed == 445 - 40 - len(first) and missed > 0
    finally:
        await w.close()


# ---- OpenSearch _bulk ---------------------------------------------------------------------

async def test_bulk_indexes_with_idempotent_ids_and_retries_only_failed_items(world, bulk):
    await world.emit(30)
    bulk.item_faults = {f"{SOURCE}:5": [429, 429], f"{SOURCE}:17": [503]}
    runner = world.sink(type="opensearch", url=f"http://127.0.0.1:{bulk.port}",
                        index="events-{date}", batch_size=10)
    await eventually(lambda: runner.cursor == 30)
    assert len(bulk.docs) == 30
    day = time.strftime("%Y.%m.%d", time.gmtime())
    doc = bulk.docs[(f"events-{day}", f"{SOURCE}:5")]
    assert doc["id"] == 5 and doc["source"] == SOURCE and doc["@timestamp"].endswith("Z")
    assert bulk.attempts[f"{SOURCE}:5"] == 3 and bulk.attempts[f"{SOURCE}:17"] == 2
    assert bulk.attempts[f"{SOURCE}:6"] == 1  # the others were not sent again
    # in id order, but for the two documents indexed on a later attempt
    assert [i for i in bulk.first_arrivals() if i not in (5, 17)] == [
        i for i in range(1, 31) if i not in (5, 17)]
    assert sorted(bulk.arrivals) == list(range(1, 31))


async def test_bulk_skips_a_document_the_index_refuses_after_three_tries(world, bulk):
    bulk.item_faults = {f"{SOURCE}:2": [400, 400, 400, 400]}
    with structlog.testing.capture_logs() as logs:
        runner = world.sink(type="opensearch", url=f"http://127.0.0.1:{bulk.port}")
        await world.emit(4)
        await eventually(lambda: runner.cursor == 4)
    assert bulk.attempts[f"{SOURCE}:2"] == 3
    assert sorted(bulk.arrivals) == [1, 3, 4]
    (rejected,) = [e for e in logs if e["event"] == "events.sink_rejected"]
    assert rejected["event_id"] == 2 and rejected["status"] == 400


async def test_bulk_through_an_outage_500s_a_413_and_a_non_bulk_answer(world, bulk):
    runner = world.sink(type="opensearch", url=f"http://127.0.0.1:{bulk.port}", batch_size=40)
    await world.emit(40)
    await eventually(lambda: runner.cursor == 40)
    bulk.stop()
    await world.emit(60)
    await eventually(lambda: runner.failures >= 2)
    answers = iter([413, 500])
    bulk.status_override = lambda body: next(answers, None)
    bulk.start()
    await eventually(lambda: runner.cursor == 100)
    assert runner.sink.max_docs == 20  # halved by the 413
    in_order_at_least_once(bulk.arrivals, bulk.first_arrivals(), 100)
    bulk.status_override = None
    bulk.handle = lambda *a: (200, b'{"took": 1, "items": []}')  # type: ignore[method-assign]
    await world.emit(1)
    await eventually(lambda: "not a _bulk answer" in runner.last_error)


# ---- HTTPS and credentials ------------------------------------------------------------------

@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


async def test_webhook_over_https_trusts_its_ca_file(world, certs):
    receiver = Receiver(tls=tls_server_context(certs)).start()
    try:
        # the system's roots do not know the test CA: refused, retried, nothing delivered
        untrusting = world.sink(type="webhook", url=receiver.url, name="system-roots")
        await world.emit(30)
        await eventually(lambda: untrusting.failures >= 2)
        assert untrusting.last_error.endswith("TLS: CERTIFICATE_VERIFY_FAILED"), \
            untrusting.last_error
        assert untrusting.cursor == 0 and receiver.arrivals == []
        runner = world.sink(type="webhook", url=receiver.url, name="with-ca",
                            ca_file=str(certs / "ca.pem"), batch_size=7)
        await eventually(lambda: runner.cursor == 30)
        in_order_at_least_once(receiver.arrivals, receiver.first_arrivals(), 30)
        assert receiver.events[30]["source"] == SOURCE
        assert untrusting.cursor == 0  # still refusing, still holding its place
    finally:
        receiver.stop()


async def test_webhook_with_a_client_certificate_to_a_mutual_tls_receiver(
        world, certs, tmp_path):
    receiver = Receiver(tls=tls_server_context(certs, client_cert=True)).start()
    (tmp_path / "other-ca").mkdir()
    other = make_certs(tmp_path / "other-ca")
    try:
        # a certificate from a CA the receiver does not trust: refused, said so, retried
        untrusted = world.sink(type="webhook", url=receiver.url, name="other-ca",
                               ca_file=str(certs / "ca.pem"),
                               client_cert=str(other / "client.pem"),
                               client_key=str(other / "client.key"))
        await world.emit(2)
        await eventually(lambda: untrusted.failures >= 2)
        assert untrusted.last_error.endswith("it may not trust client_cert"), \
            untrusted.last_error
        assert untrusted.cursor == 0 and receiver.arrivals == []
        runner = world.sink(type="webhook", url=receiver.url, ca_file=str(certs / "ca.pem"),
                            client_cert=str(certs / "client.pem"),
                            client_key=str(certs / "client.key"))
        await world.emit(10)
        await eventually(lambda: runner.cursor == 12)
        in_order_at_least_once(receiver.arrivals, receiver.first_arrivals(), 12)
        assert runner.failures == 0 and untrusted.cursor == 0
    finally:
        receiver.stop()


def test_a_real_managers_sink_without_its_client_certificate_is_refused_then_delivers(
        make_manager, certs):
    """A receiver that wants mutual TLS refuses a sink that has no client certificate:
    a clear error in the manager's log, retried, the manager keeps supervising and
    answering, nothing is lost; once the certificate is configured (the manager
    restarted with it), every event arrives from the cursor, in order."""
    hook = Receiver(tls=tls_server_context(certs, client_cert=True)).start()
    try:
        sink = {"type": "webhook", "url": hook.url, "ca_file": str(certs / "ca.pem"),
                "backoff_initial": 0.05, "backoff_max": 0.3, "batch_size": 5}
        m = make_manager([fast_service("web")], {"event_sinks": [sink]})
        m.start()
        assert_eventually(lambda: hook.tls_refused >= 3, 20, what="handshakes refused")

        def failures() -> list[dict]:
            out = []
            for line in m.logs().splitlines():
                with contextlib.suppress(ValueError):
                    doc = json.loads(line)
                    if isinstance(doc, dict) and doc.get("event") == "events.sink_failed":
                        out.append(doc)
            return out

        failed = assert_eventually(lambda: failures()[2:], 20, what="failures logged")
        assert failed[-1]["sink"] == "webhook" and failed[-1]["error"].startswith(
            f"{hook.url}: "), failed[-1]
        assert failed[-1]["error"].endswith("the receiver ended the TLS session before "
                                            "answering: it may require a client certificate "
                                            "(client_cert is not set)"), failed[-1]
        assert any("certificate" in e.lower() for e in hook.tls_errors), hook.tls_errors[:3]
        assert hook.arrivals == [] and hook.requests == 0
        # the manager is fine meanwhile: supervising, answering, recording
        assert_eventually(lambda: m.status("web").state == pb.SERVICE_STATE_RUNNING, 20)
        m.stub().Restart(pb.RestartRequest(service="web"), timeout=30)
        assert m.stop() == 0
        m.top["event_sinks"] = [{**sink, "client_cert": str(certs / "client.pem"),
                                 "client_key": str(certs / "client.key")}]
        m.start()

        def last_id() -> int:
            return int(json.loads(m.http("GET", "/api/events?limit=1")[1])["last_id"])

        assert_eventually(lambda: hook.first_arrivals()[-1:] == [last_id()], 30,
                          what="every event delivered")
        n = last_id()
        in_order_at_least_once(hook.arrivals, hook.first_arrivals(), n)
        kinds = {e["kind"] for e in hook.events.values()}
        assert {"audit.restart", "service.state"} <= kinds  # from before the fix, too
    finally:
        hook.stop()


@pytest.mark.parametrize(("credentials", "header"), [
    ("events-writer:p@ss:w0rd", "Basic " + base64.b64encode(b"events-writer:p@ss:w0rd").decode()),
    ("Bearer opensearch-api-key-123", "Bearer opensearch-api-key-123"),
])
async def test_opensearch_sends_its_credentials_and_a_401_loses_nothing(
        world, certs, tmp_path, credentials, header):
    cred = tmp_path / "opensearch.cred"
    write_token(cred, credentials)
    # the server wants other credentials at first (a password rotated on one side only)
    bulk = BulkReceiver(tls=tls_server_context(certs), authorization="Basic d3Jvbmc6d3Jvbmc=")
    bulk.start()
    try:
        with structlog.testing.capture_logs() as logs:
            runner = world.sink(type="opensearch", url=bulk.base_url, index="ev",
                                ca_file=str(certs / "ca.pem"), credentials_file=str(cred),
                                batch_size=10)
            await world.emit(25)
            await eventually(lambda: runner.failures >= 2)
            assert runner.last_error.endswith("_bulk answered HTTP 401"), runner.last_error
            assert runner.cursor == 0 and bulk.docs == {} and bulk.bad_credentials >= 2
            bulk.authorization = header  # now they agree
            await eventually(lambda: runner.cursor == 25)
        in_order_at_least_once(bulk.arrivals, bulk.first_arrivals(), 25)
        assert set(bulk.authorizations) == {header}  # every request carried them
        secret = credentials.rpartition(":")[2] if ":" in credentials else credentials[7:]
        assert not [e for e in logs if secret in json.dumps(e, default=str)]
    finally:
        bulk.stop()


# ---- JSON lines ---------------------------------------------------------------------------

async def test_jsonl_file_with_rotation(world, tmp_path):
    path = tmp_path / "events.jsonl"
    runner = world.sink(type="jsonl", path=str(path))
    await world.emit(20)
    await eventually(lambda: runner.cursor == 20)
    path.rename(tmp_path / "events.jsonl.1")  # logrotate: move, then the sink creates anew
    await world.emit(5)
    await eventually(lambda: runner.cursor == 25)
    old = [json.loads(x) for x in (tmp_path / "events.jsonl.1").read_text().splitlines()]
    new = [json.loads(x) for x in path.read_text().splitlines()]
    assert [e["id"] for e in old + new] == list(range(1, 26))
    assert old[0]["source"] == SOURCE and old[0]["kind"] == "service.state"


async def test_jsonl_into_a_directory_fails_clearly_and_recovers(world, tmp_path):
    path = tmp_path / "events.jsonl"
    path.mkdir()
    runner = world.sink(type="jsonl", path=str(path))
    await world.emit(2)
    await eventually(lambda: runner.failures >= 1)
    assert "Is a directory" in runner.last_error
    path.rmdir()
    await eventually(lambda: runner.cursor == 2)


# ---- config -----------------------------------------------------------------------------------

BAD_SINKS = [
    ({"type": "kafka"}, "type"), ({}, "type"), ({"type": "jsonl", "path": "rel/x"}, "path"),
    ({"type": "jsonl", "url": "http://x"}, "url"), ({"type": "webhook"}, "url"),
    ({"type": "webhook", "url": "ftp://x"}, "url"),
    ({"type": "webhook", "url": "http://user:pw@x/"}, "url"),
    ({"type": "webhook", "url": "http://x/ y"}, "url"),
    ({"type": "webhook", "url": "http://x", "index": "i"}, "index"),
    ({"type": "webhook", "url": "http://x", "path": "/tmp/x"}, "path"),
    ({"type": "opensearch", "url": "http://x", "index": "UPPER"}, "index"),
    ({"type": "opensearch", "url": "http://x", "index": "a/b"}, "index"),
    ({"type": "opensearch", "url": "http://x", "secret_file": "/s"}, "secret_file"),
    ({"type": "webhook", "url": "http://x", "ca_file": "/ca.pem"}, "ca_file"),
    ({"type": "webhook", "url": "https://x", "client_cert": "/c.pem"}, "client_cert"),
    ({"type": "webhook", "url": "http://x", "timeout": 0}, "timeout"),
    ({"type": "webhook", "url": "http://x", "timeout": "10"}, "timeout"),
    ({"type": "webhook", "url": "http://x", "batch_size": 0}, "batch_size"),
    ({"type": "webhook", "url": "http://x", "batch_size": 10**9}, "batch_size"),
    ({"type": "webhook", "url": "http://x", "backoff_max": 0.01, "backoff_initial": 1},
     "backoff_max"),
    ({"type": "webhook", "url": "http://x", "start": "tomorrow"}, "start"),
    ({"type": "webhook", "url": "http://x", "name": "Bad Name"}, "name"),
    ({"type": "webhook", "url": "http://x", "name": "x" * 100}, "name"),
    ({"type": "webhook", "url": "http://x", "secret_file": "relative"}, "secret_file"),
    ({"type": "webhook", "url": "http://x", "bogus": 1}, "bogus"),
    ({"type": "webhook", "url": "http://" + "x" * 5000}, "url"),
]


@pytest.mark.parametrize(("sink", "key"), BAD_SINKS)
def test_bad_sink_config_names_the_key(sink, key):
    with pytest.raises(ConfigError, match=key):
        read_sinks(Table({"event_sinks": [sink]}))


def test_sink_names_must_differ_and_tables_are_bounded():
    with pytest.raises(ConfigError, match="duplicate sink name 'webhook'"):
        read_sinks(Table({"event_sinks": [{"type": "webhook", "url": "http://a"},
                                          {"type": "webhook", "url": "http://b"}]}))
    with pytest.raises(ConfigError, match="at most 16"):
        read_sinks(Table({"event_sinks": [{"type": "jsonl", "name": f"s{i}"}
                                          for i in range(17)]}))
    with pytest.raises(ConfigError, match="event_sinks"):
        read_sinks(Table({"event_sinks": {"type": "jsonl"}}))


@pytest.mark.parametrize(("events", "key"), [
    ({"retention_count": 10}, "retention_count"), ({"retention_count": 1.5}, "retention_count"),
    ({"retention_days": -1}, "retention_days"), ({"retention_days": "30"}, "retention_days"),
    ({"source": "has space"}, "source"), ({"source": "x" * 200}, "source"),
    ({"bogus": True}, "bogus"), ("not a table", "events"),
])
def test_bad_events_config_names_the_key(tmp_path, events, key):
    with pytest.raises(ConfigError, match=key):
        manager_config.parse({"state_dir": str(tmp_path), "events": events,
                              "services": [{"name": "s", "command": ["true"]}]})


def test_events_defaults_and_source(tmp_path):
    cfg = manager_config.parse({"state_dir": str(tmp_path), "role": "hub",
                                "hub": {"address": "h:1", "name": "box-1"},
                                "services": [{"name": "s", "command": ["true"]}]})
    assert cfg.events.retention_count == 100_000 and cfg.events.retention_days == 30.0
    assert cfg.events.source == "box-1/hub-manager" and cfg.event_sinks == ()


def test_unusable_secret_and_tls_files_name_the_key(tmp_path):
    loose = tmp_path / "loose.secret"
    loose.write_text("s\n")
    os.chmod(loose, 0o644)
    with pytest.raises(ConfigError, match=r"event_sinks\.hook\.secret_file"):
        make_sink(SinkConfig("webhook", "hook", url="http://x/", secret_file=str(loose)),
                  source=SOURCE)
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"event_sinks\.hook\.ca_file"):
        make_sink(SinkConfig("webhook", "hook", url="https://x/", ca_file=str(bad)),
                  source=SOURCE)
    creds = tmp_path / "creds"
    creds.write_text("no-colon-here")
    with pytest.raises(ConfigError, match=r"credentials_file"):
        make_sink(SinkConfig("opensearch", "os", url="https://x/",
                             credentials_file=str(creds)), source=SOURCE)


# ---- real managers ------------------------------------------------------------------------

def test_kill9_of_a_manager_whose_sinks_are_behind_resumes_from_their_cursors(
        make_manager, tmp_path):
    hook = Receiver().start()
    bulk = BulkReceiver().start()
    jsonl = tmp_path / "events.jsonl"
    try:
        # crashes forever (never a crash loop): the history keeps growing while the sinks are down
        m = make_manager([fast_service("web", "--exit-after", "0.2", start_secs=0.1,
                                       crash_loop_max=1000)], {
            "event_sinks": [
                {"type": "webhook", "url": hook.url, "backoff_initial": 0.05,
                 "backoff_max": 0.3, "batch_size": 7},
                {"type": "opensearch", "url": f"http://127.0.0.1:{bulk.port}",
                 "backoff_initial": 0.05, "backoff_max": 0.3},
                {"type": "jsonl", "path": str(jsonl)}]})
        m.start()
        assert_eventually(lambda: len(hook.first_arrivals()) > 5, 20)
        hook.stop()
        bulk.stop()
        # the service keeps crashing: events pile up behind the two HTTP sinks
        assert_eventually(lambda: m.status("web").restarts >= 6, 30)
        m.kill9()
        m.cleanup()  # its service too: the history stops growing
        m.start()
        hook.start()
        bulk.start()

        def last_id() -> int:
            return int(json.loads(m.http("GET", "/api/events?limit=1")[1])["last_id"])

        assert_eventually(lambda: hook.first_arrivals()[-1:] == [last_id()], 30)
        assert_eventually(lambda: bulk.first_arrivals()[-1:] == [last_id()], 30)
        n = last_id()
        in_order_at_least_once(hook.arrivals, hook.first_arrivals(), n)
        in_order_at_least_once(bulk.arrivals, bulk.first_arrivals(), n)

        def lines() -> list[int]:
            return [json.loads(x)["id"] for x in jsonl.read_text().splitlines()]

        assert_eventually(lambda: lines()[-1] == n, 10)
        ids = lines()
        first = list(dict.fromkeys(ids))
        in_order_at_least_once(ids, first, n)
        # at least once: a repeat only for the batch in flight at the kill
        assert len(hook.arrivals) - n <= 7
    finally:
        hook.stop()
        bulk.stop()


def test_jsonl_to_stdout_of_a_real_manager(make_manager):
    m = make_manager([fast_service("web")], {"event_sinks": [{"type": "jsonl"}]})
    m.start()

    def lines() -> list[dict]:
        out = []
        for line in m.logs().splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and "kind" in doc and "subject" in doc:
                out.append(doc)
        return out

    found = assert_eventually(lambda: [d for d in lines() if d["kind"] == "service.state"], 10)
    assert found[0]["source"].endswith("/agent-manager")
    assert [d["id"] for d in lines()] == sorted(d["id"] for d in lines())
