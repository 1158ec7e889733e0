"""The method registry: plugins, schemas, params validation and its errors."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import jsonschema
import pytest
from pydantic import BaseModel

from geopera_kernel.analytics import (
    AnalyticsContext,
    AnalyticsMethod,
    MethodRegistry,
    default_registry,
    registry,
)
from geopera_kernel.server.errors import Code, DomainError
from tests.analytics.conftest import ContextFactory

BUILTINS = ["change_detection", "time_series", "zonal_stats"]
SQUARE = {
    "type": "Polygon",
    "coordinates": [[[14.558, 45.871], [14.562, 45.871], [14.562, 45.874], [14.558, 45.874], [14.558, 45.871]]],
}


class EchoParams(BaseModel):
    item_id: str
    factor: float = 2.0


class EchoResult(BaseModel):
    item_id: str
    doubled: float
    workers: int


class Echo(AnalyticsMethod):
    name: ClassVar[str] = "echo_test"
    description: ClassVar[str] = "Test method: multiplies."
    input_model: ClassVar[type[BaseModel]] = EchoParams
    output_model: ClassVar[type[BaseModel]] = EchoResult
    example: ClassVar[dict[str, Any]] = {"item_id": "itm_1", "factor": 3}

    def item_ids(self, params: Any) -> list[str]:
        return [params.item_id]

    def execute(self, params: Any, ctx: AnalyticsContext) -> EchoResult:
        ctx.check_cancelled()
        return EchoResult(item_id=ctx.item(params.item_id).id, doubled=params.factor * 2, workers=ctx.workers)


def invalid(error: pytest.ExceptionInfo[DomainError], reason: str) -> DomainError:
    assert error.value.code == Code.INVALID_ARGUMENT
    assert error.value.reason == reason, error.value
    return error.value


def test_builtins_are_registered_with_valid_schemas_and_examples() -> None:
    assert registry.names() == BUILTINS
    assert [method.name for method in registry] == BUILTINS
    for name in BUILTINS:
        description = registry.describe(name)
        assert description["description"]
        for schema in (description["input_schema"], description["output_schema"]):
            jsonschema.Draft202012Validator.check_schema(schema)
            assert json.loads(json.dumps(schema)) == schema  # plain JSON (google.protobuf.Struct-safe)
        # The example is valid both for pydantic and for a client using only the JSON Schema.
        registry.validate(name, description["example"])
        jsonschema.Draft202012Validator(description["input_schema"]).validate(description["example"])


def test_duplicate_and_malformed_registrations_are_refused() -> None:
    methods = MethodRegistry()
    methods.register(Echo)
    with pytest.raises(ValueError, match="already registered"):
        methods.register(Echo)

    class BadName(Echo):
        name: ClassVar[str] = "Bad-Name"

    class BadExample(Echo):
        name: ClassVar[str] = "bad_example"
        example: ClassVar[dict[str, Any]] = {"factor": "many"}

    with pytest.raises(ValueError, match="lower_snake_case"):
        methods.register(BadName)
    with pytest.raises(ValueError, match="example"):
        methods.register(BadExample)
    with pytest.raises(ValueError, match="already registered"):
        default_registry().register(type("Again", (Echo,), {"name": "zonal_stats"}))


def test_a_registered_method_validates_and_runs(make_context: ContextFactory, s2_items: dict) -> None:
    registry.register(Echo)
    try:
        assert "echo_test" in registry.names()
        ctx = make_context(s2_items, workers=3)
        params = registry.validate("echo_test", {"item_id": "s2_20150711", "factor": 1.5})
        assert registry.get("echo_test").item_ids(params) == ["s2_20150711"]
        assert registry.run("echo_test", {"item_id": "s2_20150711", "factor": 1.5}, ctx) == {
            "item_id": "s2_20150711",
            "doubled": 3.0,
            "workers": 3,
        }
        with pytest.raises(DomainError) as error:
            registry.validate("echo_test", {"factor": "x"})
        fields = {v.field for v in invalid(error, "INVALID_ANALYTICS_PARAMS").violations}
        assert fields == {"params.item_id", "params.factor"}
    finally:
        registry.unregister("echo_test")
    assert "echo_test" not in registry.names()


def test_unknown_method() -> None:
    with pytest.raises(DomainError) as error:
        registry.validate("nope", {})
    err = invalid(error, "UNKNOWN_ANALYTICS_OPERATION")
    assert err.violations[0].field == "operation"
    assert err.metadata["known_operations"] == ", ".join(BUILTINS)


@pytest.mark.parametrize(
    ("params", "fields"),
    [
        ({}, {"params.item_id", "params.geometry"}),
        ({"geometry": SQUARE, "band": 1, "item_ids": []}, {"params.item_id"}),  # neither item_id nor item_ids
        ({"item_ids": ["i"], "item_id": "i", "geometry": SQUARE, "band": 1}, {"params.item_id"}),
        ({"item_ids": ["i", "i"], "geometry": SQUARE, "band": 1}, {"params"}),
        ({"item_id": "", "geometry": SQUARE, "band": 1}, {"params.item_id"}),
        ({"item_id": "i", "geometry": SQUARE}, {"params"}),  # neither band nor index_name
        ({"item_id": "i", "geometry": SQUARE, "band": 1, "index_name": "NDVI"}, {"params"}),
        ({"item_id": "i", "geometry": SQUARE, "index_name": "NOPE"}, {"params.index_name"}),
        ({"item_id": "i", "geometry": SQUARE, "band": 0}, {"params.band"}),
        ({"item_id": "i", "geometry": SQUARE, "band": 1, "percentiles": [50, 101]}, {"params.percentiles[1]"}),
        ({"item_id": "i", "geometry": SQUARE, "band": 1, "stats": ["mode"]}, {"params.stats[0]"}),
        ({"item_id": "i", "geometry": SQUARE, "band": 1, "coverage": "exact", "all_touched": True}, {"params"}),
        ({"item_id": "i", "geometry": SQUARE, "band": 1, "surprise": 1}, {"params.surprise"}),
        (
            {"item_id": "i", "geometry": {"type": "Polygon", "coordinates": []}, "band": 1},
            {"params.geometry.coordinates"},
        ),
        ({"item_id": "i", "geometry": {"type": "Point", "coordinates": [1, 2]}, "band": 1}, {"params.geometry.type"}),
        ({"item_id": "i", "geometry": "POLYGON((0 0, 1 0, 1 1, 0 0))", "band": 1}, {"params.geometry"}),
        (
            {"item_id": "i", "geometry": SQUARE, "index_name": "ndvi", "band_mapping": {"infrared": 4}},
            {"params.band_mapping.infrared"},
        ),
        (
            {"item_id": "i", "geometry": SQUARE, "band": 1, "histogram": {"bins": 5, "range": [2, 1]}},
            {"params.histogram"},
        ),
    ],
)
def test_malformed_zonal_params(params: dict[str, Any], fields: set[str]) -> None:
    with pytest.raises(DomainError) as error:
        registry.validate("zonal_stats", params)
    err = invalid(error, "INVALID_ANALYTICS_PARAMS")
    assert {v.field for v in err.violations} == fields
    assert all(v.description for v in err.violations)
    assert err.expected_schema is not None and err.expected_schema.subject == "zonal_stats"
    assert err.expected_schema.json_schema == registry.input_schema("zonal_stats")


@pytest.mark.parametrize(
    ("name", "params", "fields"),
    [
        ("time_series", {"geometry": SQUARE}, {"params"}),
        ("time_series", {"item_id": "a", "item_ids": ["b"], "geometry": SQUARE}, {"params"}),
        ("time_series", {"item_id": "a", "index_name": "NDVI", "geometry": SQUARE}, {"params"}),
        ("time_series", {"item_ids": ["a"], "band": 1, "geometry": SQUARE, "reducer": "percentile"}, {"params"}),
        ("time_series", {"item_ids": ["a", "a"], "band": 1, "geometry": SQUARE}, {"params"}),
        ("time_series", {"item_id": "a", "geometry": SQUARE, "start": "yesterday"}, {"params.start"}),
        (
            "change_detection",
            {
                "before_item_id": "a",
                "after_item_id": "b",
                "index_name": "NDVI",
                "change_threshold": 0,
                "geometry": SQUARE,
            },
            {"params.change_threshold"},
        ),
        (
            "change_detection",
            {
                "before_item_id": "a",
                "after_item_id": "b",
                "index_name": "XYZ",
                "change_threshold": 0.1,
                "geometry": SQUARE,
            },
            {"params.index_name"},
        ),
    ],
)
def test_malformed_params_of_other_methods(name: str, params: dict[str, Any], fields: set[str]) -> None:
    with pytest.raises(DomainError) as error:
        registry.validate(name, params)
    err = invalid(error, "INVALID_ANALYTICS_PARAMS")
    assert {v.field for v in err.violations} == fields
    assert err.expected_schema is not None and err.expected_schema.subject == name


def test_params_must_be_an_object() -> None:
    with pytest.raises(DomainError) as error:
        registry.validate("zonal_stats", [1, 2])
    assert invalid(error, "INVALID_ANALYTICS_PARAMS").violations[0].field == "params"


def test_execution_errors_carry_the_expected_schema(make_context: ContextFactory, s2_items: dict) -> None:
    ctx = make_context(s2_items)
    # The NDVI stack has no red/nir bands.
    with pytest.raises(DomainError) as error:
        registry.run("zonal_stats", {"item_id": "ndvi_stack", "index_name": "NDVI", "geometry": SQUARE}, ctx)
    err = invalid(error, "MISSING_BANDS")
    assert err.violations[0].field == "params.band_mapping"
    assert "2015-07-11T10:00:08Z" in err.metadata["bands_found"]
    assert err.expected_schema is not None and err.expected_schema.subject == "zonal_stats"
    with pytest.raises(DomainError) as error:
        registry.run("zonal_stats", {"item_id": "s2_20150711", "band": 9, "geometry": SQUARE}, ctx)
    assert invalid(error, "MISSING_BANDS").violations[0].field == "params.band"
    with pytest.raises(DomainError) as error:
        registry.run("zonal_stats", {"item_id": "s2_20150711", "asset_key": "nope", "band": 1, "geometry": SQUARE}, ctx)
    assert invalid(error, "UNKNOWN_ASSET").violations[0].field == "params.asset_key"
    with pytest.raises(DomainError) as error:
        registry.run("zonal_stats", {"item_id": "s2_20150711", "index_name": "NDMI", "geometry": SQUARE}, ctx)
    assert "swir16" in invalid(error, "MISSING_BANDS").message


def test_results_match_the_output_schema(make_context: ContextFactory, s2_items: dict, aoi: dict) -> None:
    ctx = make_context(s2_items)
    cases = [
        (
            "zonal_stats",
            {
                "item_id": "s2_20150711",
                "index_name": "EVI",
                "geometry": aoi,
                "stats": ["median"],
                "histogram": {"bins": 4, "range": [0, 1]},
                "percentiles": [25],
            },
        ),
        ("time_series", {"item_id": "ndvi_stack", "geometry": aoi, "reducer": "max"}),
        (
            "change_detection",
            {
                "before_item_id": "s2_20150711",
                "after_item_id": "s2_20150830",
                "index_name": "NDVI",
                "change_threshold": 0.1,
                "geometry": aoi,
            },
        ),
    ]
    for name, params in cases:
        result = registry.run(name, params, ctx)
        jsonschema.Draft202012Validator(registry.output_schema(name)).validate(result)
        assert json.loads(json.dumps(result)) == result


def test_cancellation_stops_a_run(make_context: ContextFactory, s2_items: dict, lulc_zones: dict) -> None:
    ctx = make_context(s2_items)
    calls = []

    class Cancelled(Exception):
        pass

    def check() -> None:
        calls.append(1)
        if len(calls) > 2:
            raise Cancelled

    params = {"item_id": "s2_20150711", "band": 1, "geometry": lulc_zones}
    ctx.cancel_check = check
    with pytest.raises(Cancelled):
        registry.run("zonal_stats", params, ctx)
    assert len(calls) == 3  # stopped at the first check that said so

    # A whole run consults the check many more times: the cancellation cut it short.
    full = make_context(s2_items)
    checks: list[int] = []
    full.cancel_check = lambda: checks.append(1)
    assert len(registry.run("zonal_stats", params, full)["zones"]) == 88
    assert len(checks) > 3
