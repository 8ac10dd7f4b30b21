"""backendai/http_static.py on a real HttpServer: a temp directory with the files a
dashboard ships and the ones it must never serve (a symlink out of the root, hidden
files, unknown types, special files, too-large files)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from backendai.http_router import Router
from backendai.http_server import HttpServer
from backendai.http_static import CSP, MAX_FILE, SHARED_UI, StaticFiles
from backendai.listen import ListenAddress
from tests.conftest import ROOT


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    page, shared = tmp_path / "page", tmp_path / "shared"
    (page / "sub").mkdir(parents=True)
    shared.mkdir()
    (page / "index.html").write_text("<!doctype html><p>page</p>")
    (page / "app.js").write_text("export const x = 1;\n")
    (page / "sub" / "index.html").write_text("<p>sub</p>")
    (page / "style.css").write_text("p { color: red }")
    (shared / "base.css").write_text("body { margin: 0 }")
    (shared / "icon.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    (page / "leak.txt").symlink_to(secret)
    (page / "linkdir").symlink_to(tmp_path, target_is_directory=True)
    (page / ".env.js").write_text("hidden")
    (page / ".git").mkdir()
    (page / ".git" / "config.txt").write_text("hidden dir")
    (page / "server.py").write_text("import os")
    (page / "big.js").write_bytes(b"x" * (MAX_FILE + 1))
    (page / "name with space.js").write_text("odd")
    os.mkfifo(page / "fifo.txt")
    return page, shared


async def get(port: int, target: str, headers: str = "", method: str = "GET",
              ) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     f"{headers}\r\n".encode("latin-1"))
        async with asyncio.timeout(10):
            raw = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {k.lower(): v for k, v in (x.split(": ", 1) for x in lines[1:])}
    return int(lines[0].split()[1]), hdrs, body


async def test_serves_only_what_was_loaded(tree) -> None:
    page, shared = tree
    files = StaticFiles([("", page), ("shared/", shared)])
    assert sorted(files.files) == ["app.js", "index.html", "shared/base.css",
                                   "shared/icon.svg", "style.css", "sub/index.html"]
    router = Router()
    files.add_routes(router)
    server = HttpServer(ListenAddress("127.0.0.1", 0), router)
    _, port = await server.start()
    try:
        ok = {"/ui/": ("text/html; charset=utf-8", b"<!doctype html><p>page</p>"),
              "/ui/index.html": ("text/html; charset=utf-8", b"<!doctype html><p>page</p>"),
              "/ui/sub/": ("text/html; charset=utf-8", b"<p>sub</p>"),
              "/ui/app.js": ("text/javascript; charset=utf-8", b"export const x = 1;\n"),
              "/ui/style.css": ("text/css; charset=utf-8", b"p { color: red }"),
              "/ui/shared/base.css": ("text/css; charset=utf-8", b"body { margin: 0 }"),
              "/ui/shared/icon.svg": ("image/svg+xml",
                                      b"<svg xmlns='http://www.w3.org/2000/svg'/>")}
        for target, (kind, body) in ok.items():
            status, headers, got = await get(port, target)
            assert (status, headers["content-type"], got) == (200, kind, body), target
            assert headers["content-security-policy"] == CSP
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["referrer-policy"] == "no-referrer"
            etag = headers["etag"]
            for inm in (etag, f'"other", {etag}', "*"):
                again = await get(port, target, f"If-None-Match: {inm}\r\n")
                assert (again[0], again[2], again[1]["etag"]) == (304, b"", etag)
            assert (await get(port, target, 'If-None-Match: "stale"\r\n'))[0] == 200
        for target in ("/ui/leak.txt", "/ui/linkdir/secret.txt", "/ui/.env.js",
                       "/ui/.git/config.txt", "/ui/server.py", "/ui/big.js",
                       "/ui/name%20with%20space.js", "/ui/fifo.txt", "/ui/sub",
                       "/ui/../secret.txt", "/ui/%2e%2e/secret.txt",
                       "/ui/sub%2findex.html", "/ui/shared%2fbase.css", "/ui/%00",
                       "/ui/index.html%00", "/ui/app.js/", "/ui/nothing.js"):
            status, _, body = await get(port, target)
            assert status == 404, (target, status)
            assert b"root:" not in body and b"import" not in body
        status, headers, _ = await get(port, "/ui")
        assert (status, headers["location"]) == (308, "/ui/")
        status, _, body = await get(port, "/ui/app.js", method="HEAD")
        assert (status, body) == (200, b"")
        # a raw NUL or space in the target never reaches a route: h11 refuses it
        assert (await get(port, "/ui/a\x00b"))[0] == 400
    finally:
        await server.stop(1.0)


def test_the_shared_assets_ship_in_the_package() -> None:
    files = StaticFiles([("shared/", SHARED_UI)])
    assert {"shared/base.css", "shared/auth.js", "shared/live.js", "shared/dom.js",
            "shared/states.js", "shared/confirm.js", "shared/icon.svg"} <= set(files.files)
    # nothing the CSP would refuse, no HTML parsed from strings
    for directory in (SHARED_UI, ROOT / "manager" / "api" / "ui"):
        for path in directory.iterdir():
            text = path.read_text()
            for bad in (".innerHTML", "outerHTML", "insertAdjacentHTML", "eval(",
                        "new Function", ".style.", " style=", "<style", "onclick=",
                        "document.cookie", "localStorage"):
                assert bad not in text, (path.name, bad)


def test_too_many_files_is_refused(tmp_path) -> None:
    for i in range(501):
        (tmp_path / f"f{i}.js").write_text("")
    files = StaticFiles([("", tmp_path)])
    with pytest.raises(ValueError, match="more than 500 static files"):
        files.lookup("f1.js")


def test_nothing_is_read_per_request(tree, monkeypatch) -> None:
    """A request is a lookup: the file system is not touched after loading (at the
    first request)."""
    page, _ = tree
    files = StaticFiles([("", page)])
    assert files.lookup("index.html") is not None

    def refuse(*args: object, **kw: object) -> None:
        raise AssertionError("file system access at request time")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    monkeypatch.setattr(os, "open", refuse)
    assert files.lookup("app.js") is not None and files.lookup("../secret.txt") is None
