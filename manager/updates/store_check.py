"""Before an update is accepted: does the package store have the release? The package
and its SHA256SUMS are asked for without fetching them (`fetch.probe`: HEAD, else a
one-byte ranged GET; stat for file://), with the download's timeout (at most
STORE_CHECK_MAX), CA, client certificate and credentials, both at once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import NoReturn

from backendai import package_store
from backendai.errors import BackendAIError, FailedPrecondition, NotFound, Unavailable
from manager.config import ServiceConfig
from manager.updates import fetch as package_fetch
from manager.updates import verify as package_verify
from manager.updates.operation import describe

STORE_CHECK_MAX = 10.0  # seconds


def credentials(cfg: ServiceConfig) -> str | None:
    """The store's Authorization header value, from package_credentials_file."""
    if not cfg.update.package_credentials_file:
        return None
    try:
        return package_store.load_credentials(Path(cfg.update.package_credentials_file))
    except (OSError, ValueError) as exc:
        raise package_fetch.FetchFailed(
            f"cannot use package_credentials_file: {describe(exc)}") from None


async def check_store(cfg: ServiceConfig, version: str) -> None:
    """The store has the package and its SHA256SUMS, or the update is refused with
    nothing created: NotFound with the URL looked at, Unavailable when the store
    does not answer, FailedPrecondition when it refuses us (credentials, TLS)."""
    url = package_store.expand_url(cfg.update.package_url, version)
    urls = (url, package_store.sibling_url(url, package_verify.SUMS_NAME))
    try:
        auth = credentials(cfg)
    except BackendAIError as exc:
        _refuse(exc, version)
    policy = package_fetch.FetchPolicy(cfg.update)
    limit = min(cfg.update.download_timeout, STORE_CHECK_MAX)
    try:
        async with asyncio.timeout(limit + 1.0):
            results = await asyncio.gather(
                *(asyncio.to_thread(package_fetch.probe, u, policy, authorization=auth,
                                    timeout=limit) for u in urls),
                return_exceptions=True)
    except TimeoutError:
        raise Unavailable(f"the package store did not answer within {limit:g}s "
                          f"({package_store.redact(url)}); nothing was changed") from None
    errors = [r for r in results if isinstance(r, BaseException)]
    for kind in (NotFound, Unavailable, BackendAIError):  # the most telling first
        for err in errors:
            if isinstance(err, kind):
                _refuse(err, version)
    for err in errors:
        raise err


def _refuse(err: BackendAIError, version: str) -> NoReturn:
    if isinstance(err, NotFound):
        raise NotFound(f"version {version} is not in the package store: {err}; "
                       "nothing was changed") from None
    if isinstance(err, Unavailable):
        raise Unavailable(f"cannot check the package store for version {version}: {err}; "
                          "nothing was changed") from None
    raise FailedPrecondition(f"cannot check the package store for version {version}: "
                             f"{err}; nothing was changed") from None
