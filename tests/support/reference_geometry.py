"""Zones for the reference libraries, built without the project's geometry code.

Oracles that reprojected zones with the server's own `to_crs` / `aoi_in_raster_crs` /
`geopera_kernel.raster.geo` parsers would agree with a bug there. These read GeoJSON with shapely's
`shape` and reproject with pyproj directly.

GeoJSON edges are straight in lon/lat (RFC 7946) and curve in a projected CRS (a 100 m
edge bends by ~0.2 mm at 46 N), so both sides densify edges before reprojecting. The step
is part of what is compared: at 1e-6 relative, exact coverage sees the difference between
two steps. Callers pass the step the server documents for that path, so the reference and
the server describe the same polygon while computing it independently.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
from pyproj import Transformer
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

# The longest lon/lat segment before reprojection, per path (analytics/geometry.py,
# raster/geo.py for the clip).
ANALYTICS_DENSIFY_DEGREES = 0.0025
CLIP_DENSIFY_DEGREES = 0.01


def lonlat_zones(geojson: dict[str, Any]) -> list[BaseGeometry]:
    """The zones of a GeoJSON Polygon, MultiPolygon, Feature or FeatureCollection, in order."""
    if geojson["type"] == "FeatureCollection":
        return [shape(feature["geometry"]) for feature in geojson["features"]]
    if geojson["type"] == "Feature":
        return [shape(geojson["geometry"])]
    return [shape(geojson)]


def lonlat_area(geojson: dict[str, Any]) -> BaseGeometry:
    """One area: the union of the zones (how a single-area method reads a collection)."""
    zones = lonlat_zones(geojson)
    return zones[0] if len(zones) == 1 else shapely.union_all(zones)


def reproject(geometry: BaseGeometry, crs: Any, densify_degrees: float = ANALYTICS_DENSIFY_DEGREES) -> BaseGeometry:
    """A lon/lat geometry in ``crs`` (a rasterio CRS or anything pyproj accepts)."""
    target = crs.to_wkt() if hasattr(crs, "to_wkt") else crs
    transformer = Transformer.from_crs("EPSG:4326", target, always_xy=True)
    dense = shapely.segmentize(geometry, densify_degrees)

    def project(coords: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(dense, project)
