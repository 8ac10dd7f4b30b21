"""OpenSearch / Elasticsearch: events indexed through the `_bulk` API (NDJSON).

Each event is one `index` action with `_id` = `SOURCE:ID` (the daemon's name and the
event id), so a batch sent again after a failure or a restart overwrites the same
documents instead of duplicating them. The document is the event's JSON plus
`@timestamp` (ISO 8601, UTC) and `source`.

The answer's `items` are read one by one, in request order: 2xx (and 409, already
there) is done; 429 and 5xx are sent again by the next attempt, and only those; any
other status (a document the index refuses, e.g. a mapping conflict) is sent again up
to MAX_ITEM_ATTEMPTS times, then logged as `events.sink_rejected` and skipped, so one
bad document cannot stop the sink. A whole request that fails (no answer, an HTTP
error, an answer that is not a `_bulk` answer) is retried whole; a 413 halves the
number of documents per request.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence

import structlog

from backendai.events.model import Event, to_json
from backendai.events.sinks.http_post import DeliveryFailed, Target, post, with_path

log = structlog.get_logger(__name__)

MAX_BODY = 8 << 20
MAX_ITEM_ATTEMPTS = 3


def doc_id(source: str, event_id: int) -> str:
    return f"{source}:{event_id}"


def index_name(pattern: str, at: float) -> str:
    if "{date}" not in pattern:
        return pattern
    day = datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y.%m.%d")
    return pattern.replace("{date}", day)


def document(ev: Event, source: str) -> dict[str, object]:
    doc = to_json(ev, source=source)
    doc["@timestamp"] = datetime.datetime.fromtimestamp(ev.at, datetime.UTC).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")
    return doc


class BulkSink:
    def __init__(self, name: str, target: Target, *, index: str, source: str,
                 timeout: float, max_docs: int = 500) -> None:
        self.name = name
        self.target = with_path(target, "/_bulk")
        self.index = index
        self.source = source
        self.timeout = timeout
        self.max_docs = max_docs
        self._done: set[int] = set()  # ids of the batch in hand already indexed
        self._attempts: dict[int, int] = {}  # refused ids -> times refused

    @property
    def shown(self) -> str:
        return self.target.shown

    def _body(self, events: Sequence[Event]) -> tuple[bytes, list[Event]]:
        out: list[bytes] = []
        sent: list[Event] = []
        size = 0
        for ev in events:
            if ev.id in self._done:
                continue
            action = json.dumps({"index": {"_index": index_name(self.index, ev.at),
                                           "_id": doc_id(self.source, ev.id)}})
            line = (action + "\n" + json.dumps(document(ev, self.source), ensure_ascii=False,
                                               separators=(",", ":")) + "\n").encode()
            if sent and (size + len(line) > MAX_BODY or len(sent) >= self.max_docs):
                break
            out.append(line)
            sent.append(ev)
            size += len(line)
        return b"".join(out), sent

    async def deliver(self, events: Sequence[Event]) -> int:
        """Send what of `events` is not indexed yet; how many of `events`, from the
        first, are now done (indexed or given up on)."""
        body, sent = self._body(events)
        if sent:
            status, answer = await post(self.target, body, "application/x-ndjson",
                                        timeout=self.timeout)
            if status == 413 and self.max_docs > 1:
                self.max_docs = max(1, self.max_docs // 2)
                raise DeliveryFailed(f"{self.shown}: request too large (HTTP 413); now "
                                     f"{self.max_docs} documents per request")
            if status != 200:
                raise DeliveryFailed(f"{self.shown}: _bulk answered HTTP {status}")
            self._read_items(answer, sent)
        done = 0
        for ev in events:
            if ev.id not in self._done:
                break
            done += 1
        for ev in events[:done]:
            self._done.discard(ev.id)
            self._attempts.pop(ev.id, None)
        return done

    def _read_items(self, answer: bytes, sent: list[Event]) -> None:
        try:
            items = json.loads(answer)["items"]
            results = [next(iter(item.values())) for item in items]
            statuses = [int(r["status"]) for r in results]
        except (ValueError, TypeError, KeyError, AttributeError, StopIteration):
            statuses = []
        if len(statuses) != len(sent):
            raise DeliveryFailed(f"{self.shown}: the answer is not a _bulk answer with one "
                                 "item per document")
        retry = 0
        for ev, status, result in zip(sent, statuses, results, strict=True):
            if 200 <= status < 300 or status == 409:
                self._done.add(ev.id)
            elif status == 429 or status >= 500:
                retry += 1
            else:
                tries = self._attempts[ev.id] = self._attempts.get(ev.id, 0) + 1
                if tries >= MAX_ITEM_ATTEMPTS:
                    log.error("events.sink_rejected", sink=self.name, event_id=ev.id,
                              status=status, error=str(result.get("error", ""))[:500])
                    self._done.add(ev.id)
                else:
                    retry += 1
        if retry:
            raise DeliveryFailed(f"{self.shown}: {retry} of {len(sent)} documents not "
                                 "indexed yet; sending those again")

    async def close(self) -> None:
        return None
