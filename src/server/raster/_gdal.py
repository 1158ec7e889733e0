"""Private rasterio/GDAL helpers shared by inspection and COG writing."""

from __future__ import annotations

from pathlib import Path

from rasterio.io import DatasetReader
from rasterio.windows import Window

from server.raster.errors import UNREADABLE_RASTER, RasterError
from server.raster.safe_open import GDAL_ERRORS, gdal_message, open_raster


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
