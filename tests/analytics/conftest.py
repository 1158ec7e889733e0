"""Fixtures for the analytics library tests: items over real and generated rasters.

No server or database: items are built the way the server would describe them, with band
metadata taken from ``raster.inspect_raster``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from affine import Affine

from geopera_kernel.analytics import AnalyticsContext, AssetView, ItemView
from geopera_kernel.raster import inspect_raster, write_cog

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "data" / "s2_slovenia"
S2_SCENES = (
    "s2l1c_slovenia_20150711_bgrn.tif",
    "s2l1c_slovenia_20150731_bgrn.tif",
    "s2l1c_slovenia_20150820_bgrn.tif",
    "s2l1c_slovenia_20150830_bgrn.tif",
    "s2l1c_slovenia_20150909_bgrn.tif",
)
NDVI_STACK = "s2l1c_slovenia_ndvi_68dates.tif"
# A 10 m UTM 33N grid near the samples.
UTM33 = "EPSG:32633"
UTM33_TRANSFORM = Affine(10.0, 0.0, 465_000.0, 0.0, -10.0, 5_080_000.0)


def band_metadata(path: Path) -> list[dict[str, Any]]:
    """Band metadata as the server stores it (BandInfo as JSON, NaN nodata as "NaN")."""
    info = inspect_raster(path, require_cog=False)
    bands = []
    for band in info.bands:
        record = dataclasses.asdict(band)
        if isinstance(record["nodata"], float) and math.isnan(record["nodata"]):
            record["nodata"] = "NaN"
        bands.append(record)
    return bands


def make_item(item_id: str, path: Path, *, when: dt.datetime | None = None, key: str = "data") -> ItemView:
    asset = AssetView(key, str(path), "image/tiff", ("data",), band_metadata(path))
    return ItemView(item_id, name=path.stem, datetime=when, assets={key: asset})


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    assert SAMPLE_DIR.is_dir(), f"sample data missing: {SAMPLE_DIR} (committed with the repository)"
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def s2_items(sample_dir: Path) -> dict[str, ItemView]:
    manifest = json.loads((sample_dir / "manifest.json").read_text())
    dates = {entry["file"]: entry.get("datetime") for entry in manifest["files"]}
    items = {}
    for name in S2_SCENES:
        when = dt.datetime.fromisoformat(dates[name])
        item_id = "s2_" + name.split("_")[2]
        items[item_id] = make_item(item_id, sample_dir / name, when=when)
    items["ndvi_stack"] = make_item("ndvi_stack", sample_dir / NDVI_STACK)
    return items


@pytest.fixture(scope="session")
def lulc_zones(sample_dir: Path) -> dict[str, Any]:
    return json.loads((sample_dir / "lulc_zones_epsg4326.geojson").read_text())


@pytest.fixture(scope="session")
def aoi(sample_dir: Path) -> dict[str, Any]:
    return json.loads((sample_dir / "aoi_epsg4326.geojson").read_text())


ContextFactory = Callable[..., AnalyticsContext]


@pytest.fixture
def make_context(tmp_path: Path) -> ContextFactory:
    def make(
        items: Mapping[str, ItemView] | Sequence[ItemView],
        *,
        workers: int = 2,
        memory_budget_bytes: int = 64 * 1024 * 1024,
    ) -> AnalyticsContext:
        by_id = dict(items) if isinstance(items, Mapping) else {item.id: item for item in items}
        artifacts = tmp_path / "artifacts"
        artifacts.mkdir(exist_ok=True)
        return AnalyticsContext(
            items=by_id,
            artifact_dir=artifacts,
            workers=workers,
            memory_budget_bytes=memory_budget_bytes,
            scratch_dir=tmp_path,
        )

    return make


RasterWriter = Callable[..., Path]


@pytest.fixture
def write_raster(tmp_path: Path) -> RasterWriter:
    """Write (bands, rows, cols) as a house COG; returns its path."""

    def write(
        name: str,
        array: np.ndarray,
        *,
        transform: Affine = UTM33_TRANSFORM,
        crs: str = UTM33,
        nodata: float | None = None,
        descriptions: Sequence[str] | None = None,
        scales: Sequence[float] | None = None,
        band_tags: Sequence[Mapping[str, str]] | None = None,
    ) -> Path:
        if array.ndim == 2:
            array = array[np.newaxis]
        path = tmp_path / name
        write_cog(
            path,
            array,
            crs=crs,
            transform=transform,
            nodata=nodata,
            descriptions=descriptions or [f"band{i + 1}" for i in range(array.shape[0])],
            scales=scales,
            band_tags=band_tags,
        )
        return path

    return write


def lonlat_polygon(transform: Affine, crs: str, pixel_ring: Sequence[tuple[float, float]]) -> list[list[float]]:
    """A ring given in pixel (col, row) coordinates of ``transform`` as lon/lat positions."""
    from pyproj import Transformer

    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    ring = []
    for col, row in pixel_ring:
        x, y = transform @ (col, row)
        lon, lat = to_lonlat.transform(x, y)
        ring.append([lon, lat])
    ring.append(ring[0])
    return ring
