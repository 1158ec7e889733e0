"""Private rasterio/GDAL helpers shared by inspection and COG writing."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import rasterio
from rasterio._err import CPLE_BaseError  # GDAL errors rasterio does not wrap in RasterioError
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReader
from rasterio.windows import Window

from server.raster.errors import UNREADABLE_RASTER, RasterError

GDAL_ERRORS: Final = (RasterioError, CPLE_BaseError, OSError)
_SNIFF_BYTES: Final = 1024


def gdal_message(error: BaseException) -> str:
    """The most specific message in an exception's cause chain.

    rasterio raises e.g. "Read failed. See previous exception for details." and chains the
    GDAL error that says what actually went wrong ("TIFFFillTile:Read error at ...").
    """
    message = str(error).strip() or type(error).__name__
    cause = error.__cause__
    for _ in range(10):  # bounded: cause chains are short, but never trust a cycle
        if cause is None:
            break
        if str(cause).strip():
            message = str(cause).strip()
        cause = cause.__cause__
    return message


@contextmanager
def open_raster(path: Path) -> Iterator[DatasetReader]:
    """Open a local raster file for reading; failures become RasterError(UNREADABLE_RASTER)."""
    _refuse_descriptor_file(path)
    try:
        with warnings.catch_warnings():
            # Missing georeferencing is reported by the callers as UNSUPPORTED_RASTER.
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dataset = rasterio.open(path)
    except GDAL_ERRORS as error:
        raise RasterError(UNREADABLE_RASTER, f"cannot open raster: {gdal_message(error)}") from error
    with dataset:
        yield dataset


def _refuse_descriptor_file(path: Path) -> None:
    """Reject XML/JSON descriptors (VRT, WMS/WMTS, STAC...) before GDAL parses them.

    Such files make GDAL open other local files or fetch URLs named inside them, so an
    uploaded one could read server files or reach internal hosts. Pixel formats do not start
    with "<" or "{"; the text rasters GDAL reads (ASCII grid, XYZ) do not either.
    """
    try:
        with path.open("rb") as file:
            head = file.read(_SNIFF_BYTES)
    except OSError as error:
        raise RasterError(UNREADABLE_RASTER, f"cannot read file: {error}") from error
    if head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"<", b"{", b"["):
        raise RasterError(UNREADABLE_RASTER, "XML/JSON raster descriptors (VRT, WMS, STAC...) are not accepted")


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
            with rasterio.open(dataset.name, driver=dataset.driver, overview_level=level) as overview:
                _read_last_blocks(overview)
    except GDAL_ERRORS as error:
        raise RasterError(UNREADABLE_RASTER, f"cannot read pixels: {gdal_message(error)}") from error


def _read_last_blocks(dataset: DatasetReader) -> None:
    # Band by band keeps memory at one block (GDAL's block cache avoids re-decoding pixel-
    # interleaved tiles); bands may in principle have different block shapes.
    for band_index, (block_height, block_width) in zip(dataset.indexes, dataset.block_shapes, strict=True):
        window = last_block_window(dataset.width, dataset.height, block_width, block_height)
        dataset.read(band_index, window=window)
