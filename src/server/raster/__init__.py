"""Pure raster helpers: inspection, COG validation/writing and band naming.

No gRPC, database or generated-code dependencies, so workers and the server can share it.
"""

from server.raster.bands import (
    COMMON_NAMES,
    LANDSAT_COMMON_NAMES,
    SENTINEL2_COMMON_NAMES,
    common_name_for,
    is_sensor_band_id,
    sensor_common_name,
)
from server.raster.cog import COG_CREATION_OPTIONS, COG_DRIVER, COG_PROFILE, convert_to_cog, write_cog
from server.raster.errors import (
    COG_WRITE_FAILED,
    NOT_A_COG,
    UNREADABLE_RASTER,
    UNSUPPORTED_RASTER,
    RasterError,
)
from server.raster.inspect import (
    MEDIA_TYPE_COG,
    MEDIA_TYPE_GEOTIFF,
    datetime_from_name,
    inspect_raster,
    render_hint_for,
)
from server.raster.types import (
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
    "LANDSAT_COMMON_NAMES",
    "MEDIA_TYPE_COG",
    "MEDIA_TYPE_GEOTIFF",
    "NOT_A_COG",
    "SENTINEL2_COMMON_NAMES",
    "UNREADABLE_RASTER",
    "UNSUPPORTED_RASTER",
    "BandInfo",
    "BandStatistics",
    "GridInfo",
    "RasterError",
    "RasterInfo",
    "RenderHint",
    "RescaleRange",
    "common_name_for",
    "convert_to_cog",
    "datetime_from_name",
    "inspect_raster",
    "is_sensor_band_id",
    "render_hint_for",
    "sensor_common_name",
    "write_cog",
]
