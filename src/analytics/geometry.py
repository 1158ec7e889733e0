"""Areas of interest: lon/lat GeoJSON -> raster CRS -> pixel space.

GeoJSON edges are straight lines in lon/lat (RFC 7946), which are curves in a projected CRS:
edges are densified before reprojection so the projected polygon follows them to well under
a pixel. All pixel-level work (masks, coverage fractions) then happens in the raster's pixel
space (column, row), where cells are unit squares and area fractions are exact whatever the
geotransform (affine maps preserve area ratios).
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS as ProjCRS
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from geopera_kernel.raster.domain_errors import invalid_argument
from geopera_kernel.raster.geo import Zone, parse_zones

# Longest lon/lat segment before reprojection: 0.0025 deg (~280 m) bends by micrometres.
_DENSIFY_DEGREES: Final = 0.0025
WGS84: Final = ProjCRS.from_epsg(4326)
# Zones are clipped to the raster's lon/lat bounds grown by this share of their size plus
# these degrees: far beyond the one-pixel fringe any coverage rule looks at.
_EXTENT_MARGIN: Final = 0.05
_EXTENT_MARGIN_DEGREES: Final = 0.01


def zones_from_params(value: Any, field: str = "params.geometry") -> list[Zone]:
    return parse_zones(value, field)


# Transformers per thread (pyproj objects are not shared across threads), keyed by the target
# CRS's WKT: building one costs about a millisecond, a noticeable share of a small AOI's call.
_thread_transformers = threading.local()


def _transformer(crs: CRS | str) -> Transformer | None:
    key = crs if isinstance(crs, str) else crs.to_wkt()
    cache: dict[str, Transformer | None] | None = getattr(_thread_transformers, "cache", None)
    if cache is None:
        cache = _thread_transformers.cache = {}
    if key in cache:
        return cache[key]
    target = ProjCRS.from_user_input(key)
    transformer = (
        None if target.equals(WGS84, ignore_axis_order=True) else Transformer.from_crs(WGS84, target, always_xy=True)
    )
    if len(cache) >= 32:
        cache.clear()
    cache[key] = transformer
    return transformer


def to_crs(geometry: BaseGeometry, crs: CRS | str) -> BaseGeometry:
    """A lon/lat geometry in ``crs`` (edges densified first)."""
    transformer = _transformer(crs)
    if transformer is None:
        return geometry
    dense = shapely.segmentize(geometry, _DENSIFY_DEGREES)

    def project(coords: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([x, y])

    projected = shapely.transform(dense, project)
    if not np.isfinite(shapely.get_coordinates(projected)).all():
        # Points the raster's CRS cannot express (far outside its area of use). Zones are
        # clipped to the raster's surroundings first, so only odd CRSs get here.
        raise invalid_argument(
            "GEOMETRY_NOT_PROJECTABLE",
            "the geometry cannot be expressed in the raster's coordinate reference system",
            field="params.geometry",
        )
    if not projected.is_valid:
        # Projection can fold nearly-degenerate slivers; repairing keeps the area.
        projected = shapely.make_valid(projected)
    return projected


def to_pixels(geometry: BaseGeometry, transform: Affine) -> BaseGeometry:
    """A raster-CRS geometry in pixel space: x = column, y = row (floats, edges at integers)."""
    inverse = ~transform
    return shapely.affinity.affine_transform(
        geometry, [inverse.a, inverse.b, inverse.d, inverse.e, inverse.xoff, inverse.yoff]
    )


@dataclass(frozen=True)
class PixelZone:
    """One zone in a raster's pixel space, with the window it covers (clipped to the raster)."""

    index: int
    zone: Zone
    geometry: BaseGeometry  # pixel space; empty when the zone misses the raster
    window: Window | None  # None: no pixel of the raster can be covered

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        """row0, col0, row1, col1 (exclusive)."""
        assert self.window is not None
        row0, col0 = int(self.window.row_off), int(self.window.col_off)
        return row0, col0, row0 + int(self.window.height), col0 + int(self.window.width)


def pixel_zones(zones: list[Zone], crs: CRS, transform: Affine, width: int, height: int) -> list[PixelZone]:
    result = []
    extent = lonlat_extent(crs, transform, width, height)
    for index, zone in enumerate(zones):
        geometry: BaseGeometry = zone.geometry
        if extent is not None and not extent.contains(geometry):
            # Only the part near the raster matters, and the rest may not even project
            # (across the antimeridian from a UTM zone): GEOS fails on the infinities.
            geometry = _polygonal(geometry.intersection(extent))
        pixel_geometry = Polygon() if geometry.is_empty else to_pixels(to_crs(geometry, crs), transform)
        result.append(PixelZone(index, zone, pixel_geometry, _window(pixel_geometry, width, height)))
    return result


def lonlat_extent(crs: CRS, transform: Affine, width: int, height: int) -> BaseGeometry | None:
    """A lon/lat box around the raster (two boxes across the antimeridian), with a margin so
    that zone edges cut along it stay well outside the raster and its all_touched fringe.
    None when the raster's bounds have no lon/lat equivalent."""
    # Kept per grid: reprojecting the bounds cost about half of pixel_zones on a 1 km² call.
    return _lonlat_extent(crs.to_wkt() if isinstance(crs, CRS) else str(crs), transform, width, height)


@functools.lru_cache(maxsize=256)
def _lonlat_extent(crs: str, transform: Affine, width: int, height: int) -> BaseGeometry | None:
    corners = [transform * (col, row) for col in (0, width) for row in (0, height)]
    xs, ys = [x for x, _ in corners], [y for _, y in corners]
    try:
        west, south, east, north = transform_bounds(
            crs, "EPSG:4326", min(xs), min(ys), max(xs), max(ys), densify_pts=21
        )
    except (CRSError, ValueError, RuntimeError):
        return None
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        return None
    crosses = west > east  # transform_bounds' way of saying "across the antimeridian"
    lon_span = (east + 360.0 - west) if crosses else (east - west)
    lon_margin = _EXTENT_MARGIN * lon_span + _EXTENT_MARGIN_DEGREES
    lat_margin = _EXTENT_MARGIN * (north - south) + _EXTENT_MARGIN_DEGREES
    south, north = max(-90.0, south - lat_margin), min(90.0, north + lat_margin)
    if lon_span + 2 * lon_margin >= 360.0:
        return shapely.box(-180.0, south, 180.0, north)
    if crosses:
        return shapely.union_all(
            [shapely.box(west - lon_margin, south, 180.0, north), shapely.box(-180.0, south, east + lon_margin, north)]
        )
    return shapely.box(max(-180.0, west - lon_margin), south, min(180.0, east + lon_margin), north)


def _polygonal(geometry: BaseGeometry) -> BaseGeometry:
    """The polygons of an intersection (where shapes only touch it adds points and lines)."""
    if isinstance(geometry, Polygon | MultiPolygon):
        return geometry
    parts = [part for part in getattr(geometry, "geoms", []) if isinstance(part, Polygon | MultiPolygon)]
    return shapely.union_all(parts) if parts else Polygon()


def _window(geometry: BaseGeometry, width: int, height: int) -> Window | None:
    if geometry.is_empty:
        return None
    minx, miny, maxx, maxy = geometry.bounds
    # One extra pixel each side: all_touched counts pixels whose edge the boundary touches.
    col0 = max(0, math.floor(minx) - 1)
    row0 = max(0, math.floor(miny) - 1)
    col1 = min(width, math.ceil(maxx) + 1)
    row1 = min(height, math.ceil(maxy) + 1)
    if col1 <= col0 or row1 <= row0:
        return None
    return Window(col0, row0, col1 - col0, row1 - row0)


def without_boxes(zone: PixelZone, boxes: list[BaseGeometry], width: int, height: int) -> PixelZone:
    """``zone`` less the pixel-space boxes (whole pixels: earlier tiles of a mosaic on the
    same grid), so a pixel under several tiles is counted once."""
    if zone.window is None or not boxes:
        return zone
    geometry = _polygonal(zone.geometry.difference(shapely.union_all(boxes)))
    return PixelZone(zone.index, zone.zone, geometry, _window(geometry, width, height))
