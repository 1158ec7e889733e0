"""Clip a raster to an area of interest and write the result as a house COG, block by block.

The pixel window and mask are those of ``rasterio.mask.mask(dataset, [geometry], crop=True)``
for ``geometry = aoi_in_raster_crs(dataset, aoi)``: the same ``geometry_window`` (floor of the
offsets, ceiling of the far edges in pixel space, intersected with the raster, no pad) and the
same ``geometry_mask`` rasterization (pixel centres, ``all_touched=False``). Only the window is
read, in strips of whole source blocks, so memory follows the strip size, not the raster size.

The strip/staging/COG helpers at the bottom are shared with ``raster.bathymetry``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.errors import WindowError
from rasterio.features import geometry_mask, geometry_window
from rasterio.io import DatasetReader, DatasetWriter
from rasterio.windows import Window
from shapely.geometry import shape

from raster._gdal import gdal_cache_limit
from raster.cog import COG_CREATION_OPTIONS, copy_as_cog, staging_directory
from raster.errors import COG_WRITE_FAILED, UNREADABLE_RASTER, UNSUPPORTED_RASTER, RasterError
from raster.geo import Area, NotInCrs, geodesic_area_km2, polygonal, to_crs, to_geojson
from raster.inspect import footprint_of
from raster.safe_open import GDAL_ERRORS, gdal_message, open_raster

# The AOI and the raster footprint do not overlap (or only touch).
AOI_OUTSIDE_FOOTPRINT: Final = "AOI_OUTSIDE_FOOTPRINT"

Progress = Callable[[float], None]
CheckCancelled = Callable[[], None]

# Strips of about this many rows (rounded to whole source blocks) are read, masked and staged.
STRIP_ROWS: Final = 512
# ...unless a strip of that height would exceed this many bytes (very wide windows, many bands).
STRIP_BYTES_MAX: Final = 64 * 1024 * 1024
# Outputs up to this size are staged in a MEM dataset, larger ones in a file (see staged_cog).
MEMORY_STAGING_MAX_BYTES: Final = 64 * 1024 * 1024
# Lower bound of the block cache while an in-memory staging is translated (translation_cache_bytes).
TRANSLATION_CACHE_MIN_BYTES: Final = 1024 * 1024
# Share of the progress range spent on strips; the rest is the COG translation (overviews,
# compression, statistics), which GDAL does in one uninterruptible call.
STRIPS_PROGRESS_SHARE: Final = 0.5
_STATISTICS_PREFIX: Final = "STATISTICS_"
# Metadata domains worth carrying over; others describe the file layout (IMAGE_STRUCTURE) or a
# georeferencing that clipping invalidates (RPC, GEOLOCATION).
_COPIED_TAG_DOMAINS: Final = (None, "IMAGERY")
COG_BLOCK_SIZE: Final = int(COG_CREATION_OPTIONS["BLOCKSIZE"])


@dataclass(frozen=True)
class ClipResult:
    """What ``clip_to_cog`` wrote.

    ``footprint`` is the AOI ∩ raster footprint as a GeoJSON (Multi)Polygon in EPSG:4326 lon/lat
    (RFC 7946 orientation); ``window`` is (col_off, row_off, width, height) in source pixels.
    ``aoi_pixel_count`` counts pixels whose centre is inside the AOI; ``valid_pixel_count`` those
    of them that hold data in every output band.
    """

    path: Path
    footprint: dict[str, Any]
    area_km2: float  # geodesic area of ``footprint``
    window: tuple[int, int, int, int]
    width: int
    height: int
    crs: str
    transform: tuple[float, float, float, float, float, float]
    nodata: float
    band_indexes: tuple[int, ...]
    pixel_count: int
    aoi_pixel_count: int
    valid_pixel_count: int


def clip_to_cog(
    src: str | Path,
    aoi_lonlat: Area,
    dst: Path,
    *,
    bands: list[int] | None = None,
    progress: Progress | None = None,
    check_cancelled: CheckCancelled | None = None,
) -> ClipResult:
    """Clip ``src`` to ``aoi_lonlat`` (EPSG:4326 lon/lat) and write a COG at ``dst``.

    Pixels whose centre is outside the AOI become nodata; ``bands`` picks (1-based) source
    bands, all by default. Dtype, band descriptions, scales/offsets, units, colour
    interpretation and dataset/band tags are kept; STATISTICS_* tags are recomputed.

    Nodata is the source's. A source without one gets a value chosen so that it cannot
    collide with data inside the AOI: NaN for floats (NaN pixels then read as nodata), else the
    dtype's maximum (unsigned) or minimum (signed); when that value does occur inside the AOI,
    one extra pass finds the unused value closest to the dtype's extremes and the strips are
    written again. RasterError(UNSUPPORTED_RASTER) when an integer source uses every value.

    ``check_cancelled`` is called before every strip and before the COG translation; whatever
    it raises propagates and leaves no output. ``progress`` receives fractions in [0, 1].
    Raises RasterError: AOI_OUTSIDE_FOOTPRINT, UNREADABLE_RASTER, UNSUPPORTED_RASTER,
    COG_WRITE_FAILED.
    """
    dst = Path(dst)
    report = progress or (lambda fraction: None)
    check = check_cancelled or (lambda: None)
    with open_raster(Path(src)) as dataset:
        require_georeferenced(dataset)
        indexes = _band_indexes(dataset, bands)
        footprint_lonlat = _aoi_footprint_lonlat(dataset, aoi_lonlat)
        geometry = _to_crs(footprint_lonlat, dataset.crs)
        window = _crop_window(dataset, geometry)
        source_nodata = dataset.nodatavals[indexes[0] - 1]
        nodata = source_nodata if source_nodata is not None else _default_nodata(dataset, indexes)

        def write(nodata: float, *, collisions_matter: bool) -> _Counts:
            return _write_clip(
                Path(src), dataset, indexes, geometry, window, nodata, dst,
                collisions_matter=collisions_matter, report=report, check=check,
            )

        try:
            # NaN pixels of a float source without nodata are meant to be nodata anyway.
            counts = write(nodata, collisions_matter=source_nodata is None and not math.isnan(nodata))
        except _NodataCollision:
            nodata = _free_nodata(Path(src), dataset, indexes, geometry, window, check)
            counts = write(nodata, collisions_matter=False)
        crs = _crs_text(dataset.crs)
        transform = tuple(dataset.window_transform(window))[:6]
    report(1.0)
    return ClipResult(
        path=dst,
        footprint=to_geojson(footprint_lonlat),
        area_km2=geodesic_area_km2(footprint_lonlat),
        window=(int(window.col_off), int(window.row_off), int(window.width), int(window.height)),
        width=int(window.width),
        height=int(window.height),
        crs=crs,
        transform=transform,
        nodata=float(nodata),
        band_indexes=tuple(indexes),
        pixel_count=int(window.width) * int(window.height),
        aoi_pixel_count=counts.aoi,
        valid_pixel_count=counts.valid,
    )


def aoi_in_raster_crs(dataset: DatasetReader, aoi_lonlat: Area) -> Area:
    """The geometry ``clip_to_cog`` windows and masks with: AOI ∩ raster footprint, densified
    in lon/lat and reprojected to the raster CRS. Deterministic (pure PROJ arithmetic).

    ``rasterio.mask.mask(dataset, [aoi_in_raster_crs(dataset, aoi)], crop=True)`` is the
    reference ``clip_to_cog`` matches pixel for pixel.
    """
    require_georeferenced(dataset)
    return _to_crs(_aoi_footprint_lonlat(dataset, aoi_lonlat), dataset.crs)


def require_georeferenced(dataset: DatasetReader) -> None:
    if dataset.crs is None or dataset.transform.is_identity:
        raise RasterError(UNSUPPORTED_RASTER, "raster has no CRS or geotransform")
    if dataset.count == 0:
        raise RasterError(UNSUPPORTED_RASTER, "raster has no bands")


# --- geometry ---------------------------------------------------------------------------------


def _aoi_footprint_lonlat(dataset: DatasetReader, aoi_lonlat: Area) -> Area:
    """AOI ∩ raster footprint in lon/lat.

    Intersecting in lon/lat first keeps the user's vertices, never projects parts of the AOI
    far outside the raster (where the raster CRS may not be defined) and makes the window the
    tight one around the pixels that can be inside the AOI.
    """
    if aoi_lonlat.is_empty or aoi_lonlat.geom_type not in ("Polygon", "MultiPolygon"):
        raise ValueError("the AOI must be a non-empty Polygon or MultiPolygon")
    footprint = shape(footprint_of(dataset))
    overlap = polygonal(aoi_lonlat.intersection(footprint))
    if overlap.is_empty or overlap.area == 0.0:
        raise RasterError(AOI_OUTSIDE_FOOTPRINT, "the AOI does not overlap the raster")
    return overlap


def _to_crs(geometry_lonlat: Area, crs: CRS) -> Area:
    try:
        return to_crs(geometry_lonlat, crs.to_wkt())
    except NotInCrs as error:
        raise RasterError(UNSUPPORTED_RASTER, "the AOI cannot be expressed in the raster CRS") from error


def to_window_pixels(geometry: Area, window_transform: Affine) -> Area:
    """``geometry`` in the window's pixel space, computed exactly as GDAL's rasterizer does.

    GDAL maps coordinates with the inverse geotransform from GDALInvGeoTransform, applied as
    ``igt0 + x * igt1 + y * igt2``. Doing the same here, bit for bit, and rasterizing each strip
    with a whole-pixel translation (exact in floating point) gives every strip exactly the
    rows a single rasterization of the whole window would (rasterio.mask's). Rasterizing strips
    with their own geotransforms would round differently, which flips pixels whose centre lies
    exactly on an edge (AOI vertices on a pixel-centre grid).
    """
    igt = _gdal_inverse_geotransform(window_transform.to_gdal())

    def forward(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return igt[0] + x * igt[1] + y * igt[2], igt[3] + x * igt[4] + y * igt[5]

    # types-shapely types the callable of interleaved=True only (one (n, 2) array).
    return shapely.transform(geometry, forward, interleaved=False)  # type: ignore[arg-type]


def _gdal_inverse_geotransform(gt: tuple[float, ...]) -> tuple[float, ...]:
    # Transcribed from GDALInvGeoTransform (gcore/gdaltransformer.cpp), including the
    # north-up special case, so the results match GDAL's to the last bit.
    if gt[2] == 0.0 and gt[4] == 0.0 and gt[1] != 0.0 and gt[5] != 0.0:
        return (-gt[0] / gt[1], 1.0 / gt[1], 0.0, -gt[3] / gt[5], 0.0, 1.0 / gt[5])
    det = gt[1] * gt[5] - gt[2] * gt[4]
    magnitude = max(abs(gt[1]), abs(gt[2]), abs(gt[4]), abs(gt[5]))
    if abs(det) <= 1e-10 * magnitude * magnitude:
        raise RasterError(UNSUPPORTED_RASTER, "the raster geotransform is not invertible")
    inv_det = 1.0 / det
    return (
        (gt[2] * gt[3] - gt[0] * gt[5]) * inv_det,
        gt[5] * inv_det,
        -gt[2] * inv_det,
        (-gt[1] * gt[3] + gt[0] * gt[4]) * inv_det,
        -gt[4] * inv_det,
        gt[1] * inv_det,
    )


def strip_mask(pixels: Area, window: Window, strip: Window) -> np.ndarray:
    """True outside the AOI for ``strip``, from the window-pixel-space geometry ``pixels``."""
    shift = Affine.translation(0.0, float(strip.row_off - window.row_off))
    return geometry_mask([pixels], out_shape=(int(strip.height), int(strip.width)), transform=shift, all_touched=False)


def _crop_window(dataset: DatasetReader, geometry: Area) -> Window:
    # rasterio.mask.raster_geometry_mask(crop=True, pad=False) uses exactly this call.
    try:
        window = geometry_window(dataset, [geometry])
    except WindowError as error:
        raise RasterError(AOI_OUTSIDE_FOOTPRINT, "the AOI does not overlap the raster") from error
    col_off, row_off, width, height = (int(value) for value in window.flatten())
    if width <= 0 or height <= 0:
        raise RasterError(AOI_OUTSIDE_FOOTPRINT, "the AOI does not overlap the raster")
    return Window(col_off, row_off, width, height)


def _crs_text(crs: CRS) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg is not None else crs.to_wkt()


# --- the clip pass ----------------------------------------------------------------------------


@dataclass
class _Counts:
    aoi: int = 0
    valid: int = 0


class _NodataCollision(Exception):
    """The chosen nodata value occurs inside the AOI in a source that has no nodata."""


def _band_indexes(dataset: DatasetReader, bands: Sequence[int] | None) -> list[int]:
    if bands is None:
        return list(dataset.indexes)
    indexes = [int(band) for band in bands]
    if not indexes or any(not 1 <= band <= dataset.count for band in indexes):
        raise ValueError(f"bands must be 1-based indexes in [1, {dataset.count}], got {list(bands)}")
    return indexes


def _write_clip(
    src: Path,
    dataset: DatasetReader,
    indexes: list[int],
    geometry: Area,
    window: Window,
    nodata: float,
    dst: Path,
    *,
    collisions_matter: bool,
    report: Progress,
    check: CheckCancelled,
) -> _Counts:
    counts = _Counts()
    # Bands whose invalid pixels are not already equal to the output nodata (alpha or
    # per-dataset masks, a different per-band nodata) need their GDAL mask read and applied,
    # as rasterio.mask's masked read does.
    read_mask = [_needs_mask_read(dataset, index, nodata) for index in indexes]
    strips = strip_windows(dataset, window, _clip_bytes_per_pixel(dataset, indexes))
    pixels = to_window_pixels(geometry, dataset.window_transform(window))
    meta = band_metadata(dataset, indexes)
    read_cache = strip_read_cache_bytes(dataset)
    with staged_cog(
        dst,
        width=int(window.width),
        height=int(window.height),
        count=len(indexes),
        dtype=dataset.dtypes[indexes[0] - 1],
        crs=dataset.crs,
        transform=dataset.window_transform(window),
        nodata=nodata,
        metadata=meta,
    ) as staging:
        for number, strip in enumerate(strips):
            check()
            with gdal_cache_limit(read_cache), strip_source(src) as source:
                data = read_window(source, indexes, strip)
                outside = strip_mask(pixels, window, strip)
                if collisions_matter and np.any(_equals(data, nodata) & ~outside):
                    raise _NodataCollision
                np.copyto(data, np.asarray(nodata, dtype=data.dtype), where=outside)
                for position, index in enumerate(indexes):
                    if read_mask[position]:
                        masked = read_masks(source, index, strip) == 0
                        np.copyto(data[position], np.asarray(nodata, dtype=data.dtype), where=masked)
            counts.aoi += int(np.count_nonzero(~outside))
            counts.valid += int(np.count_nonzero(~np.any(_equals(data, nodata), axis=0)))
            staging.write(data, Window(0, strip.row_off - window.row_off, strip.width, strip.height))
            report(STRIPS_PROGRESS_SHARE * (number + 1) / len(strips))
        check()
    return counts


def strip_read_cache_bytes(dataset: DatasetReader) -> int:
    """GDAL block cache while a strip is read: a block and a half of every band.

    Reads go block by block with every band of a block before the next one (a pixel-interleaved
    block decodes all bands at once), so the cache only needs the current block; more stays
    resident after the strip, and with GDAL's default (5% of RAM) nothing bounds it.
    """
    block_rows, block_cols = dataset.block_shapes[0]
    block_bytes = block_rows * block_cols * dataset.count * np.dtype(dataset.dtypes[0]).itemsize
    return max(TRANSLATION_CACHE_MIN_BYTES, block_bytes * 3 // 2)


def _clip_bytes_per_pixel(dataset: DatasetReader, indexes: list[int]) -> int:
    # The strip itself plus boolean temporaries of about the same size.
    return 2 * len(indexes) * np.dtype(dataset.dtypes[indexes[0] - 1]).itemsize + 2


def _equals(data: np.ndarray, value: float) -> np.ndarray:
    return np.isnan(data) if math.isnan(value) else data == np.asarray(value, dtype=data.dtype)


def _needs_mask_read(dataset: DatasetReader, index: int, nodata: float) -> bool:
    flags = dataset.mask_flag_enums[index - 1]
    if flags == [MaskFlags.all_valid]:
        return False
    band_nodata = dataset.nodatavals[index - 1]
    if flags == [MaskFlags.nodata] and band_nodata is not None:
        same = band_nodata == nodata or (math.isnan(band_nodata) and math.isnan(nodata))
        return not same
    return True


# --- nodata for sources without one -----------------------------------------------------------


def _default_nodata(dataset: DatasetReader, indexes: list[int]) -> float:
    dtype = np.dtype(dataset.dtypes[indexes[0] - 1])
    if dtype.kind == "f":
        return math.nan
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return float(info.max if dtype.kind == "u" else info.min)
    raise RasterError(UNSUPPORTED_RASTER, f"cannot choose a nodata value for {dtype.name} pixels")


def _free_nodata(
    src: Path, dataset: DatasetReader, indexes: list[int], geometry: Area, window: Window, check: CheckCancelled
) -> float:
    """An unused value inside the AOI, as close as possible to the dtype's extremes."""
    dtype = np.dtype(dataset.dtypes[indexes[0] - 1])
    info = np.iinfo(dtype)
    # Candidates from both ends inwards; 16-bit types are covered completely.
    half = min(int(info.max) - int(info.min) + 1, 1 << 16) // 2
    low = [int(info.min) + step for step in range(half)]
    high = [int(info.max) - step for step in range(half)]
    first, second = (high, low) if dtype.kind == "u" else (low, high)
    candidates = np.array([value for pair in zip(first, second, strict=True) for value in pair], dtype=dtype)
    used = np.zeros(candidates.size, dtype=bool)
    pixels = to_window_pixels(geometry, dataset.window_transform(window))
    for strip in strip_windows(dataset, window, _clip_bytes_per_pixel(dataset, indexes)):
        check()
        with strip_source(src) as source:
            data = read_window(source, indexes, strip)
        inside = ~strip_mask(pixels, window, strip)
        used |= np.isin(candidates, data[:, inside])
    free = candidates[~used]
    if free.size == 0:
        raise RasterError(
            UNSUPPORTED_RASTER,
            f"the raster has no nodata value and its {dtype.name} pixels use every candidate value",
        )
    return float(free[0])


# --- strips, metadata and staging (shared with bathymetry) -------------------------------------


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
        kept = {key: value for key, value in tags.items() if not key.startswith(_STATISTICS_PREFIX)}
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
        "width": width, "height": height, "count": count, "dtype": dtype,
        "crs": crs, "transform": transform, "nodata": nodata,
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
