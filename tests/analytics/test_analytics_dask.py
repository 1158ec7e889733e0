"""Analytics on a Dask cluster (two worker processes) give the in-process answers to the last
digit: zonal statistics on one item and on a mosaic, time series over items, change detection.
The mosaic itself is checked against the same raster whole."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from affine import Affine

from geopera_kernel.analytics import AnalyticsContext, registry
from geopera_kernel.analytics.cluster import RemoteValueStore
from geopera_kernel.raster.domain_errors import Code, DomainError
from tests.analytics.conftest import UTM33, UTM33_TRANSFORM, ContextFactory, RasterWriter, lonlat_polygon, make_item
from tests.support.dask_cluster import local_cluster

STATS = ["count", "nodata_count", "min", "max", "mean", "std", "sum", "median"]
PERCENTILES = [0, 5, 33.3, 50, 90, 100]
ROWS, COLS = 1200, 1100
# Four tiles of the raster, overlapping; later tiles hold garbage where an earlier one covers.
TILES = [(0, 700, 0, 650), (0, 700, 600, COLS), (650, ROWS, 0, 650), (650, ROWS, 600, COLS)]
GARBAGE = 1.0e6


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    with local_cluster(2) as address:
        yield address


def on_cluster(ctx: AnalyticsContext, address: str) -> AnalyticsContext:
    return dataclasses.replace(ctx, dask_scheduler=address, artifacts=[])


def in_process(ctx: AnalyticsContext) -> AnalyticsContext:
    return dataclasses.replace(ctx, dask_scheduler=None, artifacts=[])


def values() -> np.ndarray:
    rows, cols = np.mgrid[0:ROWS, 0:COLS]
    data = (np.sin(rows / 37.0) * 900 + np.cos(cols / 23.0) * 700 + rows * 0.3 + cols * 0.11).astype(np.float32)
    data = np.round(data * 8) / 8
    data[300:340, 500:720] = -9999.0  # nodata across the tile seams
    data[800:810, :] = np.nan
    return data.astype(np.float32)


def zones() -> dict[str, Any]:
    def polygon(points: list[tuple[float, float]]) -> dict[str, Any]:
        return {"type": "Polygon", "coordinates": [lonlat_polygon(UTM33_TRANSFORM, UTM33, points)]}

    features = [
        polygon([(40.3, 30.7), (1050.2, 60.1), (990.6, 1150.4), (70.1, 1100.9)]),  # all four tiles
        polygon([(610.2, 100.4), (640.7, 90.2), (660.1, 690.6), (590.3, 720.2)]),  # along a seam
        polygon([(200.5, 200.5), (260.2, 210.1), (230.7, 260.3)]),  # one tile
    ]
    return {
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "properties": {"n": i}, "geometry": g} for i, g in enumerate(features)],
    }


@pytest.fixture
def mosaic(write_raster: RasterWriter) -> tuple[list[Any], Any]:
    """The tiles as items (in priority order), and the whole raster as one item."""
    data = values()
    covered = np.zeros(data.shape, dtype=bool)
    tiles = []
    for number, (r0, r1, c0, c1) in enumerate(TILES):
        tile = data[r0:r1, c0:c1].copy()
        tile[covered[r0:r1, c0:c1]] = GARBAGE
        covered[r0:r1, c0:c1] = True
        transform = UTM33_TRANSFORM * Affine.translation(c0, r0)
        path = write_raster(f"tile{number}.tif", tile, transform=transform, nodata=-9999.0)
        tiles.append(make_item(f"tile{number}", path))
    whole = make_item("whole", write_raster("whole.tif", data, nodata=-9999.0))
    return tiles, whole


def zonal(ctx: AnalyticsContext, **params: Any) -> dict[str, Any]:
    return registry.run("zonal_stats", {"stats": STATS, "percentiles": PERCENTILES, "geometry": zones(), **params}, ctx)


@pytest.mark.parametrize("coverage", ["center", "exact"])
def test_zonal_mosaic_equals_whole_raster_and_cluster_equals_in_process(
    coverage: str,
    mosaic: tuple[list[Any], Any],
    make_context: ContextFactory,
    scheduler: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tiles, whole = mosaic
    ctx = make_context([*tiles, whole])
    ids = [tile.id for tile in tiles]
    local = zonal(in_process(ctx), item_ids=ids, band=1, coverage=coverage, histogram={"bins": 7})
    single = zonal(in_process(ctx), item_id="whole", band=1, coverage=coverage, histogram={"bins": 7})
    assert local["item_ids"] == ids and local["item_id"] is None
    # Exact coverage: the tiles split a zone's boundary pixels' fractions (float32 weights), so
    # weighted figures agree to float32 precision; the center rule counts the very same pixels.
    rel = 1e-6 if coverage == "exact" else 1e-12
    for tiled, plain in zip(local["zones"], single["zones"], strict=True):
        assert tiled["stats"]["count"] > 0 and tiled["stats"]["max"] < GARBAGE  # earlier tiles win
        for name in ("min", "max"):
            assert tiled["stats"][name] == plain["stats"][name], name
        for name in ("count", "nodata_count", "median"):
            assert tiled["stats"][name] == pytest.approx(plain["stats"][name], rel=rel), name
        for name in ("mean", "std", "sum"):  # the same pixels summed in another order
            assert tiled["stats"][name] == pytest.approx(plain["stats"][name], rel=max(rel, 1e-9)), name
        assert [p["value"] for p in tiled["percentiles"]] == pytest.approx(
            [p["value"] for p in plain["percentiles"]], rel=rel
        )
        assert tiled["histogram"]["counts"] == pytest.approx(plain["histogram"]["counts"], rel=max(10 * rel, 1e-9))
    # The cluster: the same answer to the last digit, mosaic and single item; the percentiles
    # of the large zone come from a selection made on the workers (a few buckets' values).
    selected: list[int] = []
    choose = RemoteValueStore.selected

    def counted(store: RemoteValueStore, intervals: list[tuple[int, int]]) -> Iterator[Any]:
        for values, weights in choose(store, intervals):
            selected.append(values.size)
            yield values, weights

    monkeypatch.setattr(RemoteValueStore, "selected", counted)
    assert zonal(on_cluster(ctx, scheduler), item_ids=ids, band=1, coverage=coverage, histogram={"bins": 7}) == local
    if coverage == "center":
        assert 0 < sum(selected) < local["zones"][0]["stats"]["count"] / 100
    assert (
        zonal(on_cluster(ctx, scheduler), item_id="whole", band=1, coverage=coverage, histogram={"bins": 7}) == single
    )


def test_zonal_s2_ndvi_cluster_equals_in_process(
    s2_items: dict, lulc_zones: dict, make_context: ContextFactory, scheduler: str
) -> None:
    ctx = make_context(s2_items)
    for coverage in ("center", "exact"):
        for extra in ({"percentiles": PERCENTILES}, {"stats": ["count", "mean", "std", "min", "max"]}):
            params = {"item_id": "s2_20150711", "index_name": "NDVI", "geometry": lulc_zones, "coverage": coverage}
            params |= extra
            local = registry.run("zonal_stats", params, in_process(ctx))
            assert registry.run("zonal_stats", params, on_cluster(ctx, scheduler)) == local


def test_time_series_cluster_equals_in_process(
    s2_items: dict, aoi: dict, make_context: ContextFactory, scheduler: str
) -> None:
    ctx = make_context(s2_items)
    ids = [item_id for item_id in s2_items if item_id.startswith("s2_")]
    for reducer in ("mean", "median"):
        params = {"item_ids": ids, "index_name": "NDVI", "geometry": aoi, "reducer": reducer}
        local = registry.run("time_series", params, in_process(ctx))
        assert len(local["steps"]) == len(ids)
        assert registry.run("time_series", params, on_cluster(ctx, scheduler)) == local
    stack = {"item_id": "ndvi_stack", "geometry": aoi, "reducer": "median"}
    assert registry.run("time_series", stack, on_cluster(ctx, scheduler)) == registry.run(
        "time_series", stack, in_process(ctx)
    )


def test_change_detection_cluster_equals_in_process(
    write_raster: RasterWriter, make_context: ContextFactory, scheduler: str
) -> None:
    rng = np.random.default_rng(5)
    bands = []
    for _ in range(4):
        bands.append((rng.random((ROWS, COLS)) * 3000 + 200).astype(np.uint16))
    before = np.stack(bands)
    after = before.copy()
    after[3, 100:900, 200:800] = (after[3, 100:900, 200:800] * 0.6).astype(np.uint16)
    descriptions = ["blue", "green", "red", "nir"]
    items = [
        make_item("before", write_raster("before.tif", before, descriptions=descriptions)),
        make_item("after", write_raster("after.tif", after, descriptions=descriptions)),
    ]
    ctx = make_context(items)
    params = {
        "before_item_id": "before",
        "after_item_id": "after",
        "index_name": "ndvi",
        "change_threshold": 0.05,
        "geometry": zones()["features"][0]["geometry"],
        "percentiles": [5, 50, 95],
    }
    local_ctx, cluster_ctx = in_process(ctx), on_cluster(ctx, scheduler)
    local = registry.run("change_detection", params, local_ctx)
    local_cog = Path(local_ctx.artifacts[0].path).read_bytes()
    distributed = registry.run("change_detection", params, cluster_ctx)
    assert distributed == local and local["pixels_read"] > 1_000_000
    assert Path(cluster_ctx.artifacts[0].path).read_bytes() == local_cog


def test_mosaic_grid_checks(
    mosaic: tuple[list[Any], Any], write_raster: RasterWriter, make_context: ContextFactory
) -> None:
    tiles, _ = mosaic
    data = values()[:100, :100]
    shifted = make_item(
        "shifted", write_raster("shifted.tif", data, transform=UTM33_TRANSFORM * Affine.translation(0.5, 0))
    )
    coarse = make_item(
        "coarse", write_raster("coarse.tif", data, transform=Affine(20.0, 0, 465_000.0, 0, -20.0, 5_080_000.0))
    )
    other = make_item("other", write_raster("other.tif", data, crs="EPSG:32634"))
    integer = make_item("integer", write_raster("integer.tif", data.astype(np.float64)))
    ctx = make_context([*tiles, shifted, coarse, other, integer])
    cases = {
        "shifted": "MOSAIC_GRID_MISMATCH",
        "coarse": "MOSAIC_GRID_MISMATCH",
        "other": "MOSAIC_CRS_MISMATCH",
        "integer": "MOSAIC_BAND_MISMATCH",
    }
    for item_id, reason in cases.items():
        with pytest.raises(DomainError) as raised:
            zonal(ctx, item_ids=["tile0", item_id], band=1)
        assert raised.value.code == Code.INVALID_ARGUMENT and raised.value.reason == reason, item_id
        assert raised.value.violations[0].field == "params.item_ids[1]"
    for bad in ({"item_ids": ["tile0"], "item_id": "tile0"}, {"item_ids": ["tile0", "tile0"]}, {"item_ids": []},
                {"item_ids": ["tile0", "tile1"], "all_touched": True}):  # fmt: skip
        with pytest.raises(DomainError) as raised:
            zonal(ctx, band=1, **bad)
        assert raised.value.code == Code.INVALID_ARGUMENT, bad


def test_cluster_failure_is_the_methods_error(
    write_raster: RasterWriter, make_context: ContextFactory, scheduler: str
) -> None:
    """A chunk that fails on a worker raises the method's DomainError in the caller."""
    path = write_raster("broken.tif", values()[:600, :600], nodata=-9999.0)
    item = make_item("broken", path)
    ctx = on_cluster(make_context([item]), scheduler)
    raw = bytearray(path.read_bytes())
    raw[-200_000:] = b"\x00" * 200_000  # the header (read by the caller) survives; tile data does not
    path.write_bytes(bytes(raw))
    with pytest.raises(DomainError) as raised:
        zonal(ctx, item_id="broken", band=1)
    assert raised.value.reason == "UNREADABLE_RASTER"


def _die(datasets: list[Any], task: int) -> int:
    """A chunk function whose worker process dies in the middle of the call."""
    import os

    os._exit(1)


def test_a_worker_dying_mid_call_is_unavailable_not_internal() -> None:
    """A cluster that loses the call's work answers UNAVAILABLE ANALYTICS_CLUSTER_UNAVAILABLE
    (retry later), not a raw Dask error the server would report as INTERNAL."""
    import dask

    from geopera_kernel.analytics.cluster import ChunkJob, run_ordered

    # Dask gives up on a task after it killed this many workers (default 3).
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), local_cluster(1) as address:
        job = ChunkJob((), _die, [1, 2])
        with pytest.raises(DomainError) as caught:
            list(run_ordered([job], workers=1, check_cancelled=lambda: None, scheduler=address))
    assert (caught.value.code, caught.value.reason) == (Code.UNAVAILABLE, "ANALYTICS_CLUSTER_UNAVAILABLE")
    assert address in caught.value.message


def test_a_cluster_reads_vsis3_paths_through_its_own_aws_endpoint(
    s2_items: dict, aoi: dict, make_context: ContextFactory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Stored COGs on S3 are `/vsis3/` paths. A Dask worker is started with the standard AWS
    variables only (`AWS_ENDPOINT_URL`), which GDAL does not read: it derives GDAL's own
    endpoint names itself, and answers as in-process on the local file."""
    from geopera_kernel.raster.s3_endpoint import GDAL_ENDPOINT_VARIABLES, use_endpoint
    from tests.support.s3 import MotoServer

    local = s2_items["s2_20150711"]
    moto = MotoServer(tmp_path_factory.mktemp("moto")).start()
    try:
        moto.client().upload_file(local.assets["data"].path, moto.create_bucket("dask-reads"), "s2.tif")
        with pytest.MonkeyPatch.context() as patch:
            for name in GDAL_ENDPOINT_VARIABLES:
                patch.delenv(name, raising=False)
            for name, value in moto.env("dask-reads").items():
                patch.setenv(name, value)
            with local_cluster(1) as address:
                use_endpoint(moto.endpoint)  # the caller (a server: S3Storage does this) plans chunks too
                asset = dataclasses.replace(local.assets["data"], path="/vsis3/dask-reads/s2.tif")
                remote = dataclasses.replace(local, assets={"data": asset})
                params = {"item_id": local.id, "index_name": "NDVI", "geometry": aoi, "percentiles": [10, 50]}
                on_s3 = registry.run("zonal_stats", params, on_cluster(make_context([remote]), address))
        assert on_s3 == registry.run("zonal_stats", params, in_process(make_context([local])))
    finally:
        moto.stop()
