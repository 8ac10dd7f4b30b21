"""Sinks: where a daemon's events also go (`[[event_sinks]]`), each delivering at least
once, in id order, from a durable cursor (runner.py): JSON lines to stdout or a file
(jsonl.py), HTTP POSTs of batches (webhook.py), and OpenSearch/Elasticsearch `_bulk`
(opensearch.py), the last two over one small HTTP client (http_post.py)."""
