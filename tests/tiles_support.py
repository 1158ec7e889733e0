"""Shared pieces of the tile tests: a GET helper, rio-tiler's reference rendering, where an
item or artifact is stored, and a change-detection run that leaves a difference artifact."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from typing import Any

import morecantile
import numpy as np
from google.protobuf import json_format, struct_pb2
from PIL import Image
from rio_tiler.colormap import cmap
from rio_tiler.io import Reader

from geopera.v1 import analytics_pb2, catalog_pb2
from tests.conftest import SAMPLES

TMS = morecantile.tms.get("WebMercatorQuad")
BEFORE, AFTER = "s2l1c_slovenia_20150711_bgrn", "s2l1c_slovenia_20150909_bgrn"


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

    item = world.client("alpha").execute("items.get", catalog_pb2.ItemsGetParams(item_id=item_id)).item
    (asset,) = (json_format.MessageToDict(a, preserving_proto_field_name=True) for a in item.assets.values())
    return world.with_services(source), asset


def centre_tile(world, item_id: str, zoom: int) -> morecantile.Tile:
    status, _, body = get(world, f"/v1/items/{item_id}/tilejson.json")
    assert status == 200, body
    west, south, east, north = json.loads(body)["bounds"]
    return TMS.tile((west + east) / 2, (south + north) / 2, zoom)


def ranges(asset: dict[str, Any], indexes) -> list[tuple[float, float]]:
    rescale = asset["render"]["rescale"]
    return [(rescale[i - 1]["min"], rescale[i - 1]["max"]) for i in indexes]


def change_detection(world) -> dict[str, str]:
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


def artifact_path(world, artifact_id: str) -> str:
    from geopera_kernel.server.demo import SYSTEM

    async def source(services):
        return (await services.catalog.artifact_render_source(SYSTEM, artifact_id)).path

    return world.with_services(source)
