"""Plain, immutable result types of raster inspection (no rasterio objects leak out)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BandStatistics:
    """Statistics over valid pixels (nodata and NaN excluded); ``stddev`` is the population one."""

    minimum: float
    maximum: float
    mean: float
    stddev: float
    valid_percent: float


@dataclass(frozen=True)
class BandInfo:
    """One band's metadata.

    ``name`` is the GDAL band description ("" when unset); ``description`` is the free-text
    ``DESCRIPTION`` band tag ("" when unset). ``common_name`` follows the STAC EO vocabulary.
    """

    name: str
    common_name: str | None
    description: str
    data_type: str
    nodata: float | None
    scale: float
    offset: float
    unit: str | None
    statistics: BandStatistics | None
    sensor_band_id: str | None
    center_wavelength_um: float | None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GridInfo:
    """Pixel grid. ``crs`` is "EPSG:nnnn" when an EPSG code is known, WKT otherwise."""

    crs: str
    width: int
    height: int
    # rasterio/affine order: a, b, c, d, e, f (x = a*col + b*row + c, y = d*col + e*row + f).
    transform: tuple[float, float, float, float, float, float]
    bounds: tuple[float, float, float, float]  # left, bottom, right, top in ``crs`` units
    block_size: tuple[int, int]  # width, height
    overview_count: int
    compression: str | None  # GDAL name, e.g. "ZSTD"; None when uncompressed


@dataclass(frozen=True)
class RescaleRange:
    min: float
    max: float


@dataclass(frozen=True)
class RenderHint:
    """How to display the raster: one rescale range per band, 1-based RGB band indexes or []."""

    rescale: list[RescaleRange]
    rgb_bands: list[int]


@dataclass(frozen=True)
class RasterInfo:
    """Everything the service records about a raster file.

    ``footprint`` is a GeoJSON geometry in EPSG:4326 lon/lat (RFC 7946): a Polygon with a
    counter-clockwise exterior, or a MultiPolygon when it is split at the antimeridian, in
    which case ``bbox`` has west > east.
    """

    path: Path
    media_type: str
    size_bytes: int
    sha256: str
    grid: GridInfo
    bands: list[BandInfo]
    footprint: dict[str, Any]
    bbox: tuple[float, float, float, float]  # west, south, east, north
    datetime: dt.datetime | None  # tz-aware UTC
    statistics_computed: bool  # True when at least one band's statistics were computed here
    tags: dict[str, str]
    render_hint: RenderHint
