"""README: "Reflectance scale/offset are applied before an index." Over a real server: a COG
whose bands carry scale and offset metadata is uploaded and registered, zonal_stats of an
index that depends on them (EVI, SAVI, MSAVI, and NDVI once there is an offset) is asked for
over the whole raster, and each statistic is compared with numpy computing the index from
raw DN * scale + offset, written out here (no project code in the oracle)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from affine import Affine
from google.protobuf import json_format, struct_pb2

from geopera.v1 import analytics_pb2, catalog_pb2
from tests.conftest import World

SIZE = 192
TRANSFORM = Affine(10.0, 0.0, 465_000.0, 0.0, -10.0, 5_080_000.0)  # UTM 33N, by the samples
AROUND = {"type": "Polygon", "coordinates": [[[14.4, 45.7], [14.8, 45.7], [14.8, 46.0], [14.4, 46.0], [14.4, 45.7]]]}
BANDS = ("blue", "green", "red", "nir")
# Reflectance ranges per band: vegetation-like, so every index stays well defined.
REFLECTANCE = {"blue": (0.02, 0.08), "green": (0.03, 0.12), "red": (0.03, 0.15), "nir": (0.20, 0.45)}
# (scales, offsets) per band: Landsat Collection 2 (an offset), Sentinel-2 L1C (a scale
# only), and a product with a different scale and offset in every band.
SCALINGS = {
    "landsat-c2": ((2.75e-5,) * 4, (-0.2,) * 4),
    "sentinel-2": ((1e-4,) * 4, (0.0,) * 4),
    "per-band": ((2e-5, 3e-5, 5e-5, 4e-5), (-0.1, -0.05, -0.3, 0.02)),
}


def evi(b: dict[str, np.ndarray]) -> np.ndarray:
    return 2.5 * (b["nir"] - b["red"]) / (b["nir"] + 6 * b["red"] - 7.5 * b["blue"] + 1)


def savi(b: dict[str, np.ndarray]) -> np.ndarray:
    return 1.5 * (b["nir"] - b["red"]) / (b["nir"] + b["red"] + 0.5)


def msavi(b: dict[str, np.ndarray]) -> np.ndarray:
    term = 2 * b["nir"] + 1
    return (term - np.sqrt(term**2 - 8 * (b["nir"] - b["red"]))) / 2


def ndvi(b: dict[str, np.ndarray]) -> np.ndarray:
    return (b["nir"] - b["red"]) / (b["nir"] + b["red"])


FORMULAS: dict[str, Callable[[dict[str, np.ndarray]], np.ndarray]] = {
    "EVI": evi,
    "SAVI": savi,
    "MSAVI": msavi,
    "NDVI": ndvi,
}
NEEDS = {"EVI": ("blue", "red", "nir"), "SAVI": ("red", "nir"), "MSAVI": ("red", "nir"), "NDVI": ("red", "nir")}
# NDVI is a ratio of differences: a common scale cancels out, so it depends on the
# metadata only where there is an offset.
CASES = [
    (index, scaling)
    for index in FORMULAS
    for scaling, (_, offsets) in SCALINGS.items()
    if index != "NDVI" or any(offsets)
]


def _raw_bands(scales: tuple[float, ...], offsets: tuple[float, ...]) -> np.ndarray:
    """uint16 DNs whose reflectance (DN * scale + offset) lies in REFLECTANCE; 0 is nodata,
    with a few holes per band (a pixel counts only where every band it needs is valid)."""
    rng = np.random.default_rng(17)
    raw = np.empty((4, SIZE, SIZE), dtype=np.uint16)
    for i, name in enumerate(BANDS):
        low, high = REFLECTANCE[name]
        reflectance = rng.uniform(low, high, size=(SIZE, SIZE))
        raw[i] = np.round((reflectance - offsets[i]) / scales[i]).astype(np.uint16)
        holes = rng.integers(0, SIZE, size=(2, 40))
        raw[i][holes[0], holes[1]] = 0
    assert raw.max() < 65535
    return raw


def _write_cog(path: Path, raw: np.ndarray, scales: tuple[float, ...], offsets: tuple[float, ...]) -> None:
    staged = path.with_suffix(".staged.tif")
    profile = {"driver": "GTiff", "width": SIZE, "height": SIZE, "count": 4, "dtype": "uint16",
               "crs": "EPSG:32633", "transform": TRANSFORM, "nodata": 0}  # fmt: skip
    with rasterio.open(staged, "w", **profile) as dst:
        dst.write(raw)
        dst.scales = scales
        dst.offsets = offsets
        dst.descriptions = BANDS
    rasterio.shutil.copy(staged, path, driver="COG", compress="ZSTD", blocksize=512)
    with rasterio.open(path) as check:  # the metadata survived the COG copy
        assert check.scales == scales and check.offsets == offsets


@pytest.fixture(scope="module")
def scaled_items(world: World, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, np.ndarray]]:
    """scaling name -> (registered item id, the raw DNs written)."""
    folder = tmp_path_factory.mktemp("scaled")
    client = world.client("alpha")
    items = {}
    for name, (scales, offsets) in SCALINGS.items():
        raw = _raw_bands(scales, offsets)
        path = folder / f"{name}.tif"
        _write_cog(path, raw, scales, offsets)
        upload = client.upload("alpha", path.read_bytes())
        item = client.execute(
            "items.create",
            catalog_pb2.ItemsCreateParams(
                project_id="alpha",
                collection_id="scaled",
                name=f"scaled_{name}_{secrets.token_hex(3)}_20200601",
                assets=[catalog_pb2.AssetInput(key="data", upload_id=upload.upload_id)],
            ),
        ).item
        band_meta = item.assets["data"].bands
        assert [(b.scale, b.offset) for b in band_meta] == list(zip(scales, offsets, strict=True))
        items[name] = (item.id, raw)
    return items


def _zonal(world: World, item_id: str, index: str) -> dict:
    params = struct_pb2.Struct()
    params.update({"item_id": item_id, "index_name": index, "geometry": AROUND, "percentiles": [10, 50, 90],
                   "stats": ["count", "min", "max", "mean", "std", "sum", "median"]})  # fmt: skip
    result = world.client("alpha").execute(
        "analytics.execute", analytics_pb2.AnalyticsExecuteParams(operation="zonal_stats", params=params), timeout=60
    )
    zones = json_format.MessageToDict(result.result)["zones"]
    assert len(zones) == 1
    return zones[0]


def _oracle(raw: np.ndarray, scales, offsets, index: str, *, apply: bool = True) -> np.ndarray:
    """The index over every pixel where the bands it reads are valid, in float64."""
    bands = {
        name: raw[i].astype(np.float64) * (scales[i] if apply else 1.0) + (offsets[i] if apply else 0.0)
        for i, name in enumerate(BANDS)
    }
    valid = np.all([raw[BANDS.index(name)] != 0 for name in NEEDS[index]], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):  # undefined values are dropped below
        values = FORMULAS[index](bands)[valid]
    return values[np.isfinite(values)]


@pytest.mark.parametrize(("index", "scaling"), CASES, ids=[f"{i}-{s}" for i, s in CASES])
def test_the_index_is_computed_on_scaled_reflectance(world, scaled_items, index, scaling):
    item_id, raw = scaled_items[scaling]
    scales, offsets = SCALINGS[scaling]
    zone = _zonal(world, item_id, index)
    expected = _oracle(raw, scales, offsets, index)
    got = zone["stats"]
    assert int(got["count"]) == expected.size and expected.size > 0.9 * SIZE * SIZE
    for name, value in [("min", expected.min()), ("max", expected.max()), ("mean", expected.mean()),
                        ("std", expected.std()), ("sum", expected.sum()), ("median", np.median(expected))]:  # fmt: skip
        assert got[name] == pytest.approx(value, rel=2e-5, abs=1e-6), (name, got[name], value)
    percentiles = {p["percentile"]: p["value"] for p in zone["percentiles"]}
    for q in (10, 50, 90):
        assert percentiles[q] == pytest.approx(np.percentile(expected, q), rel=2e-5, abs=1e-6), q

    # The test can tell: the index of the stored DNs (metadata ignored) is far from the answer.
    unscaled = _oracle(raw, scales, offsets, index, apply=False)
    assert abs(unscaled.mean() - expected.mean()) > 0.02
