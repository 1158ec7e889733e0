"""Geometry in lon/lat, once for the server and the workers: GeoJSON (RFC 7946) parsing and
validation of AOIs and filters, geodesic areas, GeoJSON output and reprojection.

Parsing turns a client's GeoJSON into shapely geometries, or a `DomainError`
(INVALID_ARGUMENT, reason `INVALID_GEOMETRY`) whose field violation points at
the offending member, e.g. `aoi_geometry.coordinates[0][3]`. An area of interest is
parsed once into an `Aoi` (geometry, geodesic area, CRS) and passed on from there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from pyproj import Geod, Transformer
from shapely.geometry import MultiPolygon, Polygon, mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient
from shapely.validation import explain_validity

from geopera_kernel.raster.domain_errors import DomainError, invalid_argument

MAX_VERTICES = 100_000
AREA_TYPES = ("Polygon", "MultiPolygon")
# The CRS of every GeoJSON geometry the kernel reads or writes (RFC 7946).
LONLAT = "EPSG:4326"
# GeoJSON edges are straight in lon/lat, i.e. curved in a projected CRS. Projecting only the
# vertices would cut the curve short: by ~350 m for a 1° edge in UTM, ~4 cm at 0.01° (~1 km)
# segments (the error grows with the square of the segment length).
DENSIFY_DEGREES = 0.01
_GEOD = Geod(ellps="WGS84")

Area = Polygon | MultiPolygon


@dataclass(frozen=True)
class Zone:
    """One area of interest: a (multi)polygon in lon/lat and the properties of
    the Feature it came from (empty for a bare geometry)."""

    geometry: Polygon | MultiPolygon
    properties: dict[str, Any] = field(default_factory=dict)
    feature_id: str | int | None = None


def _fail(path: str, message: str) -> DomainError:
    return invalid_argument("INVALID_GEOMETRY", message, field=path)


def _position(value: Any, path: str) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) < 2 or len(value) > 3:
        raise _fail(path, "a position must be [longitude, latitude] (optionally with altitude)")
    for number in value:
        if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
            raise _fail(path, "coordinates must be finite numbers")
    lon, lat = float(value[0]), float(value[1])
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        raise _fail(path, f"position ({lon}, {lat}) is outside lon [-180, 180] / lat [-90, 90]")
    return lon, lat


def _ring(value: Any, path: str) -> list[tuple[float, float]]:
    if not isinstance(value, list | tuple):
        raise _fail(path, "a linear ring must be an array of positions")
    ring = [_position(p, f"{path}[{i}]") for i, p in enumerate(value)]
    if len(ring) < 4:
        raise _fail(path, "a linear ring needs at least 4 positions")
    if ring[0] != ring[-1]:
        raise _fail(path, "a linear ring must be closed: its last position must equal its first")
    return ring


def _polygon_rings(value: Any, path: str) -> list[list[tuple[float, float]]]:
    if not isinstance(value, list | tuple) or not value:
        raise _fail(path, "a polygon must be a non-empty array of linear rings")
    return [_ring(r, f"{path}[{i}]") for i, r in enumerate(value)]


def _geometry(value: Any, path: str, *, repair: bool) -> Polygon | MultiPolygon:
    if not isinstance(value, dict):
        raise _fail(path, "expected a GeoJSON geometry object")
    kind = value.get("type")
    if kind not in AREA_TYPES:
        raise _fail(f"{path}.type", f"geometry type must be Polygon or MultiPolygon, got {kind!r}")
    coordinates = value.get("coordinates")
    cpath = f"{path}.coordinates"
    if kind == "Polygon":
        rings = _polygon_rings(coordinates, cpath)
        vertices = sum(len(r) for r in rings)
    else:
        if not isinstance(coordinates, list | tuple) or not coordinates:
            raise _fail(cpath, "a MultiPolygon needs a non-empty array of polygons")
        polygons = [_polygon_rings(p, f"{cpath}[{i}]") for i, p in enumerate(coordinates)]
        vertices = sum(len(r) for rings in polygons for r in rings)
    if vertices > MAX_VERTICES:
        raise _fail(cpath, f"{vertices} vertices; at most {MAX_VERTICES} are accepted")
    geometry = shape({"type": kind, "coordinates": coordinates})
    if not geometry.is_valid:
        if not repair:
            raise _fail(path, f"invalid {kind}: {explain_validity(geometry)}")
        geometry = shapely.make_valid(geometry)
        polygons_only = [g for g in getattr(geometry, "geoms", [geometry]) if isinstance(g, Polygon | MultiPolygon)]
        geometry = shapely.union_all(polygons_only) if polygons_only else Polygon()
    if geometry.is_empty or geometry.area == 0:
        raise _fail(path, "the geometry has no area")
    # A polygonal shape, or the union of the polygons of its repair, and not empty: the
    # stubs type shapely's results as any geometry.
    return geometry  # type: ignore[return-value]


def parse_zones(value: Any, path: str, *, repair: bool = False) -> list[Zone]:
    """Polygon, MultiPolygon, Feature or FeatureCollection -> zones (one per
    feature). Raises INVALID_GEOMETRY naming the offending member."""
    if not isinstance(value, dict) or not value:
        raise _fail(path, "expected a GeoJSON object (Polygon, MultiPolygon, Feature or FeatureCollection)")
    kind = value.get("type")
    if kind == "Feature":
        return [_feature(value, path, repair=repair)]
    if kind == "FeatureCollection":
        features = value.get("features")
        if not isinstance(features, list) or not features:
            raise _fail(f"{path}.features", "a FeatureCollection needs a non-empty features array")
        return [_feature(f, f"{path}.features[{i}]", repair=repair) for i, f in enumerate(features)]
    return [Zone(_geometry(value, path, repair=repair))]


def _feature(value: Any, path: str, *, repair: bool) -> Zone:
    if not isinstance(value, dict) or value.get("type") != "Feature":
        raise _fail(path, "expected a GeoJSON Feature")
    properties = value.get("properties") or {}
    if not isinstance(properties, dict):
        raise _fail(f"{path}.properties", "properties must be an object or null")
    return Zone(_geometry(value.get("geometry"), f"{path}.geometry", repair=repair), properties, value.get("id"))


def parse_area(value: Any, path: str, *, repair: bool = False) -> Polygon | MultiPolygon:
    """All zones of `value` merged into one area."""
    zones = parse_zones(value, path, repair=repair)
    if len(zones) == 1:
        return zones[0].geometry
    # The union of non-empty polygonal zones is polygonal; the stubs type it as any geometry.
    return shapely.union_all([z.geometry for z in zones])  # type: ignore[return-value]


@dataclass(frozen=True)
class Aoi:
    """An area of interest, parsed once: its (multi)polygon, its geodesic area on the WGS84
    ellipsoid and the CRS of its coordinates (always lon/lat: GeoJSON has no other)."""

    geometry: Area
    area_km2: float
    crs: str = LONLAT

    @classmethod
    def of(cls, geometry: Area) -> Aoi:
        return cls(geometry, geodesic_area_km2(geometry))

    def within(self, footprint: BaseGeometry) -> Aoi | None:
        """The part of this AOI inside ``footprint`` (lon/lat), or None when they do not
        overlap or only touch."""
        overlap = polygonal(self.geometry.intersection(footprint))
        if overlap.is_empty or overlap.area == 0.0:
            return None
        return Aoi.of(overlap)


def parse_aoi(value: Any, path: str, *, repair: bool = False) -> Aoi:
    """A GeoJSON area of interest (see ``parse_area``) as an ``Aoi``."""
    return Aoi.of(parse_area(value, path, repair=repair))


def geodesic_area_km2(geometry: BaseGeometry) -> float:
    """Area in km² on the WGS84 ellipsoid of a lon/lat geometry."""
    return 0.0 if geometry.is_empty else abs(float(_GEOD.geometry_area_perimeter(geometry)[0])) / 1e6


def polygonal(geometry: BaseGeometry) -> Area:
    """The polygonal part of ``geometry`` (an intersection can add points or lines where the
    shapes only touch; they have no area), an empty Polygon when there is none."""
    if isinstance(geometry, Polygon | MultiPolygon):
        return geometry
    parts = [part for part in getattr(geometry, "geoms", []) if isinstance(part, Polygon | MultiPolygon)]
    merged = shapely.union_all(parts) if parts else Polygon()
    return merged if isinstance(merged, Polygon | MultiPolygon) else Polygon()


def to_geojson(geometry: BaseGeometry) -> dict[str, Any]:
    """A lon/lat (multi)polygon, or the polygonal part of another geometry, as a GeoJSON dict
    of plain lists with RFC 7946 ring orientation (exteriors counter-clockwise)."""
    area = polygonal(geometry)
    if isinstance(area, Polygon):
        area = orient(area, sign=1.0)
    else:
        area = MultiPolygon([orient(part, sign=1.0) for part in area.geoms])
    geojson: dict[str, Any] = _as_lists(mapping(area))
    return geojson


def _as_lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _as_lists(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_as_lists(item) for item in value]
    return value


class NotInCrs(ValueError):
    """A lon/lat geometry has points the target CRS cannot express."""


def to_crs(geometry_lonlat: Area, crs: str) -> Area:
    """A lon/lat (multi)polygon in ``crs`` (any PROJ input: "EPSG:32633", WKT), its edges
    densified to DENSIFY_DEGREES first. Deterministic (pure PROJ arithmetic); raises NotInCrs
    when a point has no finite image."""
    transformer = Transformer.from_crs(LONLAT, crs, always_xy=True)
    densified = shapely.segmentize(geometry_lonlat, DENSIFY_DEGREES)
    # types-shapely types the callable of interleaved=True only (one (n, 2) array).
    projected = shapely.transform(densified, transformer.transform, interleaved=False)  # type: ignore[arg-type]
    if not np.isfinite(shapely.get_coordinates(projected)).all():
        raise NotInCrs("the geometry cannot be expressed in the target CRS")
    return projected
