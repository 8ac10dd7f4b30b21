"""Before a rollout: does the package store have the release for every package the
targets fetch? (issue 11, item 3)

The hub does not read the store itself: each manager has its own `package_url`,
credentials and CA, and the store may only be reachable from the hosts. It asks one
manager per distinct package — hosts grouped by the service updated and the package
name their manager reports — with `Manager.CheckRelease`, which runs the very check an
update makes before it is accepted (the package and its SHA256SUMS, HEAD or a one-byte
GET, nothing fetched). When that manager cannot be asked (down, an older release without
CheckRelease), the next host of the group is, up to TRIES; a group no manager answered
for is reported `checked = false` and does not block the start (its hosts would be
counted unreachable anyway).

A real start needs every checked package available: one that is missing, or whose
store refuses or does not answer the manager, refuses the start (FAILED_PRECONDITION
listing the packages and URLs) — a version some targets cannot fetch is a failed
rollout waiting to happen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
import structlog

from backendai.deadlines import step_deadline
from backendai.errors import DeadlineExceeded, FailedPrecondition
from backendai.v1 import manager_pb2 as mpb
from hub.inventory import HostView, Inventory
from hub.manager_links import ManagerLinks, describe
from hub.rollout_model import PackageCheck

log = structlog.get_logger(__name__)

TRIES = 3             # managers asked per package before giving up on it
CHECK_TIMEOUT = 12.0  # one manager's answer (its own check is bounded by 10 s)
TOTAL_TIMEOUT = 20.0  # all tries for one package (StartRollout answers well within 30 s)
PARALLEL = 16         # packages checked at once
SHOWN_HOSTS = 5       # hosts named per package in a refusal
MAX_TEXT = 1000       # a manager's URL or message, as repeated here


def _groups(views: Sequence[HostView], service: str) -> dict[tuple[str, str], list[HostView]]:
    """Hosts by (service updated, package name); reachable ones first in each group."""
    groups: dict[tuple[str, str], list[HostView]] = {}
    for view in views:
        st = view.status
        svc = service or view.entry.service or (st.name if st is not None else "")
        package = st.package if st is not None else ""
        groups.setdefault((svc, package), []).append(view)
    for members in groups.values():
        members.sort(key=lambda v: (not v.reachable, v.name))
    return groups


async def check_packages(inventory: Inventory, links: ManagerLinks, hosts: Sequence[str],
                         version: str, service: str) -> tuple[PackageCheck, ...]:
    """One PackageCheck per distinct package of `hosts` (names in the inventory)."""
    views = [inventory.get(name) for name in hosts]
    limit = asyncio.Semaphore(PARALLEL)

    async def one(key: tuple[str, str], members: list[HostView]) -> PackageCheck:
        async with limit:
            return await _check(links, key, members, version, service)

    groups = _groups(views, service)
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(one(k, m)) for k, m in groups.items()]
    return tuple(t.result() for t in tasks)


async def _check(links: ManagerLinks, key: tuple[str, str], members: list[HostView],
                 version: str, service: str) -> PackageCheck:
    svc, package = key
    names = tuple(v.name for v in members)
    why: list[str] = []
    loop = asyncio.get_running_loop()
    ends = loop.time() + TOTAL_TIMEOUT
    for view in members[:TRIES]:
        left = ends - loop.time()
        if left <= 0:
            why.append(f"no answer within {TOTAL_TIMEOUT:g}s")
            break
        stub = links.stub(view.entry.manager_address)
        request = mpb.CheckReleaseRequest(service=service or view.entry.service,
                                          version=version)
        try:
            async with step_deadline(f"store check of {version} on host {view.name}",
                                     min(CHECK_TIMEOUT, left)):
                got: mpb.CheckReleaseResponse = await stub.CheckRelease(request)
        except DeadlineExceeded as exc:
            why.append(f"{view.name}: {exc}")
            continue
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                # the manager cannot update this package at all (not configured, no such
                # service): a definite no
                return PackageCheck(service=svc, package=package, url="", available=False,
                                    checked=True, message=_clip(describe(exc)), hosts=names,
                                    asked=view.name)
            why.append(f"{view.name}: {_clip(describe(exc))}")
            continue
        return PackageCheck(service=_clip(got.service) or svc,
                            package=_clip(got.package) or package, url=_clip(got.url),
                            available=got.available, checked=True,
                            message=_clip(got.message), hosts=names, asked=view.name)
    message = "not checked: no manager of these hosts answered (" + "; ".join(why) + ")"
    log.warning("rollout.store_check_skipped", version=version, package=package,
                service=svc, reason=message)
    return PackageCheck(service=svc, package=package, url="", available=False, checked=False,
                        message=message, hosts=names)


def _clip(text: str) -> str:
    """What a manager said, bounded (a broken or hostile one cannot blow up the answer)."""
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1] + "…"


def refuse_missing(version: str, packages: Sequence[PackageCheck]) -> None:
    """FailedPrecondition listing every checked package the store does not give."""
    missing = [p for p in packages if p.checked and not p.available]
    if not missing:
        return
    parts = []
    for p in missing:
        hosts = ", ".join(p.hosts[:SHOWN_HOSTS]) + (
            f" and {len(p.hosts) - SHOWN_HOSTS} more" if len(p.hosts) > SHOWN_HOSTS else "")
        what = p.package or p.service or "the service"
        parts.append(f"{what} at {p.url or '(no URL)'}: {p.message or 'not available'} "
                     f"(hosts {hosts})")
    raise FailedPrecondition(f"version {version} cannot be fetched by every target: "
                             + "; ".join(parts) + "; nothing was started")
