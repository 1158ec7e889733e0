"""`/docs` (Swagger UI over the OpenAPI document, every asset from the server
itself), `/healthz` (the process answers) and `/readyz` (migrated and the
database answers; 503 with the reason when not), against real server processes."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from geopera_kernel.server.store.database import _MIGRATION_LOCK_ID
from tests.support.server import ServerProcess


def fetch(base: str, path: str) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(base + path, timeout=30) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def fetch_json(base: str, path: str) -> tuple[int, dict[str, Any]]:
    status, body, _ = fetch(base, path)
    return status, json.loads(body)


class _References(HTMLParser):
    """Every URL a page makes a browser load (src and href attributes)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def test_docs_page_and_every_asset_it_loads_come_from_the_server(world):
    base = world.server.http_url
    status, page, headers = fetch(base, "/docs")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    parser = _References()
    parser.feed(page.decode())
    assert len(parser.urls) >= 3
    for url in parser.urls:
        assert url.startswith("/") and not url.startswith("//"), f"{url} is not served by this server"
        status, body, _ = fetch(base, url)
        assert status == 200 and body, url
    assert not re.search(rb"https?://", page), "the page names another host"
    # The browser is told so too: scripts, styles and requests only from this origin.
    policy = headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "http" not in policy
    scripts = [url for url in parser.urls if url.endswith(".js")]
    assert "/docs/static/swagger-ui-bundle.js" in scripts
    assert b"SwaggerUIBundle" in fetch(base, "/docs/static/swagger-ui-bundle.js")[1]
    init = fetch(base, "/docs/init.js")[1]
    assert b'url: "/v1/openapi.json"' in init and b"validatorUrl: null" in init
    status, document = fetch_json(base, "/v1/openapi.json")
    assert status == 200 and document["openapi"].startswith("3.")


@pytest.mark.parametrize(
    "path", ["/docs/static/swagger-editor-bundle.js", "/docs/static/..%2F..%2Fetc%2Fpasswd", "/docs/static/nope.js"]
)
def test_docs_serve_only_the_swagger_ui_files(world, path):
    status, body, _ = fetch(world.server.http_url, path)
    assert status == 404 and json.loads(body)["code"] == "NOT_FOUND"


def test_healthz_and_readyz_answer_without_a_token(world):
    assert fetch_json(world.server.http_url, "/healthz") == (200, {"status": "ok"})
    status, body, headers = fetch(world.server.http_url, "/readyz")
    assert (status, json.loads(body)) == (200, {"status": "ready"})
    assert headers["Cache-Control"] == "no-store"


def _http_port(server: ServerProcess, timeout: float = 30.0) -> int:
    """The HTTP port as soon as the server listens (it logs it before it is ready)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in server.log().splitlines():
            if '"HTTP/JSON on' in line:
                return int(json.loads(line)["msg"].split(":")[-1].split()[0])
        time.sleep(0.05)
    raise AssertionError(f"no HTTP port logged:\n{server.log()}")


def _wait_for(base: str, path: str, status: int, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        got, body = fetch_json(base, path)
        if got == status or time.monotonic() > deadline:
            assert got == status, body
            return body
        time.sleep(0.1)


def test_readyz_is_503_until_migrations_ran(database_url, tmp_path: Path):
    # Holding the migration lock keeps the server in its start-up phase.
    with psycopg.connect(database_url, autocommit=True) as blocker:
        blocker.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK_ID,))
        server = ServerProcess(database_url=database_url, home=tmp_path).launch()
        try:
            base = f"http://127.0.0.1:{_http_port(server)}"
            assert fetch_json(base, "/healthz") == (200, {"status": "ok"})
            status, body = fetch_json(base, "/readyz")
            assert (status, body["reason"], body["code"]) == (503, "NOT_READY", "UNAVAILABLE") and body["message"]
            blocker.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK_ID,))
            assert _wait_for(base, "/readyz", 200) == {"status": "ready"}
        finally:
            server.stop()


@pytest.fixture
def running_server(database_url, tmp_path: Path):
    server = ServerProcess(database_url=database_url, home=tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


def test_readyz_names_a_migration_missing_from_the_database(running_server, database_url):
    base = running_server.http_url
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("DELETE FROM schema_migrations WHERE version = 1 RETURNING version, name").fetchone()
        try:
            status, body = fetch_json(base, "/readyz")
            assert (status, body["reason"]) == (503, "MIGRATIONS_PENDING") and row[1] in body["message"]
        finally:
            conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", row)
    assert fetch_json(base, "/readyz")[0] == 200


def test_readyz_is_503_while_the_database_refuses_connections(running_server, database_url):
    base = running_server.http_url
    name = conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(make_conninfo(database_url, dbname="postgres"), autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            body = _wait_for(base, "/readyz", 503)
            assert body["reason"] == "DATABASE_UNREACHABLE" and body["message"]
            assert fetch_json(base, "/healthz") == (200, {"status": "ok"})  # alive all the same
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    _wait_for(base, "/readyz", 200)
