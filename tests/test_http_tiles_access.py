"""Who may get tiles, previews and TileJSON (as downloading: bearer with the scope in the
owning project, or a URL signature: tilejson's signed prefix template), and that every bad
request is a 4xx with a reason, never a 5xx."""

from __future__ import annotations

import json
import re
import time
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.support import SAMPLE
from tests.jobs_support import running_world
from tests.tiles_support import AFTER, BEFORE, TMS, centre_tile, change_detection, get


@pytest.fixture(scope="module")
def world(database_factory, tmp_path_factory):
    with running_world(database_factory.create(), tmp_path_factory.mktemp("tiles")) as world:
        yield world


@pytest.fixture(scope="module")
def artifacts(world) -> dict[str, str]:
    return change_detection(world)


def test_a_png_artifact_is_not_renderable(world, artifacts):
    status, _, body = get(world, f"/v1/artifacts/{artifacts['quicklook_png']}/preview.png")
    assert (status, json.loads(body)["reason"]) == (400, "NOT_RENDERABLE")


@pytest.mark.parametrize(
    ("suffix", "status", "reason"),
    [
        ("tiles/WebMercatorQuad/25/0/0.png", 400, "INVALID_TILE"),
        ("tiles/WebMercatorQuad/3/8/0.png", 400, "INVALID_TILE"),
        ("tiles/WebMercatorQuad/3/1/abc.png", 400, "INVALID_TILE"),
        ("tiles/WebMercatorQuad/3/-1/0.png", 400, "INVALID_TILE"),
        ("tiles/WebMercatorQuad/3/1/1@9x.png", 400, "INVALID_TILE"),
        ("tiles/WebMercatorQuad/3/1/1.png%0A", 400, "INVALID_TILE"),
        ("tiles/WebMercatorQuad/3/1/1.gif", 400, "INVALID_FORMAT"),
        ("tiles/WebMercatorQuad/14/0/0.png", 404, "TILE_OUTSIDE_BOUNDS"),
        ("tiles/WebMercatorQuad/0/0/0.png", 404, "TILE_OUTSIDE_ZOOMS"),  # the sample's minzoom is 13
        ("tiles/WebMercatorQuad/9/0/0@4x.png", 404, "TILE_OUTSIDE_ZOOMS"),
        ("preview.png?expression=b1%2B", 400, "INVALID_EXPRESSION"),
        ("preview.png?expression=b1.real", 400, "INVALID_EXPRESSION"),
        ("preview.png?expression=__import__('os')", 400, "INVALID_EXPRESSION"),
        ("preview.png?expression=b9*2", 400, "INVALID_BANDS"),
        ("preview.png?expression=b01", 400, "INVALID_EXPRESSION"),
        ("preview.png?expression=sum(b1)", 400, "INVALID_EXPRESSION"),
        ("preview.png?expression=b1%0A%2Bb2", 400, "INVALID_EXPRESSION"),
        ("tiles/WebMercatorQuad/%C2%B2/0/0.png", 400, "INVALID_TILE"),
        ("preview.png?max_size=%C2%B2", 400, "INVALID_PARAMETER"),
        ("preview.png?max_size=" + "9" * 5000, 400, "INVALID_PARAMETER"),  # past int()'s 4,300 digits
        ("preview.png?bands=" + "9" * 5000, 400, "INVALID_BANDS"),
        ("tilejson.json?signed=true&ttl_seconds=" + "9" * 5000, 400, "INVALID_TTL"),
        ("tilejson.json?signed=true&ttl_seconds=%C2%B2", 400, "INVALID_TTL"),
        ("preview.png?bands=%C2%B2", 400, "INVALID_BANDS"),
        ("preview.png?expression=NDMI", 400, "INVALID_EXPRESSION"),  # no swir16 band in the sample
        ("preview.png?bands=9", 400, "INVALID_BANDS"),
        ("preview.png?bands=swir22", 400, "INVALID_BANDS"),
        ("preview.png?bands=1,2", 400, "INVALID_BANDS"),
        ("preview.png?bands=1,2,3,4", 400, "INVALID_BANDS"),
        ("preview.png?bands=1,,2", 400, "INVALID_BANDS"),
        ("preview.png?colormap=nope", 400, "UNKNOWN_COLORMAP"),
        ("preview.png?colormap=viridis&bands=1,2,3", 400, "COLORMAP_NEEDS_ONE_BAND"),
        ("preview.png?rescale=a,b", 400, "INVALID_RESCALE"),
        ("preview.png?rescale=5,1", 400, "INVALID_RESCALE"),
        ("preview.png?rescale=0,1&rescale=0,1", 400, "INVALID_RESCALE"),
        ("preview.png?max_size=0", 400, "INVALID_PARAMETER"),
        ("preview.png?asset=nope", 404, "ASSET_NOT_FOUND"),
        ("preview.jpg", 400, "INVALID_FORMAT"),
        ("tilejson.json?tile_scale=9", 400, "INVALID_PARAMETER"),
    ],
)
def test_bad_requests_are_4xx_with_a_reason(world, suffix, status, reason):
    got, _, body = get(world, f"/v1/items/{world.items[BEFORE]}/{suffix}")
    assert (got, json.loads(body)["reason"]) == (status, reason), body


@pytest.mark.parametrize("resource", ["items/it_missing", "artifacts/art_missing"])
def test_unknown_resources_are_404(world, resource):
    status, _, body = get(world, f"/v1/{resource}/preview.png")
    assert status == 404 and json.loads(body)["reason"] in ("ITEM_NOT_FOUND", "ARTIFACT_NOT_FOUND")


ROUTES = ["tiles/WebMercatorQuad/13/{x}/{y}.png", "preview.png", "tilejson.json"]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("kind", ["items", "artifacts"])
def test_auth_matrix(world, artifacts, kind, route):
    """As downloading: own project with the scope only; items need catalog:read, artifacts
    analytics:read."""
    resource_id = world.items[BEFORE] if kind == "items" else artifacts["difference_cog"]
    tile = centre_tile(world, world.items[BEFORE], 13)
    path = f"/v1/{kind}/{resource_id}/" + route.format(x=tile.x, y=tile.y)
    needed = "catalog:read" if kind == "items" else "analytics:read"
    other_scope = "analytics:read" if kind == "items" else "catalog:read"
    cases = [
        ("alpha", 200, None),
        (None, 401, "UNAUTHENTICATED"),
        ("gpk_forged", 401, "UNAUTHENTICATED"),
        ("beta", 403, "PROJECT_ACCESS_DENIED"),
        (world.make_token(scopes=[other_scope], projects=["alpha"]), 403, "MISSING_SCOPE"),
        (world.make_token(scopes=[needed], projects=["alpha"]), 200, None),
        (world.make_token(scopes=[needed], projects=["beta"]), 403, "PROJECT_ACCESS_DENIED"),
    ]
    for token, status, reason in cases:
        got, _, body = get(world, path, token=token)
        assert got == status, (token, body[:200])
        if reason:
            assert json.loads(body)["reason"] == reason


def _signed_template(world, item_id: str, query: str = "", token: str | None = "alpha") -> tuple[str, dict[str, Any]]:
    status, _, body = get(world, f"/v1/items/{item_id}/tilejson.json?signed=true{query}", token=token)
    assert status == 200, body
    doc = json.loads(body)
    return doc["tiles"][0], doc


def test_a_signed_tile_template_works_without_a_header(world):
    item_id = world.items[BEFORE]
    template, doc = _signed_template(world, item_id, "&bands=nir&colormap=viridis")
    assert "signature=" in template and "prefix=" in template and "bands=nir" in template
    tile = TMS.tile(doc["center"][0], doc["center"][1], 14)
    status, headers, signed = get(world, template.format(z=tile.z, x=tile.x, y=tile.y), token=None)
    assert status == 200 and headers["Content-Type"] == "image/png", signed
    path = f"/v1/items/{item_id}/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png?bands=nir&colormap=viridis"
    assert get(world, path)[2] == signed  # the same tile as with the bearer token
    # The grant is the item's tiles/: not its preview, not another item's tiles.
    other = world.items[AFTER]
    for url in (
        template.replace("/tiles/WebMercatorQuad/{z}/{x}/{y}.png", "/preview.png"),
        template.replace(item_id, other).format(z=tile.z, x=tile.x, y=tile.y),
    ):
        status, _, body = get(world, url, token=None)
        assert (status, json.loads(body)["reason"]) == (403, "SIGNATURE_INVALID")
    forged = template.replace("signature=", "signature=x").format(z=tile.z, x=tile.x, y=tile.y)
    status, _, body = get(world, forged, token=None)
    assert (status, json.loads(body)["reason"]) == (403, "SIGNATURE_INVALID")


def test_a_signed_template_expires(world):

    template, doc = _signed_template(world, world.items[BEFORE], "&ttl_seconds=1")
    tile = TMS.tile(doc["center"][0], doc["center"][1], 14)
    time.sleep(2.1)
    status, _, body = get(world, template.format(z=tile.z, x=tile.x, y=tile.y), token=None)
    assert (status, json.loads(body)["reason"]) == (403, "SIGNATURE_EXPIRED")


def test_a_signed_tilejson_answers_a_signed_template_that_expires_with_it(world):
    item_id = world.items[BEFORE]

    async def sign(services):
        return services.signer.signed_url(world.server.http_url, f"/v1/items/{item_id}/tilejson.json", 120)

    url, expires = world.with_services(sign)
    status, _, body = get(world, url, token=None)
    assert status == 200, body
    template = json.loads(body)["tiles"][0]
    assert "signature=" in template
    assert int(re.search(r"expires=(\d+)", template).group(1)) <= expires
    tile = TMS.tile(*json.loads(body)["center"][:2], 14)
    assert get(world, template.format(z=tile.z, x=tile.x, y=tile.y), token=None)[0] == 200
    # Neither a signature nor a token: 401.
    assert get(world, f"/v1/items/{item_id}/tilejson.json", token=None)[0] == 401


_PARAM_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["1", "3,2,1", "nir", "ndvi", "b1/b2", "0,1", "-1e400,1e400", "nan,1", "rdbu", "²", "9" * 30]),
)  # fmt: skip


@SAMPLE
@given(
    z=st.one_of(st.integers(-2, 40).map(str), st.text(max_size=6)),
    y=st.one_of(st.sampled_from(["0.png", "1@2x.webp", "5@4x.png", "3.jpg"]), st.text(max_size=10)),
    query=st.dictionaries(st.sampled_from(["bands", "expression", "rescale", "colormap", "asset", "max_size"]),
                          _PARAM_TEXT, max_size=4),
)  # fmt: skip
def test_hostile_paths_and_parameters_get_client_errors(world, z, y, query):

    item_id = world.items[BEFORE]
    for path in (
        f"/v1/items/{item_id}/tiles/WebMercatorQuad/{quote(z, safe='')}/0/{quote(y, safe='')}",
        f"/v1/items/{item_id}/preview.png",
        f"/v1/items/{item_id}/tilejson.json",
    ):
        status, _headers, body = get(world, f"{path}?{urlencode(query)}")
        assert status < 500, (path, query, body[:300])
        if status >= 400:
            assert json.loads(body)["reason"], body


def test_the_routes_are_in_the_openapi_document(world):
    _status, _, body = get(world, "/v1/openapi.json", token=None)
    paths = json.loads(body)["paths"]
    for kind, name in (("items", "item_id"), ("artifacts", "artifact_id")):
        assert f"/v1/{kind}/{{{name}}}/tiles/WebMercatorQuad/{{z}}/{{x}}/{{tile}}" in paths
        assert f"/v1/{kind}/{{{name}}}/tilejson.json" in paths and f"/v1/{kind}/{{{name}}}/preview.{{format}}" in paths
