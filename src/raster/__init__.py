"""What the server and the worker share, so that neither imports the other.

Raster helpers (inspection, COG validation/writing, band naming; re-exported here), clipping
(``.clip``) and the bathymetry model (``.bathymetry``); geometry in lon/lat (``.geo``: GeoJSON
parsing, the ``Aoi`` value object, geodesic areas, reprojection); the error vocabulary
(``.domain_errors``), the cost model (``.cost``) and the built-in job types' definitions
(``.job_types``), each a module of this package (``geopera_kernel.raster``). No gRPC, database
or generated-code dependencies (tests/test_layering.py holds it so).
"""

from geopera_kernel.raster.bands import (
    COMMON_NAMES,
    LANDSAT_COMMON_NAMES,
    SENTINEL2_COMMON_NAMES,
    common_name_for,
    is_sensor_band_id,
    sensor_common_name,
)
from geopera_kernel.raster.cog import COG_CREATION_OPTIONS, COG_DRIVER, COG_PROFILE, convert_to_cog, write_cog
from geopera_kernel.raster.errors import (
    COG_WRITE_FAILED,
    NOT_A_COG,
    RASTER_TOO_LARGE,
    RASTER_WORK_CANCELLED,
    UNREADABLE_RASTER,
    UNSUPPORTED_RASTER,
    UNSUPPORTED_RASTER_FORMAT,
    RasterError,
    without_directories,
)
from geopera_kernel.raster.inspect import (
    MEDIA_TYPE_COG,
    MEDIA_TYPE_GEOTIFF,
    datetime_from_name,
    inspect_raster,
    render_hint_for,
)
from geopera_kernel.raster.safe_open import (
    CONVERSION_DRIVERS,
    GEOTIFF_DRIVERS,
    RasterLimits,
    configure_limits,
    current_limits,
    open_stored,
    raster_limits,
)
from geopera_kernel.raster.types import (
    BandInfo,
    BandStatistics,
    GridInfo,
    RasterInfo,
    RenderHint,
    RescaleRange,
)

__all__ = [
    "COG_CREATION_OPTIONS",
    "COG_DRIVER",
    "COG_PROFILE",
    "COG_WRITE_FAILED",
    "COMMON_NAMES",
    "CONVERSION_DRIVERS",
    "GEOTIFF_DRIVERS",
    "LANDSAT_COMMON_NAMES",
    "MEDIA_TYPE_COG",
    "MEDIA_TYPE_GEOTIFF",
    "NOT_A_COG",
    "RASTER_TOO_LARGE",
    "RASTER_WORK_CANCELLED",
    "SENTINEL2_COMMON_NAMES",
    "UNREADABLE_RASTER",
    "UNSUPPORTED_RASTER",
    "UNSUPPORTED_RASTER_FORMAT",
    "BandInfo",
    "BandStatistics",
    "GridInfo",
    "RasterError",
    "RasterInfo",
    "RasterLimits",
    "RenderHint",
    "RescaleRange",
    "common_name_for",
    "configure_limits",
    "convert_to_cog",
    "current_limits",
    "datetime_from_name",
    "inspect_raster",
    "is_sensor_band_id",
    "open_stored",
    "raster_limits",
    "render_hint_for",
    "sensor_common_name",
    "without_directories",
    "write_cog",
]
