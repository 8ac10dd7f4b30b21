"""Fetches a release's files from the package store: `http://`, `https://` or `file://`.

Streams to disk in a worker thread (never the whole package in memory), with a maximum
size, connect/read timeouts, bounded retries with exponential backoff, and resume of a
partial download with `Range` where the server supports it. Credentials come from a file
(`user:password` for basic auth, or `Bearer TOKEN`); they are sent only to the store's
host (never along a redirect) and never appear in logs or errors.

`probe` asks whether the store has a file without fetching it (HEAD, or a one-byte
ranged GET where the server does not answer HEAD; stat and open for file://), with the same
timeouts, CA, client certificate and credentials: the manager checks a release exists
before it accepts an update. A download can be aborted from another thread (`abort`):
a cancelled update stops fetching within one read.
"""

from __future__ import annotations

import os
import stat
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from backendai.errors import BackendAIError, NotFound, Unavailable
from backendai.package_store import file_name, redact
from manager.config import UpdateSource
from manager.updates import extract as package_extract

log = structlog.get_logger(__name__)

CHUNK = 1 << 16
SCHEMES = ("http", "https", "file")


class FetchFailed(BackendAIError):
    """The package could not be fetched (after retries)."""


class TooLarge(FetchFailed):
    """The file is larger than the configured maximum."""


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """How one file is fetched: the service's update source (timeouts, retries, deadline,
    the store's CA and client certificate), the first retry delay, and a size limit
    other than the package's (SHA256SUMS and its signature are small)."""

    source: UpdateSource = field(default_factory=UpdateSource)
    backoff: float = 0.5         # first retry delay; doubles each time
    limit: int | None = None     # None: the source's package_max_bytes

    @property
    def max_bytes(self) -> int:
        return self.source.package_max_bytes if self.limit is None else self.limit


class Aborted(FetchFailed):
    """The download was aborted on purpose (a cancelled update)."""


class _Retryable(Exception):
    pass


class _Status(Exception):
    """An HTTP status `_open` leaves to its caller (416, 405, 501, other 4xx)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"HTTP {code}")
        self.code = code


def fetch(url: str, dest: Path, policy: FetchPolicy, *, authorization: str | None = None,
          sleep: Callable[[float], None] = time.sleep,
          abort: threading.Event | None = None) -> int:
    """Fetch url into dest (resuming a partial dest); return its size. Blocking: thread.
    abort: set from another thread to stop the download (raises Aborted)."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise FetchFailed(f"unsupported package URL scheme {scheme!r}")
    if scheme == "file":
        return _copy_file(url, dest, policy.max_bytes, abort)
    deadline = time.monotonic() + policy.source.download_deadline
    last, tried = "", 0
    for attempt in range(policy.source.download_retries + 1):
        if attempt:
            delay = policy.backoff * (2 ** (attempt - 1))
            if time.monotonic() + delay > deadline:
                break
            log.info("fetch.retry", url=redact(url), attempt=attempt, delay=delay, error=last)
            if abort is not None:
                abort.wait(delay)
            else:
                sleep(delay)
        _check_abort(abort, url)
        tried += 1
        try:
            return _http_once(url, dest, policy, authorization, deadline, abort=abort)
        except _Retryable as exc:
            last = str(exc)
    raise Unavailable(f"cannot fetch {redact(url)} after {tried} attempts: {last}")


def _check_abort(abort: threading.Event | None, url: str) -> None:
    if abort is not None and abort.is_set():
        raise Aborted(f"the download of {redact(url)} was stopped (update cancelled)")


def probe(url: str, policy: FetchPolicy, *, authorization: str | None,
          timeout: float) -> None:
    """Return if the store has `url`, without fetching it: HEAD, or a ranged GET of one
    byte where the server does not answer HEAD (405, 501); stat and open for file://.
    One attempt, `timeout` seconds per network operation. Raises NotFound (the store answers that it
    has no such file), Unavailable (unreachable, 5xx, 429) or FetchFailed (access
    denied, TLS refused, another answer). Blocking: run it in a thread."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise FetchFailed(f"unsupported package URL scheme {scheme!r}")
    if scheme == "file":
        _probe_file(url)
        return
    try:
        try:
            resp = _open(url, policy, authorization, method="HEAD", timeout=timeout)
        except _Status as exc:
            if exc.code not in (405, 501):
                raise
            try:
                resp = _open(url, policy, authorization, headers={"Range": "bytes=0-0"},
                             timeout=timeout)
            except _Status as ranged:
                if ranged.code == 416:  # no byte 0: an empty file, but it exists
                    return
                raise
    except _Status as exc:
        raise FetchFailed(f"{redact(url)}: HTTP {exc.code}") from None
    except _Retryable as exc:
        raise Unavailable(f"{redact(url)}: {exc}") from None
    resp.close()


def _probe_file(url: str) -> None:
    """A file:// package is there, a regular file, and this process can open it (a
    release the download could not read is refused before anything starts)."""
    path = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise FetchFailed(f"{redact(url)} is not a regular file")
        with path.open("rb"):
            pass
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound(f"{redact(url)} does not exist in the package store") from None
    except PermissionError:
        raise FetchFailed(f"{redact(url)}: permission denied") from None
    except OSError as exc:  # a symlink loop, a name too long, an I/O error
        raise FetchFailed(f"{redact(url)} cannot be read: {exc.strerror or exc}") from None


def _copy_file(url: str, dest: Path, max_bytes: int,
               abort: threading.Event | None = None) -> int:
    path = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise TooLarge(f"{path.name} is {size} bytes, more than the maximum {max_bytes}")
        with path.open("rb") as src, dest.open("wb") as out:
            copied = _pump(src, out, 0, max_bytes, path.name, abort=abort)
            out.flush()
            os.fsync(out.fileno())
            return copied
    except FileNotFoundError:
        raise NotFound(f"{redact(url)} does not exist in the package store") from None
    except IsADirectoryError:
        raise FetchFailed(f"{redact(url)} is a directory") from None
    except PermissionError:
        raise FetchFailed(f"{redact(url)}: permission denied") from None


def _pump(src: object, out: object, have: int, max_bytes: int, name: str, *,
          deadline: tuple[float, float] | None = None,
          abort: threading.Event | None = None) -> int:
    """Copy src to out; deadline: (monotonic end, the configured seconds) of the whole
    download, so a store that trickles bytes cannot hold an update for ever."""
    read = src.read  # type: ignore[attr-defined]
    write = out.write  # type: ignore[attr-defined]
    while True:
        if abort is not None and abort.is_set():
            raise Aborted(f"the download of {name} was stopped (update cancelled)")
        if deadline is not None and time.monotonic() > deadline[0]:
            raise FetchFailed(f"{name}: the download took longer than {deadline[1]:g}s "
                              "(download_deadline)")
        chunk = read(CHUNK)
        if not chunk:
            return have
        have += len(chunk)
        if have > max_bytes:
            raise TooLarge(f"{name} is larger than the maximum {max_bytes} bytes")
        write(chunk)


def _open(url: str, policy: FetchPolicy, authorization: str | None, *,
          method: str = "GET", headers: Mapping[str, str] | None = None,
          timeout: float) -> Any:
    """One request to the store: the response, or the failure mapped to ours (NotFound,
    FetchFailed for access and TLS refusals, _Retryable for what may pass, _Status for
    an answer the caller decides about)."""
    # urllib.request (with http.client, email, ssl) costs ~2 MB RSS: loaded at the first
    # download, not by every manager that can update.
    import http.client  # noqa: PLC0415
    import ssl  # noqa: PLC0415
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    req = urllib.request.Request(url, method=method)  # noqa: S310 - scheme checked by callers
    req.add_header("User-Agent", "ai-manager")
    if authorization:
        req.add_unredirected_header("Authorization", authorization)
    for key, value in (headers or {}).items():
        req.add_header(key, value)
    context = None
    source = policy.source
    if url.startswith("https:") and (source.package_ca_file or source.package_client_cert):
        context = ssl.create_default_context(cafile=source.package_ca_file or None)
        if source.package_client_cert:
            try:
                context.load_cert_chain(source.package_client_cert, source.package_client_key)
            except (OSError, ssl.SSLError) as exc:
                raise FetchFailed(f"package_client_cert/package_client_key: cannot load "
                                  f"them: {exc}") from None
    try:
        return urllib.request.urlopen(req, timeout=timeout, context=context)  # noqa: S310
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 404:
            raise NotFound(f"{redact(url)} not found in the package store (HTTP 404)") from None
        if exc.code in (401, 403):
            raise FetchFailed(f"{redact(url)}: access denied (HTTP {exc.code}); check the "
                              "credentials file") from None
        if method == "HEAD" and exc.code in (405, 501):
            raise _Status(exc.code) from None  # no HEAD here: the caller asks otherwise
        if exc.code >= 500 or exc.code == 429:
            raise _Retryable(f"HTTP {exc.code}") from None
        raise _Status(exc.code) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        # urllib wraps what failed in URLError.reason; an SSLError's own .reason is a str
        cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        text = str(cause)
        if isinstance(cause, ssl.SSLCertVerificationError):
            raise FetchFailed(f"{redact(url)}: the store's TLS certificate is not trusted "
                              f"({cause.verify_message}); see package_ca_file") from None
        if isinstance(cause, ssl.SSLError) and "CERTIFICATE_REQUIRED" in text:
            raise FetchFailed(f"{redact(url)}: the store wants a client certificate; see "
                              "package_client_cert") from None
        if isinstance(cause, ssl.SSLError) and "UNKNOWN_CA" in text:
            raise FetchFailed(f"{redact(url)}: the store does not accept our client "
                              "certificate (package_client_cert)") from None
        if isinstance(cause, ssl.SSLEOFError) and not source.package_client_cert:
            # With TLS 1.3 a server that wants a client certificate may just hang up.
            raise _Retryable(f"the store closed the TLS connection ({cause}); if it wants "
                             "a client certificate, see package_client_cert") from None
        raise _Retryable(f"store unreachable: {text}") from None


def _http_once(url: str, dest: Path, policy: FetchPolicy, authorization: str | None,
               deadline: float, *, abort: threading.Event | None = None) -> int:
    import http.client  # noqa: PLC0415 - loaded by _open already

    have = dest.stat().st_size if dest.exists() else 0
    name = file_name(url)
    source = policy.source
    try:
        resp = _open(url, policy, authorization,
                     headers={"Range": f"bytes={have}-"} if have else None,
                     timeout=source.download_timeout)
    except _Status as exc:
        if exc.code == 416 and have:
            dest.unlink()  # our partial file is not a prefix of theirs: start over
            raise _Retryable("range not satisfiable; restarting") from None
        raise FetchFailed(f"{redact(url)}: HTTP {exc.code}") from None
    with resp:
        status = resp.status
        resumed = status == 206 and have > 0
        if not resumed:
            have = 0
        length = resp.headers.get("Content-Length")
        expected = have + int(length) if length and length.isdigit() else None
        if expected is not None and expected > policy.max_bytes:
            raise TooLarge(f"{name} is {expected} bytes, more than the maximum "
                           f"{policy.max_bytes}")
        try:
            with dest.open("ab" if resumed else "wb") as out:
                got = _pump(resp, out, have, policy.max_bytes, name,
                            deadline=(deadline, source.download_deadline), abort=abort)
                out.flush()
                os.fsync(out.fileno())
        except (http.client.IncompleteRead, TimeoutError, ConnectionError) as exc:
            raise _Retryable(f"download interrupted: {type(exc).__name__}") from None
        if expected is not None and got < expected:
            raise _Retryable(f"truncated download: got {got} of {expected} bytes")
        if resumed:
            log.info("fetch.resumed", url=redact(url), from_byte=have)
        return got


def fetch_small(url: str, dest: Path, policy: FetchPolicy, *, authorization: str | None,
                limit: int, missing_ok: bool = False,
                abort: threading.Event | None = None) -> bytes | None:
    """Fetch a small file (SHA256SUMS, its signature) and return its bytes."""
    try:
        fetch(url, dest, replace(policy, limit=limit), authorization=authorization,
              abort=abort)
    except NotFound:
        if missing_ok:
            return None
        raise
    return dest.read_bytes()


def remove_tree(path: Path) -> None:
    package_extract.remove_tree(path)
