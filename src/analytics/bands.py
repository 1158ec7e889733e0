"""Which band of an asset holds which STAC EO common name (red, nir, swir16...).

Auto-detection looks, for each required common name, at three sources in turn and stops at
the first that matches: the band's name (GDAL description, e.g. "red" or "near-infrared"),
its ``common_name`` metadata, then its sensor band id (Sentinel-2 B02..B12/B8A, Landsat 8/9
SR_B2..SR_B7, from ``sensor_band_id`` or the name). Two bands matching at the same step is
ambiguous rather than a coin toss. An explicit ``band_mapping`` ({"RED": 3, "nir": "B08"})
overrides detection for the names it lists.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from geopera_kernel.raster import common_name_for, is_sensor_band_id, sensor_common_name
from geopera_kernel.raster.domain_errors import DomainError, invalid_argument

MAPPING_FIELD: Final = "params.band_mapping"
# Landsat 8/9 only have a narrow NIR (SR_B5 -> nir08); indices written for "nir" use it when
# no broad NIR band exists, as every Landsat NDVI does.
_FALLBACKS: Final[Mapping[str, tuple[str, ...]]] = {"nir": ("nir08",)}


def normalize_common_name(key: str) -> str | None:
    """ "RED", "Near-Infrared", "swir1" -> "red", "nir", "swir16"; None when unknown."""
    return common_name_for(key)


def _text(band: Mapping[str, Any], key: str) -> str:
    value = band.get(key)
    return value.strip() if isinstance(value, str) else ""


def _sensor_id(band: Mapping[str, Any]) -> str:
    tags = band.get("tags") or {}
    return _text(band, "sensor_band_id") or (tags.get("BAND_ID", "") if isinstance(tags, dict) else "")


def _declared_common_name(band: Mapping[str, Any]) -> str:
    tags = band.get("tags") or {}
    declared = _text(band, "common_name") or (tags.get("COMMON_NAME", "") if isinstance(tags, dict) else "")
    return (common_name_for(declared) or declared.lower()) if declared else ""


def _by_name(band: Mapping[str, Any]) -> str | None:
    name = _text(band, "name")
    return None if not name or is_sensor_band_id(name) else common_name_for(name)


def _by_sensor_id(band: Mapping[str, Any]) -> str | None:
    for candidate in (_sensor_id(band), _text(band, "name")):
        if candidate and (common := sensor_common_name(candidate)) is not None:
            return common
    return None


_STEPS: Final[tuple[Callable[[Mapping[str, Any]], str | None], ...]] = (
    _by_name,
    lambda band: _declared_common_name(band) or None,
    _by_sensor_id,
)


def describe_bands(bands: Sequence[Mapping[str, Any]]) -> str:
    """ "1:blue (blue, B02), 2:green (green, B03)" for error messages and metadata."""
    parts = []
    for position, band in enumerate(bands, start=1):
        labels = [label for label in (_declared_common_name(band), _sensor_id(band)) if label]
        name = _text(band, "name") or "-"
        parts.append(f"{position}:{name}" + (f" ({', '.join(labels)})" if labels else ""))
    return ", ".join(parts) if parts else "no bands"


def _missing(message: str, bands: Sequence[Mapping[str, Any]], field: str = MAPPING_FIELD) -> DomainError:
    found = describe_bands(bands)
    return invalid_argument(
        "MISSING_BANDS", f"{message}; bands found: {found}", field=field, metadata={"bands_found": found}
    )


def _ambiguous(message: str, bands: Sequence[Mapping[str, Any]]) -> DomainError:
    found = describe_bands(bands)
    return invalid_argument(
        "AMBIGUOUS_BANDS",
        f"{message}; set params.band_mapping (bands found: {found})",
        field=MAPPING_FIELD,
        metadata={"bands_found": found},
    )


def _detect(common: str, bands: Sequence[Mapping[str, Any]]) -> int | None:
    for wanted in (common, *_FALLBACKS.get(common, ())):
        for step in _STEPS:
            matches = [i for i, band in enumerate(bands, start=1) if step(band) == wanted]
            if len(matches) > 1:
                raise _ambiguous(f"bands {matches} all look like {wanted!r}", bands)
            if matches:
                return matches[0]
    return None


def _explicit(common: str, value: int | str, bands: Sequence[Mapping[str, Any]]) -> int:
    field = f"{MAPPING_FIELD}.{common}"
    if isinstance(value, int):
        if not 1 <= value <= len(bands):
            raise _missing(f"band_mapping {common!r} -> {value}: the asset has {len(bands)} band(s)", bands, field)
        return value
    wanted = value.strip().lower()
    matches = [
        i
        for i, band in enumerate(bands, start=1)
        if wanted in {_text(band, "name").lower(), _sensor_id(band).lower()} - {""}
    ]
    if not matches:
        raise _missing(f"band_mapping {common!r} -> {value!r}: no band has that name", bands, field)
    if len(matches) > 1:
        raise _ambiguous(f"band_mapping {common!r} -> {value!r} matches bands {matches}", bands)
    return matches[0]


def resolve_bands(
    required: Sequence[str],
    bands: Sequence[Mapping[str, Any]],
    mapping: Mapping[str, int | str] | None = None,
) -> dict[str, int]:
    """Common name -> 1-based band index for every required name, or a DomainError.

    ``mapping`` keys are normalised common names (see ``normalize_common_name``).
    """
    explicit = {normalize_common_name(key) or key.lower(): value for key, value in (mapping or {}).items()}
    resolved: dict[str, int] = {}
    missing: list[str] = []
    for common in required:
        if common in explicit:
            resolved[common] = _explicit(common, explicit[common], bands)
            continue
        index = _detect(common, bands)
        if index is None:
            missing.append(common)
        else:
            resolved[common] = index
    if missing:
        raise _missing(f"no band found for {', '.join(missing)}", bands)
    return resolved
