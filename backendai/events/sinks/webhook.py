"""Webhook: batches of events POSTed as JSON to a URL.

Body: `{"source": SOURCE, "events": [EVENT, ...]}` (events in id order; the id is the
de-duplication key: a batch may arrive again after a failure or a restart). Headers:
`X-BackendAI-Event-Ids: FIRST-LAST`, and with `secret_file`
`X-BackendAI-Signature-256: sha256=HEX`, the HMAC-SHA256 of the exact body with the
file's secret (as GitHub signs its webhooks). Any 2xx answer delivers the batch;
anything else (or no answer in `timeout`) is retried by the runner with capped,
jittered backoff. Bodies stay under MAX_BODY: a larger batch is sent in parts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from pathlib import Path

from backendai.auth import load_token
from backendai.events.model import Event, to_json
from backendai.events.sinks.http_post import DeliveryFailed, Target, post

MAX_BODY = 4 << 20
SIGNATURE_HEADER = "X-BackendAI-Signature-256"
IDS_HEADER = "X-BackendAI-Event-Ids"


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def read_secret(path: str, key: str) -> bytes:
    """The signing secret: one line, in a file only its owner (and group) can read."""
    return load_token(Path(path), key)


class WebhookSink:
    def __init__(self, name: str, target: Target, *, source: str, timeout: float,
                 secret: bytes | None = None) -> None:
        self.name = name
        self.target = target
        self.source = source
        self.timeout = timeout
        self.secret = secret

    @property
    def shown(self) -> str:
        return self.target.shown

    def _body(self, events: Sequence[Event]) -> tuple[bytes, int]:
        """The body for the longest prefix of `events` under MAX_BODY (one at least)."""
        head = b'{"source":' + json.dumps(self.source).encode() + b',"events":['
        parts: list[bytes] = []
        size = len(head) + 2
        for ev in events:
            doc = json.dumps(to_json(ev), ensure_ascii=False, separators=(",", ":")).encode()
            if parts and size + len(doc) + 1 > MAX_BODY:
                break
            parts.append(doc)
            size += len(doc) + 1
        return head + b",".join(parts) + b"]}", len(parts)

    async def deliver(self, events: Sequence[Event]) -> int:
        body, count = self._body(events)
        headers = [(IDS_HEADER, f"{events[0].id}-{events[count - 1].id}")]
        if self.secret is not None:
            headers.append((SIGNATURE_HEADER, signature(self.secret, body)))
        status, _ = await post(self.target, body, "application/json", headers,
                               timeout=self.timeout, max_answer=64 * 1024)
        if not 200 <= status < 300:
            raise DeliveryFailed(f"{self.shown}: answered HTTP {status}")
        return count

    async def close(self) -> None:
        return None
