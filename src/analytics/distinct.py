"""Which float32 values a store holds, counted per bucket without sorting them.

exactextract's weighted quantiles (``quantiles.py``) need n, the number of distinct values,
and the rank among them of the values around each quantile. Sorting a whole tile's values to
learn that cost five times the centre rule's selection. Instead every value marks its bit
pattern in ``Presence``, a table of one byte per possible float32: 4 GiB of address space,
reserved but never committed as a whole — only the pages values land on are touched, 64 KiB
per occupied bucket (the 65,536 top-16-bit buckets of ``quantiles``), so its memory is the
occupied buckets', which the store counts, charges to its budget and caps. Marking is one
scatter per value; a bucket's distinct count is a count of its set bytes.
"""

from __future__ import annotations

import mmap
import sys
from typing import Final

import numpy as np

_ROW: Final = 1 << 16  # bytes per bucket: one per value of the low 16 bits
# Linux's MAP_NORESERVE (not exported by Python's mmap): no swap is reserved for the 4 GiB,
# so the reservation succeeds whatever the machine's memory; untouched pages cost nothing.
_NORESERVE: Final = 0x4000 if sys.platform.startswith("linux") else 0


class Presence:
    """One byte per float32 bit pattern, set when a value with that pattern was seen."""

    ROW_BYTES: Final = _ROW

    def __init__(self) -> None:
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _NORESERVE
        self._mapping: mmap.mmap | None = mmap.mmap(-1, _ROW * _ROW, flags=flags)
        self._table: np.ndarray | None = np.frombuffer(self._mapping, dtype=np.bool_)

    @classmethod
    def reserve(cls) -> Presence | None:
        """A new table, or None where the address space cannot be reserved (callers sort instead)."""
        try:
            return cls()
        except (OSError, ValueError, OverflowError, MemoryError, AttributeError):
            return None

    def mark(self, values: np.ndarray) -> None:
        """Mark float32 ``values`` (-0.0 must already be folded into 0.0: they are one value)."""
        assert self._table is not None and values.dtype == np.float32
        # Indices cast to intp first: numpy's own cast inside the scatter took twice as long.
        self._table[np.ascontiguousarray(values).view(np.uint32).astype(np.intp)] = True

    def counts(self, raw_buckets: np.ndarray) -> np.ndarray:
        """Distinct values marked in each raw top-16-bit bucket given."""
        assert self._table is not None
        rows = self._table.reshape(_ROW, _ROW)
        return np.array([np.count_nonzero(rows[int(raw)]) for raw in raw_buckets], dtype=np.int64)

    def close(self) -> None:
        """Give the touched pages back now rather than when the store is collected."""
        self._table = None
        if self._mapping is not None:
            try:
                self._mapping.close()
            except BufferError:  # a view is still alive somewhere: the mapping goes with it
                pass
            self._mapping = None
