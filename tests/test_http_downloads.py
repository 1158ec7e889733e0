"""HTTP downloads against a real server: whole files, HEAD, byte ranges
(single, suffix, open, several, unsatisfiable, as GDAL reads a COG) and
conditional requests, byte-exact against the stored file."""

from __future__ import annotations

import email.parser
import hashlib
import http.client
import json

import pytest

from tests.support.http_downloads import FIRST, Answer, downloads_world, fetch, make_artifact, stored_path


@pytest.fixture(scope="module")
def world(database_factory, tmp_path_factory):
    yield from downloads_world(database_factory.create(), tmp_path_factory.mktemp("http-downloads"))


@pytest.fixture(scope="module")
def asset(world):
    """(url, stored bytes, etag) of the first sample's asset."""
    name = f"items/{world.items[FIRST]}/assets/data"
    data = stored_path(world, name).read_bytes()
    answer = fetch(f"{world.server.http_url}/v1/{name}", token=world.tokens["alpha"])
    return f"{world.server.http_url}/v1/{name}", data, answer.headers["ETag"]


def get(world, url: str, method: str = "GET", **headers: str) -> Answer:
    sent = {name.replace("_", "-"): value for name, value in headers.items()}
    return fetch(url, method=method, token=world.tokens["alpha"], headers=sent)


def test_the_whole_asset_is_the_stored_file(world, asset):
    url, data, etag = asset
    answer = get(world, url)
    assert answer.status == 200 and answer.body == data
    assert answer.headers["Content-Length"] == str(len(data))
    assert answer.headers["Content-Type"] == "image/tiff; application=geotiff; profile=cloud-optimized"
    assert answer.headers["Accept-Ranges"] == "bytes"
    assert etag == f'"{hashlib.sha256(data).hexdigest()}"'
    assert answer.headers["X-Request-Id"]


def test_head_answers_the_headers_without_the_body(world, asset):
    url, data, etag = asset
    answer = get(world, url, "HEAD")
    assert (answer.status, answer.body) == (200, b"")
    assert answer.headers["Content-Length"] == str(len(data)) and answer.headers["ETag"] == etag
    ranged = get(world, url, "HEAD", Range="bytes=10-19")
    assert (ranged.status, ranged.body, ranged.headers["Content-Range"]) == (206, b"", f"bytes 10-19/{len(data)}")


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, None),  # open: to the end
        ("bytes=-500", -500, None),  # suffix: the last 500 bytes
        ("bytes=7-7", 7, 7),
        ("bytes=1000-99999999", 1000, None),  # clamped to the end
        ("bytes=-99999999", 0, None),  # a suffix longer than the file: all of it
        ("bytes = 0-9", 0, 9),
    ],
)
def test_a_single_range_is_exact(world, asset, header, first, last):
    url, data, _ = asset
    answer = get(world, url, Range=header)
    start = first % len(data) if first < 0 else first
    end = len(data) - 1 if last is None else last
    assert answer.status == 206, answer.body[:200]
    assert answer.body == data[start : end + 1]
    assert answer.headers["Content-Range"] == f"bytes {start}-{end}/{len(data)}"
    assert answer.headers["Content-Length"] == str(end - start + 1)


def test_several_ranges_come_as_multipart_byteranges(world, asset):
    url, data, _ = asset
    answer = get(world, url, Range="bytes=0-9, 500-599,-16")
    assert answer.status == 206 and answer.headers.get_content_type() == "multipart/byteranges"
    assert int(answer.headers["Content-Length"]) == len(answer.body)
    raw = f"Content-Type: {answer.headers['Content-Type']}\r\n\r\n".encode() + answer.body
    message = email.parser.BytesParser().parsebytes(raw)
    parts = [(part["Content-Range"], part.get_payload(decode=True)) for part in message.get_payload()]
    size = len(data)
    assert parts == [
        (f"bytes 0-9/{size}", data[0:10]),
        (f"bytes 500-599/{size}", data[500:600]),
        (f"bytes {size - 16}-{size - 1}/{size}", data[-16:]),
    ]


@pytest.mark.parametrize("header", ["bytes=99999999-", "bytes=-0", f"bytes={','.join(['0-0'] * 65)}"])
def test_an_unsatisfiable_range_is_416(world, asset, header):
    url, data, _ = asset
    answer = get(world, url, Range=header)
    assert answer.status == 416 and answer.headers["Content-Range"] == f"bytes */{len(data)}"


@pytest.mark.parametrize("header", ["bytes=abc", "bytes=9-3", "items=0-9", "bytes=", "0-9"])
def test_a_range_that_does_not_parse_is_ignored(world, asset, header):
    url, data, _ = asset
    answer = get(world, url, Range=header)
    assert (answer.status, answer.body) == (200, data)


def test_gdal_like_sequential_reads_on_one_connection(world, asset):
    """GDAL reads the header, then the tiles it needs, one keep-alive connection."""
    url, data, _ = asset
    connection = http.client.HTTPConnection(url.split("/")[2], timeout=60)
    try:
        for start, end in [(0, 16383), (40000, 40999), (16384, 32767), (len(data) - 100, len(data) - 1), (5, 5)]:
            answer = fetch(url, token=world.tokens["alpha"], headers={"Range": f"bytes={start}-{end}"},
                           connection=connection)  # fmt: skip
            assert answer.status == 206 and answer.body == data[start : end + 1]
    finally:
        connection.close()


def test_if_none_match_answers_304(world, asset):
    url, _, etag = asset
    for header in (etag, f'"other", {etag}', f"W/{etag}", "*"):
        answer = get(world, url, If_None_Match=header)
        assert (answer.status, answer.body, answer.headers["ETag"]) == (304, b"", etag), header
    assert get(world, url, If_None_Match='"other"').status == 200


def test_if_range_serves_the_range_only_for_the_current_etag(world, asset):
    url, data, etag = asset
    assert get(world, url, Range="bytes=0-9", If_Range=etag).body == data[:10]
    for stale in ('"stale"', "Wed, 21 Oct 2015 07:28:00 GMT", f"W/{etag}"):
        answer = get(world, url, Range="bytes=0-9", If_Range=stale)
        assert (answer.status, answer.body) == (200, data), stale


def test_if_match_fails_412_for_another_version(world, asset):
    url, data, etag = asset
    assert get(world, url, If_Match='"stale"').status == 412
    assert get(world, url, If_Match=etag).body == data


def test_an_artifact_downloads_like_an_asset(world):
    artifact_id = make_artifact(world)
    data = stored_path(world, f"artifacts/{artifact_id}").read_bytes()
    url = f"{world.server.http_url}/v1/artifacts/{artifact_id}"
    whole = get(world, url)
    assert whole.status == 200 and whole.body == data and whole.headers["ETag"]
    assert whole.headers["Content-Type"].startswith("image/tiff")
    part = get(world, url, Range="bytes=-1000")
    assert part.status == 206 and part.body == data[-1000:]


def test_the_openapi_document_lists_the_download_routes(world):
    document = json.loads(fetch(f"{world.server.http_url}/v1/openapi.json").body)
    for path in ("/v1/items/{item_id}/assets/{asset_key}", "/v1/artifacts/{artifact_id}"):
        assert set(document["paths"][path]) == {"get", "head"}
        assert "206" in document["paths"][path]["get"]["responses"]


def test_bytes_removed_from_storage_are_404_not_500(world):
    artifact_id = make_artifact(world)
    stored_path(world, f"artifacts/{artifact_id}").unlink()
    answer = get(world, f"{world.server.http_url}/v1/artifacts/{artifact_id}")
    assert (answer.status, answer.json()["reason"]) == (404, "FILE_NOT_FOUND")


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({"Range": "bytes=\u00b2-"}, ""),
        ({"Range": "bytes=0-\u00b9"}, ""),
        ({"Range": "bytes=" + ",".join(f"{i}-{i}" for i in range(3000))}, ""),
        ({"Range": "bytes=99999999999999999999999999-"}, ""),
        ({"Range": "bytes=" + "9" * 5000 + "-"}, ""),  # more digits than int() reads by default
        ({"Range": "bytes=-" + "9" * 5000}, ""),
        ({}, "signature=x&expires=" + "9" * 5000 + "&key=db"),
        ({"Range": "bytes=--5"}, ""),
        ({"If-None-Match": "W/"}, ""),
        ({"If-Range": ""}, ""),
        ({}, "signature=x&expires=%C2%B2&key=db"),
        ({}, "signature=%C3%A9&expires=1&key="),
        ({}, "signature=x&expires=99999999999999999999&key=db"),
        ({}, "signature=&prefix=/"),
        ({}, "signature=x&expires=1&key=db&prefix=..%2F"),
    ],
)
def test_hostile_headers_and_queries_get_no_5xx(world, asset, headers, query):
    url, _, _ = asset
    answer = fetch(url + (f"?{query}" if query else ""), token=world.tokens["alpha"],
                   headers={k: v.encode("latin-1").decode("latin-1") for k, v in headers.items()})  # fmt: skip
    assert answer.status < 500, answer.body[:300]
    if query:
        assert (answer.status, answer.json()["reason"]) == (403, "SIGNATURE_INVALID")
