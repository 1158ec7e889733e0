"""Satellite-derived bathymetry with the Stumpf et al. (2003) log-ratio model.

    depth = m1 * ln(n * Rw(blue)) / ln(n * Rw(green)) - m0

Stumpf, Holderied & Sinclair (2003), "Determination of water depth with high-resolution
satellite imagery over variable bottom types", Limnol. Oceanogr. 48(1, part 2): 547-556.
``m1``/``m0`` are calibrated per scene against known depths; ``n`` (default 1000) keeps both
logarithms positive and the ratio close to linear in depth.

Processed in strips of source blocks like ``geopera_kernel.raster.clip``; the output is a one-band
float32 house COG with NaN as nodata.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from rasterio.enums import MaskFlags
from rasterio.io import DatasetReader
from rasterio.windows import Window

from geopera_kernel.raster.bands import common_name_for
from geopera_kernel.raster.clip import STRIPS_PROGRESS_SHARE, require_georeferenced
from geopera_kernel.raster.cog import STATISTICS_PREFIX, BandMetadata, staged_cog
from geopera_kernel.raster.errors import UNSUPPORTED_RASTER, RasterError
from geopera_kernel.raster.safe_open import open_raster
from geopera_kernel.raster.strips import CheckCancelled, Progress, read_masks, read_window, strip_source, strip_windows

# The source lacks a blue or green band (by common name or explicit index).
BANDS_NOT_FOUND: Final = "BANDS_NOT_FOUND"

DEFAULT_N: Final = 1000.0
DEFAULT_LAND_NDWI_THRESHOLD: Final = 0.0
DEFAULT_MAX_DEPTH_M: Final = 30.0
# Common names accepted for each role, best first.
_ROLE_NAMES: Final[Mapping[str, tuple[str, ...]]] = {
    "blue": ("blue",),
    "green": ("green",),
    "nir": ("nir", "nir08"),
}
# Working memory per pixel of a strip: about ten float64 temporaries.
_BYTES_PER_PIXEL: Final = 80


@dataclass(frozen=True)
class BathymetryResult:
    """What ``bathymetry_to_cog`` wrote; pixel counts partition ``pixel_count``.

    ``water_pixel_count`` pixels got a depth; ``land_pixel_count`` were NDWI-masked;
    ``invalid_pixel_count`` were nodata in the source, had a non-positive reflectance, a
    non-finite ratio or a depth outside [0, max_depth_m].
    """

    path: Path
    width: int
    height: int
    band_indexes: dict[str, int]  # role (blue, green, nir) -> 1-based source band
    reflectance_scales: dict[str, tuple[float, float]]  # role -> (scale, offset)
    pixel_count: int
    water_pixel_count: int
    land_pixel_count: int
    invalid_pixel_count: int


def find_bands(dataset: DatasetReader) -> dict[str, int]:
    """1-based indexes of the blue, green and (when present) nir bands, by common name.

    A band's common name comes from its COMMON_NAME tag, else its description ("blue", "B02",
    "SR_B3"...), else its BAND_ID tag, as in ``geopera_kernel.raster.inspect``.
    """
    names: dict[str, int] = {}
    for index in dataset.indexes:
        name = _common_name(dataset, index)
        if name is not None:
            names.setdefault(name, index)
    found = {}
    for role, candidates in _ROLE_NAMES.items():
        for candidate in candidates:
            if candidate in names:
                found[role] = names[candidate]
                break
    return found


def detect_bands(src: str | Path) -> dict[str, int]:
    """``find_bands`` of a raster file; RasterError(BANDS_NOT_FOUND) without blue and green."""
    with open_raster(Path(src)) as dataset:
        roles = find_bands(dataset)
    if "blue" not in roles or "green" not in roles:
        raise RasterError(BANDS_NOT_FOUND, f"need blue and green bands, found {sorted(roles) or 'none'}")
    return roles


def _common_name(dataset: DatasetReader, index: int) -> str | None:
    tags = dataset.tags(index)
    tagged = tags.get("COMMON_NAME", "").strip().lower()
    if tagged:
        return tagged
    for candidate in (dataset.descriptions[index - 1], tags.get("BAND_ID")):
        if candidate:
            name = common_name_for(candidate)
            if name is not None:
                return name
    return None


def reflectance_scale(dataset: DatasetReader, index: int) -> tuple[float, float]:
    """(scale, offset) turning stored values into reflectance.

    The band's own scale/offset when either is set (not 1/0); else the dataset's
    REFLECTANCE_SCALE / REFLECTANCE_OFFSET tags; else identity (values already reflectance).
    """
    scale, offset = float(dataset.scales[index - 1]), float(dataset.offsets[index - 1])
    if (scale, offset) != (1.0, 0.0):
        return scale, offset
    tags = dataset.tags()
    try:
        return float(tags.get("REFLECTANCE_SCALE", 1.0)), float(tags.get("REFLECTANCE_OFFSET", 0.0))
    except ValueError as error:
        raise RasterError(UNSUPPORTED_RASTER, f"unreadable REFLECTANCE_SCALE/OFFSET tag: {error}") from error


def bathymetry_to_cog(
    src: str | Path,
    dst: Path,
    *,
    m0: float,
    m1: float,
    n: float = DEFAULT_N,
    land_ndwi_threshold: float = DEFAULT_LAND_NDWI_THRESHOLD,
    max_depth_m: float = DEFAULT_MAX_DEPTH_M,
    band_indexes: Mapping[str, int] | None = None,
    progress: Progress | None = None,
    check_cancelled: CheckCancelled | None = None,
) -> BathymetryResult:
    """Write a depth raster (metres, positive down, float32, NaN nodata) as a COG at ``dst``.

    Reflectance Rw = stored value * scale + offset (see ``reflectance_scale``). A pixel is NaN:

    - land: NDWI = (Rw(green) - Rw(nir)) / (Rw(green) + Rw(nir)) < ``land_ndwi_threshold``
      (McFeeters 1996; default 0.0: water reflects more green than near-infrared). Skipped when
      the source has no nir band. A non-finite NDWI (green + nir = 0) counts as land too;
    - invalid: nodata/masked in any band used, Rw(blue) <= 0 or Rw(green) <= 0, a ratio that is
      not finite (ln(n * Rw(green)) = 0), or a depth outside [0, ``max_depth_m``] (default
      30 m: beyond that the signal is too weak for the log-ratio model to hold).

    ``band_indexes`` overrides the detected bands ({"blue": 1, "green": 2, "nir": 4}).
    Raises RasterError: BANDS_NOT_FOUND, UNREADABLE_RASTER, UNSUPPORTED_RASTER, COG_WRITE_FAILED.
    """
    if not n > 0 or not max_depth_m > 0 or not all(map(math.isfinite, (m0, m1, n, land_ndwi_threshold))):
        raise ValueError("n and max_depth_m must be positive and every coefficient finite")
    dst = Path(dst)
    report = progress or (lambda fraction: None)
    check = check_cancelled or (lambda: None)
    with open_raster(Path(src)) as dataset:
        require_georeferenced(dataset)
        roles = dict(band_indexes) if band_indexes is not None else find_bands(dataset)
        missing = [role for role in ("blue", "green") if role not in roles]
        if missing or any(not 1 <= index <= dataset.count for index in roles.values()):
            raise RasterError(
                BANDS_NOT_FOUND,
                f"need blue and green bands (by common name or index), missing {missing or 'none'}; got {roles}",
            )
        ordered = [role for role in ("blue", "green", "nir") if role in roles]
        indexes = [roles[role] for role in ordered]
        scales: dict[str, tuple[float, float]] = {role: reflectance_scale(dataset, roles[role]) for role in ordered}
        window = Window(0, 0, dataset.width, dataset.height)
        strips = strip_windows(dataset, window, _BYTES_PER_PIXEL)
        water = land = 0
        with staged_cog(
            dst,
            width=dataset.width,
            height=dataset.height,
            count=1,
            dtype="float32",
            crs=dataset.crs,
            transform=dataset.transform,
            nodata=math.nan,
            metadata=_output_metadata(
                dataset, m0=m0, m1=m1, n=n, threshold=land_ndwi_threshold, max_depth_m=max_depth_m, roles=roles
            ),
        ) as staging:
            for number, strip in enumerate(strips):
                check()
                with strip_source(Path(src)) as source:
                    stored = read_window(source, indexes, strip)
                    invalid = np.zeros(stored.shape[1:], dtype=bool)
                    for position, role in enumerate(ordered):
                        invalid |= _invalid_pixels(source, roles[role], stored[position], strip)
                reflectance = {}
                for position, role in enumerate(ordered):
                    scale, offset = scales[role]
                    reflectance[role] = stored[position].astype(np.float64) * scale + offset
                depth, is_land = stumpf_depth(
                    reflectance["blue"],
                    reflectance["green"],
                    reflectance.get("nir"),
                    m0=m0,
                    m1=m1,
                    n=n,
                    land_ndwi_threshold=land_ndwi_threshold,
                    max_depth_m=max_depth_m,
                )
                is_land &= ~invalid
                depth[invalid] = np.nan
                water += int(np.count_nonzero(~np.isnan(depth)))
                land += int(np.count_nonzero(is_land))
                staging.write(depth.astype(np.float32)[np.newaxis], Window(0, strip.row_off, strip.width, strip.height))
                report(STRIPS_PROGRESS_SHARE * (number + 1) / len(strips))
            check()
        width, height = dataset.width, dataset.height
    report(1.0)
    pixel_count = width * height
    return BathymetryResult(
        path=dst,
        width=width,
        height=height,
        band_indexes={role: roles[role] for role in ordered},
        reflectance_scales=scales,
        pixel_count=pixel_count,
        water_pixel_count=water,
        land_pixel_count=land,
        invalid_pixel_count=pixel_count - water - land,
    )


def stumpf_depth(
    blue: np.ndarray,
    green: np.ndarray,
    nir: np.ndarray | None,
    *,
    m0: float,
    m1: float,
    n: float = DEFAULT_N,
    land_ndwi_threshold: float = DEFAULT_LAND_NDWI_THRESHOLD,
    max_depth_m: float = DEFAULT_MAX_DEPTH_M,
) -> tuple[np.ndarray, np.ndarray]:
    """(depth with NaN where masked, land mask) from reflectance arrays; see ``bathymetry_to_cog``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        positive = (blue > 0) & (green > 0)
        ratio = np.log(n * np.where(positive, blue, np.nan)) / np.log(n * np.where(positive, green, np.nan))
        depth = m1 * ratio - m0
        if nir is not None:
            ndwi = (green - nir) / (green + nir)
            land = ~(ndwi >= land_ndwi_threshold)  # NaN NDWI counts as land
        else:
            land = np.zeros(blue.shape, dtype=bool)
    keep = np.isfinite(ratio) & (depth >= 0.0) & (depth <= max_depth_m) & ~land
    return np.where(keep, depth, np.nan), land


def _invalid_pixels(dataset: DatasetReader, index: int, stored: np.ndarray, window: Window) -> np.ndarray:
    flags = dataset.mask_flag_enums[index - 1]
    invalid = np.isnan(stored) if stored.dtype.kind == "f" else np.zeros(stored.shape, dtype=bool)
    if flags == [MaskFlags.all_valid]:
        return invalid
    nodata = dataset.nodatavals[index - 1]
    if flags == [MaskFlags.nodata] and nodata is not None:
        return invalid | (stored == np.asarray(nodata, dtype=stored.dtype))
    return invalid | (read_masks(dataset, index, window) == 0)


def _output_metadata(
    dataset: DatasetReader,
    *,
    m0: float,
    m1: float,
    n: float,
    threshold: float,
    max_depth_m: float,
    roles: Mapping[str, int],
) -> BandMetadata:
    # Acquisition metadata still applies; reflectance scaling and statistics do not.
    dataset_tags = {
        key: value
        for key, value in dataset.tags().items()
        if not key.startswith(STATISTICS_PREFIX) and not key.startswith("REFLECTANCE_")
    }
    dataset_tags.update(
        BATHYMETRY_MODEL="Stumpf et al. 2003 log-ratio: depth = m1 * ln(n*Rw(blue)) / ln(n*Rw(green)) - m0",
        BATHYMETRY_M0=repr(m0),
        BATHYMETRY_M1=repr(m1),
        BATHYMETRY_N=repr(n),
        BATHYMETRY_LAND_NDWI_THRESHOLD=repr(threshold) if "nir" in roles else "none (no nir band)",
        BATHYMETRY_MAX_DEPTH_M=repr(max_depth_m),
        BATHYMETRY_SOURCE_BANDS=",".join(f"{role}={index}" for role, index in roles.items()),
    )
    return BandMetadata(
        descriptions=("depth",),
        scales=(1.0,),
        offsets=(0.0,),
        units=("m",),
        colorinterp=None,
        band_tags=({None: {"DESCRIPTION": "water depth below the surface, metres (positive down)"}},),
        dataset_tags={None: dataset_tags},
    )
