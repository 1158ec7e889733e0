"""GeoJSON (RFC 7946) parsing and validation for AOIs and filters.

Turns a client's GeoJSON into shapely geometries, or a `DomainError`
(INVALID_ARGUMENT, reason `INVALID_GEOMETRY`) whose field violation points at
the offending member, e.g. `aoi_geometry.coordinates[0][3]`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import shapely
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.validation import explain_validity

from server.errors import DomainError, invalid_argument

MAX_VERTICES = 100_000
AREA_TYPES = ("Polygon", "MultiPolygon")


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
