"""ValueStore's order statistics against numpy, whatever mix of memory and scratch parts holds
the values, including values the bucket arithmetic could get wrong (negative, ±0, float64)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from geopera_kernel.analytics import quantiles
from geopera_kernel.analytics.quantiles import StoredPart, ValueStore

QS = [0.0, 1.0, 5.0, 25.0, 50.0, 75.0, 95.0, 99.0, 100.0]


def _parts(dtype: np.dtype) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    parts = [rng.normal(0.0, 1.0, size) for size in (5000, 17, 3000, 1, 4000, 250)]
    parts.append(np.array([-0.0, 0.0, -0.0, 0.0, 1e-30, -1e-30]))  # signed zeros, tiny values
    parts.append(np.full(700, -2.5))  # a long run of one negative value
    return [p.astype(dtype) for p in parts]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("budget", [1, 40_000, 1 << 30])
@pytest.mark.parametrize("eager", [1, 1 << 30])
def test_percentiles_equal_numpy(
    tmp_path, monkeypatch: pytest.MonkeyPatch, dtype: type, budget: int, eager: int
) -> None:
    monkeypatch.setattr(quantiles, "DIRECT_PERCENTILE_LIMIT", 0)  # always the bucketed path
    monkeypatch.setattr(quantiles, "_EAGER_HISTOGRAM_MIN", eager)
    parts = _parts(np.dtype(dtype))
    with ThreadPoolExecutor(2) as pool:
        store = ValueStore(np.dtype(dtype), budget, tmp_path, mapper=pool.map)
        try:
            for values in parts:
                store.add(StoredPart.make(values, None, np.dtype(dtype)))
            got = store.percentiles(QS)
        finally:
            store.close()
    want = np.percentile(np.concatenate(parts), QS)
    np.testing.assert_array_equal(np.array(got, dtype=np.float64), want)


def test_spilling_keeps_early_parts_in_memory(tmp_path) -> None:
    store = ValueStore(np.dtype(np.float32), 10_000, tmp_path)
    try:
        for size in (1000, 1000, 1000, 10):  # 4 kB each: the third crosses the budget
            store.add(StoredPart.make(np.arange(size, dtype=np.float32), None, np.dtype(np.float32)))
        assert len(store._parts) == 2 and len(store._spilled) == 2  # later parts go to disk, even small ones
        assert [values.size for values, _ in store.parts()] == [1000, 1000, 1000, 10]  # insertion order
    finally:
        store.close()


def _weighted_parts() -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Float32 values with many repeats (as a uint16 band's index has), unit and fractional
    weights mixed in one part, signed zeros on both sides of a part boundary, tiny and negative
    values: everything the per-bucket distinct counts and weights could get wrong."""
    rng = np.random.default_rng(11)
    parts: list[tuple[np.ndarray, np.ndarray | None]] = []
    for size in (6000, 1, 4000, 2500):
        values = (np.round(rng.normal(0.2, 0.3, size) * 300) / 300).astype(np.float32)
        parts.append((values, None))
    values = (np.round(rng.normal(-0.1, 0.5, 3000) * 50) / 50).astype(np.float32)
    weights = np.where(rng.random(3000) < 0.3, rng.random(3000), 1.0)
    parts.append((values, weights))
    parts.append((np.array([-0.0, -0.0, 1e-30, -1e-30, 0.0], np.float32), None))
    parts.append((np.array([-0.0, 0.0, 7.0], np.float32), np.array([0.25, 1.0, 0.5])))
    parts.append((np.full(900, -2.5, np.float32), None))
    return parts


@pytest.mark.parametrize("budget", [1 << 30, 200_000])
def test_weighted_quantiles_by_selection_equal_the_sorted_path(tmp_path, monkeypatch, budget: int) -> None:
    """exact mode's distinct-counting store (per-bucket counts, one gather of the crossing
    buckets) gives exactextract's quantiles bit for bit like sorting every value; with a budget
    too small for the presence table it falls back to sorting, with the same answers."""
    qs = [*QS, 33.3, 50.5, 66.6]
    monkeypatch.setattr(quantiles, "_EAGER_HISTOGRAM_MIN", 1000)  # eager and lazy histograms mixed
    dtype = np.dtype(np.float32)
    answers = {}
    selected = []
    original = ValueStore._selected_weighted_quantiles

    def spy(self: ValueStore, q: list[float]) -> list[float | None] | None:
        result = original(self, q)
        selected.append(result is not None)
        return result

    monkeypatch.setattr(ValueStore, "_selected_weighted_quantiles", spy)
    for presence_min in (1 << 40, 5000):  # never counting (one sort) / counting from the 2nd part
        monkeypatch.setattr(quantiles, "PRESENCE_MIN", presence_min)
        with ThreadPoolExecutor(2) as pool:
            store = ValueStore(dtype, budget, tmp_path, mapper=pool.map, distinct=True)
            try:
                for values, weights in _weighted_parts():
                    store.add(StoredPart.make(values, weights, dtype))
                answers[presence_min] = store.weighted_quantiles(qs)
            finally:
                store.close()
    assert answers[5000] == answers[1 << 40]
    # 1 GiB holds the presence table of every occupied bucket; 200 kB does not (fallback).
    assert selected == ([True] if budget == 1 << 30 else [])


@pytest.mark.parametrize("budget", [1 << 30, 200_000])
def test_parts_marked_in_worker_threads_give_the_same_quantiles(tmp_path, monkeypatch, budget: int) -> None:
    """A store told up front that many values will come (``expect``) reserves its presence
    table before any part, and the threads that make the parts mark them (``prepare``, two at
    once here): the same quantiles as marking them one by one in ``add`` and as sorting; with a
    budget too small for the table, the marking threads stop and the store sorts."""
    qs = [*QS, 33.3, 50.5, 66.6]
    monkeypatch.setattr(quantiles, "_EAGER_HISTOGRAM_MIN", 1000)
    monkeypatch.setattr(quantiles, "PRESENCE_MIN", 5000)
    dtype = np.dtype(np.float32)
    answers = []
    for in_threads in (False, True):
        store = ValueStore(dtype, budget, tmp_path, distinct=True)
        try:
            parts = [StoredPart.make(values, weights, dtype) for values, weights in _weighted_parts()]
            if in_threads:
                store.expect(10**6)
                assert store._presence is not None
                with ThreadPoolExecutor(2) as pool:
                    parts = list(pool.map(store.prepare, parts))
                assert all(part.marked for part in parts) == (budget == 1 << 30)
            for part in parts:
                store.add(part)
            assert (store._presence is not None) == (budget == 1 << 30)
            answers.append(store.weighted_quantiles(qs))
        finally:
            store.close()
    assert answers[0] == answers[1]
