"""``change_detection``: where a spectral index rose or fell between two items.

The index is computed on both items; difference = after - before on the *before* item's
grid, inside the area (pixel-centre rule). When the grids differ, the after index is
computed on its own grid and warped onto the before grid chunk by chunk with bilinear
resampling (the index is a continuous quantity: nearest would shift edges by up to half a
pixel; bilinear ignores NaN neighbours, so invalid after-pixels do not bleed values).

Pixels compared are those valid in both. increase: difference > threshold; decrease:
difference < -threshold; no_change: the rest. Areas use the before grid's pixel area (see
``areas``). before_mean and after_mean are over the compared pixels.

Artifacts: ``difference_cog``, a float32 COG of the difference over the area's bounding
window (NaN outside the area and where either item is invalid; the house COG profile), and
``quicklook_png``, a diverging-colour preview (red = decrease, blue = increase, symmetric
around 0) with a colour-bar legend, drawn from block means of the difference the workers
accumulate as they go (at most 768 pixels a side; no second read of the COG). Everything is
block-wise: memory does not grow with the area (the difference is staged block by block, in
memory up to 64 MB and on disk beyond, then copied as a COG).
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final

import numpy as np
import rasterio
import rasterio.shutil
from pydantic import BaseModel, Field
from rasterio.io import MemoryFile
from rasterio.windows import Window

from geopera_kernel.analytics.areas import row_areas
from geopera_kernel.analytics.base import AnalyticsContext, AnalyticsMethod
from geopera_kernel.analytics.change_chunks import (
    Chunk,
    ChunkWork,
    PreviewGrid,
    Task,
    Totals,
    on_same_grid,
    plan_chunks,
    window_transform,
)
from geopera_kernel.analytics.cluster import ChunkJob, run_ordered
from geopera_kernel.analytics.geometry import pixel_zones
from geopera_kernel.analytics.indices import get_index
from geopera_kernel.analytics.moments import Moments
from geopera_kernel.analytics.params import (
    GEOMETRY_FIELD,
    BandMapping,
    GeoJSONArea,
    IndexName,
    Params,
    Percentile,
    PercentileValue,
    Resolution,
)
from geopera_kernel.analytics.quantiles import ValueStore
from geopera_kernel.analytics.quicklook import write_quicklook
from geopera_kernel.analytics.reader import (
    COG_COPY_CACHE_MB,
    ChunkRunner,
    bounded_gdal_cache,
    open_meta,
    parallel_map,
    run_beside,
    select_asset,
)
from geopera_kernel.analytics.sources import IndexSource
from geopera_kernel.analytics.zonal import EXAMPLE_POLYGON
from geopera_kernel.raster import COG_PROFILE, MEDIA_TYPE_COG
from geopera_kernel.raster.geo import Zone, parse_area

# Differences up to this size are staged in memory before the COG copy, larger ones on disk.
_MEMORY_STAGING_BYTES: Final = 64 * 1024 * 1024
_RANGE_PERCENTILES: Final = (2.0, 98.0)  # quicklook colour range: robust to outliers


class ChangeDetectionParams(Params):
    before_item_id: str = Field(min_length=1)
    after_item_id: str = Field(min_length=1)
    index_name: IndexName
    change_threshold: float = Field(gt=0, description="|difference| above this is a change")
    geometry: GeoJSONArea
    band_mapping: BandMapping = None
    before_asset_key: str | None = None
    after_asset_key: str | None = None
    percentiles: list[Percentile] = Field(default_factory=lambda: [5.0, 25.0, 50.0, 75.0, 95.0], max_length=101)


class ChangeClass(BaseModel):
    count: int
    fraction: float | None = Field(description="Of the compared pixels; null when none")
    area_m2: float
    area_ha: float


class DifferenceStats(BaseModel):
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    percentiles: list[PercentileValue]


class ChangeDetectionResult(BaseModel):
    before_item_id: str
    after_item_id: str
    index_name: str
    change_threshold: float
    crs: str = Field(description="CRS of the before grid, on which everything is computed")
    resolution: Resolution
    reprojected: bool = Field(description="True when the after item was warped onto the before grid")
    resampling: str | None = Field(description="Resampling used to warp the after item (bilinear)")
    pixel_area_m2: float | None = Field(description="Area of one pixel; null on geographic grids (per row)")
    area_pixels: int = Field(description="Pixels of the before grid inside the area")
    compared_count: int = Field(description="Pixels valid in both items")
    nodata_count: int = Field(description="Pixels inside the area invalid in either item")
    increase: ChangeClass
    decrease: ChangeClass
    no_change: ChangeClass
    difference: DifferenceStats
    before_mean: float | None
    after_mean: float | None
    pixels_read: int
    artifacts: list[str] = Field(description="Keys of the stored artifacts")


def _class(count: int, area_m2: float, compared: int) -> ChangeClass:
    return ChangeClass(
        count=count, fraction=count / compared if compared else None, area_m2=area_m2, area_ha=area_m2 / 10_000.0
    )


def _write_cog(staging: Path | str, destination: Path, workers: int) -> None:
    partial = destination.with_name(f".{destination.name}.partial")
    try:
        # The house COG profile (ZSTD, 512 blocks, overviews, statistics); NUM_THREADS only
        # parallelises compression.
        # GDAL's cache (process-wide, 5% of RAM by default) held at a moderate size: the copy
        # reads the staging file more than once (overviews), and multi-threaded compression
        # crawls with a very small cache.
        with bounded_gdal_cache(COG_COPY_CACHE_MB):
            rasterio.shutil.copy(staging, partial, **COG_PROFILE, NUM_THREADS=str(max(1, workers)))
        os.replace(partial, destination)
    finally:
        partial.unlink(missing_ok=True)


@dataclass(frozen=True)
class _Plan:
    """A call decided from its params and headers: the two sources, the area's window
    of the before grid (None when the area misses it) and its chunks."""

    before: IndexSource
    after: IndexSource
    window: Window | None
    tasks: list[Task]


class ChangeDetection(AnalyticsMethod):
    name: ClassVar[str] = "change_detection"
    description: ClassVar[str] = (
        "Difference of a spectral index between two items (after - before) inside an area: pixels that "
        "increased / decreased by more than change_threshold, or did not change, with counts, fractions "
        "and areas; statistics of the difference; a float32 difference COG and a PNG quicklook."
    )
    input_model: ClassVar[type[BaseModel]] = ChangeDetectionParams
    output_model: ClassVar[type[BaseModel]] = ChangeDetectionResult
    example: ClassVar[dict[str, Any]] = {
        "before_item_id": "itm_before",
        "after_item_id": "itm_after",
        "index_name": "NDVI",
        "change_threshold": 0.1,
        "geometry": EXAMPLE_POLYGON,
    }

    def item_ids(self, params: Any) -> list[str]:
        assert isinstance(params, ChangeDetectionParams)
        return list(dict.fromkeys([params.before_item_id, params.after_item_id]))

    def _plan(self, params: ChangeDetectionParams, ctx: AnalyticsContext) -> _Plan:
        """Everything decided from the params and the headers, before a pixel is read."""
        index = get_index(params.index_name)
        before = open_meta(
            select_asset(ctx.item(params.before_item_id), params.before_asset_key, "params.before_asset_key")
        )
        after = open_meta(
            select_asset(ctx.item(params.after_item_id), params.after_asset_key, "params.after_asset_key")
        )
        before_source = IndexSource.resolve(before, index, params.band_mapping)
        after_source = IndexSource.resolve(after, index, params.band_mapping)
        area = Zone(parse_area(params.geometry, GEOMETRY_FIELD))
        zone = pixel_zones([area], before.crs, before.transform, before.width, before.height)[0]
        tasks = []
        if zone.window is not None:
            width = len(before_source.indexes)
            tasks = plan_chunks(zone.geometry, zone.window, before, width, before_source.read_dtype.itemsize)
        return _Plan(before_source, after_source, zone.window, tasks)

    def pixels_to_read(self, params: Any, ctx: AnalyticsContext) -> int:
        """As `pixels_read` counts them in `_run`: the before-grid window of every chunk read."""
        assert isinstance(params, ChangeDetectionParams)
        tasks = self._plan(params, ctx).tasks
        return sum(int(task.window.width * task.window.height) for task in tasks if not task.skip)

    def execute(self, params: Any, ctx: AnalyticsContext) -> ChangeDetectionResult:
        assert isinstance(params, ChangeDetectionParams)
        plan = self._plan(params, ctx)
        before_source, after_source = plan.before, plan.after
        before, after = before_source.meta, after_source.meta
        same_grid = on_same_grid(before, after)
        geographic = before.crs.is_geographic
        store = ValueStore(
            np.dtype(np.float32), ctx.memory_budget_bytes, ctx.scratch_dir, mapper=parallel_map(ctx.workers)
        )
        totals = Totals()
        moments = {"difference": Moments()}
        artifacts: list[str] = []
        pixels_read = 0
        quantiles: list[float | None] = [None] * (len(params.percentiles) + len(_RANGE_PERCENTILES))
        try:
            if plan.window is not None:
                pixels_read, quantiles = self._run(
                    plan.tasks,
                    plan.window,
                    before_source,
                    after_source,
                    params,
                    ctx,
                    same_grid,
                    geographic,
                    store,
                    totals,
                    moments,
                    artifacts,
                )
        finally:
            store.close()
        difference = moments["difference"]
        compared = int(difference.weight)
        return ChangeDetectionResult(
            before_item_id=params.before_item_id,
            after_item_id=params.after_item_id,
            index_name=params.index_name,
            change_threshold=params.change_threshold,
            crs=before.crs_string,
            resolution=Resolution(x=before.resolution[0], y=before.resolution[1]),
            reprojected=not same_grid,
            resampling=None if same_grid else "bilinear",
            pixel_area_m2=None if geographic else float(row_areas(before, 0, 1)[0]),
            area_pixels=totals.area_pixels,
            compared_count=compared,
            nodata_count=totals.area_pixels - compared,
            increase=_class(totals.counts[0], totals.areas[0], compared),
            decrease=_class(totals.counts[1], totals.areas[1], compared),
            no_change=_class(totals.counts[2], totals.areas[2], compared),
            difference=DifferenceStats(
                mean=difference.average,
                std=difference.std,
                min=None if difference.empty else difference.minimum,
                max=None if difference.empty else difference.maximum,
                percentiles=[
                    PercentileValue(percentile=q, value=v) for q, v in zip(params.percentiles, quantiles, strict=False)
                ],
            ),
            before_mean=totals.before_total / compared if compared else None,
            after_mean=totals.after_total / compared if compared else None,
            pixels_read=pixels_read,
            artifacts=artifacts,
        )

    def _run(
        self,
        tasks: list[Task],
        window: Window,
        before_source: IndexSource,
        after_source: IndexSource,
        params: ChangeDetectionParams,
        ctx: AnalyticsContext,
        same_grid: bool,
        geographic: bool,
        store: ValueStore,
        totals: Totals,
        moments: dict[str, Moments],
        artifacts: list[str],
    ) -> tuple[int, list[float | None]]:
        """Pixels read and the quantiles; stores both artifacts."""
        before = before_source.meta
        row0, col0 = int(window.row_off), int(window.col_off)
        pixels_read = 0
        # Values are always kept: the quicklook's colour range comes from their percentiles.
        grid = PreviewGrid.of(window)
        preview_sums = np.zeros((grid.rows, grid.cols), dtype=np.float64)
        preview_counts = np.zeros((grid.rows, grid.cols), dtype=np.int64)
        work = [task for task in tasks if not task.skip]
        chunk_work = ChunkWork(before_source, after_source, params.change_threshold, same_grid, geographic, True, grid)
        ctx.artifact_dir.mkdir(parents=True, exist_ok=True)
        in_memory = int(window.width) * int(window.height) * 4 <= _MEMORY_STAGING_BYTES
        with (
            contextlib.nullcontext(None)
            if in_memory
            else tempfile.TemporaryDirectory(prefix=".staging-", dir=ctx.artifact_dir) as staging_dir,
            MemoryFile() as memory,
        ):
            # Small areas stage the difference in memory (no disk round trip before the COG copy).
            staging = memory.name if staging_dir is None else str(Path(staging_dir) / "difference.tif")
            profile = {
                "driver": "GTiff",
                "width": int(window.width),
                "height": int(window.height),
                "count": 1,
                "dtype": "float32",
                "crs": before.crs,
                "transform": window_transform(window, before.transform),
                "nodata": np.nan,
                "BIGTIFF": "IF_SAFER",
                # In memory, strips (nothing padded to 512 x 512 blocks); on disk, tiles.
                **({} if staging_dir is None else {"tiled": True, "blockxsize": 512, "blockysize": 512}),
            }
            with rasterio.open(staging, "w", **profile) as output:
                for task in tasks:
                    if task.skip:
                        empty = np.full((int(task.window.height), int(task.window.width)), np.nan, np.float32)
                        output.write(empty, 1, window=self._relative(task.window, row0, col0))
                runner = ChunkRunner([before.path, after_source.meta.path], ctx.workers, ctx.check_cancelled)
                for task, chunk in zip(work, self._chunks(runner, chunk_work, work, ctx.dask_scheduler), strict=True):
                    pixels_read += int(task.window.width * task.window.height)
                    output.write(chunk.difference, 1, window=self._relative(task.window, row0, col0))
                    totals.add(chunk)
                    moments["difference"].merge(chunk.difference_moments)
                    if chunk.values is not None:
                        store.add(chunk.values)
                    cells = chunk.preview
                    rows, cols = cells.sums.shape
                    preview_sums[cells.row : cells.row + rows, cells.col : cells.col + cols] += cells.sums
                    preview_counts[cells.row : cells.row + rows, cells.col : cells.col + cols] += cells.counts
                output.set_band_description(1, f"{params.index_name} difference (after - before)")
                output.update_tags(
                    1,
                    BEFORE_ITEM_ID=params.before_item_id,
                    AFTER_ITEM_ID=params.after_item_id,
                    CHANGE_THRESHOLD=str(params.change_threshold),
                )
            ctx.check_cancelled()
            # Percentiles before the COG copy, so the stored values are freed before GDAL's
            # cache fills up (peak memory is the larger of the two, not their sum).
            quantiles = store.percentiles([*params.percentiles, *_RANGE_PERCENTILES])
            store.close()
            low, high = quantiles[-2:]
            limit = max(abs(low or 0.0), abs(high or 0.0), params.change_threshold)
            with np.errstate(invalid="ignore", divide="ignore"):
                preview = (preview_sums / preview_counts).astype(np.float32)  # 0 / 0: NaN, transparent
            quicklook = ctx.artifact_dir / "quicklook.png"
            title = f"{params.index_name} change (after - before), colour range +/-{limit:.2f}"
            # The PNG is drawn on a pool thread while this one writes the COG.
            drawing = run_beside(ctx.workers, write_quicklook, quicklook, preview, limit, title)
            destination = ctx.artifact_dir / "difference.tif"
            _write_cog(staging, destination, ctx.workers)
            drawing.result()
        ctx.add_artifact(
            "difference_cog", destination, MEDIA_TYPE_COG, f"{params.index_name} difference (after - before)"
        )
        ctx.add_artifact("quicklook_png", quicklook, "image/png", f"{params.index_name} change quicklook")
        artifacts.extend(["difference_cog", "quicklook_png"])
        return pixels_read, quantiles

    @staticmethod
    def _chunks(runner: ChunkRunner, work: ChunkWork, tasks: list[Task], scheduler: str | None) -> Iterator[Chunk]:
        """Each task's chunk, in order: on the Dask cluster when there is one. A lone chunk
        in-process reads its two items on two threads."""
        if scheduler:
            job = ChunkJob(runner.paths, work, tasks)
            ordered = run_ordered(
                [job], workers=runner.workers, check_cancelled=runner.check_cancelled, scheduler=scheduler
            )
            yield from (chunk for _, chunk, _ in ordered)
            return
        if len(tasks) != 1 or runner.workers == 1:
            yield from runner.map(work, tasks)
            return
        task = tasks[0]
        halves = [functools.partial(work.before, task=task), functools.partial(work.after, task=task)]
        before_pair, after_pair = runner.map(lambda datasets, half: half(datasets), halves)
        yield work.combine(task, before_pair, after_pair)

    @staticmethod
    def _relative(window: Window, row0: int, col0: int) -> Window:
        return Window(int(window.col_off) - col0, int(window.row_off) - row0, window.width, window.height)
