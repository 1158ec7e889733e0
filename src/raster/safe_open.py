"""The one way ``raster`` opens a raster file: client-supplied bytes are a trust boundary.

GDAL has ~150 raster drivers and some of them follow references written inside the file: a
PDS3/ISIS/ERS/ENVI-style label names its pixel file (``^IMAGE = "../../x"``), a VRT or a
WMS/STAC description names other files, ``/vsi`` paths or URLs. Opened with every driver, an
upload could make the server read (and convert into a downloadable COG) any file of its own
disk. So every open here:

- allows an explicit list of drivers, and checks the file's leading bytes against the
  signatures of those formats before GDAL sees it (a VRT named ``.tif`` is not a TIFF);
- turns sibling-file probing off (``GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR``), so no
  ``.aux.xml``, ``.ovr``, ``.msk`` or world file next to the upload is read, and PAM off, so
  nothing is written next to it either; georeferencing comes from inside the file only;
- refuses rasters whose width x height or width x height x bands exceed ``RasterLimits``
  right after parsing the header, before any pixel is decoded (a 13 KB sparse GeoTIFF can
  claim 20000 x 20000 pixels).

Refusals are ``RasterError`` with reason UNSUPPORTED_RASTER_FORMAT or RASTER_TOO_LARGE.
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final

import rasterio
from rasterio._err import CPLE_BaseError  # GDAL errors rasterio does not wrap in RasterioError
from rasterio._path import _UnparsedPath
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReader

from geopera_kernel.raster.errors import RASTER_TOO_LARGE, UNREADABLE_RASTER, UNSUPPORTED_RASTER_FORMAT, RasterError

GDAL_ERRORS: Final = (RasterioError, CPLE_BaseError, OSError)

# Registered assets, job sources and job outputs: GeoTIFF only (a COG is a GeoTIFF; GDAL's
# "COG" driver only writes, reading is GTiff's).
GEOTIFF_DRIVERS: Final = ("GTiff",)
# `items.create` with `convert_to_cog`: GeoTIFF (striped, untiled or uncompressed ones are the
# usual conversion) and JPEG 2000, the delivery format of Sentinel-2 and many other EO
# products. Both are single self-contained files that carry their georeferencing inside
# (GeoTIFF keys; GeoJP2/GMLJP2 boxes) and name no other file. PNG/JPEG are left out: their
# georeferencing lives in sidecar files, which are never read, so they could not become an
# item anyway; label+raw formats (ENVI, PDS, ERS, EHdr...), VRT and other descriptor formats
# are what this policy exists to keep out.
CONVERSION_DRIVERS: Final = ("GTiff", "JP2OpenJPEG")

# Leading bytes of each allowed format: classic and BigTIFF in both byte orders; a JP2 file
# (signature box) or a raw JPEG 2000 codestream (SOC + SIZ markers).
_SIGNATURES: Final[Mapping[str, tuple[bytes, ...]]] = MappingProxyType(
    {
        "GTiff": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),
        "JP2OpenJPEG": (b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51"),
    }
)
_FORMAT_NAMES: Final[Mapping[str, str]] = MappingProxyType({"GTiff": "GeoTIFF", "JP2OpenJPEG": "JPEG 2000"})
_SIGNATURE_BYTES: Final = 12

# Held for the whole life of a dataset opened here (GDAL reads some of these lazily).
SAFE_GDAL_CONFIG: Final[Mapping[str, str]] = MappingProxyType(
    {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no sibling files (.aux.xml, .ovr, .msk, .tfw)
        "GDAL_PAM_ENABLED": "NO",  # no .aux.xml read or written next to the file
    }
)
# Georeferencing from the file itself only (both allowed drivers know this open option).
_OPEN_OPTIONS: Final[Mapping[str, str]] = MappingProxyType({"GEOREF_SOURCES": "INTERNAL"})


@dataclass(frozen=True)
class RasterLimits:
    """The largest raster the service opens, checked from the header before any decode.

    The defaults take a whole Sentinel-2 tile (10980 x 10980, even with all 13 bands
    resampled to 10 m) and refuse a 20000 x 20000 one.
    """

    max_pixels: int = 1 << 28  # width x height: 268 million, e.g. 16384 x 16384
    max_samples: int = 1 << 31  # width x height x bands: 2.1 billion

    def __post_init__(self) -> None:
        if self.max_pixels < 1 or self.max_samples < 1:
            raise ValueError("raster limits must be positive")


_limits = RasterLimits()


def raster_limits(max_pixels: int = 0, max_samples: int = 0) -> RasterLimits:
    """RasterLimits from configuration values, 0 meaning the default."""
    defaults = RasterLimits()
    return RasterLimits(max_pixels or defaults.max_pixels, max_samples or defaults.max_samples)


def configure_limits(limits: RasterLimits) -> RasterLimits:
    """Set the process-wide limits (server and worker do it at start); returns the old ones."""
    global _limits
    previous, _limits = _limits, limits
    return previous


def current_limits() -> RasterLimits:
    return _limits


@contextmanager
def open_raster(
    path: Path, *, drivers: tuple[str, ...] = GEOTIFF_DRIVERS, overview_level: int | None = None
) -> Iterator[DatasetReader]:
    """Open a local raster file for reading under the policy above.

    Raises RasterError: UNSUPPORTED_RASTER_FORMAT (not a regular file of an allowed format),
    RASTER_TOO_LARGE, UNREADABLE_RASTER (an allowed format GDAL cannot parse).
    """
    path = Path(path)
    _require_allowed_format(path, drivers)
    options = dict(_OPEN_OPTIONS)
    if overview_level is not None:
        options["OVERVIEW_LEVEL"] = str(overview_level)
    with rasterio.Env(**SAFE_GDAL_CONFIG):
        try:
            with warnings.catch_warnings():
                # Missing georeferencing is reported by the callers as UNSUPPORTED_RASTER.
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                # rasterio.open (1.4) refuses a driver list although GDALOpenEx takes one; its
                # reader does. _UnparsedPath: the name is a local file, never a URL or archive.
                dataset = DatasetReader(_UnparsedPath(os.fspath(path)), driver=list(drivers), **options)
        except GDAL_ERRORS as error:
            raise RasterError(UNREADABLE_RASTER, f"cannot open raster: {gdal_message(error)}") from error
        with dataset:
            require_within_limits(dataset.width, dataset.height, dataset.count)
            yield dataset


def open_stored(path: str) -> DatasetReader:
    """Open a stored asset for reading (the caller closes it), e.g. a long-lived analytics handle.

    Stored assets passed ``open_raster`` at registration, but the name may be a storage path
    GDAL resolves itself (``/vsis3/...``), so there is no signature check here: the GTiff
    driver alone reads it, without sibling files.
    """
    with rasterio.Env(**SAFE_GDAL_CONFIG):
        return rasterio.open(path, driver=GEOTIFF_DRIVERS[0], **_OPEN_OPTIONS)


def require_within_limits(width: int, height: int, bands: int, limits: RasterLimits | None = None) -> None:
    limits = limits or _limits
    if width * height > limits.max_pixels or width * height * bands > limits.max_samples:
        raise RasterError(
            RASTER_TOO_LARGE,
            f"raster of {width} x {height} pixels x {bands} bands exceeds the limits of "
            f"{limits.max_pixels} pixels and {limits.max_samples} pixel values (width x height x bands)",
        )


def _require_allowed_format(path: Path, drivers: tuple[str, ...]) -> None:
    # A regular file only: no device, FIFO or directory, and no GDAL "/vsi..." or
    # "DRIVER:..." name, which are not files on disk.
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # before open(): a FIFO would block it
            raise RasterError(UNSUPPORTED_RASTER_FORMAT, "not a regular file")
        with path.open("rb") as file:
            head = file.read(_SIGNATURE_BYTES)
    except OSError as error:
        raise RasterError(UNREADABLE_RASTER, f"cannot read file: {error.strerror or type(error).__name__}") from error
    if not any(head.startswith(signature) for driver in drivers for signature in _SIGNATURES[driver]):
        accepted = " or ".join(_FORMAT_NAMES[driver] for driver in drivers)
        raise RasterError(UNSUPPORTED_RASTER_FORMAT, f"the file is not a {accepted}; only {accepted} files are read")


def gdal_message(error: BaseException) -> str:
    """The most specific message in an exception's cause chain.

    rasterio raises e.g. "Read failed. See previous exception for details." and chains the
    GDAL error that says what actually went wrong ("TIFFFillTile:Read error at ...").
    RasterError strips directories from it (GDAL names the file it failed on).
    """
    message = str(error).strip() or type(error).__name__
    cause = error.__cause__
    for _ in range(10):  # bounded: cause chains are short, but never trust a cycle
        if cause is None:
            break
        if str(cause).strip():
            message = str(cause).strip()
        cause = cause.__cause__
    return message
