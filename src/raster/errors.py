"""The single exception type raised by ``raster``.

Callers (the gRPC layer, job workers) map ``reason`` to their own status codes, so reasons are
stable UPPER_SNAKE_CASE strings rather than exception subclasses.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

# An allowed format that GDAL cannot open or whose pixels cannot be read (truncated/corrupt).
UNREADABLE_RASTER: Final = "UNREADABLE_RASTER"
# The file is not in a format the operation accepts (GeoTIFF; for conversion also JPEG 2000),
# e.g. a VRT, an ENVI/PDS label, a text file. See ``geopera_kernel.raster.safe_open``.
UNSUPPORTED_RASTER_FORMAT: Final = "UNSUPPORTED_RASTER_FORMAT"
# Width x height or width x height x bands over the configured limits (``RasterLimits``).
RASTER_TOO_LARGE: Final = "RASTER_TOO_LARGE"
# The file is a readable raster but rio-cogeo's validator rejects it as a Cloud Optimized GeoTIFF.
NOT_A_COG: Final = "NOT_A_COG"
# Readable, but outside what the service handles (no CRS, no geotransform, no bands, ...).
UNSUPPORTED_RASTER: Final = "UNSUPPORTED_RASTER"
# GDAL failed while writing a COG (disk full, bad creation options, ...).
COG_WRITE_FAILED: Final = "COG_WRITE_FAILED"
# The caller gave up (deadline, cancel) and the work stopped at its next check.
RASTER_WORK_CANCELLED: Final = "RASTER_WORK_CANCELLED"

# The directories of an absolute path ("/srv/geopera/storage/.scratch/"), as GDAL, rasterio and
# OSError put them in their messages; the file name after them is kept.
_DIRECTORIES: Final = re.compile(r"(?<![\w./])/(?:[^/\s'\"`]+/)+")


def without_directories(text: str) -> str:
    """``text`` with the directories of any absolute path removed: server paths are not for
    clients ("'/srv/x/up_1' not recognized" -> "'up_1' not recognized")."""
    return _DIRECTORIES.sub("", text)


class RasterError(Exception):
    """A raster could not be read, validated or written.

    ``findings`` carries itemised details such as the COG validator's errors. Messages and
    findings never contain a server directory (they reach clients).
    """

    reason: str
    message: str
    findings: list[str]

    def __init__(self, reason: str, message: str, findings: Sequence[str] = ()) -> None:
        message = without_directories(message)
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.findings = [without_directories(finding) for finding in findings]
