"""The built-in job plugins, run directly with a hand-built JobContext (no server, no database)."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pydantic
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from rio_cogeo.cogeo import cog_validate
from shapely.geometry import box, mapping, shape

from geopera_kernel.analytics import AnalyticsContext, AssetView, ItemView
from geopera_kernel.analytics import registry as analytics_registry
from geopera_kernel.analytics.registry import json_safe
from geopera_kernel.raster import MEDIA_TYPE_COG, write_cog
from geopera_kernel.raster.job_types import AnalyticsJobInput
from geopera_kernel.worker.plugin import (
    AnalyticsAnswer,
    JobCancelled,
    JobContext,
    JobFailed,
    PluginRegistry,
    SourceAsset,
    SourceItem,
)
from geopera_kernel.worker.plugins import (
    AnalyticsPlugin,
    BathymetryInput,
    BathymetryPlugin,
    ClipInput,
    ClipPlugin,
    builtin_plugins,
)

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "data" / "s2_slovenia"
SAMPLE = SAMPLE_DIR / "s2l1c_slovenia_20150711_bgrn.tif"
ACQUIRED = dt.datetime(2015, 7, 11, 10, 0, 8, tzinfo=dt.UTC)
UTM33 = Affine(10.0, 0.0, 465_000.0, 0.0, -10.0, 5_080_000.0)
TO_LONLAT = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)


def lonlat_box(west: float, south: float, east: float, north: float) -> dict[str, Any]:
    """A UTM 33N box as a GeoJSON polygon in lon/lat (densified so it stays a box)."""
    import shapely

    utm = shapely.segmentize(box(west, south, east, north), 50)
    return mapping(shapely.transform(utm, lambda x, y: TO_LONLAT.transform(x, y), interleaved=False))


def item(path: Path, *, extra_assets: dict[str, SourceAsset] | None = None, name: str = "scene") -> SourceItem:
    with rasterio.open(path) as dataset:
        bounds = rasterio.warp.transform_bounds(dataset.crs, "EPSG:4326", *dataset.bounds)
    return SourceItem(
        id="item-1",
        name=name,
        collection_id="col-1",
        datetime=ACQUIRED,
        geometry=mapping(box(*bounds)),
        properties={"platform": "sentinel-2a", "eo:cloud_cover": 0.0, "proj:shape": [101, 100]},
        assets={
            "data": SourceAsset(key="data", path=str(path), media_type=MEDIA_TYPE_COG, roles=["data"], bands=[]),
            **(extra_assets or {}),
        },
    )


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []

    def __call__(self, fraction: float, message: str) -> None:
        self.calls.append((fraction, message))


def context(tmp_path: Path, source: SourceItem, progress: Recorder | None = None) -> JobContext:
    return JobContext(
        job_id="job-1",
        attempt=1,
        project_id="project-1",
        target_collection_id="col-out",
        sources={source.id: source},
        workdir=tmp_path / "work",
        _progress=progress or Recorder(),
    )


@pytest.fixture
def sample_aoi() -> dict[str, Any]:
    assert SAMPLE.exists(), f"sample data missing: {SAMPLE} (committed with the repository)"
    return json.loads((SAMPLE_DIR / "aoi_epsg4326.geojson").read_text())


# --- clip ----------------------------------------------------------------------------------------


def test_clip_run(tmp_path: Path, sample_aoi: dict[str, Any]) -> None:
    thumbnail = SourceAsset(
        key="thumbnail", path="/nonexistent.png", media_type="image/png", roles=["thumbnail"], bands=[]
    )
    source = item(SAMPLE, extra_assets={"thumbnail": thumbnail})
    progress = Recorder()
    ctx = context(tmp_path, source, progress)
    params = ClipInput(source_item_id=source.id, aoi_geometry=sample_aoi)
    [output] = ClipPlugin().run(params, ctx)

    assert output.name == "scene_clip"
    assert output.datetime == ACQUIRED and output.source_item_ids == [source.id]
    assert [f.key for f in output.files] == ["data"]  # the PNG asset is not a GeoTIFF: skipped
    [file] = output.files
    assert file.path.parent == ctx.workdir and file.roles == ["data"]
    assert cog_validate(str(file.path))[0]
    with rasterio.open(file.path) as clipped:
        assert clipped.count == 4 and clipped.nodata == 0 and clipped.descriptions[0] == "blue"
    aoi = shape(sample_aoi["features"][0]["geometry"])
    assert shape(output.geometry).symmetric_difference(aoi).area < 1e-12
    assert output.properties["platform"] == "sentinel-2a" and "proj:shape" not in output.properties
    assert output.properties["clip:aoi_area_km2"] == pytest.approx(0.0295, rel=0.01)

    fractions = [fraction for fraction, _ in progress.calls]
    assert len(fractions) >= 3 and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert all(message for _, message in progress.calls)


def test_clip_named_assets_and_output_name(tmp_path: Path, sample_aoi: dict[str, Any]) -> None:
    copy = SourceAsset(
        key="copy of data", path=str(SAMPLE), media_type="image/tiff; application=geotiff", roles=[], bands=[]
    )
    source = item(SAMPLE, extra_assets={"copy of data": copy})
    params = ClipInput(
        source_item_id=source.id,
        aoi_geometry=sample_aoi["features"][0],
        asset_keys=["copy of data", "data"],
        output_name="my clip",
    )
    [output] = ClipPlugin().run(params, context(tmp_path, source))
    assert output.name == "my clip"
    assert [f.key for f in output.files] == ["copy of data", "data"]
    assert len({f.path for f in output.files}) == 2 and all(f.path.exists() for f in output.files)
    assert output.files[0].roles == ["data"]


@pytest.mark.parametrize(
    "geometry",
    [
        {"type": "Point", "coordinates": [14.56, 45.87]},
        {"type": "LineString", "coordinates": [[14.55, 45.86], [14.56, 45.87]]},
        {"type": "Feature", "properties": {}, "geometry": None},
        {
            "type": "FeatureCollection",
            "features": [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}}],
        },
        {"type": "Polygon", "coordinates": [[[14.55, 45.86], [14.56, 45.86], [14.55, 45.86], [14.55, 45.86]]]},
        {"type": "Polygon", "coordinates": [[[1500.0, 45.86], [1501, 45.86], [1501, 46], [1500.0, 45.86]]]},
        {"type": "Polygon", "coordinates": "nope"},
        {},
    ],
)
def test_clip_rejects_non_areas(tmp_path: Path, geometry: dict[str, Any]) -> None:
    source = item(SAMPLE)
    with pytest.raises(JobFailed) as caught:
        ClipPlugin().run(ClipInput(source_item_id=source.id, aoi_geometry=geometry), context(tmp_path, source))
    assert caught.value.reason == "INVALID_GEOMETRY"


def test_clip_failures(tmp_path: Path) -> None:
    source = item(SAMPLE)
    ctx = context(tmp_path, source)
    far = mapping(box(10.0, 10.0, 10.1, 10.1))
    cases = [
        (ClipInput(source_item_id=source.id, aoi_geometry=far), "AOI_OUTSIDE_FOOTPRINT"),
        (ClipInput(source_item_id=source.id, aoi_geometry=far, asset_keys=["nope"]), "ASSET_NOT_FOUND"),
        (ClipInput(source_item_id="other", aoi_geometry=far), "SOURCE_NOT_FOUND"),
    ]
    for params, reason in cases:
        with pytest.raises(JobFailed) as caught:
            ClipPlugin().run(params, ctx)
        assert caught.value.reason == reason
    assert not any(ctx.workdir.glob("*.tif"))


def test_clip_cancelled_before_run(tmp_path: Path, sample_aoi: dict[str, Any]) -> None:
    source = item(SAMPLE)
    ctx = context(tmp_path, source)
    ctx._cancel.set()
    with pytest.raises(JobCancelled):
        ClipPlugin().run(ClipInput(source_item_id=source.id, aoi_geometry=sample_aoi), ctx)
    assert not ctx.workdir.exists() or not any(ctx.workdir.iterdir())


def test_clip_cancelled_between_strips(tmp_path: Path) -> None:
    path = tmp_path / "tall.tif"
    write_cog(
        path,
        np.ones((1, 1300, 200), dtype="uint16"),
        crs="EPSG:32633",
        transform=UTM33,
        nodata=0,
        descriptions=["gray"],
    )
    source = item(path)
    progress = Recorder()
    ctx = context(tmp_path, source, progress)

    def cancel_after_first_strip(fraction: float, message: str) -> None:
        progress(fraction, message)
        ctx._cancel.set()

    ctx._progress = cancel_after_first_strip
    with pytest.raises(JobCancelled):
        ClipPlugin().run(
            ClipInput(source_item_id=source.id, aoi_geometry=lonlat_box(465_100, 5_067_500, 466_900, 5_079_900)), ctx
        )
    assert len(progress.calls) == 1 and progress.calls[0][0] < 1.0
    assert sorted(p.name for p in ctx.workdir.iterdir()) == []


# --- bathymetry ----------------------------------------------------------------------------------


def water_scene(path: Path) -> np.ndarray:
    rng = np.random.default_rng(1)
    rows, cols = 300, 320
    blue = rng.integers(700, 1300, size=(rows, cols))
    green = rng.integers(300, 900, size=(rows, cols))
    nir = rng.integers(50, 250, size=(rows, cols))
    nir[:, :80] = 3000  # a strip of land along the western edge
    array = np.stack([blue, green, np.full_like(blue, 400), nir]).astype("uint16")
    write_cog(
        path,
        array,
        crs="EPSG:32633",
        transform=UTM33,
        nodata=0,
        descriptions=["blue", "green", "red", "nir"],
        scales=[0.0001] * 4,
    )
    return array


def stumpf(array: np.ndarray, m0: float, m1: float) -> np.ndarray:
    blue, green = array[0] * 0.0001, array[1] * 0.0001
    depth = m1 * np.log(1000 * blue) / np.log(1000 * green) - m0
    return np.where((depth >= 0) & (depth <= 30) & (array[3] < array[1]), depth, np.nan)


def test_bathymetry_run(tmp_path: Path) -> None:
    array = water_scene(tmp_path / "water.tif")
    source = item(tmp_path / "water.tif", name="lagoon")
    progress = Recorder()
    params = BathymetryInput(source_item_id=source.id, m0=10.0, m1=12.0)
    [output] = BathymetryPlugin().run(params, context(tmp_path, source, progress))

    assert output.name == "lagoon_bathymetry" and output.geometry == source.geometry
    [file] = output.files
    assert file.key == "depth" and cog_validate(str(file.path))[0]
    with rasterio.open(file.path) as out:
        assert out.descriptions == ("depth",) and out.units == ("m",) and out.dtypes == ("float32",)
        depth = out.read(1)
    np.testing.assert_allclose(depth, stumpf(array, 10.0, 12.0), rtol=1e-6, atol=1e-5)
    assert output.properties["bathymetry:m1"] == 12.0
    assert output.properties["bathymetry:water_pixel_count"] == int(np.count_nonzero(~np.isnan(depth)))
    fractions = [fraction for fraction, _ in progress.calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_bathymetry_with_aoi_clips_first(tmp_path: Path) -> None:
    array = water_scene(tmp_path / "water.tif")
    source = item(tmp_path / "water.tif")
    aoi = lonlat_box(465_500, 5_077_800, 467_500, 5_079_500)
    params = BathymetryInput(source_item_id=source.id, m0=10.0, m1=12.0, aoi_geometry=aoi, output_name="bay")
    ctx = context(tmp_path, source)
    [output] = BathymetryPlugin().run(params, ctx)
    assert output.name == "bay"
    assert sorted(p.name for p in ctx.workdir.iterdir()) == ["depth.tif"]  # the clip was removed
    assert shape(output.geometry).symmetric_difference(shape(aoi)).area < 1e-10
    assert output.properties["clip:aoi_area_km2"] == pytest.approx(3.4, rel=0.01)
    with rasterio.open(output.files[0].path) as out:
        depth = out.read(1)
        row, col = (int(v) for v in rasterio.transform.rowcol(out.transform, 465_000, 5_080_000, op=round))
    expected = stumpf(array, 10.0, 12.0)[-row : -row + depth.shape[0], -col : -col + depth.shape[1]]
    inside = ~np.isnan(depth)
    assert inside.sum() > 0.3 * depth.size
    np.testing.assert_allclose(depth[inside], expected[inside], rtol=1e-6, atol=1e-5)


def test_bathymetry_failures(tmp_path: Path) -> None:
    path = tmp_path / "gray.tif"
    write_cog(
        path, np.ones((1, 50, 50), dtype="uint16"), crs="EPSG:32633", transform=UTM33, nodata=0, descriptions=["gray"]
    )
    source = item(path)
    ctx = context(tmp_path, source)
    for params, reason in [
        (BathymetryInput(source_item_id=source.id, m0=1, m1=1), "BANDS_NOT_FOUND"),
        (BathymetryInput(source_item_id=source.id, m0=1, m1=1, asset_key="nope"), "ASSET_NOT_FOUND"),
        (
            BathymetryInput(
                source_item_id=source.id, m0=1, m1=1, aoi_geometry={"type": "Point", "coordinates": [0, 0]}
            ),
            "INVALID_GEOMETRY",
        ),
    ]:
        with pytest.raises(JobFailed) as caught:
            BathymetryPlugin().run(params, ctx)
        assert caught.value.reason == reason
    water_scene(tmp_path / "water.tif")
    cancelled = context(tmp_path, item(tmp_path / "water.tif"))
    cancelled._cancel.set()
    with pytest.raises(JobCancelled):
        BathymetryPlugin().run(BathymetryInput(source_item_id="item-1", m0=1, m1=1), cancelled)
    assert not (cancelled.workdir / "depth.tif").exists()


# --- analytics -----------------------------------------------------------------------------------


def _analytics(method: str, params: dict[str, Any]) -> AnalyticsJobInput:
    return AnalyticsJobInput(operation=method, params=params)


def test_analytics_answers_what_the_engine_answers_in_process(tmp_path: Path, sample_aoi: dict[str, Any]) -> None:
    params = {"item_id": "item-1", "index_name": "NDVI", "geometry": sample_aoi, "percentiles": [10, 50, 90]}
    progress = Recorder()
    answer = AnalyticsPlugin().run(_analytics("zonal_stats", params), context(tmp_path, item(SAMPLE), progress))
    assert isinstance(answer, AnalyticsAnswer) and answer.operation == "zonal_stats" and answer.files == []
    items = {"item-1": ItemView(id="item-1", assets={"data": AssetView(key="data", path=str(SAMPLE))})}
    direct = analytics_registry.run("zonal_stats", params, AnalyticsContext(items=items, artifact_dir=tmp_path / "d"))
    assert answer.result == json_safe(direct)
    assert progress.calls[0][1] == "running zonal_stats" and progress.calls[-1] == (1.0, "zonal_stats computed")


def test_analytics_files_are_the_answers(tmp_path: Path, sample_aoi: dict[str, Any]) -> None:
    params = {"before_item_id": "item-1", "after_item_id": "item-1", "index_name": "NDVI", "geometry": sample_aoi,
              "change_threshold": 0.1}  # fmt: skip
    answer = AnalyticsPlugin().run(_analytics("change_detection", params), context(tmp_path, item(SAMPLE)))
    assert isinstance(answer, AnalyticsAnswer)
    assert [(f.key, f.media_type) for f in answer.files] == [
        ("difference_cog", MEDIA_TYPE_COG),
        ("quicklook_png", "image/png"),
    ]
    assert all(f.path.is_file() and f.path.is_relative_to(tmp_path / "work") for f in answer.files)


def test_analytics_failures_carry_the_methods_reason(tmp_path: Path, sample_aoi: dict[str, Any]) -> None:
    ctx = context(tmp_path, item(SAMPLE))
    with pytest.raises(JobFailed) as unknown:
        AnalyticsPlugin().run(_analytics("no_such_method", {}), ctx)
    assert unknown.value.reason == "UNKNOWN_ANALYTICS_OPERATION" and not unknown.value.retryable
    assert "GEOPERA_ANALYTICS_PLUGINS" in unknown.value.message
    params = {"item_id": "item-1", "index_name": "NDVI", "geometry": sample_aoi, "band_mapping": {"red": 9}}
    with pytest.raises(JobFailed) as bands:
        AnalyticsPlugin().run(_analytics("zonal_stats", params), ctx)
    assert bands.value.reason == "MISSING_BANDS" and not bands.value.retryable
    with pytest.raises(JobFailed) as invalid:
        AnalyticsPlugin().run(_analytics("zonal_stats", {"item_id": "item-1"}), ctx)
    assert invalid.value.reason == "INVALID_ANALYTICS_PARAMS"


def test_analytics_stops_when_cancelled(tmp_path: Path, sample_aoi: dict[str, Any]) -> None:
    ctx = context(tmp_path, item(SAMPLE))
    ctx._cancel.set()
    params = {"item_id": "item-1", "index_name": "NDVI", "geometry": sample_aoi}
    with pytest.raises(JobCancelled):
        AnalyticsPlugin().run(_analytics("zonal_stats", params), ctx)


# --- declarations --------------------------------------------------------------------------------


def test_input_schemas_are_valid_json_schema() -> None:
    for plugin in builtin_plugins():
        schema = plugin.input_schema()
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["additionalProperties"] is False
        assert all(prop.get("description") for prop in schema["properties"].values())
    validator = jsonschema.Draft202012Validator(BathymetryPlugin.input_schema())
    assert validator.is_valid({"source_item_id": "a", "m0": 1.0, "m1": 2.0})
    assert not validator.is_valid({"source_item_id": "a", "m0": 1.0})
    assert not validator.is_valid({"source_item_id": "a", "m0": 1.0, "m1": 2.0, "n": 0})
    clip_validator = jsonschema.Draft202012Validator(ClipPlugin.input_schema())
    assert clip_validator.is_valid({"source_item_id": "a", "aoi_geometry": {"type": "Polygon"}})
    assert not clip_validator.is_valid({"source_item_id": "a", "aoi_geometry": {}, "extra": 1})
    with pytest.raises(pydantic.ValidationError):
        ClipInput.model_validate({"source_item_id": "a", "aoi_geometry": {}, "extra": 1})
    with pytest.raises(pydantic.ValidationError):
        BathymetryInput.model_validate({"source_item_id": "a", "m0": math.inf, "m1": 1})


def test_registration_and_cost_models() -> None:
    registry = PluginRegistry()
    for plugin in builtin_plugins():
        registry.register(plugin)
    assert [p.job_type_id for p in registry] == ["analytics", "bathymetry", "clip"]
    assert registry.get("clip") is ClipPlugin
    clip_cost = ClipPlugin.cost_model
    assert (clip_cost.flat, clip_cost.per_km2, clip_cost.per_asset) == (1.0, 0.5, 1.0)
    bathymetry_cost = BathymetryPlugin.cost_model
    assert (bathymetry_cost.flat, bathymetry_cost.per_km2, bathymetry_cost.per_asset) == (2.0, 1.0, 0.0)
