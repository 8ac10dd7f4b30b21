"""Static files for the dashboards (`GET /ui/...`), from directories inside the package.

Every file is read once, at the first request (a daemon whose page nobody opens pays
nothing for it): a request is a lookup in that table, so no request path ever reaches
the file system and nothing can leave the static root
(`..`, `%2e%2e`, encoded slashes, NUL, symlinks: a symlink or a hidden file is never
loaded, and only the characters of our own file names are accepted). Answers carry the
right Content-Type, an ETag (304 on If-None-Match), `Cache-Control: no-cache` (the
browser revalidates, so a new release shows at once), and the headers of a strict page:
a Content-Security-Policy without inline script or style and with `connect-src 'self'`,
`X-Content-Type-Options: nosniff`, no referrer, no framing.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from backendai.errors import NotFound
from backendai.http_router import Router, open_access
from backendai.http_server import Request, Response

SHARED_UI = Path(__file__).resolve().parent / "ui"  # what every dashboard shares
MAX_FILE = 1 << 20
MAX_FILES = 500
# Our file names: letters, digits, '.', '_', '-' per segment, no segment starting with '.'
SEGMENT_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".woff2": "font/woff2",
}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "font-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")
PAGE_HEADERS = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


class StaticFiles:
    """The files under some directories, each mounted at a relative URL prefix ("" for
    the top, "shared/" for the assets the dashboards share), served below `prefix`."""

    def __init__(self, mounts: Sequence[tuple[str, Path]], prefix: str = "/ui/") -> None:
        self.prefix = prefix
        self.mounts = tuple(mounts)
        self._files: dict[str, StaticFile] | None = None

    @property
    def files(self) -> dict[str, StaticFile]:
        """The table (read on first use; reading is quick: a few small files)."""
        if self._files is None:
            files: dict[str, StaticFile] = {}
            for mount, directory in self.mounts:
                self._load(files, mount, directory)
            self._files = files
        return self._files

    def _load(self, files: dict[str, StaticFile], mount: str, directory: Path) -> None:
        import hashlib  # noqa: PLC0415 - ~0.6 MB RSS: only once a page is opened

        root = directory.resolve()
        for here, dirs, names in os.walk(root, followlinks=False):
            dirs[:] = sorted(d for d in dirs if SEGMENT_RE.fullmatch(d)
                             and not (Path(here) / d).is_symlink())
            for name in sorted(names):
                path = Path(here) / name
                kind = TYPES.get(path.suffix)
                if kind is None or not SEGMENT_RE.fullmatch(name):
                    continue
                st = path.lstat()
                if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE:
                    continue  # symlinks and special files are never served
                if len(files) >= MAX_FILES:
                    raise ValueError(f"more than {MAX_FILES} static files under {root}")
                body = path.read_bytes()
                rel = mount + path.relative_to(root).as_posix()
                tag = hashlib.sha256(body).hexdigest()[:20]
                files[rel] = StaticFile(body, kind, f'"{tag}"')

    def add_routes(self, router: Router) -> None:
        """GET and HEAD below the prefix (no token needed: the pages hold no data; they
        ask for the token), and the prefix without its slash redirected to it."""
        pattern = re.escape(self.prefix) + r"(?P<path>.*)"
        for method in ("GET", "HEAD"):
            router.add(method, pattern, self.serve, auth=open_access)
            router.add(method, re.escape(self.prefix.rstrip("/")), self.redirect,
                       auth=open_access)

    async def redirect(self, req: Request) -> Response:
        return Response(308, b"", "", [("Location", self.prefix), *PAGE_HEADERS])

    async def serve(self, req: Request) -> Response:
        # Our file names need no percent-encoding: any (%2e%2e, %2f, %00) is refused.
        found = None if "%" in req.path else self.lookup(req.params["path"])
        if found is None:
            raise NotFound("no such file")
        inm = req.headers.get(b"if-none-match", b"").decode("latin-1")
        headers = [("ETag", found.etag), ("Cache-Control", "no-cache"), *PAGE_HEADERS]
        if found.etag in (t.strip() for t in inm.split(",")) or inm.strip() == "*":
            return Response(304, b"", "", headers)
        return Response(200, found.body, found.content_type, headers)

    def lookup(self, path: str) -> StaticFile | None:
        """The file a (decoded) path below the prefix names, or None. A path that ends
        with "/" (or is empty) names that directory's index.html."""
        if path == "" or path.endswith("/"):
            path += "index.html"
        if len(path) > 300 or not all(SEGMENT_RE.fullmatch(p) for p in path.split("/")):
            return None
        return self.files.get(path)
