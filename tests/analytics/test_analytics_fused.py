"""The engine's fused path (center rule, no values kept: sources compute into reused arrays)
gives the general path's answer (to 1e-12: float64 sums may add in another order).

The general path runs when values are kept (percentiles, median, histogram), with the same
strips, arithmetic and merge order; its moments are compared field by field with the fused
path's, on chunks the zones cross (masks), contain (no mask) or miss, with nodata, NaN, zero
denominators, several strips per chunk and several zones per chunk.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest

from geopera_kernel.analytics.engine import ReduceOptions, reduce_groups
from geopera_kernel.analytics.geometry import pixel_zones
from geopera_kernel.analytics.indices import INDICES, get_index
from geopera_kernel.analytics.moments import Moments
from geopera_kernel.analytics.reader import open_meta
from geopera_kernel.analytics.sources import BandSource, IndexSource, PixelSource, StackSource
from geopera_kernel.raster.geo import parse_zones
from tests.analytics.conftest import UTM33, UTM33_TRANSFORM, RasterWriter, lonlat_polygon, make_item

ROWS, COLS = 700, 620  # two chunk rows and columns (512-pixel blocks), many strips per chunk


def _zones() -> dict[str, Any]:
    def polygon(points: list[tuple[float, float]]) -> dict[str, Any]:
        return {"type": "Polygon", "coordinates": [lonlat_polygon(UTM33_TRANSFORM, UTM33, points)]}

    shapes = [
        polygon([(-5.0, -5.0), (COLS + 5.0, -5.0), (COLS + 5.0, ROWS + 5.0), (-5.0, ROWS + 5.0)]),  # contains all
        polygon([(3.3, 4.7), (525.6, 14.2), (597.1, 622.8), (12.9, 681.5)]),  # crosses every chunk
        polygon([(100.2, 100.3), (180.7, 110.1), (150.4, 190.9)]),  # inside one chunk, beside the next
        polygon([(120.2, 150.6), (300.8, 130.35), (260.55, 240.9)]),  # shares a chunk with the one before
        polygon([(530.1, 40.2), (600.3, 45.7), (590.2, 90.1)]),  # a narrow part of an edge chunk
        polygon([(20.2, 30.2), (20.8, 30.35), (20.55, 30.9)]),  # smaller than a pixel
    ]
    return {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": g} for g in shapes]}


def _bands(rng: np.random.Generator, dtype: type) -> np.ndarray:
    rows, cols = np.mgrid[0:ROWS, 0:COLS]
    base = 3000 + 1500 * np.sin(rows / 37.0) + 1200 * np.cos(cols / 23.0)
    bands = np.stack([base + rng.normal(0, 300, base.shape) + 400 * k for k in range(4)])
    bands = np.clip(np.round(bands), 1, 20000)
    bands[:, 200:230, 40:90] = 0  # nodata in every band
    bands[2, 400:420, 300:350] = 0  # nodata in one band
    if dtype is np.float32:
        bands = bands.astype(np.float32)
        bands[3, 500:510, 100:160] = -bands[2, 500:510, 100:160]  # zero denominators of NDVI
        bands[3, 510:520, 100:160] = np.nan
        bands[2, 520:525, 100:160] = np.inf
    return bands.astype(dtype)


def _same(fused: Moments, general: Moments) -> None:
    for name in ("weight", "total", "mean", "m2", "minimum", "maximum", "nodata"):
        a, b = getattr(fused, name), getattr(general, name)
        same = a == b or math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0) or (math.isnan(a) and math.isnan(b))
        assert same, (name, a, b)  # NaN both ways: an infinite band value, taken as data by both


def _check(source: PixelSource, zones: dict[str, Any], all_touched: bool) -> None:
    meta = source.meta
    pixel = pixel_zones(parse_zones(zones, "params.geometry"), meta.crs, meta.transform, meta.width, meta.height)

    def run(keep_values: bool) -> list[list[Moments]]:
        [outcome] = reduce_groups(
            [[(source, pixel)]],
            ReduceOptions("center", all_touched, keep_values),
            workers=2,
            check_cancelled=lambda: None,
            memory_budget_bytes=64 * 1024 * 1024,
        )
        try:
            return [[layer.moments for layer in zone.layers] for zone in outcome.zones]
        finally:
            outcome.close()

    fused, general = run(False), run(True)
    assert any(layer.weight > 0 for zone in fused for layer in zone)
    assert any(layer.nodata > 0 for zone in fused for layer in zone)
    for fused_zone, general_zone in zip(fused, general, strict=True):
        for fused_layer, general_layer in zip(fused_zone, general_zone, strict=True):
            _same(fused_layer, general_layer)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
@pytest.mark.parametrize("index_name", ["NDVI", "NBR", "EVI"])
@pytest.mark.parametrize("all_touched", [False, True])
def test_fused_index_equals_general(
    dtype: type, index_name: str, all_touched: bool, write_raster: RasterWriter
) -> None:
    bands = _bands(np.random.default_rng(7), dtype)
    tags = [{"COMMON_NAME": name} for name in ("blue", "red", "nir", "swir22")]
    path = write_raster(f"bands_{np.dtype(dtype).name}.tif", bands, nodata=0, band_tags=tags,
                        scales=[0.0001] * 4)  # fmt: skip
    meta = open_meta(make_item("bands", path).assets["data"])
    index = get_index(index_name)
    assert (index.difference is not None) == (index_name != "EVI")  # EVI: the fallback to compute()
    source = IndexSource.resolve(meta, index, None)
    if dtype is np.float32:
        assert not source._finite_inputs  # the NaN pass runs
    elif index.difference is not None:
        assert source._finite_inputs  # integer bands: it can go
    _check(source, _zones(), all_touched)


@pytest.mark.parametrize("apply_scale", [False, True])
def test_fused_band_and_stack_equal_general(apply_scale: bool, write_raster: RasterWriter) -> None:
    bands = _bands(np.random.default_rng(11), np.float32)
    bands[1, 600:640, 10:500] = -9999.0
    path = write_raster("float.tif", bands, nodata=-9999.0, scales=[0.5, 0.25, 2.0, 1.0])
    meta = open_meta(make_item("float", path).assets["data"])
    _check(BandSource(meta, (2,), apply_scale), _zones(), False)
    _check(BandSource(meta, (4,), apply_scale), _zones(), True)
    _check(StackSource(meta, (1, 2, 3, 4)), _zones(), False)


def test_every_normalized_difference_is_fused() -> None:
    for index in INDICES.values():
        bands = index.bands
        if index.formula_text == f"({bands[0]} - {bands[1]}) / ({bands[0]} + {bands[1]})":
            assert index.difference == (bands[0], bands[1])
        else:
            assert index.difference is None


def test_chunks_whose_masks_select_no_pixel_are_not_read(write_raster: RasterWriter) -> None:
    """A zone whose center mask selects no pixel reads nothing and reports nothing read; one
    beside it in the same call is unaffected."""
    path = write_raster("plain.tif", _bands(np.random.default_rng(3), np.uint16)[:1], nodata=0)
    meta = open_meta(make_item("plain", path).assets["data"])
    source = BandSource(meta, (1,), False)

    def polygon(points: list[tuple[float, float]]) -> dict[str, Any]:
        return {"type": "Polygon", "coordinates": [lonlat_polygon(UTM33_TRANSFORM, UTM33, points)]}

    sliver = polygon([(600.1, 650.1), (600.42, 650.15), (600.2, 650.45)])  # misses every pixel centre
    square = polygon([(10.0, 10.0), (20.0, 10.0), (20.0, 20.0), (10.0, 20.0)])
    for features, pixels, chunks in (([sliver], 0, 0), ([sliver, square], 10 * 10, 1)):
        zones = {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": g} for g in features]}
        pixel = pixel_zones(parse_zones(zones, "params.geometry"), meta.crs, meta.transform, meta.width, meta.height)
        [outcome] = reduce_groups([[(source, pixel)]], ReduceOptions(), workers=2, check_cancelled=lambda: None,
                                  memory_budget_bytes=1 << 26)  # fmt: skip
        assert outcome.zones[0].pixels_read == 0 and outcome.zones[0].layers[0].moments.weight == 0
        assert outcome.chunks_read == chunks
        if chunks:
            assert outcome.zones[1].layers[0].moments.weight == 100
            assert outcome.pixels_read >= pixels
        else:
            assert outcome.pixels_read == 0


def test_the_zero_denominator_pass_goes_only_where_nodata_implies_it(write_raster: RasterWriter) -> None:
    """The fused path drops the `a + b != 0` pass only for unsigned bands with nodata 0, positive
    scales and no offset (there a + b == 0 means both raw values are 0: nodata). With an offset, a
    valid pixel can have a zero denominator: the pass stays, and fused and general paths agree."""
    bands = _bands(np.random.default_rng(5), np.uint16)
    # red 400, nir 600: with the offset below, reflectances -0.01 and 0.01, so a + b == 0 there.
    bands[1, 300:320, 400:450], bands[2, 300:320, 400:450] = 400, 600
    tags = [{"COMMON_NAME": name} for name in ("blue", "red", "nir", "swir22")]
    path = write_raster("offset.tif", bands, nodata=0, band_tags=tags, scales=[0.0001] * 4)
    meta = open_meta(make_item("offset", path).assets["data"])
    ndvi = get_index("NDVI")
    assert IndexSource.resolve(meta, ndvi, None)._zero_denominator_is_nodata
    offset = dataclasses.replace(meta, offsets=(-0.05,) * 4)
    offset_source = IndexSource.resolve(offset, ndvi, None)
    assert offset_source._zero_nodata_pair and not offset_source._zero_denominator_is_nodata
    _check(offset_source, _zones(), False)
    signed = dataclasses.replace(meta, dtypes=("int16",) * 4)
    assert not IndexSource.resolve(signed, ndvi, None)._zero_denominator_is_nodata
    no_nodata = dataclasses.replace(meta, nodata=(None,) * 4)
    assert not IndexSource.resolve(no_nodata, ndvi, None)._zero_nodata_pair
