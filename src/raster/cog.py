"""The house Cloud Optimized GeoTIFF convention and every way the kernel writes one: uploads
converted (``convert_to_cog``), an array written (``write_cog``), pixels staged strip by strip
(``staged_cog``: the clip, the bathymetry model). All end in ``copy_as_cog``."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.io import DatasetReader, DatasetWriter
from rasterio.windows import Window

from geopera_kernel.raster._gdal import gdal_cache_limit, probe_last_blocks
from geopera_kernel.raster.errors import COG_WRITE_FAILED, UNREADABLE_RASTER, UNSUPPORTED_RASTER, RasterError
from geopera_kernel.raster.safe_open import CONVERSION_DRIVERS, GDAL_ERRORS, gdal_message, open_raster

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

COG_BLOCK_SIZE: Final = int(COG_CREATION_OPTIONS["BLOCKSIZE"])
# Outputs up to this size are staged in a MEM dataset, larger ones in a file (see staged_cog).
MEMORY_STAGING_MAX_BYTES: Final = 64 * 1024 * 1024
# Lower bound of the block cache while an in-memory staging is translated (translation_cache_bytes).
TRANSLATION_CACHE_MIN_BYTES: Final = 1024 * 1024
STATISTICS_PREFIX: Final = "STATISTICS_"
# Metadata domains worth carrying over from a source; others describe the file layout
# (IMAGE_STRUCTURE) or a georeferencing that cropping invalidates (RPC, GEOLOCATION).
_COPIED_TAG_DOMAINS: Final = (None, "IMAGERY")


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
                **_STAGING_OPTIONS,
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


# --- staging strip by strip (clip, bathymetry) ----------------------------------------------


class Staging:
    """Where a COG's pixels are staged, strip by strip, before the COG driver copies them."""

    def write(self, data: np.ndarray, window: Window) -> None:
        try:
            self._write(data, window)
        except GDAL_ERRORS as error:
            raise RasterError(COG_WRITE_FAILED, f"cannot stage pixels: {gdal_message(error)}") from error

    def _write(self, data: np.ndarray, window: Window) -> None:
        raise NotImplementedError


class _MemoryStaging(Staging):
    # GDAL's MEM driver reads and writes its buffer directly, bypassing the block cache.
    def __init__(self, dataset: DatasetWriter) -> None:
        self.dataset = dataset

    def _write(self, data: np.ndarray, window: Window) -> None:
        self.dataset.write(data, window=window)


class _FileStaging(Staging):
    """An uncompressed GTiff; each write reopens and closes it, which flushes the strip's
    blocks to disk and out of GDAL's block cache instead of letting them pile up."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _write(self, data: np.ndarray, window: Window) -> None:
        with rasterio.open(self.path, "r+") as staging:
            staging.write(data, window=window)


@dataclass(frozen=True)
class BandMetadata:
    """Everything copied from source bands and the dataset to the output."""

    descriptions: tuple[str, ...]
    scales: tuple[float, ...]
    offsets: tuple[float, ...]
    units: tuple[str, ...]
    colorinterp: tuple[Any, ...] | None
    band_tags: tuple[dict[str | None, dict[str, str]], ...]
    dataset_tags: dict[str | None, dict[str, str]]


def band_metadata(dataset: DatasetReader, indexes: Sequence[int]) -> BandMetadata:
    positions = [index - 1 for index in indexes]
    colorinterp = dataset.colorinterp
    return BandMetadata(
        descriptions=tuple(dataset.descriptions[p] or "" for p in positions),
        scales=tuple(float(dataset.scales[p]) for p in positions),
        offsets=tuple(float(dataset.offsets[p]) for p in positions),
        units=tuple(dataset.units[p] or "" for p in positions),
        colorinterp=tuple(colorinterp[p] for p in positions) if colorinterp else None,
        band_tags=tuple(_tags(dataset, index) for index in indexes),
        dataset_tags=_tags(dataset, 0),
    )


def _tags(dataset: DatasetReader, bidx: int) -> dict[str | None, dict[str, str]]:
    copied: dict[str | None, dict[str, str]] = {}
    for domain in _COPIED_TAG_DOMAINS:
        tags = dataset.tags(bidx, ns=domain) if domain else dataset.tags(bidx)
        # Statistics describe the source's pixels; the COG driver recomputes them.
        kept = {key: value for key, value in tags.items() if not key.startswith(STATISTICS_PREFIX)}
        if kept:
            copied[domain] = kept
    return copied


# The staging GTiff is read once by the COG driver: uncompressed, tiled like the output.
# SPARSE_OK: closing the freshly created file must not write every block as zeros first.
_STAGING_OPTIONS: Final[Mapping[str, str]] = {
    "TILED": "YES",
    "BLOCKXSIZE": "512",
    "BLOCKYSIZE": "512",
    "BIGTIFF": "IF_SAFER",
    "SPARSE_OK": "TRUE",
}


def translation_cache_bytes(count: int, dtype: str) -> int:
    """GDAL block cache for translating an in-memory staging into a COG: 1.5 output tiles."""
    tile_bytes = COG_BLOCK_SIZE * COG_BLOCK_SIZE * count * np.dtype(dtype).itemsize
    return max(TRANSLATION_CACHE_MIN_BYTES, tile_bytes * 3 // 2)


@contextmanager
def staged_cog(
    dst: Path,
    *,
    width: int,
    height: int,
    count: int,
    dtype: str,
    crs: CRS,
    transform: Any,
    nodata: float | None,
    metadata: BandMetadata | None = None,
) -> Iterator[Staging]:
    """Yield a Staging (metadata already set); when the block ends cleanly, translate it into
    a house COG at ``dst`` (atomically) and check its embedded statistics.

    The COG driver can only create by copy. Outputs up to MEMORY_STAGING_MAX_BYTES are staged
    in memory (no disk round trip); larger ones in an uncompressed GTiff next to ``dst``, so a
    large output is never held whole in memory.
    """
    dst = Path(dst)
    profile: dict[str, Any] = {
        "width": width,
        "height": height,
        "count": count,
        "dtype": dtype,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
    }
    if width * height * count * np.dtype(dtype).itemsize <= MEMORY_STAGING_MAX_BYTES:
        with _create_staging("", driver="MEM", **profile) as memory:
            if metadata is not None:
                _apply_metadata(memory, metadata)
            yield _MemoryStaging(memory)
            # The source is in memory (MEM bypasses the block cache), so the cache only holds
            # the overview and output tiles being written: a tile and a half is enough, and
            # anything more stays resident (GDAL's default is 5% of RAM; a worker's 64 MiB).
            with gdal_cache_limit(translation_cache_bytes(count, dtype)):
                copy_as_cog(memory, dst)
    else:
        with staging_directory(dst.parent) as staging_dir:
            staging_path = staging_dir / "staging.tif"
            with _create_staging(staging_path, driver="GTiff", **profile, **_STAGING_OPTIONS) as staging:
                if metadata is not None:
                    _apply_metadata(staging, metadata)
            yield _FileStaging(staging_path)
            with open_raster(staging_path) as staged:
                copy_as_cog(staged, dst)
    try:
        verify_statistics(dst)
    except RasterError:
        dst.unlink(missing_ok=True)
        raise


def _create_staging(path: str | Path, **profile: Any) -> DatasetWriter:
    try:
        return rasterio.open(path, "w", **profile)
    except GDAL_ERRORS as error:
        raise RasterError(COG_WRITE_FAILED, f"cannot stage raster: {gdal_message(error)}") from error


def _apply_metadata(staging: DatasetWriter, metadata: BandMetadata) -> None:
    try:
        staging.descriptions = metadata.descriptions
        staging.scales = metadata.scales
        staging.offsets = metadata.offsets
        staging.units = metadata.units
        if metadata.colorinterp is not None:
            staging.colorinterp = metadata.colorinterp
        for domain, tags in metadata.dataset_tags.items():
            staging.update_tags(ns=domain, **tags) if domain else staging.update_tags(**tags)
        for bidx, band_tags in enumerate(metadata.band_tags, start=1):
            for domain, tags in band_tags.items():
                staging.update_tags(bidx, ns=domain, **tags) if domain else staging.update_tags(bidx, **tags)
    except GDAL_ERRORS as error:
        raise RasterError(COG_WRITE_FAILED, f"cannot stage metadata: {gdal_message(error)}") from error


def verify_statistics(path: Path) -> None:
    """Every band of a fresh COG must carry GDAL's embedded statistics (STATISTICS=YES)."""
    with open_raster(path) as dataset:
        for index in dataset.indexes:
            tags = dataset.tags(index)
            valid_percent = tags.get("STATISTICS_VALID_PERCENT")
            # An all-nodata band only gets VALID_PERCENT=0.
            complete = valid_percent is not None and (float(valid_percent) == 0.0 or "STATISTICS_MEAN" in tags)
            if not complete:
                raise RasterError(COG_WRITE_FAILED, f"band {index} of {path.name} has no embedded statistics")
