"""Band naming catalogue: STAC EO common names, their aliases, and sensor band ids.

Shared by inspection and by band auto-detection elsewhere (e.g. picking red/nir for NDVI).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

# STAC "eo" extension common band names.
COMMON_NAMES: Final[frozenset[str]] = frozenset(
    {
        "pan",
        "coastal",
        "blue",
        "green",
        "green05",
        "yellow",
        "red",
        "rededge",
        "rededge071",
        "rededge075",
        "rededge078",
        "nir",
        "nir08",
        "nir09",
        "cirrus",
        "swir16",
        "swir22",
        "lwir",
        "lwir11",
        "lwir12",
    }
)

# Spellings seen in the wild, keyed by the normalised form (lower case, separators removed).
_ALIASES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "panchromatic": "pan",
        "coastalaerosol": "coastal",
        "aerosol": "coastal",
        "nearinfrared": "nir",
        "nearir": "nir",
        "nirbroad": "nir",
        "nirwide": "nir",
        "nirnarrow": "nir08",
        "narrownir": "nir08",
        "nir8": "nir08",
        "nir9": "nir09",
        "swir1": "swir16",
        "swir2": "swir22",
        "thermal": "lwir",
        "tir": "lwir",
    }
)

# Sentinel-2 MSI band ids. Only the zero-padded ESA spelling is accepted: unpadded ids (B5, B8,
# B10...) collide with Landsat band numbers that mean different wavelengths.
SENTINEL2_COMMON_NAMES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "B01": "coastal",
        "B02": "blue",
        "B03": "green",
        "B04": "red",
        "B05": "rededge",
        "B06": "rededge",
        "B07": "rededge",
        "B08": "nir",
        "B8A": "nir08",
        "B09": "nir09",
        "B10": "cirrus",
        "B11": "swir16",
        "B12": "swir22",
    }
)

# Landsat 8/9 Collection 2 Level-2 band ids (surface reflectance and surface temperature).
LANDSAT_COMMON_NAMES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "SR_B1": "coastal",
        "SR_B2": "blue",
        "SR_B3": "green",
        "SR_B4": "red",
        "SR_B5": "nir08",
        "SR_B6": "swir16",
        "SR_B7": "swir22",
        "ST_B10": "lwir11",
    }
)

_SENSOR_COMMON_NAMES: Final[Mapping[str, str]] = MappingProxyType({**SENTINEL2_COMMON_NAMES, **LANDSAT_COMMON_NAMES})

_SEPARATORS = re.compile(r"[\s_\-./]+")


def _normalise(name: str) -> str:
    return _SEPARATORS.sub("", name.strip().lower())


def sensor_common_name(band_id: str) -> str | None:
    """Common name of a Sentinel-2 or Landsat 8/9 band id ("B8A", "SR_B4"), else None."""
    return _SENSOR_COMMON_NAMES.get(band_id.strip().upper())


def is_sensor_band_id(name: str) -> bool:
    return sensor_common_name(name) is not None


def common_name_for(name: str) -> str | None:
    """Map a band name to a STAC EO common name, or None when it is not recognised.

    Accepts common names in any case/spacing ("NIR", "Red Edge"), known aliases ("swir1",
    "near-infrared") and sensor band ids ("B04", "B8A", "SR_B5").
    """
    normalised = _normalise(name)
    if normalised in COMMON_NAMES:
        return normalised
    alias = _ALIASES.get(normalised)
    if alias is not None:
        return alias
    return sensor_common_name(name)
