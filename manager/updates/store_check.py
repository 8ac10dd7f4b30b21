"""Before an update is accepted: does the package store have the release? The package
and its SHA256SUMS are asked for without fetching them (`fetch.probe`: HEAD, else a
one-byte ranged GET; stat and open for file://), with the download's timeout (at most
STORE_CHECK_MAX), CA, client certificate and credentials, both at once."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class ReleaseCheck:
    """Whether the store has a release (CheckRelease): the URL looked at, redacted."""

    available: bool
    url: str
    message: str = ""


async def check_store(cfg: ServiceConfig, version: str) -> None:
    """The store has the package and its SHA256SUMS, or the update is refused with
    nothing created: NotFound with the URL looked at, Unavailable when the store
    does not answer, FailedPrecondition when it refuses us (credentials, TLS)."""
    err = await store_problem(cfg, version)
    if err is not None:
        _refuse(err, version)


async def release_check(cfg: ServiceConfig, version: str) -> ReleaseCheck:
    """The same check, answered as a value (the hub asks it before a rollout)."""
    url = package_store.redact(package_store.expand_url(cfg.update.package_url, version))
    err = await store_problem(cfg, version)
    if err is None:
        return ReleaseCheck(True, url)
    return ReleaseCheck(False, url, f"version {version}: {err}")


async def store_problem(cfg: ServiceConfig, version: str) -> BackendAIError | None:
    """What stops an update to `version` from fetching (the most telling error), or
    None when the store has both files."""
    url = package_store.expand_url(cfg.update.package_url, version)
    urls = (url, package_store.sibling_url(url, package_verify.SUMS_NAME))
    try:
        auth = credentials(cfg)
    except BackendAIError as exc:
        return exc
    policy = package_fetch.FetchPolicy(cfg.update)
    limit = min(cfg.update.download_timeout, STORE_CHECK_MAX)
    try:
        async with asyncio.timeout(limit + 1.0):
            results = await asyncio.gather(
                *(asyncio.to_thread(package_fetch.probe, u, policy, authorization=auth,
                                    timeout=limit) for u in urls),
                return_exceptions=True)
    except TimeoutError:
        return Unavailable(f"the package store did not answer within {limit:g}s "
                           f"({package_store.redact(url)})")
    errors = [r for r in results if isinstance(r, BaseException)]
    for kind in (NotFound, Unavailable, BackendAIError):  # the most telling first
        for err in errors:
            if isinstance(err, kind):
                return err
    for err in errors:
        raise err
    return None


def _refuse(err: BackendAIError, version: str) -> NoReturn:
    if isinstance(err, NotFound):
        raise NotFound(f"version {version} is not in the package store: {err}; "
                       "nothing was changed") from None
    if isinstance(err, Unavailable):
        raise Unavailable(f"cannot check the package store for version {version}: {err}; "
                          "nothing was changed") from None
    raise FailedPrecondition(f"cannot check the package store for version {version}: "
                             f"{err}; nothing was changed") from None
