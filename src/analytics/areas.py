"""Ground area of pixels, in m².

Projected CRS: every pixel has the same area, |det(transform)| in CRS units², converted
with the CRS's linear unit (metres, US feet...). This is the map-plane area; the scale
error of the projection (within ±0.04% for UTM inside its zone) is not corrected.

Geographic CRS (lon/lat degrees): pixel area shrinks with latitude, so areas are computed
per row, exactly on the CRS's ellipsoid: the area between two parallels over a longitude
span is Δλ · (F(φ2) - F(φ1)) with F(φ) = b²/2 · (sin φ / (1 - e² sin² φ) + atanh(e sin φ) / e).
A rotated or sheared geographic grid has rows that are not parallels: it is refused.
"""

from __future__ import annotations

import math

import numpy as np
from pyproj import CRS as ProjCRS

from geopera_kernel.analytics.reader import RasterMeta
from geopera_kernel.raster.domain_errors import invalid_argument


def _zone_integral(phi: np.ndarray, b: float, e: float) -> np.ndarray:
    s = np.sin(phi)
    if e == 0:
        return b * b * s  # sphere: R² sin φ
    return b * b / 2.0 * (s / (1.0 - e * e * s * s) + np.arctanh(e * s) / e)


def row_areas(meta: RasterMeta, row0: int, rows: int) -> np.ndarray:
    """Area in m² of one pixel in each of the rows [row0, row0 + rows)."""
    crs = ProjCRS.from_user_input(meta.crs.to_wkt())
    transform = meta.transform
    if not crs.is_geographic:
        factor = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
        return np.full(rows, abs(transform.determinant) * factor * factor)
    if transform.b != 0 or transform.d != 0:
        raise invalid_argument(
            "UNSUPPORTED_GRID", "areas on a rotated geographic grid are not supported", field="params.before_item_id"
        )
    ellipsoid = crs.ellipsoid
    a = ellipsoid.semi_major_metre if ellipsoid is not None else 6_378_137.0
    b = ellipsoid.semi_minor_metre if ellipsoid is not None else 6_356_752.314245
    e = math.sqrt(max(0.0, 1.0 - (b * b) / (a * a)))
    edges = transform.f + transform.e * (row0 + np.arange(rows + 1, dtype=np.float64))
    phi = np.radians(np.clip(edges, -90.0, 90.0))
    integral = _zone_integral(phi, b, e)
    return np.abs(np.diff(integral)) * math.radians(abs(transform.a))
