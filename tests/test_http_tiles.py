"""Map tiles, previews and TileJSON over HTTP, against a real server: every tile equals
rio-tiler's own rendering of the same tile from the same stored COG (within 1 DN), with the
defaults from the stored render hint; nodata is transparent; a change-detection difference
is drawn with a diverging colour map centred on zero."""

from __future__ import annotations

import io
import json
import urllib.request

import numpy as np
import pytest
import rasterio
from PIL import Image
from rio_tiler.colormap import cmap
from rio_tiler.io import Reader

from geopera_kernel.raster import write_cog
from tests.conftest import SAMPLES
from tests.jobs_support import running_world
from tests.tiles_support import (
    AFTER,
    BEFORE,
    TMS,
    artifact_path,
    assert_same,
    centre_tile,
    change_detection,
    get,
    pixels,
    ranges,
    reference,
    stored,
)


@pytest.fixture(scope="module")
def world(database_factory, tmp_path_factory):
    with running_world(database_factory.create(), tmp_path_factory.mktemp("tiles")) as world:
        yield world


@pytest.fixture(scope="module")
def artifacts(world) -> dict[str, str]:
    return change_detection(world)


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
    assert headers["ETag"] and headers["Cache-Control"].startswith("private, max-age=")
    assert headers["Vary"] == "Authorization"
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


def test_a_change_difference_is_drawn_diverging_around_zero(world, artifacts):
    artifact_id = artifacts["difference_cog"]
    path = artifact_path(world, artifact_id)
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
