"""The real third-party components other tests rely on are installed and start here:
a test that needs one fails loudly instead of skipping (scripts/bootstrap.sh installs
them). Each is started on loopback in a temp directory and stopped again."""

from __future__ import annotations

import http.server
import threading

import psycopg

from tests.fixtures.components import PostgresServer, PrometheusServer, chromium, wait_until


def test_private_postgresql_with_a_password_login_over_tcp(tmp_path):
    pg = PostgresServer(tmp_path / "pg").start()
    try:
        with psycopg.connect(pg.dsn_with_password, connect_timeout=10) as conn:
            assert conn.execute("SHOW fsync").fetchone() == ("on",)
            assert conn.execute("SELECT current_user").fetchone() == ("hub",)
    finally:
        pg.remove()


def test_prometheus_scrapes_a_target_on_loopback(tmp_path):
    body = b"# TYPE probe_value gauge\nprobe_value 42\n"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    prom = PrometheusServer(tmp_path / "prom", {
        "probe": {"targets": [f"127.0.0.1:{srv.server_address[1]}"]}}, interval=0.5).start()
    try:
        got = wait_until(lambda: prom.query("probe_value"), 30, "a scraped sample")
        assert got[0]["value"][1] == "42"
    finally:
        prom.stop()
        srv.shutdown()
        srv.server_close()


def test_headless_chromium_renders_a_loopback_page(tmp_path):
    (tmp_path / "index.html").write_text("<title>t</title><p id=x>hello</p>")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(tmp_path), **kw)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with chromium() as driver:
            driver.get(f"http://127.0.0.1:{srv.server_address[1]}/index.html")
            assert driver.find_element("id", "x").text == "hello"
    finally:
        srv.shutdown()
        srv.server_close()
