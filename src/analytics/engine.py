"""The zonal reduction engine shared by zonal_stats and time_series.

Plan (main thread): the union of the zones' pixel windows is cut into block-aligned chunks;
for every (chunk, zone) pair the zone either covers the chunk part entirely (no mask needed),
misses it (skipped), or crosses it (the zone is clipped to the chunk here, so workers never
share a geometry). Chunks no zone touches are never read.

Run (worker threads, see ``reader.ChunkRunner``): read the chunk once, build each zone's mask
or coverage fractions, then strip by strip (a few tens of thousands of pixels, so the numpy
passes stay in the CPU cache) compute the source's layers and reduce every layer to ``Moments``
plus, when quantiles are wanted, the valid values. The main thread merges the
partial results in chunk order, so results do not depend on thread timing.

(About 580 lines, kept together: planning, the two chunk kernels and the ordered merge share
the private task and part types; the merge is what makes the Dask path equal the in-process one.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import shapely
from affine import Affine
from rasterio.io import DatasetReader
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from geopera_kernel.analytics.base import AnalyticsContext
from geopera_kernel.analytics.cluster import ChunkJob, RemoteValueStore, run_ordered
from geopera_kernel.analytics.coverage import (
    WHOLE_MASK_PIXELS,
    BoundaryCoverage,
    boundary_coverage,
    center_mask,
    contains_and_touches,
    pixels_to_crs,
    window_center_mask,
    window_transform,
)
from geopera_kernel.analytics.geometry import PixelZone
from geopera_kernel.analytics.moments import Moments
from geopera_kernel.analytics.quantiles import StoredPart, ValueStore, bucket_histogram
from geopera_kernel.analytics.reader import chunk_windows, parallel_map
from geopera_kernel.analytics.sources import PixelSource, Scratch

Coverage = Literal["center", "exact"]
# Clipping margin (pixels) for center masks: far enough that clip edges touch no chunk pixel.
_CLIP_MARGIN = 2
# A chunk is computed and reduced in strips of about this many pixels: the dozen numpy passes
# over a strip's arrays then run in the CPU cache, where over a whole 512 x 512 chunk (1 MiB per
# float32 array) each pass went to memory (a chunk's NDVI statistics took 1.3 ms, in 32k-pixel
# strips 0.75 ms). Not smaller: each strip costs Python work holding the GIL, and with two
# threads on two cores 32k-pixel strips made a whole-tile call 10-15% slower in wall time than
# 128k-pixel ones (1.19-1.31 s against 1.08-1.10 s, same CPU), while 512 x 512 chunks whole
# lose the cache (1.10-1.12 s).
_STRIP_PIXELS = 128 * 1024
# A zone whose window is at most about one chunk gets its center mask rasterized whole, here (one
# GDAL call instead of one per crossed chunk, whose fixed cost dominates small areas). A larger
# zone's mask is rasterized chunk by chunk in the worker threads: done here, before any chunk is
# read, a 100 km² mask (2.5-3 ms) held up the whole call (10% of it).
_WHOLE_MASK_ZONE_PIXELS = 512 * 512
# Chunks in flight per thread when results are only moments (see ``_ahead``).
_AHEAD_SMALL_RESULTS = 16


@dataclass(frozen=True)
class ReduceOptions:
    coverage: Coverage = "center"
    all_touched: bool = False
    keep_values: bool = False  # store valid values (percentiles, median, histograms)


@dataclass
class LayerResult:
    moments: Moments
    store: ValueStore | None


@dataclass
class ZoneResult:
    zone: PixelZone
    layers: list[LayerResult]
    pixels_read: int = 0


@dataclass
class Outcome:
    zones: list[ZoneResult]
    pixels_read: int
    chunks_read: int

    def close(self) -> None:
        for zone in self.zones:
            for layer in zone.layers:
                if layer.store is not None:
                    layer.store.close()


@dataclass(frozen=True)
class _ZonePart:
    zone: int
    window: tuple[int, int, int, int]  # row0, col0, rows, cols (absolute pixels)
    geometry: BaseGeometry | None  # None: the zone covers every pixel of the window
    mask: np.ndarray | None = None  # the window's slice of the zone's center mask, when precomputed


@dataclass(frozen=True)
class _Task:
    window: Window
    parts: tuple[_ZonePart, ...]


@dataclass(frozen=True)
class _KeptSummary:
    """What the caller receives of a part's kept values left on a Dask worker."""

    size: int
    histogram: np.ndarray


@dataclass
class _PartResult:
    zone: int
    layers: list[tuple[Moments, StoredPart | _KeptSummary | None]]
    pixels: int


def _lighten(results: list[list[_PartResult]]) -> list[list[_PartResult]]:
    """A batch's results with every kept part replaced by its size and bucket histogram."""

    def light(stored: StoredPart | _KeptSummary | None) -> StoredPart | _KeptSummary | None:
        if not isinstance(stored, StoredPart):
            return stored
        histogram = stored.histogram if stored.histogram is not None else bucket_histogram(stored.values)
        return _KeptSummary(stored.size, histogram)

    return [
        [
            _PartResult(part.zone, [(moments, light(stored)) for moments, stored in part.layers], part.pixels)
            for part in parts
        ]
        for parts in results
    ]


def _stored_at(results: list[list[_PartResult]], locator: tuple[int, ...]) -> StoredPart:
    task, part, layer = locator
    stored = results[task][part].layers[layer][1]
    assert isinstance(stored, StoredPart)
    return stored


@dataclass(frozen=True)
class ZonesPlan:
    """One source's zones and the chunk tasks that read them (``plan_zones``): made once, it
    answers ``planned_pixels`` and is what ``reduce_groups`` reads, so a call that checks its
    size first (the server's synchronous pixel limit) does not plan twice."""

    source: PixelSource
    zones: list[PixelZone]
    options: ReduceOptions
    tasks: list[_Task]

    @property
    def pixels(self) -> int:
        """The pixels reducing it reads (its ``Outcome.pixels_read``)."""
        return sum(int(task.window.width * task.window.height) for task in self.tasks)


def plan_zones(source: PixelSource, zones: list[PixelZone], options: ReduceOptions) -> ZonesPlan:
    return ZonesPlan(source, zones, options, _plan(source, zones, options))


def _as_plan(entry: tuple[PixelSource, list[PixelZone]] | ZonesPlan, options: ReduceOptions) -> ZonesPlan:
    if isinstance(entry, ZonesPlan):
        assert entry.options == options, "a plan is read with the options it was made with"
        return entry
    return plan_zones(*entry, options)


def _plan(source: PixelSource, zones: list[PixelZone], options: ReduceOptions) -> list[_Task]:
    live = [zone for zone in zones if zone.window is not None]
    if not live:
        return []
    bounds = np.array([zone.bounds for zone in live])  # row0, col0, row1, col1
    union = Window(
        int(bounds[:, 1].min()),
        int(bounds[:, 0].min()),
        int(bounds[:, 3].max() - bounds[:, 1].min()),
        int(bounds[:, 2].max() - bounds[:, 0].min()),
    )
    chunks = chunk_windows(union, source.meta.block_shape, len(source.indexes), source.read_dtype.itemsize)
    parts_by_chunk: list[list[_ZonePart]] = [[] for _ in chunks]
    chunk_bounds = np.array([[w.row_off, w.col_off, w.row_off + w.height, w.col_off + w.width] for w in chunks])
    mask_budget = WHOLE_MASK_PIXELS  # summed over the call's zones
    for position, zone in enumerate(live):
        row0, col0, row1, col1 = (int(v) for v in bounds[position])
        zone_mask = None
        pixels = (row1 - row0) * (col1 - col0)
        if options.coverage == "center" and pixels <= _WHOLE_MASK_ZONE_PIXELS and pixels <= mask_budget:
            mask_budget -= pixels
            zone_mask = window_center_mask(zone.geometry, source.meta.transform, zone.window, options.all_touched)
        hits = np.flatnonzero(
            (chunk_bounds[:, 0] < row1)
            & (chunk_bounds[:, 2] > row0)
            & (chunk_bounds[:, 1] < col1)
            & (chunk_bounds[:, 3] > col0)
        )
        if hits.size == 0:
            continue
        sub = np.column_stack(
            [
                np.maximum(chunk_bounds[hits, 0], row0),
                np.maximum(chunk_bounds[hits, 1], col0),
                np.minimum(chunk_bounds[hits, 2], row1),
                np.minimum(chunk_bounds[hits, 3], col1),
            ]
        )
        boxes = shapely.box(sub[:, 1], sub[:, 0], sub[:, 3], sub[:, 2])
        geometry = zone.geometry
        inside, touching = contains_and_touches(geometry, boxes)
        margin = 0 if options.coverage == "exact" else _CLIP_MARGIN
        for chunk_index, (r0, c0, r1, c1), full, touched in zip(hits, sub, inside, touching, strict=True):
            if not touched:
                continue
            window = (int(r0), int(c0), int(r1 - r0), int(c1 - c0))
            if zone_mask is not None and not full:
                mask = zone_mask[r0 - row0 : r1 - row0, c0 - col0 : c1 - col0]
                if mask.any():
                    parts_by_chunk[chunk_index].append(_ZonePart(zone.index, window, None, mask))
                continue
            clipped = (
                None if full else shapely.clip_by_rect(geometry, c0 - margin, r0 - margin, c1 + margin, r1 + margin)
            )
            if clipped is not None and clipped.is_empty:
                continue
            if clipped is not None and options.coverage == "center":
                clipped = pixels_to_crs(clipped, source.meta.transform)  # rasterized in the CRS
            parts_by_chunk[chunk_index].append(_ZonePart(zone.index, window, clipped))
    tasks = []
    for parts in parts_by_chunk:
        if not parts:
            continue
        # Read only the part of the chunk some zone needs (blocks are decoded whole anyway).
        r0 = min(p.window[0] for p in parts)
        c0 = min(p.window[1] for p in parts)
        r1 = max(p.window[0] + p.window[2] for p in parts)
        c1 = max(p.window[1] + p.window[3] for p in parts)
        tasks.append(_Task(Window(c0, r0, c1 - c0, r1 - r0), tuple(parts)))
    return tasks


def _part_masks(
    task: _Task, options: ReduceOptions, transform: Affine
) -> tuple[list[np.ndarray | None], list[BoundaryCoverage | None]]:
    """Per part: its mask and (exact) boundary pixels over its whole window, one rasterization
    each; None where the zone covers the part's whole window. With exact coverage the mask holds
    the pixels wholly inside, and only the boundary pixels carry weights."""
    masks: list[np.ndarray | None] = []
    coverages: list[BoundaryCoverage | None] = []
    for part in task.parts:
        r0, c0, rows, cols = part.window
        coverage: BoundaryCoverage | None = None
        mask: np.ndarray | None = part.mask
        if mask is None and part.geometry is not None:
            if options.coverage == "exact":
                coverage = boundary_coverage(part.geometry, r0, c0, rows, cols)
                mask = coverage.inside
            else:
                mask = center_mask(part.geometry, window_transform(transform, r0, c0), rows, cols, options.all_touched)
        masks.append(mask)
        coverages.append(coverage)
    return masks, coverages


def _strips(raw: np.ndarray, task: _Task) -> Iterator[tuple[int, int, list[tuple[int, tuple[slice, slice], slice]]]]:
    """The chunk's strips (first row, end row) and, per strip, the parts it crosses: (part
    position, the part's columns and rows of the strip, the same rows in the part's own arrays)."""
    row_base, col_base = int(task.window.row_off), int(task.window.col_off)
    height, width = raw.shape[1], raw.shape[2]
    strip = max(1, _STRIP_PIXELS // max(1, width))
    for s0 in range(0, height, strip):
        s1 = min(s0 + strip, height)
        crossed = []
        for index, part in enumerate(task.parts):
            r0, c0, rows, cols = part.window
            p0 = r0 - row_base  # the part's first row in the chunk
            lo, hi = max(p0, s0), min(p0 + rows, s1)
            if lo < hi:
                window = (slice(lo - s0, hi - s0), slice(c0 - col_base, c0 - col_base + cols))
                crossed.append((index, window, slice(lo - p0, hi - p0)))
        yield s0, s1, crossed


# Readies a kept part for its store in the worker thread that made it: (zone, layer, part).
_Prepare = Callable[[int, int, StoredPart], StoredPart]


def _reduce_chunk(
    source: PixelSource, options: ReduceOptions, prepare: _Prepare | None = None
) -> Callable[[list[DatasetReader], _Task], list[_PartResult]]:
    if not options.keep_values and options.coverage == "center":
        return _reduce_chunk_fused(source, options)
    value_dtype = source.value_dtype
    transform = source.meta.transform

    def run(datasets: list[DatasetReader], task: _Task) -> list[_PartResult]:
        raw = datasets[0].read(list(source.indexes), window=task.window)
        masks, coverages = _part_masks(task, options, transform)
        layer_count = source.layers
        moments = [[Moments() for _ in range(layer_count)] for _ in task.parts]
        kept: list[list[list[tuple[np.ndarray, np.ndarray | None]]]] = [
            [[] for _ in range(layer_count)] for _ in task.parts
        ]
        for s0, s1, crossed in _strips(raw, task):
            values, valid = source.compute(raw[:, s0:s1])
            for index, window, own in crossed:
                mask, coverage = masks[index], coverages[index]
                fractions = None if coverage is None else _strip_fractions(coverage, own)
                for layer in range(layer_count):
                    strip_moments, chosen, weights = _reduce_layer(
                        values[layer][window],
                        valid[layer][window],
                        None if mask is None else mask[own],
                        fractions,
                        value_dtype,
                    )
                    moments[index][layer].merge(strip_moments)
                    if options.keep_values and chosen.size:
                        kept[index][layer].append((chosen, weights))
        results = []
        for index, part in enumerate(task.parts):
            layers: list[tuple[Moments, StoredPart | _KeptSummary | None]] = []
            for layer in range(layer_count):
                stored = None
                pieces = kept[index][layer]
                if pieces:
                    chosen = pieces[0][0] if len(pieces) == 1 else np.concatenate([p[0] for p in pieces])
                    weights = None
                    if any(p[1] is not None for p in pieces):  # strips without boundary pixels: unit weights
                        unit = np.float32(1)
                        weights = np.concatenate([np.full(p[0].size, unit) if p[1] is None else p[1] for p in pieces])
                    stored = StoredPart.make(chosen, weights, value_dtype)
                    if prepare is not None:
                        stored = prepare(part.zone, layer, stored)
                layers.append((moments[index][layer], stored))
            results.append(_PartResult(part.zone, layers, part.window[2] * part.window[3]))
        return results

    return run


# Each worker thread's arrays for the fused path, reused from chunk to chunk.
_scratch = threading.local()


def _thread_scratch() -> Scratch:
    scratch: Scratch | None = getattr(_scratch, "arrays", None)
    if scratch is None:
        scratch = _scratch.arrays = Scratch()
    return scratch


def _reduce_chunk_fused(
    source: PixelSource, options: ReduceOptions
) -> Callable[[list[DatasetReader], _Task], list[_PartResult]]:
    """The common case (center rule, no values kept) without per-strip allocations: the source
    computes into this thread's reused arrays (``compute_into``), and each part's valid values
    are centred in a reused float64 buffer (``Moments.of_copy``). The same strips, validity,
    arithmetic and merge order as the general path, so the same answer up to the order of
    float64 additions in a sum (tests/analytics hold both to 1e-12 on masked, nodata-bearing
    and interior chunks)."""
    transform = source.meta.transform

    def run(datasets: list[DatasetReader], task: _Task) -> list[_PartResult]:
        raw = datasets[0].read(list(source.indexes), window=task.window)
        masks, _ = _part_masks(task, options, transform)
        scratch = _thread_scratch()
        layer_count = source.layers
        moments = [[Moments() for _ in range(layer_count)] for _ in task.parts]
        for s0, s1, crossed in _strips(raw, task):
            values, valid = source.compute_into(raw[:, s0:s1], scratch)
            for index, window, own in crossed:
                mask = masks[index]
                for layer in range(layer_count):
                    moments[index][layer].merge(
                        _fused_moments(
                            values[layer][window], valid[layer][window], None if mask is None else mask[own], scratch
                        )
                    )
        return [
            _PartResult(part.zone, [(m, None) for m in moments[index]], part.window[2] * part.window[3])
            for index, part in enumerate(task.parts)
        ]

    return run


def _fused_moments(values: np.ndarray, valid: np.ndarray, mask: np.ndarray | None, scratch: Scratch) -> Moments:
    """``_reduce_layer``'s moments (center rule) through ``scratch``'s arrays."""
    if mask is None:
        selected, inside = valid, valid.size
    else:
        selected = np.logical_and(valid, mask, out=scratch.array("selected", valid.shape, bool))
        inside = int(np.count_nonzero(mask))
    count = int(np.count_nonzero(selected))
    nodata = float(inside - count)
    if count == 0:
        return Moments(nodata=nodata)
    # Boolean indexing beats np.compress(out=) on real masks (runs of pixels): it skips the
    # index array compress builds.
    chosen = values if count == selected.size else values[selected]
    return Moments.of_copy(chosen, scratch.flat("deviations", count, np.float64), nodata)


_Fractions = tuple[np.ndarray, np.ndarray, np.ndarray]  # rows, cols, weights of boundary pixels


def _strip_fractions(coverage: BoundaryCoverage, own: slice) -> _Fractions:
    """The boundary pixels in a strip's rows of a part, rows counted from the strip's first."""
    first, end = np.searchsorted(coverage.rows, [own.start, own.stop])
    return coverage.rows[first:end] - own.start, coverage.cols[first:end], coverage.weights[first:end]


def _reduce_layer(
    values: np.ndarray,
    valid: np.ndarray,
    mask: np.ndarray | None,
    fractions: _Fractions | None,
    value_dtype: np.dtype,
) -> tuple[Moments, np.ndarray, np.ndarray | None]:
    """Moments of one strip of a part, and its valid values (and weights) for the store. With
    exact coverage ``mask`` holds the pixels wholly inside, reduced as the centre rule's, and
    ``fractions`` the boundary pixels, the only ones weighted."""
    if mask is None:
        valid_count = int(np.count_nonzero(valid))
        if valid_count == valid.size:
            # The common interior case: no compress copy.
            chosen = np.ascontiguousarray(values).reshape(-1).astype(value_dtype, copy=False)
            return Moments.of(chosen), chosen, None
        selected = valid
        nodata = float(valid.size - valid_count)
    else:
        selected = valid & mask
        nodata = float(np.count_nonzero(mask) - np.count_nonzero(selected))
    chosen = values[selected].astype(value_dtype, copy=False)
    moments = Moments.of(chosen, None, nodata)
    if fractions is None or fractions[0].size == 0:
        return moments, chosen, None
    rows, cols, weights = fractions
    boundary_valid = valid[rows, cols]
    boundary = values[rows, cols][boundary_valid].astype(value_dtype, copy=False)
    boundary_weights = weights[boundary_valid]
    moments.merge(Moments.of(boundary, boundary_weights, float(weights[~boundary_valid].sum())))
    kept = np.concatenate((chosen, boundary))
    # float32, as the store keeps them (``StoredPart.make``): no float64 array of ones to convert.
    return moments, kept, np.concatenate((np.ones(chosen.size, np.float32), boundary_weights.astype(np.float32)))


Group = Sequence[tuple[PixelSource, list[PixelZone]] | ZonesPlan]


def reduce_groups(
    groups: Sequence[Group],
    options: ReduceOptions,
    *,
    workers: int,
    check_cancelled: Callable[[], None],
    memory_budget_bytes: int,
    scratch_dir: Path | None = None,
    scheduler: str | None = None,
) -> list[Outcome]:
    """One ``Outcome`` per group: every layer reduced over every zone, summed over the group's
    sources (a mosaic: the same zones, each source's pixels once; its sources must share the
    value type and layer count), each given as (source, zones) or as its ``plan_zones``. Groups
    are separate answers (e.g. a time series' items).
    Partial results merge in (group, source, chunk) order whatever runs the chunks (threads
    here, or a Dask cluster: ``cluster.run_ordered``), so answers do not depend on where or
    when chunks ran. Close the outcomes when done."""
    plans = [[_as_plan(entry, options) for entry in group] for group in groups]
    stores = sum(len(group[0].zones) * group[0].source.layers for group in plans if group)
    budget = max(1, memory_budget_bytes // max(1, stores))
    # On a cluster, kept values stay on the workers; percentiles select them there.
    remote = bool(scheduler) and options.keep_values

    def store(dtype: np.dtype) -> ValueStore:
        if remote:
            return RemoteValueStore(dtype, budget, scratch_dir, locate=_stored_at)
        return ValueStore(
            dtype, budget, scratch_dir, mapper=parallel_map(workers), distinct=options.coverage == "exact"
        )

    outcomes = []
    for group in plans:
        first, zones = group[0].source, group[0].zones
        results = [
            ZoneResult(
                zone,
                [
                    LayerResult(Moments(), store(first.value_dtype) if options.keep_values else None)
                    for _ in range(first.layers)
                ],
            )
            for zone in zones
        ]
        outcomes.append(Outcome(results, 0, 0))
        if not remote:
            for position, zone_result in enumerate(results):
                expected = sum(_window_pixels(plan.zones[position].window) for plan in group)
                for kept in zone_result.layers:
                    if kept.store is not None:
                        kept.store.expect(expected)
    check_cancelled()
    jobs: list[ChunkJob[_Task, list[_PartResult]]] = []
    owners: list[Outcome] = []
    for group, outcome in zip(plans, outcomes, strict=True):
        for plan in group:
            outcome.chunks_read += len(plan.tasks)
            lighten = _lighten if remote else None
            prepare = None if remote or not options.keep_values else _preparer(outcome)
            fn = _reduce_chunk(plan.source, options, prepare)
            jobs.append(ChunkJob((plan.source.meta.path,), fn, plan.tasks, lighten, _ahead(options)))
            owners.append(outcome)
    try:
        task_iters = [iter(job.tasks) for job in jobs]
        ordered = run_ordered(jobs, workers=workers, check_cancelled=check_cancelled, scheduler=scheduler)
        for position, parts, ref in ordered:
            task = next(task_iters[position])
            outcome = owners[position]
            outcome.pixels_read += int(task.window.width * task.window.height)
            for part_index, part in enumerate(parts):
                zone_result = outcome.zones[part.zone]
                zone_result.pixels_read += part.pixels
                for layer, (layer_result, (moments, stored)) in enumerate(
                    zip(zone_result.layers, part.layers, strict=True)
                ):
                    layer_result.moments.merge(moments)
                    if stored is None or layer_result.store is None:
                        continue
                    if isinstance(stored, _KeptSummary):
                        assert ref is not None and isinstance(layer_result.store, RemoteValueStore)
                        locator = (ref.index, part_index, layer)
                        layer_result.store.add_remote(ref, locator, stored.size, stored.histogram)
                    else:
                        layer_result.store.add(stored)
    except BaseException:
        for outcome in outcomes:
            outcome.close()
        raise
    return outcomes


def _window_pixels(window: Window | None) -> int:
    return 0 if window is None else int(window.width * window.height)


def _preparer(outcome: Outcome) -> _Prepare:
    """Kept parts readied by their stores (``ValueStore.prepare``) in the worker threads."""

    def prepare(zone: int, layer: int, stored: StoredPart) -> StoredPart:
        store = outcome.zones[zone].layers[layer].store
        return stored if store is None else store.prepare(stored)

    return prepare


def _ahead(options: ReduceOptions) -> int:
    """Chunks in flight per thread. A chunk's result waits for the chunks before it (the merge
    is ordered): with two per thread, one slow chunk (an edge chunk's mask, a thread preempted)
    left the other thread idle once it had finished the two after it. Without kept values a
    result is a few numbers, so many may wait; kept values (up to a chunk's pixels) keep two."""
    return 2 if options.keep_values else _AHEAD_SMALL_RESULTS


def planned_pixels(source: PixelSource, zones: list[PixelZone], options: ReduceOptions) -> int:
    """The pixels ``reduce_in`` would read (its ``Outcome.pixels_read``), from its own plan:
    nothing is read."""
    return plan_zones(source, zones, options).pixels


def reduce_in(ctx: AnalyticsContext, source: PixelSource, zones: list[PixelZone], options: ReduceOptions) -> Outcome:
    """Every layer of ``source`` reduced over every zone (``reduce_groups``, one group) with the
    call's threads, cancellation, memory budget, scratch folder and cluster (``ctx.dask_scheduler``).
    Close the outcome when done."""
    return reduce_groups_in(ctx, [[(source, zones)]], options)[0]


def reduce_groups_in(ctx: AnalyticsContext, groups: Sequence[Group], options: ReduceOptions) -> list[Outcome]:
    """``reduce_groups`` with the call's threads, cancellation, memory budget, scratch folder
    and cluster."""
    return reduce_groups(
        groups,
        options,
        workers=ctx.workers,
        check_cancelled=ctx.check_cancelled,
        memory_budget_bytes=ctx.memory_budget_bytes,
        scratch_dir=ctx.scratch_dir,
        scheduler=ctx.dask_scheduler,
    )
