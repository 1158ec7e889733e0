"""The STAC API's guards against a real server: every route needs a bearer
token with `catalog:read` and keeps to the caller's projects (as items.list and
items.get do), a signed asset URL opens no STAC route, and malformed parameters
are 400 with the error JSON; schemathesis sends every route (and /healthz,
/readyz) valid and invalid requests: never a 5xx."""

from __future__ import annotations

import urllib.parse

import pytest
import requests
import schemathesis
from hypothesis import given
from schemathesis import GenerationMode
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance

from tests.fuzz.support import SAMPLE
from tests.stac_support import FAR_POLYGON, catalogue, http, stac_world

__all__ = ["stac_world"]  # the fixture, imported for pytest


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
    ("limit=\u00b2", "INVALID_LIMIT"),  # a digit to str.isdigit, not to int()
    ("limit=" + "9" * 5000, None),  # above the maximum: the maximum (more digits than int() takes by default)
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
        (None, b'{"bbox": [0, 0, 1, 1' + b"0" * 400 + b"]}", "INVALID_BBOX"),  # an integer past a double
        (None, b'{"limit": 1' + b"0" * 5000 + b"}", "INVALID_SEARCH"),  # past int()'s 4,300 digits: not JSON to Python
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


def test_a_body_past_the_size_limit_is_a_client_error(stac_world):
    status, body, _ = http(stac_world, "/v1/stac/search", raw=b'{"ids": ["' + b"x" * (17 << 20) + b'"]}')
    assert (status, body["reason"]) == (400, "BODY_TOO_LARGE")


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
    "stac_item", "stac_search_get", "stac_search_post", "healthz", "readyz", "metrics",
]  # fmt: skip


@pytest.mark.parametrize(
    ("operation_id", "mode"),
    [
        (operation_id, mode)
        for operation_id in STAC_OPERATIONS
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        # The probes take no input and no token: nothing to make invalid.
        if not (operation_id in ("healthz", "readyz", "metrics") and mode == GenerationMode.NEGATIVE)
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
