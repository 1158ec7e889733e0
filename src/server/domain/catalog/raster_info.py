"""An inspected raster's metadata as the JSON the asset rows store (shaped
like the protos), and raster failures as domain errors."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from geopera_kernel.raster import RasterError, RasterInfo
from geopera_kernel.server.errors import DomainError, invalid_argument


def _json_float(value: float | None) -> float | str | None:
    """JSON (and jsonb) has no NaN/Infinity; proto JSON spells them as strings."""
    if value is None:
        return None
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def asset_json(info: RasterInfo) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Band, grid and render metadata as JSON shaped like the protos."""
    bands = []
    for band in info.bands:
        entry: dict[str, Any] = {
            "name": band.name,
            "common_name": band.common_name or "",
            "description": band.description,
            "data_type": band.data_type,
            "scale": band.scale,
            "offset": band.offset,
            "unit": band.unit or "",
            "sensor_band_id": band.sensor_band_id or "",
            "center_wavelength_um": band.center_wavelength_um or 0.0,
            "tags": dict(band.tags),
        }
        if band.nodata is not None:
            entry["nodata"] = _json_float(band.nodata)
        if band.statistics is not None:
            stats = band.statistics
            entry["statistics"] = {
                "minimum": _json_float(stats.minimum),
                "maximum": _json_float(stats.maximum),
                "mean": _json_float(stats.mean),
                "stddev": _json_float(stats.stddev),
                "valid_percent": _json_float(stats.valid_percent),
            }
        bands.append(entry)
    grid = info.grid
    grid_json = {
        "crs": grid.crs,
        "width": grid.width,
        "height": grid.height,
        "transform": list(grid.transform),
        "bounds": list(grid.bounds),
        "block_size": list(grid.block_size),
        "overview_count": grid.overview_count,
        "compression": grid.compression or "",
    }
    render = {
        "rescale": [{"min": _json_float(r.min), "max": _json_float(r.max)} for r in info.render_hint.rescale],
        "rgb_bands": list(info.render_hint.rgb_bands),
    }
    return bands, grid_json, render


def raster_error(err: RasterError, field: str) -> DomainError:
    return invalid_argument(
        err.reason,
        err.message,
        violations=[],
        metadata={"findings": "; ".join(err.findings)[:1000]} if err.findings else {},
        field=field,
    )


def discard_prepared(prepared: tuple[Path, RasterInfo, bool]) -> None:
    """Cleans up after an asset prepared for a call that was cancelled meanwhile."""
    path, _info, temporary = prepared
    if temporary:
        path.unlink(missing_ok=True)
