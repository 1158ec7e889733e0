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
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final

import numpy as np
import rasterio
import rasterio.shutil
import shapely
from affine import Affine
from pydantic import BaseModel, Field
from rasterio.enums import Resampling
from rasterio.io import DatasetReader, MemoryFile
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from geopera_kernel.raster import COG_PROFILE, MEDIA_TYPE_COG
from geopera_kernel.raster.geo import Zone, parse_area
from geopera_kernel.server.analytics.areas import row_areas
from geopera_kernel.server.analytics.base import AnalyticsContext, AnalyticsMethod
from geopera_kernel.server.analytics.coverage import (
    WHOLE_MASK_PIXELS,
    center_mask,
    contains_and_touches,
    pixels_to_crs,
    window_center_mask,
)
from geopera_kernel.server.analytics.geometry import pixel_zones
from geopera_kernel.server.analytics.indices import get_index
from geopera_kernel.server.analytics.moments import Moments
from geopera_kernel.server.analytics.params import (
    GEOMETRY_FIELD,
    BandMapping,
    GeoJSONArea,
    IndexName,
    Params,
    Percentile,
    PercentileValue,
    Resolution,
)
from geopera_kernel.server.analytics.quantiles import StoredPart, ValueStore
from geopera_kernel.server.analytics.quicklook import write_quicklook
from geopera_kernel.server.analytics.reader import (
    COG_COPY_CACHE_MB,
    ChunkRunner,
    RasterMeta,
    bounded_gdal_cache,
    chunk_windows,
    open_meta,
    parallel_map,
    run_beside,
    select_asset,
)
from geopera_kernel.server.analytics.sources import IndexSource
from geopera_kernel.server.analytics.zonal import EXAMPLE_POLYGON

# Differences up to this size are staged in memory before the COG copy, larger ones on disk.
_MEMORY_STAGING_BYTES: Final = 64 * 1024 * 1024
_QUICKLOOK_MAX: Final = 768  # longest side of the PNG map, pixels (PNG encoding time grows with it)
_WARP_MARGIN: Final = 2  # source pixels around a chunk's footprint, for bilinear neighbours
_CLIP_MARGIN: Final = 2
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


@dataclass(frozen=True)
class _Task:
    window: Window  # absolute, before grid
    geometry: BaseGeometry | None  # None: the area covers the whole chunk
    skip: bool = False  # outside the area: written as NaN, not read
    mask: np.ndarray | None = None  # the chunk's slice of the area's precomputed center mask


@dataclass(frozen=True)
class _PreviewGrid:
    """The quicklook's grid: blocks of ``factor`` x ``factor`` pixels of the area's window."""

    row0: int
    col0: int
    rows: int
    cols: int
    factor: int

    @classmethod
    def of(cls, window: Window) -> _PreviewGrid:
        height, width = int(window.height), int(window.width)
        factor = max(1, math.ceil(max(height, width) / _QUICKLOOK_MAX))
        return cls(int(window.row_off), int(window.col_off), -(-height // factor), -(-width // factor), factor)


@dataclass
class _PreviewPart:
    row: int  # first preview row / column this chunk touches
    col: int
    sums: np.ndarray  # sum of the valid differences of each preview cell it touches
    counts: np.ndarray  # how many there were


def _preview_part(difference: np.ndarray, window: Window, grid: _PreviewGrid) -> _PreviewPart:
    """Block sums and counts of a chunk's valid differences on the preview grid (a chunk's
    edges need not fall on block edges: cells it shares with a neighbour are summed by both)."""
    valid = ~np.isnan(difference)
    filled = np.where(valid, difference, np.float32(0))
    row_cells = (np.arange(int(window.height)) + int(window.row_off) - grid.row0) // grid.factor
    col_cells = (np.arange(int(window.width)) + int(window.col_off) - grid.col0) // grid.factor
    row_starts = np.flatnonzero(np.concatenate(([True], row_cells[1:] != row_cells[:-1])))
    col_starts = np.flatnonzero(np.concatenate(([True], col_cells[1:] != col_cells[:-1])))

    def block_sum(values: np.ndarray, dtype: type) -> np.ndarray:
        rows = np.add.reduceat(values, row_starts, axis=0, dtype=dtype)
        return np.add.reduceat(rows, col_starts, axis=1, dtype=dtype)

    # float32 sums: a preview cell holds at most a few hundred values.
    sums = block_sum(filled, np.float32)
    return _PreviewPart(int(row_cells[0]), int(col_cells[0]), sums, block_sum(valid.view(np.uint8), np.int32))


@dataclass
class _Chunk:
    difference: np.ndarray
    area_pixels: int
    counts: tuple[int, int, int]  # increase, decrease, no change
    areas: tuple[float, float, float]
    difference_moments: Moments
    before_total: float  # sums of the compared pixels' indexes (their count is the difference's)
    after_total: float
    values: StoredPart | None
    preview: _PreviewPart


@dataclass
class _Totals:
    area_pixels: int = 0
    counts: tuple[int, int, int] = (0, 0, 0)
    areas: tuple[float, float, float] = (0.0, 0.0, 0.0)
    before_total: float = 0.0
    after_total: float = 0.0

    def add(self, chunk: _Chunk) -> None:
        self.area_pixels += chunk.area_pixels
        (c0, c1, c2), (d0, d1, d2) = self.counts, chunk.counts
        self.counts = (c0 + d0, c1 + d1, c2 + d2)
        (a0, a1, a2), (b0, b1, b2) = self.areas, chunk.areas
        self.areas = (a0 + b0, a1 + b1, a2 + b2)
        self.before_total += chunk.before_total
        self.after_total += chunk.after_total


def window_transform(window: Window, transform: Affine) -> Affine:
    return transform @ Affine.translation(window.col_off, window.row_off)


def _pixel_window(bounds: tuple[float, float, float, float], transform: Affine) -> tuple[float, ...]:
    """col_min, row_min, col_max, row_max of a bounding box in a (north-up or not) grid."""
    inverse = ~transform
    left, bottom, right, top = bounds
    corners = [inverse @ (x, y) for x in (left, right) for y in (bottom, top)]
    cols = [c for c, _ in corners]
    rows = [r for _, r in corners]
    return min(cols), min(rows), max(cols), max(rows)


def _same_grid(before: RasterMeta, after: RasterMeta) -> bool:
    return (
        before.crs == after.crs
        and before.transform.almost_equals(after.transform, precision=1e-9)
        and before.width == after.width
        and before.height == after.height
    )


def _after_on_before_grid(
    after_source: IndexSource, dataset: DatasetReader, before: RasterMeta, window: Window
) -> np.ndarray:
    """The after index (NaN where invalid) warped onto one chunk of the before grid."""
    after = after_source.meta
    rows, cols = int(window.height), int(window.width)
    destination = np.full((rows, cols), np.nan, dtype=np.float32)
    destination_transform = window_transform(window, before.transform)
    corners = [destination_transform @ (c, r) for c in (0, cols) for r in (0, rows)]
    xs, ys = [x for x, _ in corners], [y for _, y in corners]
    bounds = transform_bounds(before.crs, after.crs, min(xs), min(ys), max(xs), max(ys), densify_pts=21)
    col_min, row_min, col_max, row_max = _pixel_window(bounds, after.transform)
    col0 = max(0, math.floor(col_min) - _WARP_MARGIN)
    row0 = max(0, math.floor(row_min) - _WARP_MARGIN)
    col1 = min(after.width, math.ceil(col_max) + _WARP_MARGIN)
    row1 = min(after.height, math.ceil(row_max) + _WARP_MARGIN)
    if col1 <= col0 or row1 <= row0:
        return destination
    source_window = Window(col0, row0, col1 - col0, row1 - row0)
    raw = dataset.read(list(after_source.indexes), window=source_window)
    values, valid = after_source.compute(raw)
    source = np.where(valid[0], values[0], np.float32(np.nan)).astype(np.float32, copy=False)
    reproject(
        source=source,
        destination=destination,
        src_transform=window_transform(source_window, after.transform),
        src_crs=after.crs,
        src_nodata=np.nan,
        dst_transform=destination_transform,
        dst_crs=before.crs,
        dst_nodata=np.nan,
        resampling=Resampling.bilinear,
        num_threads=1,
    )
    return destination


class _ChunkWork:
    """The work of one chunk: the before and after index (each from its own item, so a
    one-chunk call can read them on two threads), then everything computed from both."""

    def __init__(
        self,
        before_source: IndexSource,
        after_source: IndexSource,
        threshold: float,
        same_grid: bool,
        geographic: bool,
        keep_values: bool,
        preview: _PreviewGrid,
    ) -> None:
        self.before_source, self.after_source = before_source, after_source
        self.same_grid, self.keep_values, self.preview = same_grid, keep_values, preview
        self.grid = before_source.meta
        self.constant_area = None if geographic else float(row_areas(self.grid, 0, 1)[0])
        self.limit = np.float32(threshold)

    def before(self, datasets: list[DatasetReader], task: _Task) -> tuple[np.ndarray, np.ndarray]:
        values, valid = self.before_source.compute(
            datasets[0].read(list(self.before_source.indexes), window=task.window)
        )
        return values[0], valid[0]

    def after(self, datasets: list[DatasetReader], task: _Task) -> tuple[np.ndarray, np.ndarray]:
        if self.same_grid:
            values, valid = self.after_source.compute(
                datasets[1].read(list(self.after_source.indexes), window=task.window)
            )
            return values[0], valid[0]
        after_index = _after_on_before_grid(self.after_source, datasets[1], self.grid, task.window)
        return after_index, ~np.isnan(after_index)

    def __call__(self, datasets: list[DatasetReader], task: _Task) -> _Chunk:
        return self.combine(task, self.before(datasets, task), self.after(datasets, task))

    def combine(
        self, task: _Task, before_pair: tuple[np.ndarray, np.ndarray], after_pair: tuple[np.ndarray, np.ndarray]
    ) -> _Chunk:
        (before_index, before_valid), (after_index, after_ok) = before_pair, after_pair
        window, limit = task.window, self.limit
        rows, cols = int(window.height), int(window.width)
        compared = before_valid & after_ok
        if task.geometry is None and task.mask is None:
            area_pixels = rows * cols
        else:
            if task.mask is not None:
                inside = task.mask
            else:
                assert task.geometry is not None  # both None is the whole chunk, above
                inside = center_mask(task.geometry, window_transform(window, self.grid.transform), rows, cols, False)
            compared &= inside
            area_pixels = int(np.count_nonzero(inside))
        difference = after_index - before_index
        difference[~compared] = np.nan
        chosen = difference[compared]
        increase = chosen > limit
        decrease = chosen < -limit
        n_increase, n_decrease = int(np.count_nonzero(increase)), int(np.count_nonzero(decrease))
        n_same = int(chosen.size) - n_increase - n_decrease
        if self.constant_area is not None:
            area = self.constant_area
            areas = (n_increase * area, n_decrease * area, n_same * area)
        else:
            per_row = row_areas(self.grid, int(window.row_off), rows)
            up_rows = np.count_nonzero(difference > limit, axis=1)
            down_rows = np.count_nonzero(difference < -limit, axis=1)
            same_rows = np.count_nonzero(compared, axis=1) - up_rows - down_rows
            areas = (float(up_rows @ per_row), float(down_rows @ per_row), float(same_rows @ per_row))
        part = StoredPart.make(chosen, None, np.dtype(np.float32)) if self.keep_values and chosen.size else None
        return _Chunk(
            difference=difference,
            area_pixels=area_pixels,
            counts=(n_increase, n_decrease, n_same),
            areas=areas,
            difference_moments=Moments.of(chosen),
            before_total=float(np.sum(before_index[compared], dtype=np.float64)),
            after_total=float(np.sum(after_index[compared], dtype=np.float64)),
            values=part,
            preview=_preview_part(difference, window, self.preview),
        )


def _plan(geometry: BaseGeometry, window: Window, meta: RasterMeta, band_count: int, itemsize: int) -> list[_Task]:
    chunks = chunk_windows(window, meta.block_shape, band_count, itemsize)
    boxes = shapely.box(
        [w.col_off for w in chunks],
        [w.row_off for w in chunks],
        [w.col_off + w.width for w in chunks],
        [w.row_off + w.height for w in chunks],
    )
    inside, touching = contains_and_touches(geometry, boxes)
    row0, col0 = int(window.row_off), int(window.col_off)
    area_mask = None
    if int(window.width) * int(window.height) <= WHOLE_MASK_PIXELS:
        area_mask = window_center_mask(geometry, meta.transform, window, False)
    tasks = []
    for chunk, full, touched in zip(chunks, inside, touching, strict=True):
        if not touched:
            tasks.append(_Task(chunk, None, skip=True))
        elif full:
            tasks.append(_Task(chunk, None))
        elif area_mask is not None:
            r0, c0 = int(chunk.row_off) - row0, int(chunk.col_off) - col0
            mask = area_mask[r0 : r0 + int(chunk.height), c0 : c0 + int(chunk.width)]
            tasks.append(_Task(chunk, None, skip=not mask.any(), mask=mask))
        else:
            c0, r0 = chunk.col_off, chunk.row_off
            clipped = shapely.clip_by_rect(
                geometry,
                c0 - _CLIP_MARGIN,
                r0 - _CLIP_MARGIN,
                c0 + chunk.width + _CLIP_MARGIN,
                r0 + chunk.height + _CLIP_MARGIN,
            )
            tasks.append(_Task(chunk, pixels_to_crs(clipped, meta.transform), skip=clipped.is_empty))
    return tasks


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

    def execute(self, params: Any, ctx: AnalyticsContext) -> ChangeDetectionResult:
        assert isinstance(params, ChangeDetectionParams)
        index = get_index(params.index_name)
        before = open_meta(
            select_asset(ctx.item(params.before_item_id), params.before_asset_key, "params.before_asset_key")
        )
        after = open_meta(
            select_asset(ctx.item(params.after_item_id), params.after_asset_key, "params.after_asset_key")
        )
        before_source = IndexSource.resolve(before, index, params.band_mapping)
        after_source = IndexSource.resolve(after, index, params.band_mapping)
        same_grid = _same_grid(before, after)
        geographic = before.crs.is_geographic
        area = Zone(parse_area(params.geometry, GEOMETRY_FIELD))
        zone = pixel_zones([area], before.crs, before.transform, before.width, before.height)[0]
        store = ValueStore(
            np.dtype(np.float32), ctx.memory_budget_bytes, ctx.scratch_dir, mapper=parallel_map(ctx.workers)
        )
        totals = _Totals()
        moments = {"difference": Moments()}
        artifacts: list[str] = []
        pixels_read = 0
        quantiles: list[float | None] = [None] * (len(params.percentiles) + len(_RANGE_PERCENTILES))
        try:
            if zone.window is not None:
                tasks = _plan(
                    zone.geometry, zone.window, before, len(before_source.indexes), before_source.read_dtype.itemsize
                )
                pixels_read, quantiles = self._run(
                    tasks,
                    zone.window,
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
        tasks: list[_Task],
        window: Window,
        before_source: IndexSource,
        after_source: IndexSource,
        params: ChangeDetectionParams,
        ctx: AnalyticsContext,
        same_grid: bool,
        geographic: bool,
        store: ValueStore,
        totals: _Totals,
        moments: dict[str, Moments],
        artifacts: list[str],
    ) -> tuple[int, list[float | None]]:
        """Pixels read and the quantiles; stores both artifacts."""
        before = before_source.meta
        row0, col0 = int(window.row_off), int(window.col_off)
        pixels_read = 0
        # Values are always kept: the quicklook's colour range comes from their percentiles.
        grid = _PreviewGrid.of(window)
        preview_sums = np.zeros((grid.rows, grid.cols), dtype=np.float64)
        preview_counts = np.zeros((grid.rows, grid.cols), dtype=np.int64)
        work = [task for task in tasks if not task.skip]
        chunk_work = _ChunkWork(before_source, after_source, params.change_threshold, same_grid, geographic, True, grid)
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
                for task, chunk in zip(work, self._chunks(runner, chunk_work, work), strict=True):
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
    def _chunks(runner: ChunkRunner, work: _ChunkWork, tasks: list[_Task]) -> Iterator[_Chunk]:
        """Each task's chunk, in order. A lone chunk reads its two items on two threads."""
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
