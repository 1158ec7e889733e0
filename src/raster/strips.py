"""Reading a window of a raster in strips of whole source blocks, so that memory follows the
strip size, not the raster size (the clip and the bathymetry model read this way)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import numpy as np
from rasterio.io import DatasetReader
from rasterio.windows import Window

from geopera_kernel.raster.errors import UNREADABLE_RASTER, RasterError
from geopera_kernel.raster.safe_open import GDAL_ERRORS, gdal_message, open_raster

Progress = Callable[[float], None]
CheckCancelled = Callable[[], None]

# Strips of about this many rows (rounded to whole source blocks) are read, masked and staged.
STRIP_ROWS: Final = 512
# ...unless a strip of that height would exceed this many bytes (very wide windows, many bands).
STRIP_BYTES_MAX: Final = 64 * 1024 * 1024


def strip_windows(dataset: DatasetReader, window: Window, bytes_per_pixel: int) -> list[Window]:
    """Split ``window`` into full-width strips whose row edges fall on source block edges.

    About STRIP_ROWS rows each (whole blocks), fewer when a strip would need more than
    STRIP_BYTES_MAX at ``bytes_per_pixel`` (the caller's working memory per pixel), at least
    one block row. Aligned strips decode every source block once.
    """
    block_rows = max(1, dataset.block_shapes[0][0])
    row_bytes = max(1, int(window.width) * bytes_per_pixel)
    step = max(1, STRIP_ROWS // block_rows) * block_rows
    step = max(block_rows, min(step, STRIP_BYTES_MAX // row_bytes // block_rows * block_rows))
    start, stop = int(window.row_off), int(window.row_off + window.height)
    strips = []
    row = start
    while row < stop:
        end = min(stop, (row // step + 1) * step)
        strips.append(Window(int(window.col_off), row, int(window.width), end - row))
        row = end
    return strips


@contextmanager
def strip_source(src: Path) -> Iterator[DatasetReader]:
    """A fresh handle on ``src`` for one strip.

    Closing it drops its decoded blocks from GDAL's block cache, so the memory of a clip is one
    strip's worth whatever GDAL_CACHEMAX is; reopening a (COG) header costs about a millisecond.
    """
    with open_raster(src) as dataset:
        yield dataset


def read_window(dataset: DatasetReader, indexes: list[int], window: Window) -> np.ndarray:
    try:
        return dataset.read(indexes, window=window)
    except GDAL_ERRORS as error:
        raise RasterError(UNREADABLE_RASTER, f"cannot read pixels: {gdal_message(error)}") from error


def read_masks(dataset: DatasetReader, index: int, window: Window) -> np.ndarray:
    try:
        return dataset.read_masks(index, window=window)
    except GDAL_ERRORS as error:
        raise RasterError(UNREADABLE_RASTER, f"cannot read pixels: {gdal_message(error)}") from error
