"""The single exception type raised by ``server.raster``.

Callers (the gRPC layer, job workers) map ``reason`` to their own status codes, so reasons are
stable UPPER_SNAKE_CASE strings rather than exception subclasses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

# rasterio cannot open the file, it is not a raster, or reading pixels fails (truncated/corrupt).
UNREADABLE_RASTER: Final = "UNREADABLE_RASTER"
# The file is a readable raster but rio-cogeo's validator rejects it as a Cloud Optimized GeoTIFF.
NOT_A_COG: Final = "NOT_A_COG"
# Readable, but outside what the service handles (no CRS, no geotransform, no bands, ...).
UNSUPPORTED_RASTER: Final = "UNSUPPORTED_RASTER"
# GDAL failed while writing a COG (disk full, bad creation options, ...).
COG_WRITE_FAILED: Final = "COG_WRITE_FAILED"


class RasterError(Exception):
    """A raster could not be read, validated or written.

    ``findings`` carries itemised details such as the COG validator's errors.
    """

    reason: str
    message: str
    findings: list[str]

    def __init__(self, reason: str, message: str, findings: Sequence[str] = ()) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.findings = list(findings)
