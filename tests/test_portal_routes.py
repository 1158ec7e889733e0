"""The portal on the HTTP projection (src/server/portal/routes.py), without a browser:
the page and its files are served with a strict Content-Security-Policy, nothing outside
the static folder is ever served, everything the page loads is in the repository (no
CDN), and `geopera serve --demo` (what `make serve` runs) prints the portal's address."""

from __future__ import annotations

import http.client
import json
import re
import time
from pathlib import Path

import pytest

from tests.support.server import ServerProcess

STATIC = Path(__file__).resolve().parents[1] / "src" / "server" / "portal" / "static"


@pytest.fixture(scope="module")
def demo_server(database_factory, tmp_path_factory):
    server = ServerProcess(
        database_url=database_factory.create(), home=tmp_path_factory.mktemp("portal"), extra_args=["--demo"]
    ).start()
    try:
        yield server
    finally:
        server.stop()


def get(server: ServerProcess, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """The raw request line: urllib would resolve `..` before sending it."""
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, dict(response.headers), response.read()
    finally:
        connection.close()


def test_the_root_is_the_portal_page_never_cached_with_a_strict_policy(demo_server):
    status, headers, body = get(demo_server, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert headers["Cache-Control"] == "no-store"
    policy = headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "img-src 'self' data: blob:" in policy
    assert "object-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert b'<script type="module" src="/portal/app.js">' in body


@pytest.mark.parametrize(
    ("path", "media_type"),
    [
        ("/portal/app.js", "text/javascript"),
        ("/portal/pages/catalog.js", "text/javascript"),
        ("/portal/portal.css", "text/css"),
        ("/portal/vendor/leaflet/leaflet-src.esm.js", "text/javascript"),
        ("/portal/vendor/leaflet/images/layers.png", "image/png"),
        ("/portal/favicon.svg", "image/svg+xml"),
    ],
)
def test_the_static_files_are_served_with_their_media_type(demo_server, path, media_type):
    status, headers, body = get(demo_server, path)
    assert status == 200 and headers["Content-Type"].startswith(media_type)
    assert body == (STATIC / path.removeprefix("/portal/")).read_bytes()
    assert "default-src 'self'" in headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    "path",
    [
        "/portal/../routes.py",
        "/portal/%2e%2e/routes.py",
        "/portal/..%2froutes.py",
        "/portal/vendor/../../routes.py",
        "/portal/vendor",
        "/portal/vendor/",
        "/portal/.hidden",
        "/portal/no-such-file.js",
        "/portal/%00",
        "/portal/app.js%00.png",
        "/portal/%ff",
        "/portal/" + "a" * 300,
        "/portal//etc/passwd",
    ],
)
def test_nothing_outside_the_static_folder_is_served(demo_server, path):
    status, _, body = get(demo_server, path)
    assert status == 404, (path, status, body[:200])
    assert json.loads(body)["code"] == "NOT_FOUND"


def test_a_write_to_the_portal_is_refused(demo_server):
    status, _, body = get(demo_server, "/", method="POST")
    assert status == 405 and json.loads(body)["code"] == "UNIMPLEMENTED"


def test_everything_the_page_loads_is_in_the_repository():
    """No CDN: each module, stylesheet and image a portal file names is a local path, and exists."""
    names = re.compile(r"""(?:from\s+|import\s*\(\s*|import\s+|href=|src=)["'`]([^"'`]+)["'`]""")
    for source in [*STATIC.rglob("*.js"), *STATIC.rglob("*.html")]:
        if "vendor" in source.parts:
            continue
        for target in names.findall(source.read_text()):
            assert not re.match(r"^(https?:)?//", target), f"{source.name} loads {target} from another origin"
            if target.startswith("#") or "${" in target:
                continue
            local = (
                STATIC / target.removeprefix("/portal/") if target.startswith("/portal/") else source.parent / target
            )
            assert local.resolve().is_file(), f"{source.name} names {target}, which is not in the repository"
    assert (STATIC / "vendor" / "leaflet" / "LICENSE").is_file()


def test_make_serve_prints_the_portal_address(demo_server):
    deadline = time.monotonic() + 60
    while "Portal: open" not in demo_server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = demo_server.log()
    assert f"HTTP/JSON on {demo_server.http_url} (OpenAPI at {demo_server.http_url}/v1/openapi.json)" in log
    assert f"Portal: open {demo_server.http_url}/ in a browser and sign in with the demo token." in log
