"""Which float32 values a store holds, counted per bucket without sorting them.

exactextract's weighted quantiles (``quantiles.py``) need n, the number of distinct values,
and the rank among them of the values around each quantile. Sorting a whole tile's values to
learn that cost five times the centre rule's selection. Instead every value marks its bit
pattern in ``Presence``, a table of one byte per possible float32: 4 GiB of address space,
reserved but never committed as a whole — only the pages values land on are touched, 64 KiB
per occupied bucket (the 65,536 top-16-bit buckets of ``quantiles``). Marking is one scatter
per value; a bucket's distinct count is a count of its set bytes.

The table asks for transparent huge pages: values of one band or index occupy runs of
neighbouring buckets, and faulting their rows in 4 KiB pages (16 per row) cost more than
marking a million values (100 km²: 15-30 ms of a 77 ms call); in 2 MiB pages it is a few
dozen faults. The memory the table may touch is capped (``limit_bytes``, charged per 2 MiB
granule, the most a huge page can commit): marking that would pass the cap marks nothing and
leaves the table ``full``, and its store sorts instead. ``mark`` may run in several threads
at once (the scatter releases the GIL; every write stores the same byte).
"""

from __future__ import annotations

import mmap
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

import numpy as np

_ROW: Final = 1 << 16  # bytes per bucket: one per value of the low 16 bits
_GRANULE: Final = 2 * 1024 * 1024  # a huge page; memory is charged per granule touched
_ROWS_PER_GRANULE: Final = _GRANULE // _ROW
# Linux's MAP_NORESERVE (not exported by Python's mmap): no swap is reserved for the 4 GiB,
# so the reservation succeeds whatever the machine's memory; untouched pages cost nothing.
_NORESERVE: Final = 0x4000 if sys.platform.startswith("linux") else 0
# A thread pool's ``map`` (results in order).
Mapper = Callable[[Callable[[Any], Any], Iterable[Any]], Iterator[Any] | Iterable[Any]]


class Presence:
    """One byte per float32 bit pattern, set when a value with that pattern was seen."""

    def __init__(self, limit_bytes: int | None = None) -> None:
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _NORESERVE
        # One granule more than the table, so the table can start on a granule boundary (huge
        # pages only back whole aligned granules).
        self._mapping: mmap.mmap | None = mmap.mmap(-1, _ROW * _ROW + _GRANULE, flags=flags)
        if hasattr(mmap, "MADV_HUGEPAGE"):
            try:
                self._mapping.madvise(mmap.MADV_HUGEPAGE)
            except OSError:  # no transparent huge pages here: 4 KiB pages, same answers
                pass
        whole = np.frombuffer(self._mapping, dtype=np.bool_)
        start = -whole.ctypes.data % _GRANULE
        self._table: np.ndarray | None = whole[start : start + _ROW * _ROW]
        del whole
        self._limit = limit_bytes
        self._lock = threading.Lock()
        self._granules = np.zeros(_ROW // _ROWS_PER_GRANULE, dtype=bool)  # touched so far
        self.touched_bytes = 0
        self.full = False

    @classmethod
    def reserve(cls, limit_bytes: int | None = None) -> Presence | None:
        """A new table, or None where the address space cannot be reserved (callers sort instead)."""
        try:
            return cls(limit_bytes)
        except (OSError, ValueError, OverflowError, MemoryError, AttributeError):
            return None

    def mark(self, values: np.ndarray, raw_buckets: np.ndarray) -> bool:
        """Mark float32 ``values`` (-0.0 must already be folded into 0.0: they are one value),
        ``raw_buckets`` holding a raw top-16-bit bucket of each 2 MiB granule (32 rows) they
        fall in, any order. False, marking nothing, when the table is closed or full (the limit
        would be passed)."""
        assert values.dtype == np.float32
        table = self._table  # a local reference keeps the mapping alive while this thread marks
        if table is None:
            return False
        granules = np.unique(np.asarray(raw_buckets) // _ROWS_PER_GRANULE)
        with self._lock:
            if self.full:
                return False
            fresh = granules[~self._granules[granules]]
            touched = self.touched_bytes + fresh.size * _GRANULE
            if self._limit is not None and touched > self._limit:
                self.full = True
                return False
            self._granules[fresh] = True
            self.touched_bytes = touched
        # Indices cast to intp first: numpy's own cast inside the scatter took twice as long.
        table[np.ascontiguousarray(values).view(np.uint32).astype(np.intp)] = True
        return True

    def counts(self, raw_buckets: np.ndarray, mapper: Mapper | None = None) -> np.ndarray:
        """Distinct values marked in each raw top-16-bit bucket given (the rows counted in
        ``mapper``'s threads, a share each, when given: a memory-bound scan of 64 KiB a row)."""
        assert self._table is not None
        rows = self._table.reshape(_ROW, _ROW)

        def count(raws: np.ndarray) -> list[int]:
            return [int(np.count_nonzero(rows[int(raw)])) for raw in raws]

        shares = np.array_split(np.asarray(raw_buckets), 2 if mapper is not None and len(raw_buckets) > 64 else 1)
        counted = (mapper or map)(count, shares)
        return np.array([c for share in counted for c in share], dtype=np.int64)

    def extremes(self, raw: int) -> tuple[int, int]:
        """The bit patterns of the smallest and the largest value marked in raw bucket ``raw``
        (which must hold one): patterns order negative values in reverse."""
        assert self._table is not None
        marked = np.flatnonzero(self._table[raw * _ROW : (raw + 1) * _ROW])
        low, high = (raw << 16) | int(marked[0]), (raw << 16) | int(marked[-1])
        return (high, low) if raw & 0x8000 else (low, high)

    def close(self) -> None:
        """Give the touched pages back now rather than when the store is collected (or, when
        a thread is still marking, when it is done)."""
        self._table = None
        if self._mapping is not None:
            try:
                self._mapping.close()
            except BufferError:  # a view is still alive somewhere: the mapping goes with it
                pass
            self._mapping = None
