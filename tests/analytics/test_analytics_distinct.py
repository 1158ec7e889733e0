"""The presence table (``distinct.Presence``): per-bucket distinct counts and extremes equal to
``np.unique``'s, when several threads mark the same bytes at once, and its memory cap; with the
compiled loop (``_bitset.c``, where the install could build it) and with numpy's."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from geopera_kernel.analytics import distinct
from geopera_kernel.analytics.distinct import Presence

# The loops that set the bits: numpy's always, the compiled one where the install built it.
SETTERS = [distinct._set_bits_numpy, *([distinct._set_bits_compiled] if distinct._set_bits_compiled else [])]


@pytest.fixture(params=SETTERS, ids=lambda setter: "compiled" if setter is distinct._set_bits_compiled else "numpy")
def set_bits(request, monkeypatch):
    monkeypatch.setattr(distinct, "_set_bits", request.param)
    return request.param


def _values() -> np.ndarray:
    """Neighbouring bit patterns (a run of consecutive float32s: eight share a byte of the
    table, so concurrent marking that lost a bit would show), repeats, negatives, tiny values."""
    rng = np.random.default_rng(5)
    run = np.arange(0x3E800000, 0x3E800000 + 40_000, dtype=np.uint32).view(np.float32)
    rounded = (np.round(rng.normal(0.1, 0.4, 200_000) * 3000) / 3000).astype(np.float32)
    noise = rng.normal(0.0, 1.0, 100_000).astype(np.float32)
    tiny = np.array([1e-30, -1e-30, 0.0, -2.5, 2.5, 7e30], dtype=np.float32)
    return np.concatenate([run, rounded, noise, tiny])


def _raw_buckets(values: np.ndarray) -> np.ndarray:
    return np.unique(values.view(np.uint32) >> 16).astype(np.intp)


def test_counts_and_extremes_equal_numpy_when_threads_mark_the_same_bytes_at_once(set_bits) -> None:
    values = _values()
    presence = Presence()
    try:
        rng = np.random.default_rng(9)
        # Every value in two parts of different threads, the parts shuffled: bits of one byte
        # are set from both threads at once.
        parts = [rng.permutation(values) for _ in range(2)]
        chunks = [chunk for part in parts for chunk in np.array_split(part, 16)]
        with ThreadPoolExecutor(4) as pool:
            assert all(pool.map(lambda chunk: presence.mark(chunk, _raw_buckets(chunk)), chunks))
        patterns = np.unique(values.view(np.uint32))
        raws = patterns >> 16
        buckets, expected_counts = np.unique(raws, return_counts=True)
        with ThreadPoolExecutor(2) as pool:
            assert presence.counts(buckets.astype(np.intp), pool.map).tolist() == expected_counts.tolist()
        assert presence.counts(buckets.astype(np.intp)).tolist() == expected_counts.tolist()
        for raw in buckets[:: max(1, buckets.size // 50)]:
            inside = patterns[raws == raw]
            low, high = int(inside.min()), int(inside.max())
            # Patterns of negative values (sign bit set) order their values in reverse.
            assert presence.extremes(int(raw)) == ((high, low) if raw & 0x8000 else (low, high))
        assert presence.touched_bytes > 0 and presence.touched_bytes % (2 * 1024 * 1024) == 0
    finally:
        presence.close()


def test_one_thread_sets_bits_at_a_time(monkeypatch, set_bits) -> None:
    """Setting a bit reads and writes its whole byte: two threads setting bits of one byte at
    once could each write back the byte without the other's bit. ``mark`` runs the loop under
    the table's lock, so marking threads take turns (the loop is timed here, not raced)."""
    inside, most = 0, 0
    guard = threading.Lock()

    def counting(table: np.ndarray, patterns: np.ndarray) -> None:
        nonlocal inside, most
        with guard:
            inside += 1
            most = max(most, inside)
        time.sleep(0.002)
        set_bits(table, patterns)
        with guard:
            inside -= 1

    monkeypatch.setattr(distinct, "_set_bits", counting)
    values = _values()
    presence = Presence()
    try:
        chunks = np.array_split(values, 40)
        with ThreadPoolExecutor(4) as pool:
            assert all(pool.map(lambda chunk: presence.mark(chunk, _raw_buckets(chunk)), chunks))
        assert most == 1
        buckets, expected = np.unique(np.unique(values.view(np.uint32)) >> 16, return_counts=True)
        assert presence.counts(buckets.astype(np.intp)).tolist() == expected.tolist()
    finally:
        presence.close()


def test_marking_past_the_memory_cap_marks_nothing_and_leaves_the_table_full(set_bits) -> None:
    granule = 2 * 1024 * 1024
    presence = Presence(limit_bytes=granule)  # one 2 MiB granule: 256 buckets
    try:
        near = np.array([0x3F800000, 0x3F800001], dtype=np.uint32).view(np.float32)  # 1.0 and the next: one bucket
        assert presence.mark(near, _raw_buckets(near))
        far = np.array([-3.0e20], dtype=np.float32)  # a bucket in another granule
        assert not presence.mark(far, _raw_buckets(far))
        assert presence.full and presence.touched_bytes == granule
        assert not presence.mark(near, _raw_buckets(near))  # full stays full
        raw = int(near.view(np.uint32)[0] >> 16)
        assert presence.counts(np.array([raw])).tolist() == [2]
    finally:
        presence.close()


def test_set_bits_sets_exactly_the_patterns_bits(set_bits) -> None:
    """Bit p & 7 of byte p >> 3, nothing else; repeats and bits of one byte in one call."""
    table = np.zeros(5, dtype=np.uint8)
    set_bits(table, np.array([0, 9, 9, 31, 8, 15, 39], dtype=np.uint32))
    assert table.tolist() == [0b1, 0b10000011, 0, 0b10000000, 0b10000000]


def test_the_compiled_loop_refuses_patterns_outside_the_table() -> None:
    if distinct._set_bits_compiled is None:  # not built here: numpy's scatter raises IndexError itself
        with pytest.raises(IndexError):
            distinct._set_bits_numpy(np.zeros(2, dtype=np.uint8), np.array([16], dtype=np.uint32))
        return
    with pytest.raises(ValueError, match="outside the table"):
        distinct._set_bits_compiled(np.zeros(2, dtype=np.uint8), np.array([3, 16], dtype=np.uint32))
    with pytest.raises(ValueError, match="multiple of 4"):
        distinct._set_bits_compiled(np.zeros(2, dtype=np.uint8), b"abc")
