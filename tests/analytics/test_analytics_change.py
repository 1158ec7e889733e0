"""change_detection against a numpy reference; its COG and PNG artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from pyproj import Geod
from rasterio.enums import Resampling
from rasterio.features import geometry_mask
from rasterio.warp import reproject
from rio_cogeo.cogeo import cog_validate

from geopera_kernel.analytics import registry
from tests.analytics.conftest import UTM33, UTM33_TRANSFORM, ContextFactory, RasterWriter, lonlat_polygon, make_item
from tests.support import reference_geometry

ROWS, COLS = 80, 90
NAMES = ["blue", "green", "red", "nir"]
THRESHOLD = 0.1


def scene(seed: int, rows: int = ROWS, cols: int = COLS) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:rows, 0:cols]
    red = 900 + 300 * np.sin(r / 9.0) + rng.normal(0, 40, (rows, cols))
    ndvi = 0.5 + 0.3 * np.cos(c / 11.0 + seed) + rng.normal(0, 0.05, (rows, cols))
    nir = red * (1 + ndvi) / (1 - np.clip(ndvi, -0.9, 0.9))
    data = np.stack([red * 0.6 + 200, red * 0.8 + 100, red, nir]).clip(1, 20000).astype(np.uint16)
    data[:, 5:12, 60:75] = 0  # nodata (0) patch
    return data


def ndvi(data: np.ndarray) -> np.ndarray:
    red, nir = data[2], data[3]
    red32, nir32 = red.astype(np.float32) * np.float32(1e-4), nir.astype(np.float32) * np.float32(1e-4)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = (nir32 - red32) / (nir32 + red32)
    values[(red == 0) | (nir == 0)] = np.nan
    return values


def write_scene(write_raster: RasterWriter, name: str, data: np.ndarray, **kwargs: Any) -> Path:
    return write_raster(name, data, nodata=0, descriptions=NAMES, scales=[1e-4] * 4, **kwargs)


def area(crs: str, transform: Affine, pixels: list[tuple[float, float]]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [lonlat_polygon(transform, crs, pixels)]}


AOI_PIXELS = [(3.3, 2.2), (84.6, 4.1), (80.2, 71.7), (30.1, 77.9), (2.6, 60.3)]


def reference(
    before: np.ndarray, after_ndvi: np.ndarray, geojson: dict[str, Any], crs: str, transform: Affine
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    geometry = reference_geometry.reproject(reference_geometry.lonlat_area(geojson), crs)
    inside = geometry_mask([geometry], out_shape=before.shape[1:], transform=transform, invert=True)
    before_ndvi = ndvi(before)
    compared = inside & ~np.isnan(before_ndvi) & ~np.isnan(after_ndvi)
    return after_ndvi - before_ndvi, compared, inside


def check_result(
    result: dict[str, Any], difference: np.ndarray, compared: np.ndarray, inside: np.ndarray, pixel_area: float
) -> None:
    chosen = difference[compared]
    counts = {
        "increase": int(np.count_nonzero(chosen > THRESHOLD)),
        "decrease": int(np.count_nonzero(chosen < -THRESHOLD)),
    }
    counts["no_change"] = chosen.size - counts["increase"] - counts["decrease"]
    assert counts["increase"] > 50 and counts["decrease"] > 50 and counts["no_change"] > 50
    assert result["area_pixels"] == np.count_nonzero(inside)
    assert result["compared_count"] == chosen.size
    assert result["nodata_count"] == np.count_nonzero(inside) - chosen.size > 0
    for name, count in counts.items():
        assert result[name]["count"] == count, name
        assert result[name]["fraction"] == pytest.approx(count / chosen.size)
        assert result[name]["area_m2"] == pytest.approx(count * pixel_area, rel=1e-9)
        assert result[name]["area_ha"] == pytest.approx(count * pixel_area / 1e4, rel=1e-9)
    stats = result["difference"]
    assert stats["mean"] == pytest.approx(float(chosen.mean(dtype=np.float64)), rel=1e-6)
    assert stats["std"] == pytest.approx(float(chosen.astype(np.float64).std()), rel=1e-6)
    assert (stats["min"], stats["max"]) == (float(chosen.min()), float(chosen.max()))
    expected = np.percentile(chosen, [5, 25, 50, 75, 95])
    assert [p["value"] for p in stats["percentiles"]] == pytest.approx(expected.tolist(), rel=1e-6, abs=1e-7)


def test_same_grid_matches_numpy_and_writes_artifacts(write_raster: RasterWriter, make_context: ContextFactory) -> None:
    before, after = scene(1), scene(2)
    after[:, 30:34, :] = 0  # a stripe the after scene lacks
    ctx = make_context(
        [
            make_item("before", write_scene(write_raster, "before.tif", before)),
            make_item("after", write_scene(write_raster, "after.tif", after)),
        ]
    )
    geojson = area(UTM33, UTM33_TRANSFORM, AOI_PIXELS)
    result = registry.run(
        "change_detection",
        {
            "before_item_id": "before",
            "after_item_id": "after",
            "index_name": "ndvi",
            "change_threshold": THRESHOLD,
            "geometry": geojson,
        },
        ctx,
    )
    difference, compared, inside = reference(before, ndvi(after), geojson, UTM33, UTM33_TRANSFORM)
    assert result["reprojected"] is False and result["pixel_area_m2"] == 100.0
    check_result(result, difference, compared, inside, 100.0)
    assert result["before_mean"] == pytest.approx(float(ndvi(before)[compared].mean(dtype=np.float64)), rel=1e-6)
    assert result["after_mean"] == pytest.approx(float(ndvi(after)[compared].mean(dtype=np.float64)), rel=1e-6)

    assert result["artifacts"] == ["difference_cog", "quicklook_png"]
    artifacts = {a.key: a for a in ctx.artifacts}
    cog = artifacts["difference_cog"]
    assert cog.media_type.startswith("image/tiff") and cog.path.parent == ctx.artifact_dir
    is_valid, errors, _ = cog_validate(str(cog.path), quiet=True)
    assert is_valid, errors
    with rasterio.open(cog.path) as dataset:
        assert dataset.dtypes[0] == "float32" and np.isnan(dataset.nodata)
        assert dataset.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "ZSTD"
        written = dataset.read(1)
        col, row = ~UTM33_TRANSFORM @ (dataset.transform.c, dataset.transform.f)
        window = (slice(round(row), round(row) + dataset.height), slice(round(col), round(col) + dataset.width))
    assert np.count_nonzero(inside[window]) == np.count_nonzero(inside)  # the window holds the whole area
    expected = np.where(compared, difference, np.nan)[window]
    np.testing.assert_array_equal(np.isnan(written), np.isnan(expected))
    np.testing.assert_allclose(written[~np.isnan(written)], expected[~np.isnan(expected)], rtol=1e-6)

    png = artifacts["quicklook_png"]
    assert png.media_type == "image/png" and png.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png.path) as image:
        assert 256 <= image.width <= 1200 and 200 <= image.height <= 1200
        assert image.mode == "P" and image.info["transparency"] == 255  # palette PNG, NaN transparent


def test_different_grid_is_warped_bilinear(write_raster: RasterWriter, make_context: ContextFactory) -> None:
    before = scene(3)
    after_transform = Affine(20.0, 0.0, 464_990.0, 0.0, -20.0, 5_080_013.0)  # coarser and shifted
    after = scene(4, rows=45, cols=50)
    ctx = make_context(
        [
            make_item("before", write_scene(write_raster, "before.tif", before)),
            make_item("after", write_scene(write_raster, "after.tif", after, transform=after_transform)),
        ]
    )
    geojson = area(UTM33, UTM33_TRANSFORM, AOI_PIXELS)
    result = registry.run(
        "change_detection",
        {
            "before_item_id": "before",
            "after_item_id": "after",
            "index_name": "NDVI",
            "change_threshold": THRESHOLD,
            "geometry": geojson,
        },
        ctx,
    )
    assert result["reprojected"] is True and result["resampling"] == "bilinear"
    warped = np.full((ROWS, COLS), np.nan, np.float32)
    reproject(
        ndvi(after),
        warped,
        src_transform=after_transform,
        src_crs=UTM33,
        src_nodata=np.nan,
        dst_transform=UTM33_TRANSFORM,
        dst_crs=UTM33,
        dst_nodata=np.nan,
        resampling=Resampling.bilinear,
    )
    difference, compared, inside = reference(before, warped, geojson, UTM33, UTM33_TRANSFORM)
    check_result(result, difference, compared, inside, 100.0)


def test_geographic_grid_areas_per_row(write_raster: RasterWriter, make_context: ContextFactory) -> None:
    transform = Affine(0.0002, 0.0, 14.5, 0.0, -0.0002, 46.0)
    before, after = scene(5), scene(6)
    ctx = make_context(
        [
            make_item("before", write_scene(write_raster, "b.tif", before, transform=transform, crs="EPSG:4326")),
            make_item("after", write_scene(write_raster, "a.tif", after, transform=transform, crs="EPSG:4326")),
        ]
    )
    geojson = area("EPSG:4326", transform, AOI_PIXELS)
    result = registry.run(
        "change_detection",
        {
            "before_item_id": "before",
            "after_item_id": "after",
            "index_name": "NDVI",
            "change_threshold": THRESHOLD,
            "geometry": geojson,
        },
        ctx,
    )
    assert result["pixel_area_m2"] is None
    difference, compared, _ = reference(before, ndvi(after), geojson, "EPSG:4326", transform)
    geod = Geod(ellps="WGS84")
    lons = np.linspace(14.5, 14.5002, 51)
    row_area = []
    for row in range(ROWS):
        top, bottom = 46.0 - 0.0002 * row, 46.0 - 0.0002 * (row + 1)
        ring_lons = np.concatenate([lons, lons[::-1]])
        ring_lats = np.concatenate([np.full(lons.size, bottom), np.full(lons.size, top)])
        row_area.append(abs(geod.polygon_area_perimeter(ring_lons, ring_lats)[0]))
    increase = np.where(compared, difference, 0) > THRESHOLD
    expected = float(np.count_nonzero(increase, axis=1) @ np.array(row_area))
    assert result["increase"]["area_m2"] == pytest.approx(expected, rel=1e-6)


def test_area_off_the_raster(write_raster: RasterWriter, make_context: ContextFactory) -> None:
    ctx = make_context(
        [
            make_item("before", write_scene(write_raster, "before.tif", scene(1))),
            make_item("after", write_scene(write_raster, "after.tif", scene(2))),
        ]
    )
    geojson = area(UTM33, UTM33_TRANSFORM, [(300.0, 300.0), (320.0, 300.0), (320.0, 330.0)])
    result = registry.run(
        "change_detection",
        {
            "before_item_id": "before",
            "after_item_id": "after",
            "index_name": "NDVI",
            "change_threshold": THRESHOLD,
            "geometry": geojson,
        },
        ctx,
    )
    assert result["compared_count"] == 0 and result["increase"]["fraction"] is None
    assert result["difference"]["mean"] is None and result["artifacts"] == [] and ctx.artifacts == []
