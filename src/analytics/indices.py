"""Spectral index catalogue: formulas on surface/TOA reflectance, band needs by common name.

Formulas take reflectance in [0, 1]: callers apply each band's scale and offset (from the
band metadata) first. Nothing is guessed: a band whose metadata says scale 1 is used as
stored, even when its values look like reflectance x 10000 integers, because guessing would
silently change results for products that really store reflectance in [0, 1]. For the
normalised differences this does not matter (the ratio is scale-invariant when both bands
share scale and offset); EVI, SAVI and MSAVI add constants to reflectance, so they need
correct metadata.

Everything is float32 (inputs come from at most 16-bit sensors; float32 halves the memory
traffic). A zero denominator or a negative square root gives NaN, which callers treat as
nodata.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import numpy as np

Bands = Mapping[str, np.ndarray]


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator with NaN where the denominator is 0 (no warnings, no inf).

    Overwrites ``numerator`` (always a temporary here): a plain divide then a NaN fix-up is
    about twice as fast as a masked ``where=`` divide into a NaN-filled array.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.divide(numerator, denominator, out=numerator)
    out[denominator == 0] = np.nan
    return out


def _normalized_difference(a: str, b: str) -> Callable[[Bands], np.ndarray]:
    def formula(bands: Bands) -> np.ndarray:
        x, y = bands[a], bands[b]
        return _ratio(np.subtract(x, y, dtype=np.float32), np.add(x, y, dtype=np.float32))

    formula.difference = (a, b)  # type: ignore[attr-defined]
    return formula


def _evi(bands: Bands) -> np.ndarray:
    nir, red, blue = bands["nir"], bands["red"], bands["blue"]
    # G = 2.5, C1 = 6, C2 = 7.5, L = 1 (MODIS EVI, Huete et al. 2002).
    denominator = nir + np.float32(6.0) * red - np.float32(7.5) * blue + np.float32(1.0)
    return _ratio(np.float32(2.5) * (nir - red), denominator)


def _savi(bands: Bands) -> np.ndarray:
    nir, red = bands["nir"], bands["red"]
    soil = np.float32(0.5)  # L = 0.5 (Huete 1988), intermediate vegetation density
    return _ratio((np.float32(1.0) + soil) * (nir - red), nir + red + soil)


def _msavi(bands: Bands) -> np.ndarray:
    nir, red = bands["nir"], bands["red"]
    # MSAVI2 (Qi et al. 1994): (2 NIR + 1 - sqrt((2 NIR + 1)^2 - 8 (NIR - Red))) / 2
    term = np.float32(2.0) * nir + np.float32(1.0)
    radicand = term * term - np.float32(8.0) * (nir - red)
    root = np.full(radicand.shape, np.nan, dtype=np.float32)
    np.sqrt(radicand, out=root, where=radicand >= 0)
    return (term - root) * np.float32(0.5)


@dataclass(frozen=True)
class SpectralIndex:
    name: str  # upper case, e.g. "NDVI"
    title: str
    bands: tuple[str, ...]  # STAC EO common names the formula reads
    formula_text: str
    compute: Callable[[Bands], np.ndarray]
    # Theoretical range for reflectance inputs; None when unbounded (EVI).
    value_range: tuple[float, float] | None = (-1.0, 1.0)
    # (a, b) when the formula is the normalized difference (a - b) / (a + b): sources then
    # compute it fused, into reused arrays (``IndexSource.compute_into``).
    difference: tuple[str, str] | None = None

    def __call__(self, bands: Bands) -> np.ndarray:
        return self.compute(bands)


def _index(
    name: str,
    title: str,
    bands: tuple[str, ...],
    formula_text: str,
    compute: Callable[[Bands], np.ndarray],
    value_range: tuple[float, float] | None = (-1.0, 1.0),
) -> tuple[str, SpectralIndex]:
    difference = getattr(compute, "difference", None)
    return name, SpectralIndex(name, title, bands, formula_text, compute, value_range, difference)


INDICES: Final[Mapping[str, SpectralIndex]] = MappingProxyType(
    dict(
        [
            _index(
                "NDVI",
                "Normalized Difference Vegetation Index",
                ("nir", "red"),
                "(nir - red) / (nir + red)",
                _normalized_difference("nir", "red"),
            ),
            _index(
                "NDWI",
                "Normalized Difference Water Index (McFeeters 1996)",
                ("green", "nir"),
                "(green - nir) / (green + nir)",
                _normalized_difference("green", "nir"),
            ),
            _index(
                "MNDWI",
                "Modified Normalized Difference Water Index (Xu 2006)",
                ("green", "swir16"),
                "(green - swir16) / (green + swir16)",
                _normalized_difference("green", "swir16"),
            ),
            _index(
                "NDMI",
                "Normalized Difference Moisture Index",
                ("nir", "swir16"),
                "(nir - swir16) / (nir + swir16)",
                _normalized_difference("nir", "swir16"),
            ),
            _index(
                "NBR",
                "Normalized Burn Ratio",
                ("nir", "swir22"),
                "(nir - swir22) / (nir + swir22)",
                _normalized_difference("nir", "swir22"),
            ),
            _index(
                "NDBI",
                "Normalized Difference Built-up Index",
                ("swir16", "nir"),
                "(swir16 - nir) / (swir16 + nir)",
                _normalized_difference("swir16", "nir"),
            ),
            _index(
                "GNDVI",
                "Green Normalized Difference Vegetation Index",
                ("nir", "green"),
                "(nir - green) / (nir + green)",
                _normalized_difference("nir", "green"),
            ),
            _index(
                "EVI",
                "Enhanced Vegetation Index",
                ("nir", "red", "blue"),
                "2.5 * (nir - red) / (nir + 6 * red - 7.5 * blue + 1)",
                _evi,
                None,
            ),
            _index(
                "SAVI",
                "Soil Adjusted Vegetation Index (L = 0.5)",
                ("nir", "red"),
                "1.5 * (nir - red) / (nir + red + 0.5)",
                _savi,
                (-1.5, 1.5),
            ),
            _index(
                "MSAVI",
                "Modified Soil Adjusted Vegetation Index (MSAVI2)",
                ("nir", "red"),
                "(2 * nir + 1 - sqrt((2 * nir + 1)^2 - 8 * (nir - red))) / 2",
                _msavi,
            ),
        ]
    )
)

INDEX_NAMES: Final[tuple[str, ...]] = tuple(INDICES)


def get_index(name: str) -> SpectralIndex:
    """Case-insensitive lookup; KeyError for an unknown name (params validation rejects those)."""
    return INDICES[name.strip().upper()]
