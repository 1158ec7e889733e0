"""Streaming statistics: moments merged chunk by chunk, and bounded-memory quantiles.

``Moments`` accumulates (optionally coverage-weighted) count, sum, mean, population
variance, min and max in float64, merging per-chunk results with Chan et al.'s parallel
update, which stays accurate where a running sum of squares would cancel.

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
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np

BUCKETS: Final = 1 << 16
# Stores up to this many values are answered with a plain in-memory sort/partition.
DIRECT_LIMIT: Final = 8_000_000
# Parts at least this large get their bucket histogram computed when they are made (in the
# worker thread that made them, overlapping with decoding); smaller parts lazily.
_EAGER_HISTOGRAM_MIN: Final = 16_384


def storage_dtype(dtype: np.dtype) -> np.dtype:
    """float32 when every value of ``dtype`` is exactly a float32, else float64."""
    dtype = np.dtype(dtype)
    if dtype == np.float32 or (dtype.kind in "iub" and dtype.itemsize <= 2):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def bucket_of(values: np.ndarray) -> np.ndarray:
    """Order-preserving bucket index in [0, 65536) of float32/float64 values (no NaN)."""
    if values.dtype == np.float32:
        bits = values.view(np.uint32)
        sign = np.uint32(0x80000000)
        keys = np.where(bits & sign, ~bits, bits | sign)
        return (keys >> np.uint32(16)).astype(np.intp)
    bits = values.view(np.uint64)
    sign64 = np.uint64(0x8000000000000000)
    keys = np.where(bits & sign64, ~bits, bits | sign64)
    return (keys >> np.uint64(48)).astype(np.intp)


@dataclass
class Moments:
    """Weighted count, sum, mean and M2 (sum of squared deviations), min, max; nodata."""

    weight: float = 0.0
    total: float = 0.0
    mean: float = 0.0
    m2: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf
    nodata: float = 0.0

    @classmethod
    def of(cls, values: np.ndarray, weights: np.ndarray | None = None, nodata: float = 0.0) -> Moments:
        """Moments of one chunk's valid values (weights > 0 when given)."""
        if values.size == 0:
            return cls(nodata=nodata)
        # One chunk-sized float64 copy, reused for the deviations. einsum rather than np.dot:
        # BLAS dot spins up its own threads, ~20x slower on chunk-sized vectors under load.
        deviations = values.astype(np.float64)
        if weights is None:
            weight = float(values.size)
            total = float(deviations.sum())
            deviations -= total / weight
            m2 = float(np.einsum("i,i->", deviations, deviations))
        else:
            w64 = weights.astype(np.float64, copy=False)
            weight = float(w64.sum())
            total = float(np.einsum("i,i->", deviations, w64))
            deviations -= total / weight
            m2 = float(np.einsum("i,i->", deviations * w64, deviations))
        mean = total / weight
        return cls(weight, total, mean, m2, float(values.min()), float(values.max()), nodata)

    def merge(self, other: Moments) -> None:
        self.nodata += other.nodata
        if other.weight == 0:
            return
        if self.weight == 0:
            self.weight, self.total, self.mean, self.m2 = other.weight, other.total, other.mean, other.m2
            self.minimum, self.maximum = other.minimum, other.maximum
            return
        weight = self.weight + other.weight
        delta = other.mean - self.mean
        self.mean += delta * other.weight / weight
        self.m2 += other.m2 + delta * delta * self.weight * other.weight / weight
        self.weight = weight
        self.total += other.total
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)

    @property
    def empty(self) -> bool:
        return self.weight == 0

    @property
    def std(self) -> float | None:
        return None if self.empty else math.sqrt(max(self.m2, 0.0) / self.weight)

    @property
    def average(self) -> float | None:
        # sum / count like exactextract and numpy, rather than the running mean.
        return None if self.empty else self.total / self.weight


@dataclass
class StoredPart:
    """Valid values of one chunk (and their coverage weights in exact mode)."""

    values: np.ndarray
    weights: np.ndarray | None = None  # float32; None means every weight is 1
    histogram: np.ndarray | None = None  # value counts per bucket

    @classmethod
    def make(cls, values: np.ndarray, weights: np.ndarray | None, dtype: np.dtype) -> StoredPart:
        values = values.astype(dtype, copy=False)
        if weights is not None:
            # exactextract merges equal values; +0.0 folds -0.0 into 0.0 so buckets agree.
            values = values + dtype.type(0)
            weights = weights.astype(np.float32)
            if np.all(weights == 1):
                weights = None
        histogram = None
        if values.size >= _EAGER_HISTOGRAM_MIN:
            histogram = np.bincount(bucket_of(values), minlength=BUCKETS)
        return cls(values, weights, histogram)


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
    _values_file: tempfile._TemporaryFileWrapper | None = None  # type: ignore[type-arg]
    _weights_file: tempfile._TemporaryFileWrapper | None = None  # type: ignore[type-arg]

    def add(self, part: StoredPart) -> None:
        if part.values.size == 0:
            return
        self.count += int(part.values.size)
        if part.histogram is not None:
            self.histogram += part.histogram
            part.histogram = None
        else:
            self._unbucketed.append(len(self._parts) + len(self._spilled))
        if self._values_file is not None:
            self._spill(part)
            return
        self._parts.append(part)
        self._memory_bytes += part.values.nbytes + (0 if part.weights is None else part.weights.nbytes)
        if self._memory_bytes > self.budget_bytes:
            for kept in self._parts:
                self._spill(kept)
            self._parts.clear()
            self._memory_bytes = 0

    def _spill(self, part: StoredPart) -> None:
        if self._values_file is None:
            directory = None if self.scratch_dir is None else str(self.scratch_dir)
            self._values_file = tempfile.TemporaryFile(prefix="analytics-values-", dir=directory)
            self._weights_file = tempfile.TemporaryFile(prefix="analytics-weights-", dir=directory)
        assert self._weights_file is not None
        offset = self._values_file.seek(0, os.SEEK_END)
        self._values_file.write(memoryview(np.ascontiguousarray(part.values)).cast("B"))
        weight_offset = -1
        if part.weights is not None:
            weight_offset = self._weights_file.seek(0, os.SEEK_END)
            self._weights_file.write(memoryview(np.ascontiguousarray(part.weights)).cast("B"))
        self._spilled.append(_Spilled(offset, int(part.values.size), weight_offset))

    def close(self) -> None:
        for handle in (self._values_file, self._weights_file):
            if handle is not None:
                handle.close()
        self._values_file = self._weights_file = None
        self._parts.clear()
        self._spilled.clear()

    def parts(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Every (values, weights or None) part, from disk first then memory."""
        for spilled in self._spilled:
            assert self._values_file is not None and self._weights_file is not None
            self._values_file.seek(spilled.offset)
            values = np.fromfile(self._values_file, dtype=self.dtype, count=spilled.count)
            weights = None
            if spilled.weight_offset >= 0:
                self._weights_file.seek(spilled.weight_offset)
                weights = np.fromfile(self._weights_file, dtype=np.float32, count=spilled.count)
            yield values, weights
        for part in self._parts:
            yield part.values, part.weights

    def _complete_histogram(self) -> np.ndarray:
        if self._unbucketed:
            wanted = set(self._unbucketed)
            for position, (values, _) in enumerate(self.parts()):
                if position in wanted:
                    self.histogram += np.bincount(bucket_of(values), minlength=BUCKETS)
            self._unbucketed.clear()
        return self.histogram

    def gather(self, buckets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(values, weights, bucket) of every stored value whose bucket is flagged in ``buckets``."""
        values_out, weights_out, buckets_out = [], [], []
        for values, weights in self.parts():
            bucket = bucket_of(values)
            selected = buckets[bucket]
            if not selected.any():
                continue
            values_out.append(values[selected])
            buckets_out.append(bucket[selected])
            weights_out.append(np.ones(int(selected.sum()), np.float32) if weights is None else weights[selected])
        if not values_out:
            return np.empty(0, self.dtype), np.empty(0, np.float32), np.empty(0, np.intp)
        return np.concatenate(values_out), np.concatenate(weights_out), np.concatenate(buckets_out)

    def everything(self) -> tuple[np.ndarray, np.ndarray]:
        values = [v for v, _ in self.parts()]
        weights = [np.ones(v.size, np.float32) if w is None else w for v, w in self.parts()]
        if not values:
            return np.empty(0, self.dtype), np.empty(0, np.float32)
        return np.concatenate(values), np.concatenate(weights)

    # -- quantiles ---------------------------------------------------------------------------

    def percentiles(self, qs: Sequence[float]) -> list[float | None]:
        """numpy's linear percentiles (q in 0..100) of the values, ignoring weights."""
        if self.count == 0:
            return [None for _ in qs]
        if self.count <= DIRECT_LIMIT:
            values, _ = self.everything()
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
        values, _, buckets = self.gather(flags)
        result: dict[int, float] = {}
        for bucket in np.unique(bucket_of_rank):
            inside = np.sort(values[buckets == bucket])
            start = int(cumulative[bucket - 1]) if bucket > 0 else 0
            for rank, rank_bucket in zip(ranks, bucket_of_rank, strict=True):
                if rank_bucket == bucket:
                    result[rank] = float(inside[rank - start])
        return result

    def weighted_quantiles(self, qs: Sequence[float]) -> list[float | None]:
        """exactextract's coverage-weighted quantiles (q in 0..100) of the values."""
        if self.count == 0:
            return [None for _ in qs]
        if self.count <= DIRECT_LIMIT:
            values, weights = self.everything()
            distinct, inverse = np.unique(values, return_inverse=True)
            sums = np.bincount(inverse, weights=weights.astype(np.float64))
            return [_weighted_quantile(distinct, sums, q / 100.0) for q in qs]
        return self._bucketed_weighted_quantiles(qs)

    def _bucketed_weighted_quantiles(self, qs: Sequence[float]) -> list[float | None]:
        histogram = self._complete_histogram()
        # Phase A: distinct values per group of buckets (whole buckets, ~DIRECT_LIMIT values).
        groups: list[tuple[int, int]] = []
        start, running = 0, 0
        for bucket in np.flatnonzero(histogram):
            if running and running + histogram[bucket] > DIRECT_LIMIT:
                groups.append((start, int(bucket)))
                start, running = int(bucket), 0
            running += int(histogram[bucket])
        groups.append((start, BUCKETS))
        summaries = []  # (distinct count, weight, first x, first w, last x, last w)
        for lo, hi in groups:
            flags = np.zeros(BUCKETS, dtype=bool)
            flags[lo:hi] = True
            distinct, sums = self._distinct(flags)
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
        results: list[float | None] = []
        # Phase B: per quantile, the group whose cumulative weight crosses the target.
        for q in qs:
            target = (q / 100.0) * span
            before_n, before_w = 0, 0.0
            chosen = len(summaries) - 1
            for position, summary in enumerate(summaries):
                if (n - 1) * (before_w + summary[3]) > target:
                    chosen = position
                    break
                before_n += summary[2]
                before_w += summary[3]
            else:
                before_n -= summaries[-1][2]
                before_w -= summaries[-1][3]
            lo, hi = summaries[chosen][0], summaries[chosen][1]
            flags = np.zeros(BUCKETS, dtype=bool)
            flags[lo:hi] = True
            distinct, sums = self._distinct(flags)
            # Neighbouring distinct values from the adjacent groups complete the s sequence.
            xs, ws = list(distinct), list(sums)
            offset = before_n
            if chosen > 0:
                previous = summaries[chosen - 1]
                xs.insert(0, previous[6])
                ws.insert(0, previous[7])
                offset -= 1
            if chosen + 1 < len(summaries):
                following = summaries[chosen + 1]
                xs.append(following[4])
                ws.append(following[5])
            cumulative_before = before_w - (ws[0] if chosen > 0 else 0.0)
            results.append(
                _weighted_quantile_window(np.array(xs), np.array(ws), offset, cumulative_before, n, total, q / 100.0)
            )
        return results

    def _distinct(self, flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values, weights, _ = self.gather(flags)
        if values.size == 0:
            return values, np.empty(0)
        distinct, inverse = np.unique(values, return_inverse=True)
        return distinct, np.bincount(inverse, weights=weights.astype(np.float64))

    def histogram_of(
        self, bins: int, value_range: tuple[float, float], weighted: bool
    ) -> tuple[list[float], list[float]]:
        counts = np.zeros(bins, dtype=np.float64)
        edges = np.histogram_bin_edges(np.empty(0), bins=bins, range=value_range)
        for values, weights in self.parts():
            part_weights = weights if (weighted and weights is not None) else None
            counts += np.histogram(values, bins=edges, weights=part_weights)[0]
        return [float(e) for e in edges], [float(c) for c in counts]


def _lerp(a: float, b: float, t: float) -> float:
    # numpy's _lerp: symmetric form keeps results monotone and exact at t = 1.
    diff = b - a
    return b - diff * (1.0 - t) if t >= 0.5 else a + diff * t


def _weighted_quantile(x: np.ndarray, w: np.ndarray, q: float) -> float:
    n = x.size
    return _weighted_quantile_window(x, w, 0, 0.0, n, float(w.sum()), q)


def _weighted_quantile_window(
    x: np.ndarray, w: np.ndarray, offset: int, cumulative_before: float, n: int, total: float, q: float
) -> float:
    """exactextract's quantile over a window x[0..] of the sorted distinct values, whose first
    element has global index ``offset`` and is preceded by ``cumulative_before`` weight."""
    cumulative = cumulative_before + np.cumsum(w)
    previous = np.concatenate([[cumulative_before], cumulative[:-1]])
    index = offset + np.arange(x.size)
    s = np.where(index == 0, 0.0, index * w + (n - 1) * previous)
    target = q * total * (n - 1)
    right = int(np.searchsorted(s, target, side="right"))
    if right == 0:
        return float(x[0])
    if right == x.size:
        return float(x[-1])
    left = right - 1
    return float(x[left] + (target - s[left]) * (x[right] - x[left]) / (s[right] - s[left]))
