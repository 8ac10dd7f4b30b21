"""`[events]` (retention, the daemon's name in its sinks) and `[[event_sinks]]` (where the
events also go), read the same way by the manager and the hub. Keys and defaults:
docs/CONFIG.md (manager) and docs/CONFIG_HUB_AGENT.md (hub)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from backendai.config import Table
from backendai.errors import ConfigError

SINK_TYPES = ("jsonl", "webhook", "opensearch")
SINK_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
SOURCE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,127}")
# OpenSearch index names: lowercase, none of \ / * ? " < > | space , # :, not starting
# with - _ +; `{date}` is replaced by the event's UTC date (daily indices).
INDEX_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,200}(\{date\}[a-z0-9._-]{0,40})?")
MAX_SINKS = 16


@dataclass(frozen=True, slots=True)
class EventsConfig:
    """`[events]`."""

    retention_count: int = 100_000
    retention_days: float = 30.0
    source: str = ""  # the loader's default: set by the daemon (host and role)


@dataclass(frozen=True, slots=True)
class SinkConfig:
    """One `[[event_sinks]]` table."""

    type: str
    name: str = ""  # the loader's default: the type
    path: str = "-"  # jsonl: a file (absolute path), or "-" for stdout
    url: str = ""  # webhook: the URL POSTed to; opensearch: the cluster's base URL
    index: str = "backendai-events"  # opensearch
    secret_file: str = ""  # webhook: HMAC-SHA256 key file (signature header)
    credentials_file: str = ""  # webhook/opensearch: "user:password" or "Bearer TOKEN"
    ca_file: str = ""
    client_cert: str = ""
    client_key: str = ""
    timeout: float = 10.0  # seconds for one delivery (connect, send, answer)
    batch_size: int = 500
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    start: str = "oldest"  # where a sink without a cursor starts: "oldest" kept, or "now"


def read_events(t: Table | None, *, source: str) -> EventsConfig:
    """`[events]` (absent: the defaults); `source`: the default name of the daemon."""
    if t is None:
        return EventsConfig(source=source)
    cfg = EventsConfig(
        retention_count=t.integer("retention_count", low=100, high=100_000_000),
        retention_days=t.number("retention_days", low=0.0, high=36500.0),
        source=t.text("source", max_len=128, default=source))
    t.done()
    if cfg.source and not SOURCE_RE.fullmatch(cfg.source):
        raise ConfigError(f"{t.key('source')}: must be 1-128 of letters, digits and "
                          f"_ . : / @ -, got {cfg.source!r}")
    return cfg


def _http_url(t: Table, url: str) -> None:
    if not re.fullmatch(r"https?://[^\s/@]+(/[^\s]*)?", url) or len(url) > 2048:
        raise ConfigError(f"{t.key('url')}: must be an http:// or https:// URL without "
                          f"credentials (use credentials_file), got {url[:80]!r}")


def read_sink(t: Table) -> SinkConfig:
    kind = t.choice("type", SINK_TYPES)
    sink = SinkConfig(
        type=kind,
        name=t.text("name", max_len=64, default=kind),
        path=t.text("path", max_len=4096),
        url=t.text("url", max_len=4096),
        index=t.text("index", max_len=255),
        secret_file=t.text("secret_file", absolute_path=True),
        credentials_file=t.text("credentials_file", absolute_path=True),
        ca_file=t.text("ca_file", absolute_path=True),
        client_cert=t.text("client_cert", absolute_path=True),
        client_key=t.text("client_key", absolute_path=True),
        timeout=t.number("timeout", low=0.1, high=600.0),
        batch_size=t.integer("batch_size", low=1, high=5000),
        backoff_initial=t.number("backoff_initial", low=0.01, high=3600.0),
        backoff_max=t.number("backoff_max", low=0.01, high=86400.0),
        start=t.choice("start", ("oldest", "now")))
    t.done()
    if not SINK_NAME_RE.fullmatch(sink.name):
        raise ConfigError(f"{t.key('name')}: must be 1-64 of a-z 0-9 _ - (it keys the "
                          f"sink's cursor), got {sink.name!r}")
    if sink.backoff_max < sink.backoff_initial:
        raise ConfigError(f"{t.key('backoff_max')}: must be >= backoff_initial")
    if kind == "jsonl":
        for key in ("url", "secret_file", "credentials_file", "ca_file", "client_cert"):
            if getattr(sink, key):
                raise ConfigError(f"{t.key(key)}: not used by a jsonl sink")
        if sink.path != "-" and not sink.path.startswith("/"):
            raise ConfigError(f"{t.key('path')}: must be an absolute path, or \"-\" for "
                              f"stdout, got {sink.path!r}")
        return sink
    if sink.path != "-":
        raise ConfigError(f"{t.key('path')}: only a jsonl sink writes a file")
    if not sink.url:
        raise ConfigError(f"{t.key('url')}: required for a {kind} sink")
    _http_url(t, sink.url)
    if kind == "webhook" and "index" in t.data:
        raise ConfigError(f"{t.key('index')}: only an opensearch sink has an index")
    if kind == "opensearch":
        if sink.secret_file:
            raise ConfigError(f"{t.key('secret_file')}: only a webhook signs its batches")
        if not INDEX_RE.fullmatch(sink.index):
            raise ConfigError(f"{t.key('index')}: must be a lowercase OpenSearch index name "
                              f"(a-z 0-9 . _ -, optionally with {{date}}), got "
                              f"{sink.index!r}")
    if bool(sink.client_cert) != bool(sink.client_key):
        raise ConfigError(f"{t.key('client_cert')}: client_cert and client_key go together")
    if (sink.ca_file or sink.client_cert) and not sink.url.startswith("https://"):
        raise ConfigError(f"{t.key('ca_file')}: TLS options need an https:// url")
    return sink


def read_sinks(t: Table) -> tuple[SinkConfig, ...]:
    sinks = tuple(read_sink(s) for s in t.tables("event_sinks", most=MAX_SINKS,
                                                  defaults=SinkConfig))
    names = [s.name for s in sinks]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"event_sinks[{i}].name: duplicate sink name {name!r} (give "
                              "each sink its own name: it keys the sink's cursor)")
    return sinks


def default_source(host: str, role: str) -> str:
    """A daemon's name in its events' `source`: `HOST/ROLE` (e.g. agent-3/agent-manager)."""
    return f"{host}/{role}"
