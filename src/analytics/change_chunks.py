"""``change_detection``'s work per chunk of the before grid: planning the chunks of the area's
window, reading both indexes (warping the after one when the grids differ), and everything
computed from a chunk (difference, classes, areas, moments, preview block sums).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import shapely
from affine import Affine
from rasterio.enums import Resampling
from rasterio.io import DatasetReader
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from geopera_kernel.analytics.areas import row_areas
from geopera_kernel.analytics.coverage import (
    WHOLE_MASK_PIXELS,
    center_mask,
    contains_and_touches,
    pixels_to_crs,
    window_center_mask,
)
from geopera_kernel.analytics.moments import Moments
from geopera_kernel.analytics.quantiles import StoredPart
from geopera_kernel.analytics.reader import RasterMeta, chunk_windows
from geopera_kernel.analytics.sources import IndexSource

_QUICKLOOK_MAX: Final = 768  # longest side of the PNG map, pixels (PNG encoding time grows with it)
_WARP_MARGIN: Final = 2  # source pixels around a chunk's footprint, for bilinear neighbours
_CLIP_MARGIN: Final = 2


@dataclass(frozen=True)
class Task:
    window: Window  # absolute, before grid
    geometry: BaseGeometry | None  # None: the area covers the whole chunk
    skip: bool = False  # outside the area: written as NaN, not read
    mask: np.ndarray | None = None  # the chunk's slice of the area's precomputed center mask


@dataclass(frozen=True)
class PreviewGrid:
    """The quicklook's grid: blocks of ``factor`` x ``factor`` pixels of the area's window."""

    row0: int
    col0: int
    rows: int
    cols: int
    factor: int

    @classmethod
    def of(cls, window: Window) -> PreviewGrid:
        height, width = int(window.height), int(window.width)
        factor = max(1, math.ceil(max(height, width) / _QUICKLOOK_MAX))
        return cls(int(window.row_off), int(window.col_off), -(-height // factor), -(-width // factor), factor)


@dataclass
class PreviewPart:
    row: int  # first preview row / column this chunk touches
    col: int
    sums: np.ndarray  # sum of the valid differences of each preview cell it touches
    counts: np.ndarray  # how many there were


def preview_part(difference: np.ndarray, window: Window, grid: PreviewGrid) -> PreviewPart:
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
    return PreviewPart(int(row_cells[0]), int(col_cells[0]), sums, block_sum(valid.view(np.uint8), np.int32))


@dataclass
class Chunk:
    difference: np.ndarray
    area_pixels: int
    counts: tuple[int, int, int]  # increase, decrease, no change
    areas: tuple[float, float, float]
    difference_moments: Moments
    before_total: float  # sums of the compared pixels' indexes (their count is the difference's)
    after_total: float
    values: StoredPart | None
    preview: PreviewPart


@dataclass
class Totals:
    area_pixels: int = 0
    counts: tuple[int, int, int] = (0, 0, 0)
    areas: tuple[float, float, float] = (0.0, 0.0, 0.0)
    before_total: float = 0.0
    after_total: float = 0.0

    def add(self, chunk: Chunk) -> None:
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


def on_same_grid(before: RasterMeta, after: RasterMeta) -> bool:
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


class ChunkWork:
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
        preview: PreviewGrid,
    ) -> None:
        self.before_source, self.after_source = before_source, after_source
        self.same_grid, self.keep_values, self.preview = same_grid, keep_values, preview
        self.grid = before_source.meta
        self.constant_area = None if geographic else float(row_areas(self.grid, 0, 1)[0])
        self.limit = np.float32(threshold)

    def before(self, datasets: list[DatasetReader], task: Task) -> tuple[np.ndarray, np.ndarray]:
        values, valid = self.before_source.compute(
            datasets[0].read(list(self.before_source.indexes), window=task.window)
        )
        return values[0], valid[0]

    def after(self, datasets: list[DatasetReader], task: Task) -> tuple[np.ndarray, np.ndarray]:
        if self.same_grid:
            values, valid = self.after_source.compute(
                datasets[1].read(list(self.after_source.indexes), window=task.window)
            )
            return values[0], valid[0]
        after_index = _after_on_before_grid(self.after_source, datasets[1], self.grid, task.window)
        return after_index, ~np.isnan(after_index)

    def __call__(self, datasets: list[DatasetReader], task: Task) -> Chunk:
        return self.combine(task, self.before(datasets, task), self.after(datasets, task))

    def combine(
        self, task: Task, before_pair: tuple[np.ndarray, np.ndarray], after_pair: tuple[np.ndarray, np.ndarray]
    ) -> Chunk:
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
        return Chunk(
            difference=difference,
            area_pixels=area_pixels,
            counts=(n_increase, n_decrease, n_same),
            areas=areas,
            difference_moments=Moments.of(chosen),
            before_total=float(np.sum(before_index[compared], dtype=np.float64)),
            after_total=float(np.sum(after_index[compared], dtype=np.float64)),
            values=part,
            preview=preview_part(difference, window, self.preview),
        )


def plan_chunks(geometry: BaseGeometry, window: Window, meta: RasterMeta, band_count: int, itemsize: int) -> list[Task]:
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
            tasks.append(Task(chunk, None, skip=True))
        elif full:
            tasks.append(Task(chunk, None))
        elif area_mask is not None:
            r0, c0 = int(chunk.row_off) - row0, int(chunk.col_off) - col0
            mask = area_mask[r0 : r0 + int(chunk.height), c0 : c0 + int(chunk.width)]
            tasks.append(Task(chunk, None, skip=not mask.any(), mask=mask))
        else:
            c0, r0 = chunk.col_off, chunk.row_off
            clipped = shapely.clip_by_rect(
                geometry,
                c0 - _CLIP_MARGIN,
                r0 - _CLIP_MARGIN,
                c0 + chunk.width + _CLIP_MARGIN,
                r0 + chunk.height + _CLIP_MARGIN,
            )
            tasks.append(Task(chunk, pixels_to_crs(clipped, meta.transform), skip=clipped.is_empty))
    return tasks
