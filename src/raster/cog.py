"""The house Cloud Optimized GeoTIFF convention, shared by upload conversion and job workers."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Final

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.io import DatasetReader

from raster._gdal import probe_last_blocks
from raster.errors import COG_WRITE_FAILED, UNREADABLE_RASTER, UNSUPPORTED_RASTER, RasterError
from raster.safe_open import CONVERSION_DRIVERS, GDAL_ERRORS, gdal_message, open_raster

COG_DRIVER: Final = "COG"
COG_CREATION_OPTIONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "COMPRESS": "ZSTD",
        "LEVEL": "3",  # zstd's own default: ~5% larger than GDAL's 9, ~30% faster to write
        "BLOCKSIZE": "512",
        "OVERVIEWS": "AUTO",  # reuse the source's overviews, else build them down to one block
        "STATISTICS": "YES",  # exact band statistics embedded, so inspection needs no pixel pass
        "BIGTIFF": "IF_SAFER",
    }
)
# Everything rasterio needs: rasterio.shutil.copy(src, dst, **COG_PROFILE).
COG_PROFILE: Final[Mapping[str, str]] = MappingProxyType({"driver": COG_DRIVER, **COG_CREATION_OPTIONS})

# The staging GTiff is only read once by the COG driver: tile it like the output, skip compression.
_STAGING_CREATION_OPTIONS: Final[Mapping[str, str]] = MappingProxyType(
    {"TILED": "YES", "BLOCKXSIZE": "512", "BLOCKYSIZE": "512", "BIGTIFF": "IF_SAFER"}
)


def convert_to_cog(
    src: Path,
    dst: Path,
    *,
    drivers: tuple[str, ...] = CONVERSION_DRIVERS,
    check_cancelled: Callable[[], None] | None = None,
) -> None:
    """Rewrite a raster of one of ``drivers``' formats as a COG following the house convention.

    Nodata, band descriptions, scales/offsets and dataset/band tags are carried over by the
    GDAL COG driver. ``dst`` appears atomically; a failed conversion leaves nothing behind.
    ``check_cancelled`` runs before the copy (one GDAL call that cannot be interrupted).
    Raises RasterError: UNSUPPORTED_RASTER_FORMAT or RASTER_TOO_LARGE (see ``safe_open``),
    UNREADABLE_RASTER for a bad source, UNSUPPORTED_RASTER for one without bands,
    COG_WRITE_FAILED otherwise.
    """
    with open_raster(Path(src), drivers=drivers) as source:
        if source.count == 0:
            raise RasterError(UNSUPPORTED_RASTER, "raster has no bands")
        # Cheap early rejection of truncated uploads, before spending time on a full copy.
        probe_last_blocks(source)
        if check_cancelled is not None:
            check_cancelled()
        copy_as_cog(source, Path(dst))


def write_cog(
    dst: Path,
    array: np.ndarray,
    *,
    crs: CRS | str,
    transform: Affine | Sequence[float],
    nodata: float | None,
    descriptions: Sequence[str],
    scales: Sequence[float] | None = None,
    offsets: Sequence[float] | None = None,
    band_tags: Sequence[Mapping[str, str]] | None = None,
    dataset_tags: Mapping[str, str] | None = None,
) -> None:
    """Write a (bands, rows, cols) array as a COG following the house convention.

    The array is staged as an uncompressed tiled GTiff next to ``dst`` because the COG driver
    can only create by copy. Embedded statistics are computed by GDAL (STATISTICS=YES).
    """
    dst = Path(dst)
    if array.ndim == 2:
        array = array[np.newaxis]
    if array.ndim != 3:
        raise ValueError(f"array must be (bands, rows, cols), got shape {array.shape}")
    band_count, height, width = array.shape
    for label, values in (
        ("descriptions", descriptions),
        ("scales", scales),
        ("offsets", offsets),
        ("band_tags", band_tags),
    ):
        if values is not None and len(values) != band_count:
            raise ValueError(f"{label} has {len(values)} entries for {band_count} bands")
    geotransform = transform if isinstance(transform, Affine) else Affine(*transform[:6])

    with staging_directory(dst.parent) as staging_dir:
        staging_path = staging_dir / "staging.tif"
        try:
            with rasterio.open(
                staging_path,
                "w",
                driver="GTiff",
                width=width,
                height=height,
                count=band_count,
                dtype=array.dtype,
                crs=crs,
                transform=geotransform,
                nodata=nodata,
                **_STAGING_CREATION_OPTIONS,
            ) as staging:
                staging.write(array)
                staging.descriptions = tuple(descriptions)
                if scales is not None:
                    staging.scales = tuple(float(scale) for scale in scales)
                if offsets is not None:
                    staging.offsets = tuple(float(offset) for offset in offsets)
                if dataset_tags:
                    staging.update_tags(**dataset_tags)
                for index, tags in enumerate(band_tags or (), start=1):
                    if tags:
                        staging.update_tags(index, **tags)
        except GDAL_ERRORS as error:
            raise RasterError(COG_WRITE_FAILED, f"cannot stage raster: {gdal_message(error)}") from error
        with open_raster(staging_path) as staging_source:
            copy_as_cog(staging_source, dst)


def copy_as_cog(source: DatasetReader, dst: Path) -> None:
    with _atomic_destination(dst) as partial_path:
        try:
            rasterio.shutil.copy(source, partial_path, driver=COG_DRIVER, **COG_CREATION_OPTIONS)
        except GDAL_ERRORS as error:
            # GDAL's messages do not say whether reading or writing failed, so ask the source;
            # the full read only happens on this failure path.
            reason = COG_WRITE_FAILED if _fully_readable(source) else UNREADABLE_RASTER
            raise RasterError(reason, f"cannot write COG: {gdal_message(error)}") from error


def _fully_readable(source: DatasetReader) -> bool:
    try:
        for index in source.indexes:
            for _, window in source.block_windows(index):
                source.read(index, window=window)
    except GDAL_ERRORS:
        return False
    return True


@contextmanager
def staging_directory(parent: Path) -> Iterator[Path]:
    # Next to the output so staging space comes from the same volume the result lands on.
    try:
        staging = tempfile.TemporaryDirectory(prefix=".cog-staging-", dir=parent)
    except OSError as error:
        raise RasterError(COG_WRITE_FAILED, f"cannot create a staging directory: {error}") from error
    with staging as staging_dir:
        yield Path(staging_dir)


@contextmanager
def _atomic_destination(dst: Path) -> Iterator[Path]:
    """Yield a temporary sibling path that replaces ``dst`` only if the block succeeds.

    Readers (tile servers, workers) never see a half-written COG under the final name.
    """
    try:
        descriptor, partial_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".partial.tif", dir=dst.parent)
        os.close(descriptor)
    except OSError as error:
        raise RasterError(COG_WRITE_FAILED, f"cannot create {dst.name}: {error}") from error
    partial_path = Path(partial_name)
    try:
        yield partial_path
        try:
            os.replace(partial_path, dst)
        except OSError as error:
            raise RasterError(COG_WRITE_FAILED, f"cannot move the COG into place: {error}") from error
    finally:
        partial_path.unlink(missing_ok=True)
