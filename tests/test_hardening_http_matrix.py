"""Every HTTP route against hostile path segments, query values, headers and
bodies: whatever a client sends, the answer is not a 5xx (a client error says
why, as the rest of the suite checks route by route). Raw requests
(`http.client`), so bytes no HTTP library would send by itself reach the server.

The values are the kinds that got through before: a NUL (`%00`: PostgreSQL text
cannot hold one), digits `str.isdigit` admits and `int()` refuses (`²`), more
digits than `int()` reads (5,000), numbers past int64 or a double, and bytes
that are not UTF-8."""

from __future__ import annotations

import http.client
import json

import pytest

from tests.tiles_support import BEFORE, centre_tile

QUERY_VALUES = [
    "", "%00", "a%00b", "%C2%B2", "9" * 5000, "-1", "99999999999999999999", "-99999999999999999999", "NaN", "1e999",
    "%C0%AF", "%FF", "..%2F..%2Fetc%2Fpasswd", "%E2%80%AE", "%20", "a%0Ab", "true", "%25",
]  # fmt: skip
HEADER_VALUES = [
    b"", b"\xb2", b"9" * 5000, b"-1", b"\xff\xfe", b"a\x00b", b"99999999999999999999", b"bytes=0-" + b"9" * 5000,
    b'W/"x"', b"*", b"\t", b"x" * 8000,
]  # fmt: skip
HEADERS = [
    "Range", "If-Range", "If-None-Match", "If-Match", "If-Modified-Since", "Last-Event-ID", "X-Request-Id",
    "Authorization", "traceparent", "Accept",
]  # fmt: skip
PATH_VALUES = [*QUERY_VALUES, "x" * 300]
# STAC search bodies: each field with each of these values.
STAC_FIELDS = ["ids", "collections", "datetime", "token", "bbox", "intersects", "limit", "x\u0000"]
STAC_VALUES = ["a\u0000b", ["a\u0000b"], {"type": "Point\u0000", "coordinates": [0, 0]}, 1e308, -1, "9" * 5000]


def _send(world, method: str, path: str, headers: dict[str, bytes] | None = None, body: bytes | None = None):
    host = world.server.http_url.split("//", 1)[1]
    connection = http.client.HTTPConnection(host, timeout=30)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        sent = {"Authorization": f"Bearer {world.tokens['alpha']}".encode(), **(headers or {})}
        if body is not None:
            sent |= {"Content-Type": b"application/json", "Content-Length": str(len(body)).encode()}
        for name, value in sent.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.read(300)
    finally:
        connection.close()


@pytest.fixture(scope="module")
def routes(world) -> dict[str, list[str]]:
    """GET routes and the query parameters each reads."""
    item = world.items[BEFORE]
    tile = centre_tile(world, item, 13)
    render = ["asset", "bands", "expression", "rescale", "colormap"]
    return {
        f"/v1/items/{item}/assets/data": ["signature", "expires", "key", "prefix"],
        f"/v1/items/{item}/preview.png": [*render, "max_size"],
        f"/v1/items/{item}/tiles/WebMercatorQuad/13/{tile.x}/{tile.y}.png": [*render, "tile_scale"],
        f"/v1/items/{item}/tilejson.json": ["tile_format", "tile_scale", "signed", "ttl_seconds", "bands"],
        "/v1/stac/search": ["limit", "bbox", "datetime", "ids", "collections", "intersects", "token"],
        "/v1/stac/collections/s2_slovenia/items": ["limit", "bbox", "datetime", "token"],
        f"/v1/stac/collections/s2_slovenia/items/{item}": ["x"],
        "/v1/stac/collections": ["limit"],
        "/v1/projects/alpha/jobs/events": ["batch_id", "status", "job_type_id", "after_sequences"],
        "/v1/openapi.json": ["x"],
        "/metrics": ["x"],
        "/docs": ["url"],
        "/healthz": ["x"],
        "/": ["x"],
    }


def test_hostile_query_values_and_headers_get_no_5xx(world, routes):
    failures = []
    for path, params in routes.items():
        for param in params:
            for value in QUERY_VALUES:
                status, body = _send(world, "GET", f"{path}?{param}={value}")
                if status >= 500:
                    failures.append((path, param, value[:20], status, body))
        for header in HEADERS:
            for raw in HEADER_VALUES:
                status, body = _send(world, "GET", path, {header: raw})
                if status >= 500:
                    failures.append((path, header, raw[:20], status, body))
    assert not failures, failures[:10]


@pytest.mark.parametrize(
    "template",
    [
        "/v1/items/{v}/assets/data", "/v1/items/{item}/assets/{v}", "/v1/artifacts/{v}", "/v1/items/{v}/preview.png",
        "/v1/items/{item}/preview.{v}", "/v1/items/{item}/tiles/{v}/1/1/1.png",
        "/v1/items/{item}/tiles/WebMercatorQuad/{v}/1/1.png", "/v1/stac/collections/{v}",
        "/v1/stac/collections/{v}/items", "/v1/stac/collections/s2_slovenia/items/{v}", "/v1/jobs/{v}/events",
        "/v1/projects/{v}/jobs/events", "/portal/{v}", "/docs/static/{v}", "/v1/op/{v}",
    ],
)  # fmt: skip
def test_hostile_path_segments_get_no_5xx(world, template):
    failures = []
    for value in PATH_VALUES:
        path = template.format(v=value, item=world.items[BEFORE])
        method, body = ("POST", b"{}") if path.startswith("/v1/op/") else ("GET", None)
        status, answer = _send(world, method, path, body=body)
        if status >= 500:
            failures.append((value[:20], status, answer))
    assert not failures, failures


def test_a_nul_in_a_path_or_a_query_is_refused_with_its_reason(world):
    item = world.items[BEFORE]
    for path, field in [
        (f"/v1/items/{item}/assets/da%00ta", "path"),
        ("/v1/jobs/job_%00/events", "path"),
        ("/v1/stac/search?ids=it_%00", "ids"),
        ("/v1/projects/alpha/jobs/events?batch_id=b%00", "batch_id"),
        (f"/v1/items/{item}/preview.png?asset=d%00", "asset"),
    ]:
        status, body = _send(world, "GET", path)
        error = json.loads(body)
        assert (status, error["reason"]) == (400, "INVALID_CHARACTER"), (path, body)
        assert [v["field"] for v in error["details"]["field_violations"]] == [field], (path, error)


def test_hostile_stac_search_bodies_get_no_5xx(world):
    failures = []
    for field in STAC_FIELDS:
        for value in STAC_VALUES:
            status, body = _send(world, "POST", "/v1/stac/search", body=json.dumps({field: value}).encode())
            if status >= 500:
                failures.append((field, str(value)[:20], status, body))
    for depth in (900, 990, 5000):
        for raw in ("[" * depth + "]" * depth, '{"ids":' + "[" * depth + "]" * depth + "}"):
            status, body = _send(world, "POST", "/v1/stac/search", body=raw.encode())
            if status >= 500:
                failures.append(("nested", depth, status, body))
    status, body = _send(world, "POST", "/v1/stac/search", body=b'{"ids": ["it_\\u0000"]}')
    assert (status, json.loads(body)["reason"]) == (400, "INVALID_CHARACTER"), body
    assert not failures, failures
