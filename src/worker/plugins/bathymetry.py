"""The "bathymetry" job (``geopera_kernel.raster.job_types.BATHYMETRY``): satellite-derived water depth
(Stumpf et al. 2003 log-ratio model)."""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import BaseModel
from shapely.geometry import shape

from geopera_kernel.raster import RasterError
from geopera_kernel.raster.bathymetry import bathymetry_to_cog, detect_bands
from geopera_kernel.raster.clip import ClipResult, clip_to_cog
from geopera_kernel.raster.geo import to_geojson
from geopera_kernel.raster.job_types import BATHYMETRY, BathymetryInput
from geopera_kernel.worker.plugin import JobContext, JobFailed, JobOutput, JobPlugin, OutputFile
from geopera_kernel.worker.plugins.clip import (
    ASSET_NOT_FOUND,
    area_km2,
    derived_properties,
    job_aoi,
    output_path,
    source_item,
)

# What the job logs reaches the job's log (`processing.jobs.logs`), as any plugin's `logging` does.
log = logging.getLogger("geopera.worker.bathymetry")
OUTPUT_ASSET_KEY = "depth"
# The result would hold no depth at all (every pixel land, nodata or out of range).
EMPTY_OUTPUT = "EMPTY_OUTPUT"
# The input fields that are parameters of the depth model (bathymetry_to_cog's keywords).
MODEL_PARAMETERS = {"m0", "m1", "n", "land_ndwi_threshold", "max_depth_m"}
# Progress share of the optional clip; the depth pass is cheaper per pixel than it looks
# (three bands in, one out) but also builds a COG, so the split is even.
_CLIP_PROGRESS_SHARE = 0.5


class BathymetryPlugin(JobPlugin, definition=BATHYMETRY):
    def run(self, params: BaseModel, ctx: JobContext) -> list[JobOutput]:
        request = BathymetryInput.model_validate(params, from_attributes=True)
        source = source_item(ctx, request.source_item_id)
        asset = source.assets.get(request.asset_key)
        if asset is None:
            raise JobFailed(ASSET_NOT_FOUND, f"item {source.id} has no asset {request.asset_key}")
        aoi = job_aoi(request.aoi_geometry) if request.aoi_geometry is not None else None
        workdir = Path(ctx.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        dst = output_path(workdir, OUTPUT_ASSET_KEY)
        clipped_path = output_path(workdir, ".bathymetry-clip")
        share = _CLIP_PROGRESS_SHARE if aoi is not None else 0.0
        clip: ClipResult | None = None
        try:
            raster, band_indexes = asset.path, None
            if aoi is not None:
                # Only the bands the model reads are copied into the clip.
                roles = detect_bands(asset.path)
                ordered = list(roles)
                clip = clip_to_cog(
                    asset.path,
                    aoi.geometry,
                    clipped_path,
                    bands=[roles[role] for role in ordered],
                    progress=lambda fraction: ctx.report_progress(share * fraction, "clipping"),
                    check_cancelled=ctx.check_cancelled,
                )
                raster = str(clipped_path)
                band_indexes = {role: position for position, role in enumerate(ordered, start=1)}
            result = bathymetry_to_cog(
                raster,
                dst,
                **request.model_dump(include=MODEL_PARAMETERS),
                band_indexes=band_indexes,
                progress=lambda fraction: ctx.report_progress(share + (1.0 - share) * fraction, "estimating depth"),
                check_cancelled=ctx.check_cancelled,
            )
        except RasterError as error:
            raise JobFailed(error.reason, f"asset {asset.key}: {error.message}") from error
        finally:
            clipped_path.unlink(missing_ok=True)
        log.info(
            "depth model over %d pixels: %d water, %d land, %d nodata or out of range",
            result.pixel_count, result.water_pixel_count, result.land_pixel_count, result.invalid_pixel_count,
            extra={"water_pixels": result.water_pixel_count, "land_pixels": result.land_pixel_count},
        )  # fmt: skip
        if result.water_pixel_count == 0:
            # A depth map without a single depth is worth nothing: fail (credits released), don't charge.
            raise JobFailed(
                EMPTY_OUTPUT,
                f"no water pixel to estimate a depth for: {result.land_pixel_count} of {result.pixel_count} pixels "
                f"are land (NDWI below {request.land_ndwi_threshold}), {result.invalid_pixel_count} nodata or "
                f"outside 0..{request.max_depth_m} m",
            )

        properties = {
            **derived_properties(source),
            "bathymetry:model": "stumpf2003",
            "bathymetry:m0": request.m0,
            "bathymetry:m1": request.m1,
            "bathymetry:n": request.n,
            "bathymetry:land_ndwi_threshold": request.land_ndwi_threshold if "nir" in result.band_indexes else None,
            "bathymetry:max_depth_m": request.max_depth_m,
            "bathymetry:water_pixel_count": result.water_pixel_count,
        }
        if clip is not None:
            properties["clip:aoi_area_km2"] = area_km2(shape(clip.footprint))
        return [
            JobOutput(
                name=request.output_name or f"{source.name}_bathymetry",
                geometry=to_geojson(shape(clip.footprint)) if clip is not None else source.geometry,
                datetime=source.datetime,
                files=[OutputFile(key=OUTPUT_ASSET_KEY, path=dst, roles=["data"], title="Water depth (m)")],
                properties=properties,
                source_item_ids=[source.id],
            )
        ]
