"""Clip a raster to an area of interest and write the result as a house COG, block by block.

The pixel window and mask are those of ``rasterio.mask.mask(dataset, [geometry], crop=True)``
for ``geometry = aoi_in_raster_crs(dataset, aoi)``: the same ``geometry_window`` (floor of the
offsets, ceiling of the far edges in pixel space, intersected with the raster, no pad) and the
same ``geometry_mask`` rasterization (pixel centres, ``all_touched=False``). Only the window is
read, in strips of whole source blocks, so memory follows the strip size, not the raster size.

Strips are read as ``geopera_kernel.raster.strips`` reads them and staged into a COG by
``geopera_kernel.raster.cog.staged_cog``, as the bathymetry model does. (Just over 400 lines:
the window, the mask and the strip writer must agree pixel for pixel with rasterio.mask, so
they change together in one file.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.errors import WindowError
from rasterio.features import geometry_mask, geometry_window
from rasterio.io import DatasetReader
from rasterio.windows import Window
from shapely.geometry import shape

from geopera_kernel.raster._gdal import gdal_cache_limit
from geopera_kernel.raster.cog import TRANSLATION_CACHE_MIN_BYTES, band_metadata, staged_cog
from geopera_kernel.raster.errors import UNSUPPORTED_RASTER, RasterError
from geopera_kernel.raster.geo import Area, NotInCrs, geodesic_area_km2, polygonal, to_crs, to_geojson
from geopera_kernel.raster.inspect import footprint_of
from geopera_kernel.raster.safe_open import open_raster
from geopera_kernel.raster.strips import CheckCancelled, Progress, read_masks, read_window, strip_source, strip_windows

# The AOI and the raster footprint do not overlap (or only touch).
AOI_OUTSIDE_FOOTPRINT: Final = "AOI_OUTSIDE_FOOTPRINT"


# Share of the progress range spent on strips; the rest is the COG translation (overviews,
# compression, statistics), which GDAL does in one uninterruptible call.
STRIPS_PROGRESS_SHARE: Final = 0.5


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
                Path(src),
                dataset,
                indexes,
                geometry,
                window,
                nodata,
                dst,
                collisions_matter=collisions_matter,
                report=report,
                check=check,
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
