"""Moments merged chunk by chunk.

``Moments`` accumulates (optionally coverage-weighted) count, sum, mean, population
variance, min and max in float64, merging per-chunk results with Chan et al.'s parallel
update, which stays accurate where a running sum of squares would cancel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


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
        # Deviations from the chunk mean in float64 (exact enough whatever the offset of the
        # data), one chunk-sized temporary. einsum rather than np.dot: BLAS dot spins up its
        # own threads, ~20x slower on chunk-sized vectors under load.
        if weights is None:
            return cls.of_copy(values, np.empty(values.size, np.float64), nodata)
        deviations = values.astype(np.float64)
        w64 = weights.astype(np.float64, copy=False)
        weight = float(w64.sum())
        total = float(np.einsum("i,i->", deviations, w64))
        deviations -= total / weight
        m2 = float(np.einsum("i,i->", deviations * w64, deviations))
        mean = total / weight
        return cls(weight, total, mean, m2, float(values.min()), float(values.max()), nodata)

    @classmethod
    def of_copy(cls, values: np.ndarray, deviations: np.ndarray, nodata: float = 0.0) -> Moments:
        """Moments of a chunk's (non-empty) valid ``values``, using ``deviations`` (a float64
        buffer of ``values.size`` items, overwritten) for their deviations from the mean: the sum
        casts to float64 as it reads, and the centring casts as it writes, so the values are
        read three times plus min and max, with no float64 copy of them made first."""
        weight = float(values.size)
        total = float(values.sum(dtype=np.float64))
        np.subtract(values, total / weight, out=deviations.reshape(values.shape), dtype=np.float64)
        m2 = float(np.einsum("i,i->", deviations, deviations))
        return cls(weight, total, total / weight, m2, float(values.min()), float(values.max()), nodata)

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
