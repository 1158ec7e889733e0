"""Which pixels of a chunk a polygon covers, and how much.

``center_mask`` follows GDAL's rasterizer (what rasterstats uses): a pixel counts when its
centre is inside, or with ``all_touched`` when the polygon touches it at all.

``exact_coverage`` gives the fraction of every pixel's area inside the polygon (what
exactextract computes), exactly up to floating point. It uses Green's theorem: for the unit
cell [c, c+1] x [r, r+1], with the polygon positively oriented,

    area(P ∩ cell) = -∮_{∂P, c <= x <= c+1} (clamp(y, r, r+1) - r) dx

so every polygon edge, cut at column boundaries into pieces, contributes to the cells of its
own column only: exactly (a closed form) to the rows it spans, and its signed width dx to
every row above it (where the clamp is 1). Down a column the "rows above" part is constant
between the rows pieces start on: ``boundary_coverage`` evaluates it from running sums over
the pieces sorted by (column, row), so only the pixels a piece spans, and runs of a column
partly covered in x (beside a vertical edge), carry fractions; the rest are 0 or 1, filled
with one small-integer pass. The interior is then a mask, reduced as cheaply as the centre
rule's, and only the boundary is weighted — no rasterization, no per-cell geometry
operations, float work proportional to the boundary length.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Final

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

# rasterize warns from worker threads that its scratch in-memory dataset has no geotransform;
# the transform it burns with is the one passed in, so the warning is noise in server logs.
warnings.filterwarnings("ignore", category=NotGeoreferencedWarning, module="rasterio.features")

# Coverage within this of 0 or 1 is floating-point noise from summing edge contributions.
_SNAP: Final = 1e-9


def center_mask(geometry: BaseGeometry, transform: Affine, height: int, width: int, all_touched: bool) -> np.ndarray:
    """Boolean (height, width) mask of the pixels of the grid ``transform`` (the window's, in
    the raster CRS, as rasterstats does) that ``geometry`` (raster CRS) selects."""
    if geometry.is_empty:
        return np.zeros((height, width), dtype=bool)
    burned = rasterio.features.rasterize(
        [(geometry, 1)],
        out_shape=(height, width),
        transform=transform,
        all_touched=all_touched,
        fill=0,
        dtype="uint8",
    )
    return burned.view(bool)


def contains_and_touches(geometry: BaseGeometry, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which ``boxes`` (shapely geometries, same space) ``geometry`` contains and which it touches,
    tested with the geometry prepared once (a prepared geometry is not for sharing between
    threads, so this runs where the plan is made)."""
    shapely.prepare(geometry)
    try:
        return shapely.contains(geometry, boxes), shapely.intersects(geometry, boxes)
    finally:
        shapely.destroy_prepared(geometry)


def pixels_to_crs(geometry: BaseGeometry, transform: Affine) -> BaseGeometry:
    """A pixel-space geometry back in the raster CRS."""
    return shapely.affinity.affine_transform(
        geometry, [transform.a, transform.b, transform.d, transform.e, transform.c, transform.f]
    )


def window_transform(transform: Affine, row0: int, col0: int) -> Affine:
    return transform @ Affine.translation(col0, row0)


# Windows up to this many pixels get their center mask rasterized once, whole, and chunks take
# slices of it: one GDAL call instead of one per crossed chunk (whose fixed cost dominated the
# masks of small areas). Larger windows are rasterized chunk by chunk, so memory stays bounded.
WHOLE_MASK_PIXELS: Final = 16 * 1024 * 1024


def window_center_mask(
    pixel_geometry: BaseGeometry, transform: Affine, window: Window, all_touched: bool
) -> np.ndarray:
    """``center_mask`` of a pixel-space geometry over a whole window of the raster grid
    ``transform`` (the geometry is rasterized in the CRS, as rasterstats does)."""
    row0, col0 = int(window.row_off), int(window.col_off)
    return center_mask(
        pixels_to_crs(pixel_geometry, transform),
        window_transform(transform, row0, col0),
        int(window.height),
        int(window.width),
        all_touched,
    )


def _edges(geometry: BaseGeometry) -> np.ndarray:
    """(n, 4) array of x0, y0, x1, y1 for every ring edge, rings oriented for positive area."""
    parts = shapely.get_parts(geometry)
    polygons = parts[shapely.get_type_id(parts) == shapely.GeometryType.POLYGON]
    if polygons.size == 0:
        return np.empty((0, 4))
    oriented = shapely.orient_polygons(polygons, exterior_cw=False)
    coords, ring_ids = shapely.get_coordinates(shapely.get_rings(oriented), return_index=True)
    same_ring = ring_ids[:-1] == ring_ids[1:]
    return np.column_stack([coords[:-1], coords[1:]])[same_ring]


def _g(y_cut: np.ndarray, dx: np.ndarray, y_min: np.ndarray, y_max: np.ndarray, y_mid: np.ndarray) -> np.ndarray:
    """∫ max(y(x) - y_cut, 0) dx over a straight piece (signed by the direction of dx)."""
    span = y_max - y_min
    partial = dx * np.square(y_max - y_cut) / (2.0 * np.where(span > 0, span, 1.0))
    full = dx * (y_mid - y_cut)
    return np.where(y_cut >= y_max, 0.0, np.where(y_cut <= y_min, full, partial))


@dataclass(frozen=True)
class BoundaryCoverage:
    """A window's coverage split by kind: ``inside``, the pixels wholly inside (weight 1, a
    mask, as cheap to reduce as the centre rule's), and the few pixels the boundary crosses
    with their fractions (``rows``, ``cols``, ``weights``, in row-major order)."""

    inside: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    weights: np.ndarray

    def dense(self) -> np.ndarray:
        coverage = self.inside.astype(np.float64)
        coverage[self.rows, self.cols] = self.weights
        return coverage


def exact_coverage(geometry: BaseGeometry, row0: int, col0: int, height: int, width: int) -> np.ndarray:
    """Float64 (height, width) fraction of each pixel's area inside the pixel-space geometry."""
    return boundary_coverage(geometry, row0, col0, height, width).dense()


def boundary_coverage(geometry: BaseGeometry, row0: int, col0: int, height: int, width: int) -> BoundaryCoverage:
    """``exact_coverage`` as a mask of the pixels wholly inside plus the fractional ones, in
    time proportional to the boundary (and one small integer pass over the window): the dense
    float64 coverage of a 512 x 512 chunk took a dozen passes over 2 MiB arrays, most of them
    spent on pixels whose coverage is exactly 0 or 1."""
    none = np.empty(0, dtype=np.intp)
    empty = BoundaryCoverage(np.zeros((height, width), dtype=bool), none, none, np.empty(0))
    clipped = shapely.clip_by_rect(geometry, col0, row0, col0 + width, row0 + height)
    if clipped.is_empty:
        return empty
    edges = _edges(clipped)
    if edges.size == 0:
        return empty
    # Local coordinates keep magnitudes small (precision); clipping noise is clamped away.
    x0 = np.clip(edges[:, 0] - col0, 0.0, width)
    y0 = np.clip(edges[:, 1] - row0, 0.0, height)
    x1 = np.clip(edges[:, 2] - col0, 0.0, width)
    y1 = np.clip(edges[:, 3] - row0, 0.0, height)
    keep = x0 != x1  # vertical edges have dx = 0 everywhere
    x0, y0, x1, y1 = x0[keep], y0[keep], x1[keep], y1[keep]
    if x0.size == 0:
        return empty

    # Cut edges at column boundaries: one piece per (edge, column) it crosses.
    x_left = np.minimum(x0, x1)
    x_right = np.maximum(x0, x1)
    first_col = np.floor(x_left).astype(np.int64)
    n_cols = np.maximum(np.ceil(x_right).astype(np.int64) - first_col, 1)
    edge = np.repeat(np.arange(x0.size), n_cols)
    col = first_col[edge] + (np.arange(edge.size) - np.repeat(np.cumsum(n_cols) - n_cols, n_cols))
    piece_left = np.maximum(x_left[edge], col)
    piece_right = np.minimum(x_right[edge], col + 1)
    slope = (y1 - y0) / (x1 - x0)
    ya = y0[edge] + (piece_left - x0[edge]) * slope[edge]
    yb = y0[edge] + (piece_right - x0[edge]) * slope[edge]
    dx = (piece_right - piece_left) * np.sign(x1 - x0)[edge]
    nonzero = (dx != 0) & (col >= 0) & (col < width)
    col, ya, yb, dx = col[nonzero], ya[nonzero], yb[nonzero], dx[nonzero]
    y_min = np.clip(np.minimum(ya, yb), 0.0, height)
    y_max = np.clip(np.maximum(ya, yb), 0.0, height)
    y_mid = (y_min + y_max) / 2.0
    top_row = np.floor(y_min).astype(np.int64)

    # Coverage of pixel (r, c) = (sum of dx of the column's pieces with top row <= r) - (the
    # column's sum of dx) - (the exact parts of the pieces spanning row r): running sums over
    # the pieces sorted by (column, top row). Between two top rows a column's level is constant.
    order = np.lexsort((top_row, col))
    col_s, top_s, dx_s = col[order], top_row[order], dx[order]
    prefix = np.concatenate(([0.0], np.cumsum(dx_s)))
    columns = np.arange(width)
    col_start = np.searchsorted(col_s, columns, side="left")
    col_sum = prefix[np.searchsorted(col_s, columns, side="right")] - prefix[col_start]

    sorted_keys = col_s * (height + 1) + top_s

    def level(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The column's level at each (row, col): the fill without the spanning pieces' parts."""
        through = np.searchsorted(sorted_keys, cols * (height + 1) + rows, side="right")
        return prefix[through] - prefix[col_start[cols]] - col_sum[cols]

    # Runs of constant level: from row 0 and from each distinct (column, top row) to the next.
    group_last = np.flatnonzero(np.append((col_s[1:] != col_s[:-1]) | (top_s[1:] != top_s[:-1]), True))
    used_cols = np.unique(col_s)
    run_col = np.concatenate((used_cols, col_s[group_last]))
    run_start = np.concatenate((np.zeros(used_cols.size, dtype=np.int64), top_s[group_last]))
    run_order = np.lexsort((np.arange(run_col.size), run_start, run_col))  # row-0 runs first
    run_col, run_start = run_col[run_order], run_start[run_order]
    run_level = level(run_start, run_col) if run_col.size else np.empty(0)
    same_col_next = np.append(run_col[1:] == run_col[:-1], False)
    run_end = np.where(same_col_next, np.append(run_start[1:], 0), height)
    whole = np.rint(run_level)
    integral = np.abs(run_level - whole) < _SNAP
    whole = np.where(integral, whole, 0.0).astype(np.int64)
    # The runs of a used column tile its rows [0, height) in order, so repeating each run's
    # whole level over its length lays the columns out one after the other (column-major): a
    # cumulative sum of steps down the columns of the whole window cost 1.3 ms per 512 x 512.
    run_lengths = run_end - run_start
    column_levels = np.repeat(whole, run_lengths).reshape(used_cols.size, height)
    inside_t = np.zeros((width, height), dtype=bool)
    inside_t[used_cols] = column_levels == 1
    stacked_runs = (whole > 1) & (run_lengths > 0)

    # Pixels the pieces span: the level plus their exact parts.
    n_rows = np.maximum(np.ceil(y_max).astype(np.int64) - top_row, 1)
    piece = np.repeat(np.arange(col.size), n_rows)
    row = top_row[piece] + (np.arange(piece.size) - np.repeat(np.cumsum(n_rows) - n_rows, n_rows))
    within = row < height
    piece, row = piece[within], row[within]
    r = row.astype(np.float64)
    args = (dx[piece], y_min[piece], y_max[piece], y_mid[piece])
    flat = row * width + col[piece]
    cell_order = np.argsort(flat, kind="stable")
    flat_sorted = flat[cell_order]
    firsts = np.flatnonzero(np.append(True, flat_sorted[1:] != flat_sorted[:-1]))
    exact = np.add.reduceat((_g(r, *args) - _g(r + 1.0, *args))[cell_order], firsts) if firsts.size else np.empty(0)
    span_flat = flat_sorted[firsts]
    span_rows, span_cols = span_flat // width, span_flat % width
    span_cov = level(span_rows, span_cols) - exact

    # Runs at a fractional level (a column partly covered, e.g. beside a vertical edge) are
    # boundary pixels too, minus those the pieces span.
    fractional = ~integral & (run_level > _SNAP) & (run_end > run_start)
    lengths = (run_end - run_start)[fractional]
    frac_cols = np.repeat(run_col[fractional], lengths)
    frac_rows = np.repeat(run_start[fractional], lengths) + (
        np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    )
    frac_weights = np.repeat(run_level[fractional], lengths)
    spanned = np.zeros(height * width, dtype=bool)
    spanned[span_flat] = True
    frac_flat = frac_rows * width + frac_cols
    off_span = ~spanned[frac_flat]

    # Overlapping parts of an invalid multipolygon count twice, as the dense sums did.
    stacked_lengths = run_lengths[stacked_runs]
    stacked_rows = np.repeat(run_start[stacked_runs], stacked_lengths) + (
        np.arange(stacked_lengths.sum()) - np.repeat(np.cumsum(stacked_lengths) - stacked_lengths, stacked_lengths)
    )
    stacked_levels = np.repeat(whole[stacked_runs], stacked_lengths)
    stacked = stacked_rows * width + np.repeat(run_col[stacked_runs], stacked_lengths)
    order = np.argsort(stacked, kind="stable")
    stacked, stacked_levels = stacked[order], stacked_levels[order]
    stacked_off = ~spanned[stacked]
    stacked, stacked_levels = stacked[stacked_off], stacked_levels[stacked_off]
    flats = np.concatenate((span_flat, frac_flat[off_span], stacked))
    weights = np.concatenate((span_cov, frac_weights[off_span], stacked_levels.astype(np.float64)))
    weights[np.abs(weights) < _SNAP] = 0.0
    weights[np.abs(weights - 1.0) < _SNAP] = 1.0
    inside = np.ascontiguousarray(inside_t.T).reshape(-1)
    inside[flats] = weights == 1.0
    keep_frac = (weights > 0) & (weights != 1.0)  # 0 < w < 1, or stacked
    flats, weights = flats[keep_frac], weights[keep_frac]
    row_major = np.argsort(flats, kind="stable")
    flats, weights = flats[row_major], weights[row_major]
    return BoundaryCoverage(inside.reshape(height, width), flats // width, flats % width, weights)
