"""What is being measured, per pixel: a band, a spectral index, or every band of a stack.

A source names the bands it reads and turns a chunk of raw band data into layers of values
plus a validity mask (nodata, NaN and undefined index values are invalid).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from server.analytics.bands import resolve_bands
from server.analytics.indices import SpectralIndex
from server.analytics.reader import RasterMeta
from server.analytics.stats import storage_dtype
from server.errors import invalid_argument


def valid_mask(raw: np.ndarray, nodata: float | None) -> np.ndarray:
    """True where a band's value is data: not the nodata value and not NaN."""
    if raw.dtype.kind == "f":
        valid = ~np.isnan(raw)
        if nodata is not None and not math.isnan(nodata):
            valid &= raw != nodata
        return valid
    if nodata is None or math.isnan(nodata):
        return np.ones(raw.shape, dtype=bool)
    info = np.iinfo(raw.dtype)
    if not (info.min <= nodata <= info.max) or nodata != int(nodata):
        return np.ones(raw.shape, dtype=bool)  # a nodata value the type cannot hold never matches
    return raw != raw.dtype.type(nodata)


def reflectance(raw: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """raw * scale + offset in float32 (one pass when there is no offset)."""
    out = np.multiply(raw, np.float32(scale), dtype=np.float32)
    if offset:
        out += np.float32(offset)
    return out


@dataclass(frozen=True)
class PixelSource:
    """Base: ``indexes`` are the 1-based bands read (in that order); ``layers`` are produced."""

    meta: RasterMeta
    indexes: tuple[int, ...]

    @property
    def layers(self) -> int:
        return 1

    @property
    def value_dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    @property
    def read_dtype(self) -> np.dtype:
        return np.result_type(*(self.meta.dtypes[i - 1] for i in self.indexes))

    def compute(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """raw (bands, rows, cols) -> values (layers, rows, cols) and validity of the same shape.

        Values may keep the raw dtype; callers convert the selected ones to ``value_dtype``.
        """
        raise NotImplementedError


@dataclass(frozen=True)
class BandSource(PixelSource):
    apply_scale: bool = False

    @property
    def band(self) -> int:
        return self.indexes[0]

    @property
    def scaled(self) -> bool:
        i = self.band - 1
        return self.apply_scale and (self.meta.scales[i] != 1.0 or self.meta.offsets[i] != 0.0)

    @property
    def value_dtype(self) -> np.dtype:
        dtype = storage_dtype(np.dtype(self.meta.dtypes[self.band - 1]))
        return dtype if not self.scaled else np.dtype(np.float32) if dtype == np.float32 else dtype

    def compute(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        i = self.band - 1
        valid = valid_mask(raw, self.meta.nodata[i])
        if self.scaled:
            values = raw.astype(self.value_dtype) * self.value_dtype.type(self.meta.scales[i])
            values += self.value_dtype.type(self.meta.offsets[i])
            return values, valid
        return raw, valid


@dataclass(frozen=True)
class IndexSource(PixelSource):
    # A default only because PixelSource's fields have them; every IndexSource is built with one.
    index: SpectralIndex = None  # type: ignore[assignment]
    names: tuple[str, ...] = ()  # common name of each band in ``indexes``

    @classmethod
    def resolve(cls, meta: RasterMeta, index: SpectralIndex, mapping: Mapping[str, int | str] | None) -> IndexSource:
        bands = resolve_bands(index.bands, meta.bands, mapping)
        names = tuple(bands)
        return cls(meta, tuple(bands[name] for name in names), index, names)

    def compute(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        valid: np.ndarray | None = None
        inputs = {}
        for position, (name, band) in enumerate(zip(self.names, self.indexes, strict=True)):
            data = raw[position]
            band_valid = valid_mask(data, self.meta.nodata[band - 1])
            valid = band_valid if valid is None else np.logical_and(valid, band_valid, out=valid)
            inputs[name] = reflectance(data, self.meta.scales[band - 1], self.meta.offsets[band - 1])
        assert valid is not None  # an index reads at least one band
        values = self.index(inputs)
        np.logical_and(valid, values == values, out=valid)  # NaN != NaN: undefined index values
        return values[np.newaxis], valid[np.newaxis]

    @property
    def bands_used(self) -> dict[str, int]:
        return dict(zip(self.names, self.indexes, strict=True))


@dataclass(frozen=True)
class StackSource(PixelSource):
    """Every listed band is one layer (time steps of a multi-date stack), as stored."""

    @property
    def layers(self) -> int:
        return len(self.indexes)

    @property
    def value_dtype(self) -> np.dtype:
        return storage_dtype(self.read_dtype)

    def compute(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        valid = np.empty(raw.shape, dtype=bool)
        for position, band in enumerate(self.indexes):
            valid[position] = valid_mask(raw[position], self.meta.nodata[band - 1])
        return raw, valid


def band_source(meta: RasterMeta, band: int, apply_scale: bool, field: str = "params.band") -> BandSource:
    if not 1 <= band <= meta.count:
        raise invalid_argument(
            "MISSING_BANDS",
            f"band {band} does not exist: asset {meta.asset_key!r} has {meta.count} band(s)",
            field=field,
            metadata={"band_count": str(meta.count)},
        )
    return BandSource(meta, (band,), apply_scale)
