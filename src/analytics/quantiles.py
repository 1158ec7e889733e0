"""Bounded-memory quantiles over values kept chunk by chunk (moments: ``moments.py``).

(About 770 lines, kept together: the store's direct, bucketed, selected and spilled paths and
both quantile definitions read the same kept values and bucket counts; the presence table
itself is ``distinct.py``.)

Quantiles need the values themselves. ``ValueStore`` keeps them compactly (float32 when the
values are exactly representable, as reflectance indices and <= 16-bit bands are) and spills
them to a scratch file beyond a memory budget. Small stores are answered directly; large
ones by bucketing: values map to 65,536 buckets by the top 16 bits of an order-preserving
integer key (no value range needed up front), per-bucket counts locate the buckets holding
the wanted order statistics, and one more pass gathers just those buckets.

Two quantile definitions are implemented:

* ``percentiles`` — numpy's default ("linear", Hyndman & Fan type 7), as rasterstats uses;
* ``weighted_quantiles`` — exactextract's coverage-weighted definition (its
  ``WeightedQuantiles``, after https://stats.stackexchange.com/a/13223): cells with equal
  values are merged first (summing their coverage), the n distinct values x_i are sorted with
  weights w_i and cumulative weights C_i, s_0 = 0 and s_i = i w_i + (n - 1) C_{i-1}; the
  q-quantile is found at q W (n - 1) (W the total weight) by linear interpolation between
  the two x whose s straddle it (first s strictly greater, and the one before).

Large weighted stores of float32 values (``distinct=True``, exact mode) answer the weighted
quantiles by selection too, as the centre rule does: ``distinct.Presence`` counts the distinct
values per bucket as parts arrive, the per-bucket weights are the value counts corrected by the
few fractional weights, so the bucket holding each crossing, the distinct values before it and
the weight before it are known without sorting; one pass gathers the crossing buckets and their
neighbours, and the quantile is interpolated in that window exactly as over all values. Other
stores (float64 values, or more occupied buckets than the memory budget allows a presence table
for) sort their values group by group.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import numpy as np

from geopera_kernel.analytics.distinct import Presence

BUCKETS: Final = 1 << 16
# Weighted (exact-mode) stores up to this many values are answered with one in-memory sort.
DIRECT_LIMIT: Final = 8_000_000
# Unweighted stores up to this many values are answered with one partition; larger ones by
# their bucket histogram (already counted by the workers) and a selective pass.
DIRECT_PERCENTILE_LIMIT: Final = 262_144
# Exact-mode quantiles over larger stores sort the values group by group, at most this many:
# small groups bound the sort's scratch memory, and their sorts stay in cache (on the whole
# tile 4M made the call faster than 24M, 10 s against 16 s, and 290 MiB leaner).
GROUP_LIMIT: Final = 4_000_000
# Parts at least this large get their bucket histogram computed when they are made (in the
# worker thread that made them, overlapping with decoding); smaller parts lazily.
_EAGER_HISTOGRAM_MIN: Final = 16_384
# Weighted stores count their distinct values (``Presence``) once they hold more than this many:
# below it one sort of the values is cheaper than the presence table's page faults.
PRESENCE_MIN: Final = 1_000_000


def storage_dtype(dtype: np.dtype) -> np.dtype:
    """float32 when every value of ``dtype`` is exactly a float32, else float64."""
    dtype = np.dtype(dtype)
    if dtype == np.float32 or (dtype.kind in "iub" and dtype.itemsize <= 2):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


_LITTLE_ENDIAN: Final = sys.byteorder == "little"
_RAW: Final = np.arange(BUCKETS, dtype=np.uint32)
# Top 16 bits of an IEEE float -> their rank in value order: negative values (sign bit set)
# sort in reverse bit order below the positive ones.
RAW_TO_BUCKET: Final = np.where(_RAW & 0x8000, _RAW ^ 0xFFFF, _RAW | 0x8000).astype(np.intp)
BUCKET_TO_RAW: Final = np.argsort(RAW_TO_BUCKET)
# The bucket of -0.0 (and of the tiniest negative float32s).
_NEGATIVE_ZERO_BUCKET: Final = int(RAW_TO_BUCKET[0x8000])


def high_bits(values: np.ndarray) -> np.ndarray:
    """The top 16 bits of each float32/float64 value: a strided view, no copy, no arithmetic."""
    words = np.ascontiguousarray(values).view(np.uint16).reshape(-1, values.itemsize // 2)
    return words[:, -1] if _LITTLE_ENDIAN else words[:, 0]


def bucket_of(values: np.ndarray) -> np.ndarray:
    """Order-preserving bucket index in [0, 65536) of float32/float64 values (no NaN)."""
    return RAW_TO_BUCKET[high_bits(values)]


def bucket_histogram(values: np.ndarray) -> np.ndarray:
    """Value counts per bucket (counted on the raw top bits, then put in bucket order)."""
    histogram = np.empty(BUCKETS, dtype=np.int64)
    histogram[RAW_TO_BUCKET] = np.bincount(high_bits(values), minlength=BUCKETS)
    return histogram


@dataclass
class StoredPart:
    """Valid values of one chunk (and their coverage weights in exact mode)."""

    values: np.ndarray
    weights: np.ndarray | None = None  # float32; None means every weight is 1
    histogram: np.ndarray | None = None  # value counts per bucket
    marked: bool = False  # its values are marked in its counting store's presence table

    @property
    def size(self) -> int:
        return int(self.values.size)

    @property
    def nbytes(self) -> int:
        return self.values.nbytes + (0 if self.weights is None else self.weights.nbytes)

    @classmethod
    def make(cls, values: np.ndarray, weights: np.ndarray | None, dtype: np.dtype) -> StoredPart:
        """Values in ``dtype``; their bucket histogram when the part is large enough to be
        worth counting here, in the worker thread that computed the chunk."""
        values = values.astype(dtype, copy=False)
        if weights is not None:
            # exactextract merges equal values; +0.0 folds -0.0 into 0.0 so buckets agree.
            values = values + dtype.type(0)
            weights = weights.astype(np.float32)
            if np.all(weights == 1):
                weights = None
        histogram = None
        if values.size >= _EAGER_HISTOGRAM_MIN:
            histogram = bucket_histogram(values)
        return cls(values, weights, histogram)


def _folded(part: StoredPart, histogram: bool) -> StoredPart:
    """A part for a counting store: -0.0 folded into 0.0 (one value to exactextract, two bit
    patterns to ``Presence``), its histogram counted if asked (or already counted)."""
    values, counts = part.values, part.histogram
    if counts is None or counts[_NEGATIVE_ZERO_BUCKET]:
        values = values + values.dtype.type(0)
        counts = bucket_histogram(values) if counts is not None or histogram else None
    return StoredPart(values, part.weights, counts, part.marked)


def _occupied_raw(histogram: np.ndarray | None) -> np.ndarray:
    """A raw top-16-bit bucket in each group of 32 that a bucket-order histogram counts values
    in (all a presence table needs to charge the 2 MiB granules, of 256 rows, they fall in):
    groups of 32 buckets are groups of 32 raw rows, in either order, so the test runs on 2,048
    groups rather than 65,536 buckets (a tenth of the marking threads' time besides the
    marking, on the tile)."""
    assert histogram is not None
    groups = np.flatnonzero(histogram.reshape(-1, 32).any(axis=1))
    return BUCKET_TO_RAW[groups * 32]


def _raw_intervals(flags: np.ndarray) -> list[tuple[int, int]]:
    """The flagged buckets as runs of consecutive raw top-16-bit values (inclusive)."""
    raw = np.sort(BUCKET_TO_RAW[np.flatnonzero(flags)])
    if raw.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(raw) != 1)
    firsts = np.concatenate(([raw[0]], raw[breaks + 1]))
    lasts = np.concatenate((raw[breaks], [raw[-1]]))
    return [(int(a), int(b)) for a, b in zip(firsts, lasts, strict=True)]


def in_intervals(values: np.ndarray, intervals: list[tuple[int, int]]) -> np.ndarray:
    """Which values' top 16 bits fall in the raw intervals: compares on the bit patterns as
    unsigned integers (each bucket is one contiguous integer range), several times faster than
    looking every value's bucket up in a table."""
    shift = values.itemsize * 8 - 16
    low_fill = (1 << shift) - 1
    return in_patterns(values, [(first << shift, (last << shift) | low_fill) for first, last in intervals])


def in_patterns(values: np.ndarray, intervals: list[tuple[int, int]]) -> np.ndarray:
    """Which values' whole bit patterns, as unsigned integers, fall in the inclusive intervals."""
    unsigned = np.dtype(f"u{values.itemsize}")
    words = np.ascontiguousarray(values).view(unsigned)
    selected: np.ndarray | None = None
    for first, last in intervals:
        lo, hi = unsigned.type(first), unsigned.type(last)
        inside = (words >= lo) & (words <= hi)
        selected = inside if selected is None else np.logical_or(selected, inside, out=selected)
    return np.zeros(values.shape, dtype=bool) if selected is None else selected


@dataclass
class _Gathered:
    """Values collected from a store: unit-weight ones, and (value, weight) pairs."""

    unit: list[np.ndarray] = field(default_factory=list)
    unit_buckets: list[np.ndarray] = field(default_factory=list)
    weighted: list[np.ndarray] = field(default_factory=list)
    weights: list[np.ndarray] = field(default_factory=list)
    weighted_buckets: list[np.ndarray] = field(default_factory=list)

    def add_unit(self, values: np.ndarray, buckets: np.ndarray | None, selected: np.ndarray | None) -> None:
        if selected is None:
            self.unit.append(values)
            if buckets is not None:
                self.unit_buckets.append(buckets)
        else:
            self.unit.append(values[selected])
            if buckets is not None:
                self.unit_buckets.append(buckets[selected])

    def add_weighted(self, values: np.ndarray, weights: np.ndarray, buckets: np.ndarray | None) -> None:
        self.weighted.append(values)
        self.weights.append(weights)
        if buckets is not None:
            self.weighted_buckets.append(buckets)

    def all_values(self) -> np.ndarray:
        parts = self.unit + self.weighted
        return np.concatenate(parts) if parts else np.empty(0)

    def all_buckets(self) -> np.ndarray:
        parts = self.unit_buckets + self.weighted_buckets
        return RAW_TO_BUCKET[np.concatenate(parts)] if parts else np.empty(0, np.intp)

    def distinct(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted distinct values and the summed weight of each (exactextract merges equal
        values before its quantiles). Unit weights are counted after an in-place sort (numpy's
        SIMD sort), never argsorted: only the few fractional-coverage values are."""
        unit = np.concatenate(self.unit) if self.unit else np.empty(0)
        self.unit.clear()
        unit.sort()
        x, w = _runs(unit, None)
        if self.weighted:
            values = np.concatenate(self.weighted)
            weights = np.concatenate(self.weights).astype(np.float64)
            order = np.argsort(values, kind="stable")
            xf, wf = _runs(values[order], weights[order])
            if x.size == 0:
                return xf, wf
            position = np.searchsorted(x, xf)
            hit = position < x.size
            hit[hit] = x[position[hit]] == xf[hit]
            np.add.at(w, position[hit], wf[hit])
            x = np.insert(x, position[~hit], xf[~hit])
            w = np.insert(w, position[~hit], wf[~hit])
        return x, w


def _gathered(pieces: Iterable[_Part], with_buckets: bool) -> _Gathered:
    """Selected pieces split into unit-weight values and (value, weight) pairs (with their
    buckets when asked)."""
    gathered = _Gathered()
    for values, weights in pieces:
        if values.size == 0:
            continue
        bucket = high_bits(values) if with_buckets else None  # raw top bits until gathered
        if weights is None:
            gathered.add_unit(values, bucket, None)
        else:
            unit = weights == 1
            gathered.add_unit(values, bucket, unit)
            fractional = ~unit
            gathered.add_weighted(
                values[fractional], weights[fractional], None if bucket is None else bucket[fractional]
            )
    return gathered


def _fraction_corrections(fractions: list[tuple[np.ndarray, np.ndarray]], occupied: np.ndarray) -> np.ndarray:
    """Per occupied bucket: the fractional weights less their count (what turns a bucket's
    value count into its weight), summed part by part."""
    fraction_count = np.zeros(BUCKETS, dtype=np.int64)
    fraction_weight = np.zeros(BUCKETS, dtype=np.float64)
    for buckets, weights in fractions:
        fraction_count += np.bincount(buckets, minlength=BUCKETS)
        fraction_weight += np.bincount(buckets, weights=weights, minlength=BUCKETS)
    return fraction_weight[occupied] - fraction_count[occupied]


def _merged(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Inclusive integer intervals, overlapping or touching ones merged, in order."""
    merged: list[tuple[int, int]] = []
    for first, last in sorted(intervals):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def _runs(ordered: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of a sorted array and their counts (or summed weights)."""
    if ordered.size == 0:
        return ordered, np.empty(0)
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    if weights is None:
        counts = np.diff(np.append(starts, ordered.size)).astype(np.float64)
    else:
        counts = np.add.reduceat(weights, starts)
    return ordered[starts], counts


_Part = tuple[np.ndarray, np.ndarray | None]  # values, and their weights (None: all 1)


@dataclass
class _Spilled:
    offset: int
    count: int
    weight_offset: int  # -1 when every weight is 1


@dataclass
class ValueStore:
    """Append-only store of valid values, in memory up to ``budget_bytes`` then on disk."""

    dtype: np.dtype
    budget_bytes: int = 256 * 1024 * 1024
    scratch_dir: Path | None = None
    count: int = 0
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(BUCKETS, dtype=np.int64))
    _parts: list[StoredPart] = field(default_factory=list)
    _unbucketed: list[int] = field(default_factory=list)
    _memory_bytes: int = 0
    _spilled: list[_Spilled] = field(default_factory=list)
    _values_file: IO[bytes] | None = None
    _weights_file: IO[bytes] | None = None
    # Runs a function over the parts when selecting values (e.g. a thread pool's ``map``,
    # results in order); None: one after the other in the calling thread.
    mapper: Callable[[Callable[[Any], Any], Iterable[Any]], Iterable[Any]] | None = None
    # Exact mode: count the distinct values of a large float32 store as they come (module doc).
    distinct: bool = False
    _presence: Presence | None = None
    _presence_off: bool = False
    # Per part with fractional weights (counting stores): the buckets of those values and their
    # weights, summed per bucket only when the quantiles select with the presence table.
    _fractions: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    @property
    def _presence_bytes(self) -> int:
        """The presence table's touched memory, charged to the budget."""
        return 0 if self._presence is None else self._presence.touched_bytes

    def _counting(self) -> bool:
        return self.distinct and self.dtype == np.float32 and not self._presence_off

    def expect(self, values: int) -> None:
        """Told that at most ``values`` values will come: a counting store expecting more than
        PRESENCE_MIN reserves its presence table now, so that the threads making the parts
        mark them as they go (``prepare``), in parallel, instead of ``add`` one by one."""
        if self._counting() and self._presence is None and self.count == 0 and values > PRESENCE_MIN:
            self._reserve_presence()

    def _reserve_presence(self) -> None:
        self._presence = Presence.reserve(self.budget_bytes)
        if self._presence is None:
            self._presence_off = True

    def prepare(self, part: StoredPart) -> StoredPart:
        """``part`` made ready for ``add`` in the thread that computed it (any thread, several
        at once): in a counting store with its presence table reserved, -0.0 folded, the
        histogram counted and the values marked; other parts are returned as they are."""
        presence = self._presence
        if presence is None or part.size == 0 or not self._counting():
            return part
        part = _folded(part, True)
        part.marked = presence.mark(part.values, _occupied_raw(part.histogram))
        return part

    def add(self, part: StoredPart) -> None:
        if part.size == 0:
            return
        counting = self._counting()
        if counting and not part.marked:
            part = _folded(part, self._presence is not None)
        if counting and part.weights is not None:
            fractional = part.weights != 1
            self._fractions.append((bucket_of(part.values[fractional]), part.weights[fractional].astype(np.float64)))
        values, histogram = part.values, part.histogram
        self.count += part.size
        if part.histogram is not None:
            self.histogram += part.histogram
            part.histogram = None
        else:
            self._unbucketed.append(len(self._parts) + len(self._spilled))
        if self._values_file is not None or (
            self._memory_bytes + part.nbytes + self._presence_bytes > self.budget_bytes
        ):
            # Over budget: this part and every later one go to disk; what is held stays (less
            # to write and to read back). Parts stay in insertion order: memory, then disk.
            self._spill(part)
        else:
            self._parts.append(part)
            self._memory_bytes += part.nbytes
        if counting and not part.marked:
            self._count_distinct(values, histogram)

    def _count_distinct(self, values: np.ndarray, histogram: np.ndarray | None) -> None:
        """Mark a part's values (here, in the thread adding it); the presence table is reserved
        once the store holds more than PRESENCE_MIN values, and the parts before marked then.
        A table that fills up (more occupied buckets than the budget) is dropped: the quantiles
        sort instead."""
        if self._presence is None:
            if self.count <= PRESENCE_MIN:
                return
            self._reserve_presence()
            if self._presence is not None:
                occupied = _occupied_raw(self._complete_histogram())
                for stored, _ in self.parts():  # the parts stored before the store grew this large
                    if not self._presence.mark(stored, occupied):
                        break
        else:
            assert histogram is not None  # _folded counted it
            self._presence.mark(values, _occupied_raw(histogram))
        if self._presence is not None and self._presence.full:
            self._presence.close()
            self._presence, self._presence_off = None, True
            self._fractions.clear()

    def _spill(self, part: StoredPart) -> None:
        if self._values_file is None:
            directory = None
            if self.scratch_dir is not None:
                Path(self.scratch_dir).mkdir(parents=True, exist_ok=True)
                directory = str(self.scratch_dir)
            self._values_file = tempfile.TemporaryFile(prefix="analytics-values-", dir=directory)
            self._weights_file = tempfile.TemporaryFile(prefix="analytics-weights-", dir=directory)
        assert self._values_file is not None and self._weights_file is not None
        offset = self._values_file.seek(0, os.SEEK_END)
        self._values_file.write(np.ascontiguousarray(part.values).data.cast("B"))
        weight_offset = -1
        if part.weights is not None:
            weight_offset = self._weights_file.seek(0, os.SEEK_END)
            self._weights_file.write(np.ascontiguousarray(part.weights).data.cast("B"))
        self._spilled.append(_Spilled(offset, part.size, weight_offset))

    def close(self) -> None:
        for handle in (self._values_file, self._weights_file):
            if handle is not None:
                handle.close()
        self._values_file = self._weights_file = None
        self._parts.clear()
        self._spilled.clear()
        if self._presence is not None:
            self._presence.close()
            self._presence = None

    def parts(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Every (values, weights or None) part, in insertion order (memory, then disk)."""
        for part in self._parts:
            yield part.values, part.weights
        for load in self._part_loaders()[len(self._parts) :]:
            yield load()

    def _complete_histogram(self) -> np.ndarray:
        if self._unbucketed:
            loaders = self._part_loaders()
            for position in self._unbucketed:
                values, _ = loaders[position]()
                self.histogram += bucket_histogram(values)
            self._unbucketed.clear()
        return self.histogram

    def _part_loaders(self) -> list[Callable[[], _Part]]:
        """One loader per part, in insertion order (memory, then disk), safe to call from any thread."""
        loaders: list[Callable[[], _Part]] = [
            functools.partial(lambda kept: (kept.values, kept.weights), part) for part in self._parts
        ]
        if self._spilled:
            assert self._values_file is not None and self._weights_file is not None
            self._values_file.flush()
            self._weights_file.flush()
            values_fd, weights_fd = self._values_file.fileno(), self._weights_file.fileno()
            itemsize = self.dtype.itemsize

            def load(spilled: _Spilled) -> _Part:
                values = np.frombuffer(os.pread(values_fd, spilled.count * itemsize, spilled.offset), self.dtype)
                weights = None
                if spilled.weight_offset >= 0:
                    raw = os.pread(weights_fd, spilled.count * 4, spilled.weight_offset)
                    weights = np.frombuffer(raw, np.float32)
                return values, weights

            loaders.extend(functools.partial(load, spilled) for spilled in self._spilled)
        return loaders

    def selected(self, intervals: list[tuple[int, int]]) -> Iterable[_Part]:
        """Each part's values (and weights) whose top 16 bits fall in the raw intervals, in
        insertion order (a subclass may select where the parts live: ``cluster.py``)."""
        return self._chosen(functools.partial(in_intervals, intervals=intervals))

    def _chosen(self, choose: Callable[[np.ndarray], np.ndarray]) -> Iterable[_Part]:
        """Each part's values (and weights) ``choose`` flags, in insertion order."""

        def select(load: Callable[[], _Part]) -> _Part:
            values, weights = load()
            selected = choose(values)
            return values[selected], None if weights is None else weights[selected]

        loaders = self._part_loaders()
        return (self.mapper or map)(select, loaders) if len(loaders) > 1 else map(select, loaders)

    def gather(self, flags: np.ndarray | None) -> _Gathered:
        """Every stored value whose bucket is flagged (all values when ``flags`` is None),
        split into unit-weight values and (value, weight) pairs, with their buckets."""
        pieces = self.parts() if flags is None else self.selected(_raw_intervals(flags))
        return _gathered(pieces, flags is not None)

    def _gather_patterns(self, intervals: list[tuple[int, int]]) -> _Gathered:
        """Every value of this process's parts whose bit pattern falls in the intervals."""
        return _gathered(self._chosen(functools.partial(in_patterns, intervals=intervals)), False)

    # -- quantiles ---------------------------------------------------------------------------

    def percentiles(self, qs: Sequence[float]) -> list[float | None]:
        """numpy's linear percentiles (q in 0..100) of the values, ignoring weights."""
        if self.count == 0:
            return [None for _ in qs]
        if self.count <= DIRECT_PERCENTILE_LIMIT:
            values = self.gather(None).all_values()
            return [float(v) for v in np.percentile(values, list(qs), overwrite_input=True)]
        ranks: set[int] = set()
        for q in qs:
            position = (self.count - 1) * (q / 100.0)
            below = math.floor(position)
            ranks.update({below, min(below + 1, self.count - 1)})
        order = self._order_statistics(sorted(ranks))
        results: list[float | None] = []
        for q in qs:
            position = (self.count - 1) * (q / 100.0)
            below = math.floor(position)
            a, b = order[below], order[min(below + 1, self.count - 1)]
            results.append(_lerp(a, b, position - below))
        return results

    def _order_statistics(self, ranks: list[int]) -> dict[int, float]:
        cumulative = np.cumsum(self._complete_histogram())
        bucket_of_rank = np.searchsorted(cumulative, ranks, side="right")
        flags = np.zeros(BUCKETS, dtype=bool)
        flags[bucket_of_rank] = True
        gathered = self.gather(flags)
        values, buckets = gathered.all_values(), gathered.all_buckets()
        result: dict[int, float] = {}
        for bucket in sorted({int(b) for b in bucket_of_rank}):
            inside = values[buckets == bucket]
            start = int(cumulative[bucket - 1]) if bucket > 0 else 0
            wanted = [rank - start for rank, b in zip(ranks, bucket_of_rank, strict=True) if b == bucket]
            inside.partition(wanted)
            for rank, rank_bucket in zip(ranks, bucket_of_rank, strict=True):
                if rank_bucket == bucket:
                    result[rank] = float(inside[rank - start])
        return result

    def weighted_quantiles(self, qs: Sequence[float]) -> list[float | None]:
        """exactextract's coverage-weighted quantiles (q in 0..100) of the values."""
        if self.count == 0:
            return [None for _ in qs]
        if self._presence is not None:
            selected = self._selected_weighted_quantiles(qs)
            if selected is not None:
                return selected
        if self.count <= DIRECT_LIMIT:
            distinct, sums = self.gather(None).distinct()
            return _weighted_quantiles(distinct, sums, qs)
        return self._bucketed_weighted_quantiles(qs)

    def _selected_weighted_quantiles(self, qs: Sequence[float]) -> list[float | None] | None:
        """``weighted_quantiles`` by selection (a counting store): per occupied bucket its
        distinct values (``Presence``) and weight (value count, fractional weights corrected),
        so the bucket of each crossing is found from their running sums; the crossing bucket,
        the largest value before it and the smallest after it are gathered in one pass and
        interpolated over as a window.

        Exact: s_i = i w_i + (n - 1) C_{i-1} lies between (n - 1) C_{i-1} and (n - 1) C_i, so
        the crossing is at most one distinct value past the first bucket whose running weight
        times n - 1 exceeds the target, and the value before it at most one before that bucket:
        the window holds both. None when a gathered bucket disagrees with its count (then the
        caller sorts)."""
        presence = self._presence
        assert presence is not None
        histogram = self._complete_histogram()
        occupied = np.flatnonzero(histogram)
        raw = BUCKET_TO_RAW[occupied]
        distinct_counts = presence.counts(raw, self.mapper)
        weights = histogram[occupied].astype(np.float64)
        if self._fractions:
            weights += _fraction_corrections(self._fractions, occupied)
        n = int(distinct_counts.sum())
        total = float(weights.sum())
        running_n = np.cumsum(distinct_counts)
        running_w = np.cumsum(weights)
        last = occupied.size - 1
        crossings = []
        for q in qs:
            target = (q / 100.0) * total * (n - 1)
            crossings.append(min(int(np.searchsorted((n - 1) * running_w, target, side="right")), last))
        # Per crossing: the bit patterns of the value before its bucket, of the bucket, and of
        # the value after it. Between them (on one side of the sign bit) no value is stored, so
        # each side is one interval of patterns.
        neighbours: dict[int, tuple[int | None, int | None]] = {}
        intervals: list[tuple[int, int]] = []
        for crossing in sorted(set(crossings)):
            row = int(raw[crossing])
            below = presence.extremes(int(raw[crossing - 1]))[1] if crossing > 0 else None
            above = presence.extremes(int(raw[crossing + 1]))[0] if crossing < last else None
            neighbours[crossing] = (below, above)
            patterns = [row << 16, (row << 16) | 0xFFFF, *(p for p in (below, above) if p is not None)]
            for sign in (0, 1):
                side = [p for p in patterns if p >> 31 == sign]
                if side:
                    intervals.append((min(side), max(side)))
        x, w = self._gather_patterns(_merged(intervals)).distinct()
        x = x.astype(self.dtype, copy=False)  # float64 when only fractional
        x_buckets = bucket_of(x)
        x_patterns = x.view(np.uint32)
        results: list[float | None] = []
        for q, crossing in zip(qs, crossings, strict=True):
            start = int(np.searchsorted(x_buckets, occupied[crossing], side="left"))
            end = int(np.searchsorted(x_buckets, occupied[crossing], side="right"))
            if end - start != int(distinct_counts[crossing]):
                return None
            below, above = neighbours[crossing]
            offset = int(running_n[crossing - 1]) if crossing > 0 else 0
            before = float(running_w[crossing - 1]) if crossing > 0 else 0.0
            if below is not None:
                start, offset = start - 1, offset - 1
                if start < 0 or int(x_patterns[start]) != below:
                    return None
                before -= float(w[start])
            if above is not None:
                if end >= x.size or int(x_patterns[end]) != above:
                    return None
                end += 1
            results.append(_weighted_quantile_window(x[start:end], w[start:end], offset, before, n, total, q / 100.0))
        return results

    def _groups(self) -> list[tuple[int, int]]:
        """Consecutive bucket ranges [lo, hi) of at most GROUP_LIMIT values (whole buckets)."""
        histogram = self._complete_histogram()
        groups: list[tuple[int, int]] = []
        start, running = 0, 0
        for bucket in np.flatnonzero(histogram):
            if running and running + histogram[bucket] > GROUP_LIMIT:
                groups.append((start, int(bucket)))
                start, running = int(bucket), 0
            running += int(histogram[bucket])
        groups.append((start, BUCKETS))
        return groups

    def _group_distinct(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        flags = np.zeros(BUCKETS, dtype=bool)
        flags[lo:hi] = True
        return self.gather(flags).distinct()

    def _bucketed_weighted_quantiles(self, qs: Sequence[float]) -> list[float | None]:
        # Phase A: the number of distinct values and their weight, group by group (one pass
        # over the store per group; groups hold up to GROUP_LIMIT values).
        summaries = []  # (lo, hi, distinct count, weight, first x, first w, last x, last w)
        for lo, hi in self._groups():
            distinct, sums = self._group_distinct(lo, hi)
            if distinct.size:
                summaries.append(
                    (
                        lo,
                        hi,
                        distinct.size,
                        float(sums.sum()),
                        float(distinct[0]),
                        float(sums[0]),
                        float(distinct[-1]),
                        float(sums[-1]),
                    )
                )
        n = sum(s[2] for s in summaries)
        total = sum(s[3] for s in summaries)
        span = total * (n - 1)
        # Phase B: the group holding each quantile's crossing, read again; the neighbouring
        # groups' extreme values complete the s sequence around it.
        plans = []
        for q in qs:
            target = (q / 100.0) * span
            before_n, before_w, chosen = 0, 0.0, len(summaries) - 1
            for position, summary in enumerate(summaries):
                if (n - 1) * (before_w + summary[3]) > target or position == len(summaries) - 1:
                    chosen = position
                    break
                before_n += summary[2]
                before_w += summary[3]
            plans.append((chosen, before_n, before_w))
        distinct_by_group = {chosen: self._group_distinct(*summaries[chosen][:2]) for chosen, _, _ in plans}
        results: list[float | None] = []
        for q, (chosen, before_n, before_w) in zip(qs, plans, strict=True):
            distinct, sums = distinct_by_group[chosen]
            xs, ws = list(distinct), list(sums)
            offset, cumulative_before = before_n, before_w
            if chosen > 0:
                previous = summaries[chosen - 1]
                xs.insert(0, previous[6])
                ws.insert(0, previous[7])
                offset -= 1
                cumulative_before -= previous[7]
            if chosen + 1 < len(summaries):
                following = summaries[chosen + 1]
                xs.append(following[4])
                ws.append(following[5])
            results.append(
                _weighted_quantile_window(np.array(xs), np.array(ws), offset, cumulative_before, n, total, q / 100.0)
            )
        return results

    def histogram_of(
        self, bins: int, value_range: tuple[float, float], weighted: bool
    ) -> tuple[list[float], list[float]]:
        counts = np.zeros(bins, dtype=np.float64)
        edges = np.histogram_bin_edges(np.empty(0), bins=bins, range=value_range)
        for part_counts in self.part_histograms(edges, weighted):
            counts += part_counts
        return [float(e) for e in edges], [float(c) for c in counts]

    def part_histograms(self, edges: np.ndarray, weighted: bool) -> Iterable[np.ndarray]:
        """Each part's counts (or weights) per bin of ``edges``, in insertion order."""
        for values, weights in self.parts():
            yield part_histogram(values, weights, edges, weighted)


def part_histogram(values: np.ndarray, weights: np.ndarray | None, edges: np.ndarray, weighted: bool) -> np.ndarray:
    part_weights = weights if (weighted and weights is not None) else None
    return np.histogram(values, bins=edges, weights=part_weights)[0]


def _lerp(a: float, b: float, t: float) -> float:
    # numpy's _lerp: symmetric form keeps results monotone and exact at t = 1.
    diff = b - a
    return b - diff * (1.0 - t) if t >= 0.5 else a + diff * t


def _weighted_quantiles(x: np.ndarray, w: np.ndarray, qs: Sequence[float]) -> list[float | None]:
    """exactextract's quantiles (q in 0..100) over all the sorted distinct values: their s
    sequence computed once for every q."""
    n = x.size
    total = float(w.sum())
    s = _s_sequence(x, w, 0, 0.0, n)
    return [_interpolate(x, s, (q / 100.0) * total * (n - 1)) for q in qs]


def _weighted_quantile_window(
    x: np.ndarray, w: np.ndarray, offset: int, cumulative_before: float, n: int, total: float, q: float
) -> float:
    """exactextract's quantile over a window x[0..] of the sorted distinct values, whose first
    element has global index ``offset`` and is preceded by ``cumulative_before`` weight."""
    return _interpolate(x, _s_sequence(x, w, offset, cumulative_before, n), q * total * (n - 1))


def _s_sequence(x: np.ndarray, w: np.ndarray, offset: int, cumulative_before: float, n: int) -> np.ndarray:
    """s_i = i w_i + (n - 1) C_{i-1} (s_0 = 0) over a window of the sorted distinct values."""
    cumulative = cumulative_before + np.cumsum(w)
    previous = np.concatenate([[cumulative_before], cumulative[:-1]])
    index = offset + np.arange(x.size)
    return np.where(index == 0, 0.0, index * w + (n - 1) * previous)


def _interpolate(x: np.ndarray, s: np.ndarray, target: float) -> float:
    """x linearly interpolated at ``target`` between the first s strictly greater and the one before."""
    right = int(np.searchsorted(s, target, side="right"))
    if right == 0:
        return float(x[0])
    if right == x.size:
        return float(x[-1])
    left = right - 1
    return float(x[left] + (target - s[left]) * (x[right] - x[left]) / (s[right] - s[left]))
