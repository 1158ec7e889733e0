"""The STAC API at /v1/stac against a real server: pystac-client opens it with a
bearer token and its searches (bbox, datetime, ids, collections, intersects,
paging) return exactly the items the catalogue holds for them; asset hrefs are
signed URLs GDAL opens; stac-validator checks the documents served against the
STAC 1.0.0 schemas (offline, see tests/data/stac_schemas). Auth and bad input:
test_stac_api_guards.py."""

from __future__ import annotations

import hashlib
import urllib.parse
import urllib.request
import warnings
from datetime import UTC, datetime
from typing import Any

import pytest
import rasterio
from shapely.geometry import box, shape

from tests.conftest import TEST_SERVER_ENV, start_seeded_world, stop_world
from tests.stac_support import (
    ELSEWHERE_BOX,
    FAR_POLYGON,
    catalogue,
    http,
    schema_map,
    stac_client,
    stac_world,
    when,
)

with warnings.catch_warnings():  # stac-valid names its import package stac_validator, and warns about it
    warnings.simplefilter("ignore", DeprecationWarning)
    from stac_validator.validate import StacValidate

__all__ = ["stac_world"]  # the fixture, imported for pytest

SLOVENIA_BOX = [14.5, 45.8, 14.6, 45.9]


# (search keyword arguments, which of alpha's items match)
SEARCHES = {
    "bbox slovenia": ({"bbox": SLOVENIA_BOX}, lambda item: box(*item["bbox"]).intersects(box(*SLOVENIA_BOX))),
    "bbox elsewhere": ({"bbox": list(ELSEWHERE_BOX)}, lambda item: item["name"].startswith("elsewhere")),
    "datetime interval": (
        {"datetime": "2015-07-01T00:00:00Z/2015-08-25T00:00:00Z"},
        lambda item: datetime(2015, 7, 1, tzinfo=UTC) <= when(item) <= datetime(2015, 8, 25, tzinfo=UTC),
    ),
    "datetime open start": (
        {"datetime": "../2015-08-01T00:00:00Z"},
        lambda item: when(item) <= datetime(2015, 8, 1, tzinfo=UTC),
    ),
    "datetime open end": ({"datetime": "2020-01-01T00:00:00Z/.."}, lambda item: when(item).year >= 2020),
    "datetime instant": ({"datetime": "2020-05-01T12:00:00Z"}, lambda item: item["name"] == "elsewhere_2020"),
    "intersects": ({"intersects": FAR_POLYGON}, lambda item: shape(item["geometry"]).intersects(shape(FAR_POLYGON))),
    "bbox and datetime": (
        {"bbox": SLOVENIA_BOX, "datetime": "2015-08-01T00:00:00Z/2015-12-31T00:00:00Z"},
        lambda item: (
            item["name"].startswith("s2l1c")
            and datetime(2015, 8, 1, tzinfo=UTC) <= when(item) <= datetime(2015, 12, 31, tzinfo=UTC)
        ),
    ),
    "nothing": ({"bbox": [0, 0, 1, 1]}, lambda item: False),
}


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("case", sorted(SEARCHES))
def test_pystac_client_searches_find_exactly_the_matching_items(stac_world, case, method):
    arguments, matches = SEARCHES[case]
    expected = {item_id for item_id, item in catalogue(stac_world).items() if matches(item)}
    if case != "nothing":
        assert expected, "a search that matches nothing tells little"
    search = stac_client(stac_world).search(collections=["alpha"], method=method, limit=3, **arguments)
    found = [item.id for item in search.items()]
    assert sorted(found) == sorted(expected)


def test_search_by_ids_and_across_collections(stac_world):
    alpha, beta = catalogue(stac_world), catalogue(stac_world, "beta")
    some = sorted(alpha)[:2]
    assert sorted(i.id for i in stac_client(stac_world).search(ids=some).items()) == some
    # An admin reads every project: no collections named searches them all.
    admin = stac_client(stac_world, "admin")
    assert sorted(i.id for i in admin.search(limit=4).items()) == sorted([*alpha, *beta])
    assert sorted(i.id for i in admin.search(collections=["beta"]).items()) == sorted(beta)
    # A member of alpha only: its own collection, with or without naming it.
    assert sorted(i.id for i in stac_client(stac_world).search().items()) == sorted(alpha)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_paging_with_a_small_limit_visits_every_item_once(stac_world, method):
    expected = sorted(catalogue(stac_world), key=lambda item_id: item_id)
    pages = list(stac_client(stac_world).search(collections=["alpha"], limit=2, method=method).pages())
    assert len(pages) == (len(expected) + 1) // 2
    assert all(len(page.items) <= 2 for page in pages)
    seen = [item.id for page in pages for item in page.items]
    assert len(seen) == len(set(seen)) and sorted(seen) == expected


def test_a_collections_items_page_through_next_links(stac_world):
    expected = catalogue(stac_world)
    url, seen, pages = "/v1/stac/collections/alpha/items?limit=3", [], 0
    while url:
        status, page, headers = http(stac_world, url)
        assert status == 200 and headers["Content-Type"].startswith("application/geo+json")
        assert page["type"] == "FeatureCollection" and page["numberReturned"] == len(page["features"]) <= 3
        seen += [feature["id"] for feature in page["features"]]
        url = next((link["href"] for link in page["links"] if link["rel"] == "next"), "")
        pages += 1
    assert sorted(seen) == sorted(expected) and pages == -(-len(expected) // 3)


def test_collections_are_the_callers_projects_with_their_extent(stac_world):
    client = stac_client(stac_world)
    assert [c.id for c in client.get_collections()] == ["alpha"]
    assert [c.id for c in stac_client(stac_world, "admin").get_collections()] == ["alpha", "beta"]
    alpha = catalogue(stac_world)
    extent = client.get_collection("alpha").extent
    bboxes = [item["bbox"] for item in alpha.values()]
    assert extent.spatial.bboxes[0] == pytest.approx(
        [min(b[0] for b in bboxes), min(b[1] for b in bboxes), max(b[2] for b in bboxes), max(b[3] for b in bboxes)]
    )
    assert extent.temporal.intervals[0] == [min(map(when, alpha.values())), max(map(when, alpha.values()))]


def test_an_item_page_links_its_assets_as_signed_urls_gdal_opens(stac_world):
    item_id = stac_world.items["elsewhere_2020"]
    status, item, _ = http(stac_world, f"/v1/stac/collections/alpha/items/{item_id}")
    assert status == 200 and item["id"] == item_id and item["collection"] == "alpha"
    assert item["properties"]["geopera:collection"] == "elsewhere"
    assert item["properties"]["datetime"] == "2020-05-01T12:00:00Z" and item["properties"]["note"] == "elsewhere_2020"
    assert {link["rel"] for link in item["links"]} >= {"self", "parent", "collection", "root"}
    asset = item["assets"]["data"]
    assert asset["type"].startswith("image/tiff; application=geotiff")
    scheme, netloc, path, query, _ = urllib.parse.urlsplit(asset["href"])
    assert (scheme, netloc, path) == (
        "http",
        f"127.0.0.1:{stac_world.server.http_port}",
        f"/v1/items/{item_id}/assets/data",
    )
    assert {"expires", "signature"} <= set(urllib.parse.parse_qs(query))
    # No header needed: the bytes are the stored file's, and GDAL reads the COG from the URL.
    with urllib.request.urlopen(asset["href"], timeout=30) as response:
        body = response.read()
    stored = catalogue(stac_world)[item_id]["assets"]["data"]
    assert hashlib.sha256(body).hexdigest() == stored["sha256"]
    with rasterio.open(f"/vsicurl/{asset['href']}") as dataset:
        assert dataset.read(1)[0, :4].tolist() == [0, 1, 2, 3]
    # pystac-client hands out the same openable href.
    (found,) = stac_client(stac_world).search(ids=[item_id]).items()
    with urllib.request.urlopen(found.assets["data"].href, timeout=30) as response:
        assert response.status == 200


def _validator(world, **options: Any) -> StacValidate:
    headers = {"Authorization": f"Bearer {world.tokens['alpha']}"}
    return StacValidate(headers=headers, schema_map=schema_map(), **options)


def _assert_valid(validator: StacValidate, expect: int) -> None:
    assert len(validator.message) == expect, validator.message
    assert all(m["valid_stac"] for m in validator.message), validator.message


def test_stac_validator_accepts_what_the_api_serves(stac_world):
    root = stac_world.server.http_url + "/v1/stac"
    landing = _validator(stac_world, stac_file=root)
    assert landing.run(), landing.message
    assert landing.message[0]["asset_type"] == "CATALOG"
    collections = _validator(stac_world, stac_file=root + "/collections", collections=True)
    collections.validate_collections()
    _assert_valid(collections, 1)
    alpha = catalogue(stac_world)
    # Page by page through the next links (the validator follows them itself).
    items = _validator(stac_world, stac_file=root + "/search?limit=4", item_collection=True, pages=10)
    items.validate_item_collection()
    _assert_valid(items, len(alpha))
    assert {m["asset_type"] for m in items.message} == {"ITEM"}
    one = _validator(stac_world, stac_file=f"{root}/collections/alpha/items/{stac_world.items['elsewhere_2021']}")
    assert one.run(), one.message
    # The schemas do bite: the same item without its datetime is refused.
    item = http(stac_world, f"{root}/collections/alpha/items/{stac_world.items['elsewhere_2021']}")[1]
    del item["properties"]["datetime"]
    assert not _validator(stac_world).validate_dict(item)


def test_links_name_the_public_url_when_one_is_set(database_factory, tmp_path):
    """Behind a proxy (GEOPERA_PUBLIC_URL) every link and asset href names the
    public address; the signed path still opens on the server itself."""
    env = {**TEST_SERVER_ENV, "GEOPERA_PUBLIC_URL": "https://geo.example.org/"}
    world = start_seeded_world(database_factory.create(), tmp_path, env)
    try:
        status, landing, _ = http(world, "/v1/stac")
        assert status == 200 and all(link["href"].startswith("https://geo.example.org/") for link in landing["links"])
        status, page, _ = http(world, "/v1/stac/search?limit=1")
        (item,) = page["features"]
        hrefs = [link["href"] for link in item["links"] + page["links"]] + [item["assets"]["data"]["href"]]
        assert all(href.startswith("https://geo.example.org/v1/") for href in hrefs), hrefs
        _, _, path, query, _ = urllib.parse.urlsplit(item["assets"]["data"]["href"])
        with urllib.request.urlopen(f"{world.server.http_url}{path}?{query}", timeout=30) as response:
            assert response.status == 200
    finally:
        stop_world(world)
