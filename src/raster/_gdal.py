"""Private rasterio/GDAL helpers shared by inspection and COG writing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rasterio.env import get_gdal_config, set_gdal_config
from rasterio.io import DatasetReader
from rasterio.windows import Window

from geopera_kernel.raster.errors import UNREADABLE_RASTER, RasterError
from geopera_kernel.raster.safe_open import GDAL_ERRORS, gdal_message, open_raster


def last_block_window(width: int, height: int, block_width: int, block_height: int) -> Window:
    col_off = (width - 1) // block_width * block_width
    row_off = (height - 1) // block_height * block_height
    return Window(col_off, row_off, width - col_off, height - row_off)


def probe_last_blocks(dataset: DatasetReader) -> None:
    """Decode the last block of every band, at full resolution and at every overview level.

    Opening a TIFF only parses its directories, so a truncated upload opens fine. The last
    block of each band is the data stored furthest into the file in both COG layout and
    classic GeoTIFF (overviews come before full resolution in a COG, after it when added by
    gdaladdo), so decoding those few blocks rejects truncation without reading the raster.
    """
    try:
        _read_last_blocks(dataset)
        for level in range(len(dataset.overviews(1))):
            with open_raster(Path(dataset.name), drivers=(dataset.driver,), overview_level=level) as overview:
                _read_last_blocks(overview)
    except GDAL_ERRORS as error:
        raise RasterError(UNREADABLE_RASTER, f"cannot read pixels: {gdal_message(error)}") from error


def _read_last_blocks(dataset: DatasetReader) -> None:
    # Band by band keeps memory at one block (GDAL's block cache avoids re-decoding pixel-
    # interleaved tiles); bands may in principle have different block shapes.
    for band_index, (block_height, block_width) in zip(dataset.indexes, dataset.block_shapes, strict=True):
        window = last_block_window(dataset.width, dataset.height, block_width, block_height)
        dataset.read(band_index, window=window)


# GDAL's block cache limit is one process-wide number, and jobs run in threads: every caller
# that bounds it registers its limit, the largest registered one applies (never more than the
# value found before the first one: a bound only lowers), and that value comes back when the
# last one ends.
_cache_lock = threading.Lock()
_cache_limits: list[int] = []
_cache_saved: int | None = None


@contextmanager
def gdal_cache_limit(limit_bytes: int) -> Iterator[None]:
    """Cap GDAL's block cache at ``limit_bytes`` bytes (or less, if it already was) while the
    block runs.

    In bytes on purpose: rasterio's ``set_gdal_config("GDAL_CACHEMAX", n)`` (and so
    ``rasterio.Env(GDAL_CACHEMAX=n)``) calls GDALSetCacheMax64(n) with n in bytes; only GDAL's
    own reading of the GDAL_CACHEMAX config option treats values below 100000 as MiB.
    """
    global _cache_saved
    if limit_bytes <= 0:
        raise ValueError(f"limit_bytes must be positive, got {limit_bytes}")
    with _cache_lock:
        if not _cache_limits:
            _cache_saved = int(get_gdal_config("GDAL_CACHEMAX"))
        _cache_limits.append(limit_bytes)
        set_gdal_config("GDAL_CACHEMAX", _bounded(max(_cache_limits)))
    try:
        yield
    finally:
        with _cache_lock:
            _cache_limits.remove(limit_bytes)
            restored = _bounded(max(_cache_limits)) if _cache_limits else _cache_saved
            if restored is not None:
                set_gdal_config("GDAL_CACHEMAX", restored)


def _bounded(limit_bytes: int) -> int:
    return limit_bytes if _cache_saved is None else min(limit_bytes, _cache_saved)
