"""Which float32 values a store holds, counted per bucket without sorting them.

exactextract's weighted quantiles (``quantiles.py``) need n, the number of distinct values,
and the rank among them of the values around each quantile. Sorting a whole tile's values to
learn that cost five times the centre rule's selection. Instead every value sets the bit of
its bit pattern in ``Presence``, a table of one bit per possible float32: 512 MiB of address
space, reserved but never committed as a whole — only the pages values land on are touched,
8 KiB per occupied bucket (the 65,536 top-16-bit buckets of ``quantiles``). A bucket's
distinct count is the population count of its row.

Bits, not bytes, and a compiled loop (``_bitset.c``, built at install), because marking is one
scattered write per value (118 million on a whole tile): numpy's scatter
(``table[patterns] = True``) can only write bytes, and a byte table spreads a tile's values over
about 270 MiB, so nearly every write missed the caches (13 ns a value with both cores busy,
1.5 s of CPU on the tile: the whole difference between exact coverage and the centre rule). The
bit table of the same values is an eighth of that and mostly stays in the last-level cache
(2.3 ns a value alone, about 5 beside the other thread's decoding: 0.6 s on the tile). Where
no C compiler was there at install, the bits are set through numpy
(``_set_bits_numpy``: the same table, several times slower).

The table asks for transparent huge pages: values of one band or index occupy runs of
neighbouring buckets, and faulting their rows in 4 KiB pages cost more than marking them; in
2 MiB pages it is a few faults. The memory the table may touch is capped (``limit_bytes``,
charged per 2 MiB granule, the most a huge page can commit): marking that would pass the cap
marks nothing and leaves the table ``full``, and its store sorts instead. ``mark`` may be
called from several threads at once: setting a bit reads and writes its byte, so one thread
marks at a time (the compiled loop runs without the GIL, so the others go on decoding).
"""

from __future__ import annotations

import mmap
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

import numpy as np

_ROW_BITS: Final = 1 << 16  # values per bucket: one per value of the low 16 bits
_ROW: Final = _ROW_BITS // 8  # bytes per bucket
_BUCKETS: Final = 1 << 16
_GRANULE: Final = 2 * 1024 * 1024  # a huge page; memory is charged per granule touched
_ROWS_PER_GRANULE: Final = _GRANULE // _ROW
# Linux's MAP_NORESERVE (not exported by Python's mmap): no swap is reserved for the 512 MiB,
# so the reservation succeeds whatever the machine's memory; untouched pages cost nothing.
_NORESERVE: Final = 0x4000 if sys.platform.startswith("linux") else 0
# A thread pool's ``map`` (results in order).
Mapper = Callable[[Callable[[Any], Any], Iterable[Any]], Iterator[Any] | Iterable[Any]]


def _set_bits_numpy(table: np.ndarray, patterns: np.ndarray) -> None:
    """``_bitset.set_bits`` through numpy: a scatter of bytes loses the bits of two patterns
    of one byte written in the same pass (the last write wins), so the bits still unset are
    set again until none is left (each pass keeps at least one bit of every byte it writes)."""
    index = (patterns >> 3).astype(np.intp)
    bits = np.left_shift(np.uint8(1), (patterns & 7).astype(np.uint8))
    while index.size:
        table[index] |= bits
        lost = (table[index] & bits) == 0
        index, bits = index[lost], bits[lost]


_SetBits = Callable[[np.ndarray, np.ndarray], None]
_set_bits_compiled: _SetBits | None
try:
    from geopera_kernel.analytics._bitset import set_bits as _set_bits_compiled
except ImportError:  # installed without a C compiler
    _set_bits_compiled = None

# Sets the bit of each uint32 pattern (one caller per table at a time: not atomic).
_set_bits: _SetBits = _set_bits_numpy if _set_bits_compiled is None else _set_bits_compiled


class Presence:
    """One bit per float32 bit pattern, set when a value with that pattern was seen."""

    def __init__(self, limit_bytes: int | None = None) -> None:
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _NORESERVE
        # One granule more than the table, so the table can start on a granule boundary (huge
        # pages only back whole aligned granules).
        self._mapping: mmap.mmap | None = mmap.mmap(-1, _ROW * _BUCKETS + _GRANULE, flags=flags)
        if hasattr(mmap, "MADV_HUGEPAGE"):
            try:
                self._mapping.madvise(mmap.MADV_HUGEPAGE)
            except OSError:  # no transparent huge pages here: 4 KiB pages, same answers
                pass
        whole = np.frombuffer(self._mapping, dtype=np.uint8)
        start = -whole.ctypes.data % _GRANULE
        self._table: np.ndarray | None = whole[start : start + _ROW * _BUCKETS]
        del whole
        self._limit = limit_bytes
        self._lock = threading.Lock()
        self._granules = np.zeros(_BUCKETS // _ROWS_PER_GRANULE, dtype=bool)  # touched so far
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
        ``raw_buckets`` holding a raw top-16-bit bucket of each 2 MiB granule (256 rows) they
        fall in, any order. False, marking nothing, when the table is closed or full (the limit
        would be passed)."""
        assert values.dtype == np.float32
        table = self._table  # a local reference keeps the mapping alive while this thread marks
        if table is None:
            return False
        granules = np.unique(np.asarray(raw_buckets) // _ROWS_PER_GRANULE)
        patterns = np.ascontiguousarray(values).view(np.uint32)
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
            _set_bits(table, patterns)
        return True

    def counts(self, raw_buckets: np.ndarray, mapper: Mapper | None = None) -> np.ndarray:
        """Distinct values marked in each raw top-16-bit bucket given (the rows counted in
        ``mapper``'s threads, a share each, when given: a memory-bound scan of 8 KiB a row)."""
        assert self._table is not None
        rows = self._table.view(np.uint64).reshape(_BUCKETS, _ROW // 8)  # counted 64 bits at a time

        def count(raws: np.ndarray) -> np.ndarray:
            counted = np.empty(raws.size, dtype=np.int64)
            for start in range(0, raws.size, 256):  # 2 MiB of rows at a time
                chosen = rows[raws[start : start + 256]]
                counted[start : start + 256] = np.bitwise_count(chosen).sum(axis=1, dtype=np.int64)
            return counted

        raws = np.asarray(raw_buckets, dtype=np.intp)
        shares = np.array_split(raws, 2 if mapper is not None and raws.size > 512 else 1)
        return np.concatenate(list((mapper or map)(count, shares)))

    def extremes(self, raw: int) -> tuple[int, int]:
        """The bit patterns of the smallest and the largest value marked in raw bucket ``raw``
        (which must hold one): patterns order negative values in reverse."""
        assert self._table is not None
        row = self._table[raw * _ROW : (raw + 1) * _ROW]
        occupied = np.flatnonzero(row)  # bytes; then the lowest and highest bit of the end ones
        first, last = int(occupied[0]), int(occupied[-1])
        low_bit = (int(row[first]) & -int(row[first])).bit_length() - 1
        high_bit = int(row[last]).bit_length() - 1
        low, high = (raw << 16) | (first * 8 + low_bit), (raw << 16) | (last * 8 + high_bit)
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
