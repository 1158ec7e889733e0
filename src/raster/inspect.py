"""Inspect a raster file: grid, bands, statistics, footprint, acquisition time, checksum.

(Just over 400 lines, kept together: every fact an item records of a file comes from this one
pass over the dataset, and the helpers here serve only that pass.)
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
from affine import Affine
from rasterio.io import DatasetReader
from rasterio.warp import transform_geom
from rio_cogeo.cogeo import cog_validate
from shapely.geometry import shape

from geopera_kernel.raster._gdal import probe_last_blocks
from geopera_kernel.raster.bands import common_name_for, is_sensor_band_id
from geopera_kernel.raster.digest import size_and_sha256
from geopera_kernel.raster.errors import NOT_A_COG, UNREADABLE_RASTER, UNSUPPORTED_RASTER, RasterError
from geopera_kernel.raster.geo import to_geojson
from geopera_kernel.raster.safe_open import GDAL_ERRORS, GEOTIFF_DRIVERS, gdal_message, open_raster
from geopera_kernel.raster.types import BandInfo, BandStatistics, GridInfo, RasterInfo, RenderHint, RescaleRange

CheckCancelled = Callable[[], None]  # raises to stop the work (see inspect_raster)

MEDIA_TYPE_COG: Final = "image/tiff; application=geotiff; profile=cloud-optimized"
MEDIA_TYPE_GEOTIFF: Final = "image/tiff; application=geotiff"
# Only reachable with require_cog=False; anything unlisted is served as opaque bytes.
_MEDIA_TYPES_BY_DRIVER: Final[Mapping[str, str]] = {
    "GTiff": MEDIA_TYPE_GEOTIFF,
    "JP2OpenJPEG": "image/jp2",
}

_STATISTICS_PREFIX: Final = "STATISTICS_"
_STATISTICS_TAGS: Final = (
    "STATISTICS_MINIMUM",
    "STATISTICS_MAXIMUM",
    "STATISTICS_MEAN",
    "STATISTICS_STDDEV",
    "STATISTICS_VALID_PERCENT",
)
# Upper bound for one block read while computing statistics (bands are read in groups).
_STATISTICS_READ_BUDGET_BYTES: Final = 64 * 1024 * 1024
# 20 segments per edge keeps the reprojected footprint within a fraction of a pixel for
# typical scene sizes, where a 4-corner box would cut off the curved edges.
_FOOTPRINT_POINTS_PER_EDGE: Final = 21
_WAVELENGTH_TAGS: Final = ("CENTRAL_WAVELENGTH_UM", "CENTER_WAVELENGTH_UM")
# Acquisition time first: TIFFTAG_DATETIME is, per the TIFF spec, the file's creation time and
# is only the acquisition time when the producer chose to write it that way.
_DATETIME_TAGS: Final = ("ACQUISITION_DATETIME", "DATETIME", "TIFFTAG_DATETIME")
_TIFF_DATETIME_FORMAT: Final = "%Y:%m:%d %H:%M:%S"
_DATE_IN_NAME = re.compile(r"(?<!\d)((?:19|20)\d{2})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2}))?(?!\d)")


def inspect_raster(
    path: Path,
    *,
    require_cog: bool = True,
    drivers: tuple[str, ...] = GEOTIFF_DRIVERS,
    check_cancelled: CheckCancelled | None = None,
) -> RasterInfo:
    """Describe a georeferenced raster, rejecting unreadable, truncated and (optionally) non-COG files.

    Only ``drivers`` open it (see ``geopera_kernel.raster.safe_open``). ``check_cancelled`` is called
    between blocks when statistics are computed; whatever it raises propagates.
    Raises RasterError with reason UNSUPPORTED_RASTER_FORMAT, RASTER_TOO_LARGE,
    UNREADABLE_RASTER, NOT_A_COG or UNSUPPORTED_RASTER.
    """
    path = Path(path)
    check = check_cancelled or (lambda: None)
    with open_raster(path, drivers=drivers) as dataset:
        _require_supported(dataset)
        probe_last_blocks(dataset)
        check()
        # rio-cogeo opens the path again with every driver; the signature check above makes
        # it a TIFF, which it refuses unless GDAL's GTiff driver reads it.
        is_cog, findings = _validate_cog(path)
        if require_cog and is_cog:
            findings = convention_findings(dataset)
            is_cog = not findings
        if require_cog and not is_cog:
            raise RasterError(NOT_A_COG, f"{path.name} is not a Cloud Optimized GeoTIFF", findings)
        statistics, statistics_computed = _band_statistics(dataset, check)
        bands = [
            _band_info(dataset, index, band_statistics)
            for index, band_statistics in zip(dataset.indexes, statistics, strict=True)
        ]
        grid = _grid_info(dataset)
        footprint = footprint_of(dataset)
        tags = dict(dataset.tags())
        driver = dataset.driver

    size_bytes, sha256 = _file_size_and_sha256(path)
    return RasterInfo(
        path=path,
        media_type=MEDIA_TYPE_COG if is_cog else _media_type_for_driver(driver),
        size_bytes=size_bytes,
        sha256=sha256,
        grid=grid,
        bands=bands,
        footprint=footprint,
        bbox=_bbox(footprint),
        datetime=_datetime_from_tags(tags),
        statistics_computed=statistics_computed,
        tags=tags,
        render_hint=render_hint_for(bands),
    )


def render_hint_for(bands: Sequence[BandInfo]) -> RenderHint:
    """Display defaults derived from band statistics alone (no extra pass over the pixels).

    The stretch is mean ± 2 stddev clamped to [min, max]: robust to a few extreme pixels
    (clouds, sensor spikes) that would wash out a plain min/max stretch, and computable from
    embedded GDAL statistics, whereas percentile cuts need a histogram.
    """
    rescale = [rescale_range(band.statistics) for band in bands]
    first_index_by_name: dict[str, int] = {}
    for position, band in enumerate(bands, start=1):
        if band.common_name is not None:
            first_index_by_name.setdefault(band.common_name, position)
    rgb_names = ("red", "green", "blue")
    if all(name in first_index_by_name for name in rgb_names):
        rgb_bands = [first_index_by_name[name] for name in rgb_names]
    else:
        rgb_bands = []
    return RenderHint(rescale=rescale, rgb_bands=rgb_bands)


def datetime_from_name(name: str) -> dt.datetime | None:
    """First valid YYYYMMDD date (optionally followed by THHMMSS) in a file or item name, as UTC.

    "s2l1c_slovenia_20150711_bgrn" -> 2015-07-11T00:00:00Z. Digit runs longer than a date are
    ignored, and impossible dates (20151340) are skipped.
    """
    for match in _DATE_IN_NAME.finditer(name):
        year, month, day, hour, minute, second = (int(part) if part else 0 for part in match.groups())
        try:
            return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)
        except ValueError:
            continue
    return None


def _media_type_for_driver(driver: str) -> str:
    return _MEDIA_TYPES_BY_DRIVER.get(driver, "application/octet-stream")


def _require_supported(dataset: DatasetReader) -> None:
    if dataset.count == 0:
        raise RasterError(UNSUPPORTED_RASTER, "raster has no bands")
    if not dataset.crs:
        raise RasterError(UNSUPPORTED_RASTER, "raster has no coordinate reference system")
    if dataset.transform == Affine.identity():
        # What GDAL reports when the file has no geotransform (GCP-only files included).
        raise RasterError(UNSUPPORTED_RASTER, "raster has no geotransform")
    if dataset.transform.determinant == 0:
        raise RasterError(UNSUPPORTED_RASTER, "raster geotransform is degenerate")
    complex_types = [dtype for dtype in dataset.dtypes if np.dtype(dtype).kind == "c"]
    if complex_types:
        raise RasterError(UNSUPPORTED_RASTER, f"complex data type {complex_types[0]} is not supported")


def convention_findings(dataset: DatasetReader) -> list[str]:
    """Where a valid COG still misses the house convention, which uploads are
    held to as well: internal tiles, lossless compression, and overviews once
    the image is larger than one 512-pixel tile. (Tile size and codec are not
    pinned: 64-pixel tiles suit small images, and DEFLATE/LZW COGs are fine.)"""
    findings = []
    block_height, block_width = dataset.block_shapes[0]
    single_block = block_height >= dataset.height and block_width >= dataset.width
    if not dataset.profile.get("tiled") and not single_block:
        findings.append("the image is striped; the convention is internal tiles (512x512)")
    compression = dataset.compression.name.upper() if dataset.compression else "NONE"
    if compression in ("NONE", "JPEG", "WEBP") or not dataset.compression:
        findings.append(f"compression {compression}; the convention is lossless compression (ZSTD)")
    if max(dataset.width, dataset.height) > 512 and not dataset.overviews(1):
        findings.append("no internal overviews although the image is larger than 512 pixels")
    return findings


def _validate_cog(path: Path) -> tuple[bool, list[str]]:
    try:
        is_valid, errors, _warnings = cog_validate(path, strict=False, quiet=True)
    # rio-cogeo raises bare Exceptions (and KeyError/TypeError on odd TIFF directories).
    except Exception as error:
        return False, [f"COG validation failed: {gdal_message(error)}"]
    return bool(is_valid), list(errors)


def _grid_info(dataset: DatasetReader) -> GridInfo:
    epsg = dataset.crs.to_epsg()
    block_height, block_width = dataset.block_shapes[0]
    a, b, c, d, e, f = (float(value) for value in tuple(dataset.transform)[:6])
    left, bottom, right, top = (float(value) for value in dataset.bounds)
    return GridInfo(
        crs=f"EPSG:{epsg}" if epsg is not None else dataset.crs.to_wkt(),
        width=dataset.width,
        height=dataset.height,
        transform=(a, b, c, d, e, f),
        bounds=(left, bottom, right, top),
        block_size=(block_width, block_height),
        overview_count=len(dataset.overviews(1)),
        compression=dataset.tags(ns="IMAGE_STRUCTURE").get("COMPRESSION"),
    )


# --- statistics -------------------------------------------------------------------------------


class _RunningStatistics:
    """Exact streaming mean/variance: per-block float64 moments merged with Chan et al.'s
    parallel update, which stays stable where a naive sum of squares would cancel."""

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.sum_squared_deviations = 0.0
        self.minimum = math.inf
        self.maximum = -math.inf

    def add(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        block = values.astype(np.float64, copy=False)
        block_count = int(block.size)
        block_mean = float(block.mean())
        block_deviations = float(np.square(block - block_mean).sum())
        total = self.count + block_count
        delta = block_mean - self.mean
        self.mean += delta * block_count / total
        self.sum_squared_deviations += block_deviations + delta * delta * self.count * block_count / total
        self.count = total
        self.minimum = min(self.minimum, float(block.min()))
        self.maximum = max(self.maximum, float(block.max()))

    def result(self, pixel_count: int) -> BandStatistics | None:
        if self.count == 0:
            return None
        return BandStatistics(
            minimum=self.minimum,
            maximum=self.maximum,
            mean=self.mean,
            stddev=math.sqrt(self.sum_squared_deviations / self.count),
            valid_percent=100.0 * self.count / pixel_count,
        )


def _band_statistics(dataset: DatasetReader, check: CheckCancelled) -> tuple[list[BandStatistics | None], bool]:
    """Embedded GDAL statistics where complete, exact computed ones for the other bands."""
    statistics = {index: embedded_statistics(dataset.tags(index)) for index in dataset.indexes}
    missing = [index for index, band_statistics in statistics.items() if band_statistics is None]
    if missing:
        statistics.update(_compute_statistics(dataset, missing, check))
    return [statistics[index] for index in dataset.indexes], bool(missing)


def embedded_statistics(tags: Mapping[str, str]) -> BandStatistics | None:
    if tags.get("STATISTICS_APPROXIMATE", "").upper() == "YES":
        return None  # sampled from overviews or a pixel subset (gdalinfo -approx_stats): recompute
    try:
        minimum, maximum, mean, stddev, valid_percent = (float(tags[key]) for key in _STATISTICS_TAGS)
    except (KeyError, ValueError):
        return None
    return BandStatistics(minimum, maximum, mean, stddev, valid_percent)


def _compute_statistics(
    dataset: DatasetReader, band_indexes: Sequence[int], check: CheckCancelled
) -> dict[int, BandStatistics | None]:
    accumulators = {index: _RunningStatistics() for index in band_indexes}
    block_height, block_width = dataset.block_shapes[band_indexes[0] - 1]
    largest_item = max(np.dtype(dataset.dtypes[index - 1]).itemsize for index in band_indexes)
    bands_per_read = max(1, _STATISTICS_READ_BUDGET_BYTES // (block_height * block_width * largest_item))
    band_groups = [
        list(band_indexes[start : start + bands_per_read]) for start in range(0, len(band_indexes), bands_per_read)
    ]
    try:
        for _, window in dataset.block_windows(band_indexes[0]):
            check()
            for group in band_groups:
                data = dataset.read(group, window=window)
                for index, band_data in zip(group, data, strict=True):
                    accumulators[index].add(band_data[_valid_mask(band_data, dataset.nodatavals[index - 1])])
    except GDAL_ERRORS as error:
        raise RasterError(UNREADABLE_RASTER, f"cannot read pixels: {gdal_message(error)}") from error
    pixel_count = dataset.width * dataset.height
    return {index: accumulator.result(pixel_count) for index, accumulator in accumulators.items()}


def _valid_mask(data: np.ndarray, nodata: float | None) -> np.ndarray:
    valid = ~np.isnan(data) if data.dtype.kind == "f" else np.ones(data.shape, dtype=bool)
    if nodata is not None and not math.isnan(nodata):
        # Compared in the band's own type (NumPy's weak Python scalars), as GDAL does.
        valid &= data != nodata
    return valid


# --- bands ------------------------------------------------------------------------------------


def _band_info(dataset: DatasetReader, index: int, statistics: BandStatistics | None) -> BandInfo:
    tags = dict(dataset.tags(index))
    # GDAL >= 3.10 keeps standard spectral metadata in the IMAGERY domain.
    imagery_tags = dict(dataset.tags(index, ns="IMAGERY"))
    name = dataset.descriptions[index - 1] or ""
    sensor_band_id = tags.get("BAND_ID") or (name if is_sensor_band_id(name) else None)
    return BandInfo(
        name=name,
        common_name=_common_name(tags, name, sensor_band_id),
        description=tags.get("DESCRIPTION", ""),
        data_type=dataset.dtypes[index - 1],
        nodata=dataset.nodatavals[index - 1],
        scale=float(dataset.scales[index - 1]),
        offset=float(dataset.offsets[index - 1]),
        unit=dataset.units[index - 1] or tags.get("UNITS") or None,
        statistics=statistics,
        sensor_band_id=sensor_band_id,
        center_wavelength_um=_first_float([imagery_tags, tags], _WAVELENGTH_TAGS),
        tags={key: value for key, value in tags.items() if not key.startswith(_STATISTICS_PREFIX)},
    )


def _common_name(tags: Mapping[str, str], name: str, sensor_band_id: str | None) -> str | None:
    tagged = tags.get("COMMON_NAME", "").strip().lower()
    if tagged:
        return tagged
    for candidate in (name, sensor_band_id):
        if candidate:
            common_name = common_name_for(candidate)
            if common_name is not None:
                return common_name
    return None


def _first_float(tag_sets: Iterable[Mapping[str, str]], keys: Sequence[str]) -> float | None:
    for tags in tag_sets:
        for key in keys:
            try:
                return float(tags[key])
            except (KeyError, ValueError):
                continue
    return None


def rescale_range(statistics: BandStatistics | None) -> RescaleRange:
    if statistics is None:
        return RescaleRange(0.0, 1.0)  # nothing valid to show; any non-empty range will do
    if statistics.minimum >= statistics.maximum:
        # A constant band still needs a non-empty range so renderers do not divide by zero.
        return RescaleRange(statistics.minimum, statistics.minimum + 1.0)
    spread = 2.0 * statistics.stddev
    return RescaleRange(
        max(statistics.minimum, statistics.mean - spread),
        min(statistics.maximum, statistics.mean + spread),
    )


# --- footprint, datetime, file ----------------------------------------------------------------


def footprint_of(dataset: DatasetReader) -> dict[str, Any]:
    """Pixel-grid outline, densified, reprojected to EPSG:4326 and oriented per RFC 7946."""
    # Fractions along an edge without its end point, which is the next edge's start.
    along = np.linspace(0.0, 1.0, _FOOTPRINT_POINTS_PER_EDGE)[:-1]
    start, end = np.zeros_like(along), np.ones_like(along)
    # Walk the grid edge in pixel space so rotated geotransforms are outlined correctly too:
    # top (left to right), right (downwards), bottom (right to left), left (upwards).
    cols = np.concatenate([along, end, 1.0 - along, start]) * dataset.width
    rows = np.concatenate([start, along, end, 1.0 - along]) * dataset.height
    a, b, c, d, e, f = tuple(dataset.transform)[:6]
    xs, ys = a * cols + b * rows + c, d * cols + e * rows + f
    ring = [*zip(xs.tolist(), ys.tolist(), strict=True)]
    ring.append(ring[0])
    try:
        # GDAL splits geometries crossing the antimeridian into a MultiPolygon (RFC 7946 3.1.9).
        geometry = shape(transform_geom(dataset.crs, "EPSG:4326", {"type": "Polygon", "coordinates": [ring]}))
    except GDAL_ERRORS as error:
        raise RasterError(UNSUPPORTED_RASTER, f"cannot reproject footprint: {gdal_message(error)}") from error
    if geometry.is_empty or not np.isfinite(geometry.bounds).all():
        raise RasterError(UNSUPPORTED_RASTER, "footprint cannot be expressed in EPSG:4326")
    return to_geojson(geometry)


def _bbox(footprint: Mapping[str, Any]) -> tuple[float, float, float, float]:
    polygons = footprint["coordinates"] if footprint["type"] == "MultiPolygon" else [footprint["coordinates"]]
    points = [point for polygon in polygons for ring in polygon for point in ring]
    lons = [point[0] for point in points]
    lats = [point[1] for point in points]
    if footprint["type"] == "MultiPolygon" and min(lons) <= -180.0 and max(lons) >= 180.0:
        # Split at the antimeridian: RFC 7946 5.2 puts west on the eastern-hemisphere part.
        west = min(lon for lon in lons if lon > 0)
        east = max(lon for lon in lons if lon < 0)
        return (west, min(lats), east, max(lats))
    return (min(lons), min(lats), max(lons), max(lats))


def _datetime_from_tags(tags: Mapping[str, str]) -> dt.datetime | None:
    for key in _DATETIME_TAGS:
        value = tags.get(key, "").strip()
        if not value:
            continue
        try:
            parsed = (
                dt.datetime.strptime(value, _TIFF_DATETIME_FORMAT)
                if key == "TIFFTAG_DATETIME"
                else dt.datetime.fromisoformat(value)
            )
        except ValueError:
            continue
        # Naive timestamps in imagery metadata are UTC by convention.
        return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)
    return None


def _file_size_and_sha256(path: Path) -> tuple[int, str]:
    try:
        return size_and_sha256(path)
    except OSError as error:
        raise RasterError(UNREADABLE_RASTER, f"cannot read file: {error}") from error
