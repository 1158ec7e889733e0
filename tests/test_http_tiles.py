"""Map tiles, previews and TileJSON over HTTP, against a real server: every tile equals
rio-tiler's own rendering of the same tile from the same stored COG (within 1 DN), with the
defaults from the stored render hint; nodata is transparent; a change-detection difference
is drawn with a diverging colour map centred on zero; bad requests are 4xx with a reason."""

from __future__ import annotations

import io
import json
import re
import urllib.error
import urllib.request
from typing import Any

import morecantile
import numpy as np
import pytest
import rasterio
from google.protobuf import json_format, struct_pb2
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from rio_tiler.colormap import cmap
from rio_tiler.io import Reader

from geopera.v1 import analytics_pb2
from geopera_kernel.raster import write_cog
from tests.conftest import SAMPLES
from tests.fuzz.support import SAMPLE
from tests.jobs_support import running_world

TMS = morecantile.tms.get("WebMercatorQuad")
BEFORE, AFTER = "s2l1c_slovenia_20150711_bgrn", "s2l1c_slovenia_20150909_bgrn"


@pytest.fixture(scope="module")
def world(database_factory, tmp_path_factory):
    with running_world(database_factory.create(), tmp_path_factory.mktemp("tiles")) as world:
        yield world


def get(world, path: str, *, token: str | None = "alpha", headers: dict[str, str] | None = None):
    """(status, headers, body) of a GET; `path` may be a whole URL."""
    url = path if path.startswith("http") else world.server.http_url + path
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {world.tokens.get(token, token)}")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


def reference(path: str, *, tile=None, scale: int = 1, rescale, colormap: str = "", **band_args) -> np.ndarray:
    """rio-tiler's rendering: Reader.tile (or .preview), ImageData.rescale, ImageData.render."""
    with Reader(path) as reader:
        if tile is None:
            image = reader.preview(max_size=1024, **band_args)
        else:
            image = reader.tile(tile.x, tile.y, tile.z, tilesize=256 * scale, **band_args)
    image.rescale(in_range=rescale)
    return pixels(image.render(img_format="PNG", colormap=cmap.get(colormap) if colormap else None))


def assert_same(got: bytes, expected: np.ndarray) -> None:
    image = pixels(got)
    assert image.shape == expected.shape
    assert np.abs(image.astype(int) - expected.astype(int)).max() <= 1
    assert (image[..., 3] > 0).any()  # something was drawn


def stored(world, item_id: str) -> tuple[str, dict[str, Any]]:
    """The stored COG's path and the asset as items.get returns it (with its render hint)."""
    from geopera_kernel.server.demo import SYSTEM

    async def source(services):
        return (await services.catalog.item_render_source(SYSTEM, item_id)).path

    item = world.client("alpha").execute("items.get", _items_get(item_id)).item
    (asset,) = (json_format.MessageToDict(a, preserving_proto_field_name=True) for a in item.assets.values())
    return world.with_services(source), asset


def _items_get(item_id: str):
    from geopera.v1 import catalog_pb2

    return catalog_pb2.ItemsGetParams(item_id=item_id)


def centre_tile(world, item_id: str, zoom: int) -> morecantile.Tile:
    status, _, body = get(world, f"/v1/items/{item_id}/tilejson.json")
    assert status == 200, body
    west, south, east, north = json.loads(body)["bounds"]
    return TMS.tile((west + east) / 2, (south + north) / 2, zoom)


def ranges(asset: dict[str, Any], indexes) -> list[tuple[float, float]]:
    rescale = asset["render"]["rescale"]
    return [(rescale[i - 1]["min"], rescale[i - 1]["max"]) for i in indexes]


@pytest.mark.parametrize("zoom", [13, 14])
def test_a_tile_is_true_colour_from_the_stored_render_hint(world, zoom):
    item_id = world.items[BEFORE]
    path, asset = stored(world, item_id)
    rgb = asset["render"]["rgb_bands"]
    assert rgb == [3, 2, 1]  # red, green, blue of the B, G, R, NIR sample
    tile = centre_tile(world, item_id, zoom)
    status, headers, body = get(world, f"/v1/items/{item_id}/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png")
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert_same(body, reference(path, tile=tile, indexes=rgb, rescale=ranges(asset, rgb)))
    assert headers["ETag"] and "max-age" in headers["Cache-Control"]
    again = get(world, f"/v1/items/{item_id}/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png",
                headers={"If-None-Match": headers["ETag"]})  # fmt: skip
    assert again[0] == 304 and again[1]["ETag"] == headers["ETag"]


def test_bands_rescale_and_colormap(world):
    item_id = world.items[BEFORE]
    path, _ = stored(world, item_id)
    tile = centre_tile(world, item_id, 14)
    url = f"/v1/items/{item_id}/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png"
    status, _, body = get(world, url + "?bands=nir&rescale=1000,4000&colormap=viridis")
    assert status == 200, body
    assert_same(body, reference(path, tile=tile, indexes=[4], rescale=[(1000, 4000)], colormap="viridis"))
    status, _, body = get(world, url + "?bands=4,3,2&rescale=0,4000&rescale=0,1500&rescale=0,1500")
    assert status == 200, body
    assert_same(body, reference(path, tile=tile, indexes=[4, 3, 2], rescale=[(0, 4000), (0, 1500), (0, 1500)]))


def test_expression_ndvi_from_the_band_catalogue(world):
    item_id = world.items[BEFORE]
    path, _ = stored(world, item_id)
    tile = centre_tile(world, item_id, 14)
    url = f"/v1/items/{item_id}/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png"
    expected = reference(path, tile=tile, expression="(b4 - b3) / (b4 + b3)", rescale=[(-1, 1)], colormap="rdylgn")
    status, _, by_name = get(world, url + "?expression=ndvi")
    assert status == 200, by_name
    assert_same(by_name, expected)
    status, _, spelled = get(world, url + "?expression=(b4-b3)/(b4%2Bb3)&colormap=rdylgn")
    assert status == 200, spelled
    assert_same(spelled, expected)


def test_webp_and_2x_tiles(world):
    item_id = world.items[BEFORE]
    path, asset = stored(world, item_id)
    tile = centre_tile(world, item_id, 14)
    base = f"/v1/items/{item_id}/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}"
    status, headers, body = get(world, base + "@2x.png")
    assert status == 200 and pixels(body).shape == (512, 512, 4)
    assert_same(body, reference(path, tile=tile, scale=2, indexes=[3, 2, 1], rescale=ranges(asset, [3, 2, 1])))
    status, headers, body = get(world, base + ".webp")
    assert status == 200 and headers["Content-Type"] == "image/webp" and body[:4] == b"RIFF"
    assert Image.open(io.BytesIO(body)).size == (256, 256)
    status, headers, body = get(world, base + "@2x.webp")
    assert status == 200 and Image.open(io.BytesIO(body)).size == (512, 512)


def test_preview_equals_rio_tilers_preview(world):
    item_id = world.items[AFTER]
    path, asset = stored(world, item_id)
    status, headers, body = get(world, f"/v1/items/{item_id}/preview.png")
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert_same(body, reference(path, indexes=[3, 2, 1], rescale=ranges(asset, [3, 2, 1])))


def test_tilejson_describes_the_tiles_and_its_template_works(world):
    item_id = world.items[BEFORE]
    path, _ = stored(world, item_id)
    status, headers, body = get(world, f"/v1/items/{item_id}/tilejson.json?expression=NDVI&tile_format=webp")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    doc = json.loads(body)
    with Reader(path) as reader:
        bounds = reader.get_geographic_bounds(rasterio.crs.CRS.from_epsg(4326))
        zooms = (reader.minzoom, reader.maxzoom)
    assert doc["tilejson"] == "3.0.0" and doc["scheme"] == "xyz"
    assert doc["bounds"] == pytest.approx(list(bounds)) and (doc["minzoom"], doc["maxzoom"]) == zooms
    west, south, east, north = doc["bounds"]
    assert west < doc["center"][0] < east and south < doc["center"][1] < north
    (template,) = doc["tiles"]
    assert template.startswith(world.server.http_url) and "{z}/{x}/{y}.webp?expression=NDVI" in template
    tile = TMS.tile(doc["center"][0], doc["center"][1], doc["maxzoom"])
    status, headers, _ = get(world, template.format(z=tile.z, x=tile.x, y=tile.y))
    assert status == 200 and headers["Content-Type"] == "image/webp"


def test_nodata_is_transparent(world, tmp_path):
    with rasterio.open(SAMPLES / f"{BEFORE}.tif") as src:
        data, crs, transform = src.read(), src.crs, src.transform
    data[:, 20:60, 30:70] = 0  # a hole of nodata inside the image
    cog = tmp_path / "holes.tif"
    write_cog(cog, data, crs=crs, transform=transform, nodata=0, descriptions=["blue", "green", "red", "nir"])
    client = world.client("alpha")
    upload = client.upload("alpha", cog.read_bytes(), file_name="holes.tif")
    from geopera.v1 import catalog_pb2

    created = client.execute(
        "items.create",
        catalog_pb2.ItemsCreateParams(
            project_id="alpha", collection_id="uploads", name="holes_20150711",
            assets=[catalog_pb2.AssetInput(key="data", upload_id=upload.upload_id)],
        ),
    )  # fmt: skip
    item_id = created.item.id
    path, asset = stored(world, item_id)
    tile = centre_tile(world, item_id, 15)
    status, _, body = get(world, f"/v1/items/{item_id}/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png")
    assert status == 200, body
    expected = reference(path, tile=tile, indexes=[3, 2, 1], rescale=ranges(asset, [3, 2, 1]))
    assert_same(body, expected)
    with Reader(path) as reader:
        mask = reader.tile(tile.x, tile.y, tile.z, indexes=[1]).mask
    alpha = pixels(body)[..., 3]
    assert (alpha[mask == 0] == 0).all() and (alpha[mask > 0] == 255).all()
    # The hole is in this tile: nodata pixels inside the image are see-through too.
    with Reader(path) as reader:
        values = reader.tile(tile.x, tile.y, tile.z, indexes=[1]).data[0]
    inside = (values == 0) & (mask == 0)
    assert inside.any() and (alpha[inside] == 0).all()


def _change_detection(world) -> dict[str, str]:
    aoi = json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())
    params = struct_pb2.Struct()
    params.update({
        "before_item_id": world.items[BEFORE], "after_item_id": world.items[AFTER], "index_name": "NDVI",
        "change_threshold": 0.05, "geometry": aoi,
    })  # fmt: skip
    result = world.client("alpha").execute(
        "analytics.execute", analytics_pb2.AnalyticsExecuteParams(operation="change_detection", params=params)
    )
    return {output.key: output.id for output in result.outputs}


@pytest.fixture(scope="module")
def artifacts(world) -> dict[str, str]:
    return _change_detection(world)


def _artifact_path(world, artifact_id: str) -> str:
    from geopera_kernel.server.demo import SYSTEM

    async def source(services):
        return (await services.catalog.artifact_render_source(SYSTEM, artifact_id)).path

    return world.with_services(source)


def test_a_change_difference_is_drawn_diverging_around_zero(world, artifacts):
    artifact_id = artifacts["difference_cog"]
    path = _artifact_path(world, artifact_id)
    with rasterio.open(path) as src:
        tags = src.tags(1)
        stats = {k: float(tags[f"STATISTICS_{k}"]) for k in ("MINIMUM", "MAXIMUM", "MEAN", "STDDEV")}
    low = max(stats["MINIMUM"], stats["MEAN"] - 2 * stats["STDDEV"])
    high = min(stats["MAXIMUM"], stats["MEAN"] + 2 * stats["STDDEV"])
    limit = max(abs(low), abs(high))
    status, _, body = get(world, f"/v1/artifacts/{artifact_id}/preview.png")
    assert status == 200, body
    assert_same(body, reference(path, indexes=[1], rescale=[(-limit, limit)], colormap="rdbu"))
    # Centred: a difference of 0 gets the colour map's midpoint, +/- limit its two ends.
    rdbu = cmap.get("rdbu")
    with Reader(path) as reader:
        image = reader.preview(max_size=1024, indexes=[1])
    values, valid = image.data[0], image.mask > 0
    got = pixels(body)
    near_zero = valid & (np.abs(values) < limit / 255)
    assert near_zero.any()
    assert np.abs(got[near_zero][:, :3].astype(int) - np.array(rdbu[127][:3])).max() <= 3
    status, _, body = get(world, f"/v1/artifacts/{artifact_id}/tilejson.json")
    assert status == 200 and json.loads(body)["tiles"][0].startswith(world.server.http_url + "/v1/artifacts/")
    tile = TMS.tile(*json.loads(body)["center"][:2], json.loads(body)["maxzoom"])
    status, _, body = get(world, f"/v1/artifacts/{artifact_id}/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png")
    assert status == 200, body
    assert_same(body, reference(path, tile=tile, indexes=[1], rescale=[(-limit, limit)], colormap="rdbu"))


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
    import time

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


@pytest.mark.parametrize("index", ["NDVI", "NDWI", "GNDVI", "EVI", "SAVI", "MSAVI"])
def test_every_catalogue_index_the_bands_allow_renders(world, index):
    status, headers, body = get(world, f"/v1/items/{world.items[BEFORE]}/preview.png?expression={index.lower()}")
    assert status == 200 and headers["Content-Type"] == "image/png", body
    assert (pixels(body)[..., 3] == 255).any()


def test_head_answers_the_headers_of_get(world):
    request = urllib.request.Request(
        f"{world.server.http_url}/v1/items/{world.items[BEFORE]}/preview.png", method="HEAD"
    )
    request.add_header("Authorization", f"Bearer {world.tokens['alpha']}")
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200 and response.headers["Content-Type"] == "image/png"
        assert response.headers["ETag"] and response.read() == b""


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
    from urllib.parse import quote, urlencode

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
