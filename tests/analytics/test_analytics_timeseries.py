"""time_series against numpy references: the 68-date NDVI stack and per-item NDVI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.features import geometry_mask

from geopera_kernel.analytics import registry
from geopera_kernel.server.errors import DomainError
from tests.analytics.conftest import UTM33, UTM33_TRANSFORM, ContextFactory, RasterWriter, lonlat_polygon, make_item
from tests.support import reference_geometry


def area_mask(geojson: dict[str, Any], path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(all bands, pixel-centre mask of the area) read with plain rasterio."""
    with rasterio.open(path) as dataset:
        data = dataset.read()
        geometry = reference_geometry.reproject(reference_geometry.lonlat_area(geojson), dataset.crs)
        mask = geometry_mask(
            [geometry], out_shape=(dataset.height, dataset.width), transform=dataset.transform, invert=True
        )
    return data, mask


def test_stack_steps_equal_numpy(s2_items: dict, aoi: dict, sample_dir: Path, make_context: ContextFactory) -> None:
    ctx = make_context(s2_items)
    data, mask = area_mask(aoi, sample_dir / "s2l1c_slovenia_ndvi_68dates.tif")
    with rasterio.open(sample_dir / "s2l1c_slovenia_ndvi_68dates.tif") as dataset:
        dates = list(dataset.descriptions)
    for reducer, extra, reference in [
        ("mean", {}, lambda v: float(np.mean(v, dtype=np.float64))),
        ("median", {}, lambda v: float(np.median(v))),
        ("percentile", {"percentile": 90}, lambda v: float(np.percentile(v, 90))),
        ("min", {}, lambda v: float(v.min())),
        ("max", {}, lambda v: float(v.max())),
    ]:
        result = registry.run(
            "time_series", {"item_id": "ndvi_stack", "geometry": aoi, "reducer": reducer, **extra}, ctx
        )
        steps = result["steps"]
        assert len(steps) == 68
        assert [s["band"] for s in steps] == list(range(1, 69))  # the stack is in time order already
        assert [s["datetime"] for s in steps] == [d.replace("+00:00", "Z") for d in dates]
        for step, band in zip(steps, data, strict=True):
            values = band[mask & ~np.isnan(band)]
            assert step["count"] == values.size
            assert step["nodata_count"] == np.count_nonzero(mask) - values.size
            if values.size == 0:
                assert step["value"] is None
            else:
                assert step["value"] == pytest.approx(reference(values), rel=1e-6), (reducer, step["band"])


def test_stack_time_filter(s2_items: dict, aoi: dict, make_context: ContextFactory) -> None:
    result = registry.run(
        "time_series",
        {"item_id": "ndvi_stack", "geometry": aoi, "start": "2016-01-01T00:00:00Z", "end": "2016-06-30"},
        make_context(s2_items),
    )
    everything = registry.run("time_series", {"item_id": "ndvi_stack", "geometry": aoi}, make_context(s2_items))
    in_range = [s for s in everything["steps"] if "2016-01-01" <= s["datetime"][:10] <= "2016-06-30"]
    assert 0 < len(in_range) < len(everything["steps"])
    assert result["steps"] == in_range  # every step in range, with the same values, and no other


def test_items_series_equals_numpy(s2_items: dict, aoi: dict, sample_dir: Path, make_context: ContextFactory) -> None:
    ids = ["s2_20150909", "s2_20150711", "s2_20150820"]  # not in time order
    result = registry.run(
        "time_series",
        {"item_ids": ids, "index_name": "NDVI", "geometry": aoi, "reducer": "median"},
        make_context(s2_items),
    )
    steps = result["steps"]
    assert [s["item_id"] for s in steps] == ["s2_20150711", "s2_20150820", "s2_20150909"]
    assert steps[0]["datetime"] == "2015-07-11T10:00:08Z"
    for step in steps:
        data, mask = area_mask(aoi, Path(s2_items[step["item_id"]].assets["data"].path))
        red, nir = data[2].astype(np.float32) * np.float32(1e-4), data[3].astype(np.float32) * np.float32(1e-4)
        ndvi = (nir - red) / (nir + red)
        assert step["value"] == pytest.approx(float(np.median(ndvi[mask])), rel=1e-6)
        assert step["count"] == np.count_nonzero(mask)


def test_empty_steps_are_reported(write_raster: RasterWriter, make_context: ContextFactory) -> None:
    stack = np.random.default_rng(0).uniform(0, 1, (3, 20, 20)).astype(np.float32)
    stack[1] = np.nan  # a fully clouded date
    dates = ["2024-05-03T10:00:00Z", "2024-05-01T10:00:00Z", "2024-05-02T10:00:00Z"]
    path = write_raster(
        "stack.tif",
        stack,
        nodata=np.nan,
        descriptions=["a", "b", "c"],
        band_tags=[{"ACQUISITION_DATETIME": d} for d in dates],
    )
    ring = lonlat_polygon(UTM33_TRANSFORM, UTM33, [(2.2, 2.2), (15.7, 2.2), (15.7, 17.7), (2.2, 17.7)])
    result = registry.run(
        "time_series",
        {"item_id": "stack", "geometry": {"type": "Polygon", "coordinates": [ring]}},
        make_context([make_item("stack", path)]),
    )
    steps = result["steps"]
    assert [s["band"] for s in steps] == [2, 3, 1]  # sorted by time, from the band tags
    assert steps[0]["value"] is None and steps[0]["count"] == 0 and steps[0]["nodata_count"] == 14 * 16
    assert steps[1]["value"] == pytest.approx(float(stack[2, 2:18, 2:16].mean(dtype=np.float64)), rel=1e-6)


def test_undated_bands_and_items_are_refused(
    write_raster: RasterWriter, make_context: ContextFactory, aoi: dict
) -> None:
    path = write_raster("plain.tif", np.ones((2, 10, 10), np.float32), descriptions=["x", "y"])
    ctx = make_context([make_item("plain", path)])
    for params in ({"item_id": "plain"}, {"item_ids": ["plain"], "band": 1}):
        with pytest.raises(DomainError) as error:
            registry.run("time_series", {**params, "geometry": aoi}, ctx)
        assert error.value.reason == "MISSING_DATETIME"
        assert error.value.expected_schema is not None
