"""The package store's addressing, shared by the manager's updater and aictl (and the
hub, which asks whether a release is in the store): a URL template with `{version}`,
`SHA256SUMS` beside the package, credentials from a file, URLs safe to log."""

from __future__ import annotations

import base64
import urllib.parse
from pathlib import Path


def expand_url(template: str, version: str) -> str:
    """The package URL for a (validated) version."""
    return template.replace("{version}", version)


def sibling_url(url: str, name: str) -> str:
    """The URL of a file in the same directory (SHA256SUMS beside the package)."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path.rsplit("/", 1)[0] + "/" + name
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def file_name(url: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])


def redact(url: str) -> str:
    """A URL safe for logs: no user info, no query."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def load_credentials(path: Path) -> str:
    """The Authorization header value from a credentials file."""
    text = path.read_text().strip()
    if not text or "\n" in text:
        raise ValueError("credentials file must hold one line")
    if text.lower().startswith("bearer "):
        return "Bearer " + text[7:].strip()
    if ":" not in text:
        raise ValueError("credentials must be 'user:password' or 'Bearer TOKEN'")
    return "Basic " + base64.b64encode(text.encode()).decode("ascii")
