"""The hub's dashboard: `GET /ui/` serves hub/ui/ (the page) and, under `/ui/shared/`,
backendai/ui/ (the look, token prompt and live socket the manager's page shares).
`GET /` sends a browser to it. Plain files, no build step; backendai/http_static.py
says which headers they carry and why no path leaves these directories."""

from __future__ import annotations

from pathlib import Path

from backendai.http_router import Router, open_access
from backendai.http_server import Request, Response
from backendai.http_static import PAGE_HEADERS, SHARED_UI, StaticFiles

PAGE_DIR = Path(__file__).resolve().parent / "ui"


def add_ui_routes(router: Router) -> StaticFiles:
    files = StaticFiles([("", PAGE_DIR), ("shared/", SHARED_UI)])
    files.add_routes(router)

    async def to_ui(req: Request) -> Response:
        return Response(308, b"", "", [("Location", files.prefix), *PAGE_HEADERS])
    router.add("GET", "/", to_ui, auth=open_access)
    return files
