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
