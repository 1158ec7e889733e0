"""What is being measured, per pixel: a band, a spectral index, or every band of a stack.

A source names the bands it reads and turns a chunk of raw band data into layers of values
plus a validity mask (nodata, NaN and undefined index values are invalid).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from geopera_kernel.analytics.bands import resolve_bands
from geopera_kernel.analytics.indices import SpectralIndex
from geopera_kernel.analytics.quantiles import storage_dtype
from geopera_kernel.analytics.reader import RasterMeta
from geopera_kernel.raster.domain_errors import invalid_argument


@functools.cache
def _integer_range(dtype: np.dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)  # not free: valid_mask runs per strip and band
    return int(info.min), int(info.max)


def valid_mask(
    raw: np.ndarray, nodata: float | None, out: np.ndarray | None = None, spare: np.ndarray | None = None
) -> np.ndarray:
    """True where a band's value is data: not the nodata value and not NaN.

    Written into ``out`` when given (``spare``, of the same shape, is scratch for float bands
    with a nodata value), so the fused path allocates nothing.
    """
    if out is None:
        out = np.empty(raw.shape, dtype=bool)
    if raw.dtype.kind == "f":
        np.equal(raw, raw, out=out)  # NaN != NaN
        if nodata is not None and not math.isnan(nodata):
            np.logical_and(out, np.not_equal(raw, nodata, out=spare), out=out)
        return out
    if nodata is None or math.isnan(nodata):
        out.fill(True)
        return out
    low, high = _integer_range(raw.dtype)
    if not (low <= nodata <= high) or nodata != int(nodata):
        out.fill(True)  # a nodata value the type cannot hold never matches
        return out
    return np.not_equal(raw, raw.dtype.type(nodata), out=out)


class Scratch:
    """A worker thread's reusable arrays, by name: views of flat buffers that only grow, so
    strips of any shape reuse them (the fused path's numpy passes then allocate nothing). Views
    are kept by shape: a chunk asks for the same few dozen times."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, np.dtype], np.ndarray] = {}
        self._views: dict[tuple[str, Any, tuple[int, ...]], np.ndarray] = {}

    def array(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        view = self._views.get((name, dtype, shape))
        if view is not None:
            return view
        key = (name, np.dtype(dtype))
        size = math.prod(shape)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.size < size:
            buffer = self._buffers[key] = np.empty(max(size, 1), dtype=dtype)
            self._views = {k: v for k, v in self._views.items() if k[0] != name}  # views of the old buffer
        if len(self._views) > 256:  # shapes seen once (e.g. gathered counts) are not worth keeping
            self._views.clear()
        view = self._views[(name, dtype, shape)] = buffer[:size].reshape(shape)
        return view

    def flat(self, name: str, size: int, dtype: Any) -> np.ndarray:
        """The first ``size`` items of the named 1-d buffer (sizes that vary from use to use)."""
        key = (name, np.dtype(dtype))
        buffer = self._buffers.get(key)
        if buffer is None or buffer.size < size:
            buffer = self._buffers[key] = np.empty(max(size, 1), dtype=dtype)
        return buffer[:size]


def reflectance(raw: np.ndarray, scale: float, offset: float, out: np.ndarray | None = None) -> np.ndarray:
    """raw * scale + offset in float32 (one pass when there is no offset), into ``out`` if given."""
    out = np.multiply(raw, np.float32(scale), dtype=np.float32, out=out)
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

    def compute_into(self, raw: np.ndarray, scratch: Scratch) -> tuple[np.ndarray, np.ndarray]:
        """``compute`` into ``scratch``'s arrays (valid until its next call): the same values and
        validity, bit for bit. Sources without a fused form allocate as ``compute`` does."""
        return self.compute(raw)


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

    def compute_into(self, raw: np.ndarray, scratch: Scratch) -> tuple[np.ndarray, np.ndarray]:
        i = self.band - 1
        valid = valid_mask(
            raw, self.meta.nodata[i], scratch.array("valid", raw.shape, bool), scratch.array("spare", raw.shape, bool)
        )
        if self.scaled:
            dtype = self.value_dtype
            values = np.multiply(
                raw, dtype.type(self.meta.scales[i]), dtype=dtype, out=scratch.array("values", raw.shape, dtype)
            )
            values += dtype.type(self.meta.offsets[i])
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

    def compute_into(self, raw: np.ndarray, scratch: Scratch) -> tuple[np.ndarray, np.ndarray]:
        if self.index.difference is None:
            return self.compute(raw)
        # A normalized difference (a - b) / (a + b), with the arithmetic of ``compute`` (each
        # band to float32 reflectance, then subtract, add, divide), into reused arrays.
        shape = raw.shape[1:]
        valid = scratch.array("valid", shape, bool)
        spare = scratch.array("spare", shape, bool)
        a, b = self._difference_positions
        if self._zero_nodata_pair:
            # Both bands integers whose nodata is 0: "both nonzero" is one logical_and of the
            # raw bands (numpy takes nonzero as true), where two comparisons and an and were three
            # passes.
            np.logical_and(raw[a], raw[b], out=valid)
        else:
            for position, band in enumerate(self.indexes):
                if position == 0:
                    valid_mask(raw[0], self.meta.nodata[band - 1], valid, spare)
                else:
                    band_valid = valid_mask(
                        raw[position], self.meta.nodata[band - 1], spare, scratch.array("spare2", shape, bool)
                    )
                    np.logical_and(valid, band_valid, out=valid)
        x = self._reflectance_into(raw, a, scratch.array("x", shape, np.float32))
        y = self._reflectance_into(raw, b, scratch.array("y", shape, np.float32))
        denominator = np.add(x, y, out=scratch.array("denominator", shape, np.float32))
        values = np.subtract(x, y, out=x)
        with np.errstate(divide="ignore", invalid="ignore"):
            np.divide(values, denominator, out=values)
        # ``compute`` sets NaN where the denominator is 0 and then drops NaN values.
        if not self._zero_denominator_is_nodata:
            np.logical_and(valid, np.not_equal(denominator, 0, out=spare), out=valid)
        if not self._finite_inputs:
            np.logical_and(valid, np.equal(values, values, out=spare), out=valid)
        return values[np.newaxis], valid[np.newaxis]

    @functools.cached_property
    def _difference_positions(self) -> tuple[int, int]:
        assert self.index.difference is not None
        a, b = (self.names.index(name) for name in self.index.difference)
        return a, b

    @functools.cached_property
    def _zero_nodata_pair(self) -> bool:
        """True when the index reads exactly two integer bands whose nodata value is 0."""
        if len(self.indexes) != 2:
            return False
        return all(
            np.dtype(self.meta.dtypes[band - 1]).kind in "iu" and self.meta.nodata[band - 1] == 0
            for band in self.indexes
        )

    @functools.cached_property
    def _zero_denominator_is_nodata(self) -> bool:
        """True when a + b == 0 only where both raw values are 0, which nodata already drops:
        unsigned bands, positive finite scales (float32 of raw * scale is > 0 for raw >= 1),
        no offset, and nodata 0 on both (the denominator pass can go)."""
        if not self._zero_nodata_pair:
            return False
        for band in self.indexes:
            scale, offset = self.meta.scales[band - 1], self.meta.offsets[band - 1]
            if np.dtype(self.meta.dtypes[band - 1]).kind != "u" or offset != 0:
                return False
            if not (math.isfinite(scale) and scale >= 1e-30):
                return False
        return True

    @functools.cached_property
    def _finite_inputs(self) -> bool:
        """True when every band's reflectance is finite and far from float32's limits (integer
        bands, finite scale and offset): then a - b over a nonzero a + b is never NaN, and the
        NaN pass can go."""
        for band in self.indexes:
            dtype = np.dtype(self.meta.dtypes[band - 1])
            scale, offset = self.meta.scales[band - 1], self.meta.offsets[band - 1]
            if dtype.kind not in "iub" or not (math.isfinite(scale) and math.isfinite(offset)):
                return False
            info = np.iinfo(dtype)
            if max(abs(int(info.min)), abs(int(info.max))) * abs(scale) + abs(offset) > 1e37:
                return False
        return True

    def _reflectance_into(self, raw: np.ndarray, position: int, out: np.ndarray) -> np.ndarray:
        band = self.indexes[position] - 1
        return reflectance(raw[position], self.meta.scales[band], self.meta.offsets[band], out)

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

    def compute_into(self, raw: np.ndarray, scratch: Scratch) -> tuple[np.ndarray, np.ndarray]:
        valid = scratch.array("valid", raw.shape, bool)
        spare = scratch.array("spare", raw.shape[1:], bool)
        for position, band in enumerate(self.indexes):
            valid_mask(raw[position], self.meta.nodata[band - 1], valid[position], spare)
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
