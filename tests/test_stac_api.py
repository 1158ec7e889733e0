"""The STAC API at /v1/stac against a real server: pystac-client opens it with a
bearer token and its searches (bbox, datetime, ids, collections, intersects,
paging) return exactly the items the catalogue holds for them; stac-validator
checks the documents it serves against the STAC 1.0.0 schemas (offline, see
tests/data/stac_schemas); the auth rules are those of items.list and items.get;
bad parameters are 400 with the error JSON."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import requests
import schemathesis
from hypothesis import given
from pystac_client import Client
from schemathesis import GenerationMode
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance
from shapely.geometry import box, shape

with warnings.catch_warnings():  # stac-valid names its import package stac_validator, and warns about it
    warnings.simplefilter("ignore", DeprecationWarning)
    from stac_validator.validate import StacValidate

from geopera_kernel.raster.cog import write_cog
from geopera_kernel.server.demo import SYSTEM
from geopera_kernel.server.domain.models import AssetInput, ItemCreate
from tests.fuzz.support import SAMPLE

SCHEMAS = Path(__file__).parent / "data" / "stac_schemas" / "v1.0.0"
STAC_SCHEMA_URL = "https://schemas.stacspec.org/v1.0.0/"
# Two items far from the Slovenian samples, in 2020 and 2021: bbox, time and
# footprint filters then have something to tell apart.
ELSEWHERE = {
    "elsewhere_2020": datetime(2020, 5, 1, 12, tzinfo=UTC),
    "elsewhere_2021": datetime(2021, 5, 1, 12, tzinfo=UTC),
}
ELSEWHERE_BOX = (10.0, 50.0, 10.01, 50.01)


def schema_map() -> dict[str, str]:
    """Every schema the STAC 1.0.0 core schemas refer to, as a local file."""
    import jsonschema_specifications
    import pystac

    mapping = {STAC_SCHEMA_URL + str(p.relative_to(SCHEMAS)): str(p) for p in SCHEMAS.rglob("*.json")}
    geojson = Path(pystac.__file__).parent / "validation" / "jsonschemas" / "geojson"
    for name in ("Feature", "Geometry"):
        mapping[f"https://geojson.org/schema/{name}.json"] = str(geojson / f"{name}.json")
    draft7 = Path(jsonschema_specifications.__file__).parent / "schemas" / "draft7" / "metaschema.json"
    mapping["http://json-schema.org/draft-07/schema"] = str(draft7)
    return mapping


def _add_elsewhere_items(world, folder: Path) -> None:
    west, south, east, north = ELSEWHERE_BOX
    path = folder / "elsewhere.tif"
    write_cog(
        path,
        np.arange(64 * 64, dtype=np.uint16).reshape(64, 64),
        crs="EPSG:4326",
        transform=((east - west) / 64, 0.0, west, 0.0, -(north - south) / 64, north),
        nodata=None,
        descriptions=["value"],
    )

    async def add(services: Any) -> None:
        for name, when in ELSEWHERE.items():
            spec = ItemCreate(
                project_id="alpha", collection_id="elsewhere", name=name, datetime=when, properties={"note": name},
                assets=[AssetInput("data", "", str(path), ["data"], "elsewhere.tif")], convert_to_cog=False,
            )  # fmt: skip
            world.items[name] = (await services.catalog.create_item(SYSTEM, spec)).id

    world.with_services(add)


@pytest.fixture(scope="module")
def stac_world(world, tmp_path_factory):
    _add_elsewhere_items(world, tmp_path_factory.mktemp("stac"))
    world.tokens["no_catalog"] = world.make_token(scopes=["processing:read"], projects=["alpha"])
    world.tokens["reader"] = world.make_token(scopes=["catalog:read"], projects=["alpha"])
    return world


def http(world, path: str, token: str | None = "alpha", *, body: Any = None, raw: bytes | None = None):
    """(status, JSON body, headers) of a GET, or of a POST when a body is given."""
    url = path if path.startswith("http") else world.server.http_url + path
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {world.tokens.get(token, token)}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}"), dict(err.headers)


def stac_client(world, token: str = "alpha") -> Client:
    return Client.open(world.server.http_url + "/v1/stac", headers={"Authorization": f"Bearer {world.tokens[token]}"})


def catalogue(world, project: str = "alpha") -> dict[str, dict[str, Any]]:
    """Every item of a project as items.list answers it (the full view), by id."""
    status, body, _ = http(world, "/v1/op/items.list", project, body={"project_id": project, "view": "ITEM_VIEW_FULL"})
    assert status == 200, body
    return {item["id"]: item for item in body["items"]}


def when(item: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(item["datetime"].replace("Z", "+00:00"))


SLOVENIA_BOX = [14.5, 45.8, 14.6, 45.9]
FAR_POLYGON = {"type": "Polygon", "coordinates": [[[9.99, 49.99], [10.02, 49.99], [10.02, 50.02], [9.99, 49.99]]]}


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


def test_a_signed_url_does_not_open_the_stac_api(stac_world):
    item_id = stac_world.items["elsewhere_2020"]
    href = http(stac_world, f"/v1/stac/collections/alpha/items/{item_id}")[1]["assets"]["data"]["href"]
    query = urllib.parse.urlsplit(href).query
    status, body, _ = http(stac_world, f"/v1/stac/search?{query}", token=None)
    assert (status, body["reason"]) == (403, "SIGNATURE_INVALID")
    # Altered: the signature no longer matches.
    tampered = href.replace("/assets/data", "/assets/other")
    status, body, _ = http(stac_world, tampered, token=None)
    assert (status, body["reason"]) == (403, "SIGNATURE_INVALID")


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


ROUTES = [
    "/v1/stac",
    "/v1/stac/conformance",
    "/v1/stac/collections",
    "/v1/stac/collections/alpha",
    "/v1/stac/collections/alpha/items",
    "/v1/stac/collections/alpha/items/{item}",
    "/v1/stac/search",
]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    ("token", "status", "reason"),
    [(None, 401, "UNAUTHENTICATED"), ("gpk_forged", 401, "UNAUTHENTICATED"), ("no_catalog", 403, "MISSING_SCOPE"),
     ("reader", 200, None)],
)  # fmt: skip
def test_every_route_needs_a_token_with_catalog_read(stac_world, route, token, status, reason):
    got, body, _ = http(stac_world, route.format(item=stac_world.items["elsewhere_2020"]), token)
    assert got == status, body
    if reason:
        assert body["reason"] == reason and body["message"] and body["request_id"]


@pytest.mark.parametrize(
    ("path", "post", "status", "reason"),
    [
        ("/v1/stac/collections/beta", None, 403, "PROJECT_ACCESS_DENIED"),
        ("/v1/stac/collections/beta/items", None, 403, "PROJECT_ACCESS_DENIED"),
        ("/v1/stac/collections/beta/items/{beta_item}", None, 403, "PROJECT_ACCESS_DENIED"),
        # An item of beta asked for under alpha: beta's item stays beta's.
        ("/v1/stac/collections/alpha/items/{beta_item}", None, 403, "PROJECT_ACCESS_DENIED"),
        ("/v1/stac/collections/alpha/items/it_missing", None, 404, "ITEM_NOT_FOUND"),
        ("/v1/stac/search?collections=beta", None, 403, "PROJECT_ACCESS_DENIED"),
        ("/v1/stac/search", {"collections": ["alpha", "beta"]}, 403, "PROJECT_ACCESS_DENIED"),
        ("/v1/stac/collections/nope", None, 403, "PROJECT_ACCESS_DENIED"),
    ],
)
def test_another_projects_collection_is_refused(stac_world, path, post, status, reason):
    beta_item = next(iter(stac_world.beta_items.values()))
    got, body, _ = http(stac_world, path.format(beta_item=beta_item), body=post)
    assert (got, body.get("reason")) == (status, reason), body


def test_a_beta_item_under_its_own_collection_for_an_admin_but_not_under_alpha(stac_world):
    beta_item = next(iter(stac_world.beta_items.values()))
    assert http(stac_world, f"/v1/stac/collections/beta/items/{beta_item}", "admin")[0] == 200
    status, body, _ = http(stac_world, f"/v1/stac/collections/alpha/items/{beta_item}", "admin")
    assert (status, body["reason"]) == (404, "ITEM_NOT_FOUND")


BAD_GETS = [
    ("bbox=1,2,3", "INVALID_BBOX"),
    ("bbox=a,b,c,d", "INVALID_BBOX"),
    ("bbox=10,0,5,1", "INVALID_BBOX"),
    ("bbox=0,0,1,nan", "INVALID_BBOX"),
    ("bbox=0,0,1,1e999", "INVALID_BBOX"),
    ("bbox=-200,0,1,1", "INVALID_BBOX"),
    ("datetime=yesterday", "INVALID_DATETIME"),
    ("datetime=2015-07-11", "INVALID_DATETIME"),
    ("datetime=2020-01-01T00:00:00Z/2019-01-01T00:00:00Z", "INVALID_DATETIME"),
    ("datetime=../..", "INVALID_DATETIME"),
    ("datetime=a/b/c", "INVALID_DATETIME"),
    ("datetime=9999-12-31T23:59:59.999999Z", "INVALID_DATETIME"),
    ("limit=0", "INVALID_LIMIT"),
    ("limit=-1", "INVALID_LIMIT"),
    ("limit=ten", "INVALID_LIMIT"),
    ("limit=1.5", "INVALID_LIMIT"),
    ("intersects={not json", "INVALID_INTERSECTS"),
    ("intersects=[1,2]", "INVALID_INTERSECTS"),
    ('intersects={"type":"Polygon","coordinates":"x"}', "INVALID_GEOMETRY"),
    ("token=garbage", "INVALID_PAGE_TOKEN"),
    ("ids=,,", None),  # empty names are dropped: no filter, a 200
]


@pytest.mark.parametrize(("query", "reason"), BAD_GETS)
def test_bad_search_parameters_are_400_with_the_reason(stac_world, query, reason):
    status, body, _ = http(stac_world, "/v1/stac/search?" + urllib.parse.quote(query, safe="=&,"))
    if reason is None:
        assert status == 200
        return
    assert (status, body.get("reason")) == (400, reason), body
    assert body["message"] and body["code"] == "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    ("body", "raw", "reason"),
    [
        (None, b"{not json", "INVALID_SEARCH"),
        ([1, 2], None, "INVALID_SEARCH"),
        ({"bbox": "0,0,1,1"}, None, "INVALID_BBOX"),
        ({"bbox": [0, 0, 1, True]}, None, "INVALID_BBOX"),
        ({"bbox": [0, 0, 1, 1], "intersects": FAR_POLYGON}, None, "INVALID_SEARCH"),
        ({"datetime": 2020}, None, "INVALID_DATETIME"),
        ({"limit": "many"}, None, "INVALID_LIMIT"),
        ({"limit": True}, None, "INVALID_LIMIT"),
        ({"ids": "it_1"}, None, "INVALID_IDS"),
        ({"collections": [1]}, None, "INVALID_COLLECTIONS"),
        ({"intersects": "POLYGON"}, None, "INVALID_INTERSECTS"),
        ({"token": 5}, None, "INVALID_PAGE_TOKEN"),
    ],
)
def test_bad_search_bodies_are_400_with_the_reason(stac_world, body, raw, reason):
    status, got, _ = http(stac_world, "/v1/stac/search", body=body, raw=raw)
    assert (status, got.get("reason")) == (400, reason), got


def test_a_limit_above_the_maximum_is_the_maximum(stac_world):
    status, body, _ = http(stac_world, "/v1/stac/search?limit=100000")
    assert status == 200 and body["numberReturned"] == len(catalogue(stac_world))


def test_a_page_token_only_works_with_its_own_search(stac_world):
    status, first, _ = http(stac_world, "/v1/stac/search?limit=1&collections=alpha")
    token = urllib.parse.parse_qs(urllib.parse.urlsplit(first["links"][1]["href"]).query)["token"][0]
    status, body, _ = http(stac_world, f"/v1/stac/search?limit=1&collections=alpha&bbox=0,0,1,1&token={token}")
    assert (status, body["reason"]) == (400, "INVALID_PAGE_TOKEN")


STAC_OPERATIONS = [
    "stac_landing_page", "stac_conformance", "stac_collections", "stac_collection", "stac_collection_items",
    "stac_item", "stac_search_get", "stac_search_post", "healthz", "readyz",
]  # fmt: skip


@pytest.mark.parametrize(
    ("operation_id", "mode"),
    [
        (operation_id, mode)
        for operation_id in STAC_OPERATIONS
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        # The probes take no input and no token: nothing to make invalid.
        if not (operation_id in ("healthz", "readyz") and mode == GenerationMode.NEGATIVE)
    ],
    ids=str,
)
def test_schemathesis_finds_no_server_error_in_the_stac_api(stac_world, operation_id, mode):
    """Requests generated from the routes' entries in /v1/openapi.json, valid and
    not: never a 5xx, and every answer as the document describes it."""
    with requests.Session() as session:
        document = session.get(stac_world.server.http_url + "/v1/openapi.json", timeout=30).json()
        operation = schemathesis.openapi.from_dict(document).find_operation_by_id(operation_id)
        headers = {"Authorization": f"Bearer {stac_world.tokens['alpha']}"}

        @SAMPLE
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case) -> None:
            response = case.call(base_url=stac_world.server.http_url, session=session, headers=headers, timeout=60)
            case.validate_response(
                response, checks=[not_a_server_error, response_schema_conformance, content_type_conformance],
                headers=headers,
            )  # fmt: skip

        check()
