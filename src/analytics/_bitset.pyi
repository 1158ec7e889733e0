import numpy as np

# Any contiguous buffer (table writable); the callers pass numpy arrays (uint8 table, uint32 patterns).
def set_bits(table: np.ndarray, patterns: np.ndarray | bytes, /) -> None: ...
