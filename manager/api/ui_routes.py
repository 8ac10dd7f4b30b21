"""The manager's services page: `GET /ui/` serves manager/api/ui/ (the page) and, under
`/ui/shared/`, backendai/ui/ (what the hub's page shares: look, token prompt, live
socket). Plain files, no build step; see backendai/http_static.py for the headers and
why no path leaves these directories. (`GET /` stays the seeds' 404: scripts probe it.)"""

from __future__ import annotations

from pathlib import Path

from backendai.http_router import Router
from backendai.http_static import SHARED_UI, StaticFiles

PAGE_DIR = Path(__file__).resolve().parent / "ui"


def add_ui_routes(router: Router) -> StaticFiles:
    files = StaticFiles([("", PAGE_DIR), ("shared/", SHARED_UI)])
    files.add_routes(router)
    return files
