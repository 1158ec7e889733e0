"""ExecuteRequest.validate_only (AIP-163) over a real server and PostgreSQL:
every spend validates exactly as the real call (the same errors), answers the
estimate the real call then reserves, and moves nothing: no job, no hold, no
ledger row, no event, no idempotency record, no item, no artifact. Areas are
measured here with pyproj.Geod, not with the server's helpers."""

from __future__ import annotations

import json
import math
import secrets
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import any_pb2, json_format
from google.protobuf.message import Message
from pyproj import Geod
from shapely.geometry import shape

from geopera.v1 import analytics_pb2, catalog_pb2, kernel_pb2, processing_pb2
from geopera_kernel.raster.cost import CostModel
from geopera_kernel.server.domain.jobs import JobTypeRecord
from tests.conftest import SAMPLES
from tests.jobs_support import STATUS, balance, running_world, struct
from tests.support.client import RpcFailure, result_type_for

GEOD = Geod(ellps="WGS84")
SOURCE = "s2l1c_slovenia_20150711_bgrn"
AFTER = "s2l1c_slovenia_20150909_bgrn"
AOI = json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())
# 2.5 flat, at least 4: the minimum shows; 0.5 + 2 per asset: the asset term shows.
FLAT = JobTypeRecord("vo_flat", "test: 2.5 flat, at least 4", {"type": "object"}, CostModel(2.5, 0, 0, 4))
PER_ASSET = JobTypeRecord("vo_per_asset", "test: 0.5 + 2/asset", {"type": "object"}, CostModel(0.5, 0, 2, 0))
TOO_DEAR = JobTypeRecord("vo_too_dear", "test: 5000 flat", {"type": "object"}, CostModel(5000, 0, 0, 1))
# What no validate-only call may change.
TABLES = ("jobs", "job_events", "credit_ledger", "idempotency_keys", "items", "artifacts", "uploads")


@pytest.fixture(scope="module")
def vo_world(database_factory, tmp_path_factory):
    with running_world(database_factory.create(), tmp_path_factory.mktemp("validate_only")) as world:
        world.add_job_types(FLAT, PER_ASSET, TOO_DEAR)
        yield world


def execute(world, operation: str, params: Message, *, validate_only: bool, token: str = "alpha", **md: str):
    packed = any_pb2.Any()
    packed.Pack(params)
    request = kernel_pb2.ExecuteRequest(operation=operation, params=packed, validate_only=validate_only)
    response = world.client(token).execute_raw(request, timeout=60, **md)
    result = result_type_for(operation)()
    assert response.result.Unpack(result)
    return result


def counts(world) -> dict[str, Any]:
    with psycopg.connect(world.database_url) as conn:
        rows = {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in TABLES}
        rows["accounts"] = conn.execute("SELECT array_agg(row(project_id, available, held) ORDER BY project_id)::text"
                                        " FROM credit_accounts").fetchone()[0]  # fmt: skip
    return rows


def unchanged(world, call: Callable[[], Any]) -> Any:
    before = counts(world)
    outcome = call()
    assert counts(world) == before
    return outcome


def failure(call: Callable[[], Any]) -> RpcFailure:
    with pytest.raises(RpcFailure) as info:
        call()
    return info.value


def clip_params(world, aoi: dict[str, Any] = AOI, **fields: Any) -> processing_pb2.ClipCreateFromItemParams:
    params = processing_pb2.ClipCreateFromItemParams(
        source_item_id=fields.pop("source_item_id", world.items[SOURCE]), project_id="alpha", **fields
    )
    params.aoi_geometry.CopyFrom(struct(aoi))
    return params


def create_params(job_type_id: str, input_params: dict[str, Any] | None = None, project: str = "alpha"):
    return processing_pb2.ProcessingCreateParams(
        project_id=project, job_type_id=job_type_id, input_params=struct(input_params or {})
    )


def cancel(world, job_id: str) -> None:
    world.client("alpha").execute("processing.jobs.cancel", processing_pb2.ProcessingJobsCancelParams(job_id=job_id))


def test_a_clip_estimate_by_hand_moves_nothing_and_is_the_hold_the_real_call_takes(vo_world):
    name = f"vo_{secrets.token_hex(3)}"
    params = clip_params(vo_world, output_name=name)
    estimated = unchanged(vo_world, lambda: execute(vo_world, "clip.create_from_item", params, validate_only=True))
    assert estimated.job.id == "" and estimated.job.status == STATUS.JOB_STATUS_DISPATCHED
    assert list(estimated.asset_keys) == ["data"] and estimated.dispatch.accepted
    # By hand: the clip type is 1 + 0.5/km² + 1/asset; the AOI within the footprint, measured on the ellipsoid.
    source = vo_world.client("alpha").execute("items.get", catalog_pb2.ItemsGetParams(item_id=vo_world.items[SOURCE]))
    footprint = shape(json_format.MessageToDict(source.item.geometry))
    overlap = shape(AOI["features"][0]["geometry"]).intersection(footprint)
    km2 = abs(GEOD.geometry_area_perimeter(overlap)[0]) / 1e6
    estimate = estimated.estimate
    assert estimate.area_km2 == pytest.approx(km2, rel=1e-6)
    assert (estimate.flat, estimate.per_km2, estimate.per_asset, estimate.asset_count) == (1.0, 0.5, 1.0, 1)
    assert estimate.area_credits == pytest.approx(0.5 * km2, rel=1e-6) and estimate.asset_credits == 1.0
    assert estimate.raw_credits == pytest.approx(2 + 0.5 * km2, rel=1e-6)
    assert estimate.total_credits == math.ceil(2 + 0.5 * km2) and not estimate.minimum_applied
    available = balance(vo_world.client("alpha")).available
    assert estimate.available_credits == available
    assert estimate.balance_after == available - estimate.total_credits
    # The real call reserves exactly that, and leaves exactly that balance.
    real = vo_world.client("alpha").execute("clip.create_from_item", params)
    assert real.job.id and real.job.credits_reserved == estimate.total_credits
    assert real.estimate == estimate
    assert balance(vo_world.client("alpha")).available == estimate.balance_after
    cancel(vo_world, real.job.id)


@pytest.mark.parametrize("operation", ["processing.create", "processing.create_and_dispatch"])
def test_a_flat_price_with_its_minimum_moves_nothing_and_is_the_hold(vo_world, operation):
    typed = {"processing.create": processing_pb2.ProcessingCreateParams,
             "processing.create_and_dispatch": processing_pb2.ProcessingCreateAndDispatchParams}[operation]  # fmt: skip
    params = typed(project_id="alpha", job_type_id=FLAT.id, input_params=struct({"note": "price me"}))
    estimated = unchanged(vo_world, lambda: execute(vo_world, operation, params, validate_only=True))
    estimate = estimated.estimate
    # 2.5 rounds up to 3; the minimum 4 lifts it.
    assert (estimate.flat, estimate.raw_credits, estimate.minimum) == (2.5, 2.5, 4)
    assert estimate.minimum_applied and estimate.total_credits == 4
    assert estimate.area_km2 == 0 and estimate.asset_count == 0
    assert estimated.job.id == "" and estimated.job.credits_reserved == 4
    expected = STATUS.JOB_STATUS_PENDING if operation == "processing.create" else STATUS.JOB_STATUS_DISPATCHED
    assert estimated.job.status == expected
    real = vo_world.client("alpha").execute(operation, params)
    assert real.job.credits_reserved == estimate.total_credits and real.estimate.total_credits == 4
    assert real.estimate.balance_after == estimate.balance_after == balance(vo_world.client("alpha")).available
    cancel(vo_world, real.job.id)


def test_the_asset_term_counts_the_source_assets(vo_world):
    params = create_params(PER_ASSET.id, {"source_item_ids": [vo_world.items[SOURCE], vo_world.items[AFTER]]})
    estimate = unchanged(vo_world, lambda: execute(vo_world, "processing.create", params, validate_only=True)).estimate
    assert (estimate.asset_count, estimate.asset_credits, estimate.raw_credits) == (2, 4.0, 4.5)
    assert estimate.total_credits == 5 and not estimate.minimum_applied


def test_dispatch_validates_without_dispatching_and_answers_the_existing_hold(vo_world):
    client = vo_world.client("alpha")
    pending = client.execute("processing.create", create_params(FLAT.id)).job
    params = processing_pb2.ProcessingDispatchParams(job_id=pending.id)
    validated = unchanged(vo_world, lambda: execute(vo_world, "processing.dispatch", params, validate_only=True))
    assert validated.job.id == pending.id and validated.job.status == STATUS.JOB_STATUS_DISPATCHED
    estimate = validated.estimate
    assert estimate.already_reserved and estimate.total_credits == pending.credits_reserved == 4
    assert estimate.balance_after == estimate.available_credits == balance(client).available
    got = client.execute("processing.jobs.get", processing_pb2.ProcessingJobsGetParams(job_id=pending.id)).job
    assert got.status == STATUS.JOB_STATUS_PENDING
    cancel(vo_world, pending.id)


def _same_error(world, operation: str, params: Message, token: str = "alpha") -> RpcFailure:
    """The validate-only call fails as the real one does, and moves nothing."""
    validated = unchanged(world, lambda: failure(lambda: execute(world, operation, params, validate_only=True,
                                                                 token=token)))  # fmt: skip
    real = unchanged(world, lambda: failure(lambda: execute(world, operation, params, validate_only=False,
                                                            token=token)))  # fmt: skip
    validated.metadata.pop("request_id", None)
    real.metadata.pop("request_id", None)
    assert (validated.code, validated.reason, validated.metadata, validated.violations) == (
        real.code, real.reason, real.metadata, real.violations,
    )  # fmt: skip
    return validated


def test_errors_are_the_real_calls(vo_world):
    bad_aoi = {"type": "Polygon", "coordinates": [[[14.5, 45.8], [14.6, 45.8], [14.5, 45.9]]]}  # unclosed
    cases = [
        ("clip.create_from_item", clip_params(vo_world, source_item_id="it_missing"), "alpha",
         grpc.StatusCode.NOT_FOUND, "ITEM_NOT_FOUND"),
        ("clip.create_from_item", clip_params(vo_world, source_item_id=vo_world.beta_items[SOURCE]), "alpha",
         grpc.StatusCode.PERMISSION_DENIED, "PROJECT_ACCESS_DENIED"),
        ("clip.create_from_item", clip_params(vo_world, aoi=bad_aoi), "alpha",
         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_GEOMETRY"),
        ("processing.create", create_params(FLAT.id, project="beta"), "alpha",
         grpc.StatusCode.PERMISSION_DENIED, "PROJECT_ACCESS_DENIED"),
        ("processing.create", create_params("vo_no_such_type"), "alpha",
         grpc.StatusCode.NOT_FOUND, None),
    ]  # fmt: skip
    for operation, params, token, code, reason in cases:
        got = _same_error(vo_world, operation, params, token)
        assert got.code == code and (reason is None or got.reason == reason), (operation, got)
    reader = vo_world.make_token(scopes=["processing:read"], projects=["alpha"])
    got = _same_error(vo_world, "processing.create", create_params(FLAT.id), reader)
    assert (got.code, got.reason) == (grpc.StatusCode.PERMISSION_DENIED, "MISSING_SCOPE")


def test_an_estimate_over_the_balance_fails_as_the_call_would_and_carries_the_estimate(vo_world):
    got = _same_error(vo_world, "processing.create", create_params(TOO_DEAR.id))
    assert (got.code, got.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_CREDITS")
    available = balance(vo_world.client("alpha")).available
    assert got.metadata["required"] == "5000" and got.metadata["available"] == str(available)
    assert float(got.metadata["flat"]) == 5000 and float(got.metadata["per_km2"]) == 0
    assert got.metadata["asset_count"] == "0" and got.metadata["minimum"] == "1"


def test_an_idempotency_key_with_validate_only_records_nothing(vo_world):
    key = f"vo-{secrets.token_hex(6)}"
    params = create_params(FLAT.id, {"note": "keyed"})
    validated = unchanged(vo_world, lambda: execute(vo_world, "processing.create", params, validate_only=True,
                                                    **{"idempotency-key": key}))  # fmt: skip
    assert validated.job.id == ""
    first = execute(vo_world, "processing.create", params, validate_only=False, **{"idempotency-key": key})
    assert first.job.id  # the key was free: the real call ran
    again = execute(vo_world, "processing.create", params, validate_only=False, **{"idempotency-key": key})
    assert again.job.id == first.job.id
    # A validate-only repeat of a used key neither replays nor creates.
    after = unchanged(vo_world, lambda: execute(vo_world, "processing.create", params, validate_only=True,
                                                **{"idempotency-key": key}))  # fmt: skip
    assert after.job.id == ""
    cancel(vo_world, first.job.id)


def test_cancel_validates_without_cancelling(vo_world):
    client = vo_world.client("alpha")
    job = client.execute("processing.create", create_params(FLAT.id)).job
    params = processing_pb2.ProcessingJobsCancelParams(job_id=job.id)
    validated = unchanged(vo_world, lambda: execute(vo_world, "processing.jobs.cancel", params, validate_only=True))
    assert validated.job.status == STATUS.JOB_STATUS_CANCELLED
    got = client.execute("processing.jobs.get", processing_pb2.ProcessingJobsGetParams(job_id=job.id)).job
    assert got.status == STATUS.JOB_STATUS_PENDING
    cancel(vo_world, job.id)


def test_items_create_validates_the_upload_without_consuming_it(vo_world):
    client = vo_world.client("alpha")
    upload = client.upload("alpha", (SAMPLES / f"{SOURCE}.tif").read_bytes(), file_name="vo.tif")
    name = f"vo_item_{secrets.token_hex(3)}"
    params = catalog_pb2.ItemsCreateParams(
        project_id="alpha", collection_id="vo", name=name,
        assets=[catalog_pb2.AssetInput(key="data", upload_id=upload.upload_id)],
    )  # fmt: skip
    validated = unchanged(vo_world, lambda: execute(vo_world, "items.create", params, validate_only=True))
    assert validated.item.id == "" and validated.item.name == name and "data" in validated.item.assets
    real = client.execute("items.create", params)
    assert real.item.id and real.item.name == name
    taken = failure(lambda: execute(vo_world, "items.create", params, validate_only=True))
    assert taken.reason == "UPLOAD_NOT_AVAILABLE"


def test_analytics_validate_only_counts_the_pixels_the_real_call_reads_and_stores_nothing(vo_world):
    params = analytics_pb2.AnalyticsExecuteParams(operation="change_detection", params=struct({
        "before_item_id": vo_world.items[SOURCE], "after_item_id": vo_world.items[AFTER], "index_name": "NDVI",
        "change_threshold": 0.05, "geometry": AOI,
    }))  # fmt: skip
    validated = unchanged(vo_world, lambda: execute(vo_world, "analytics.execute", params, validate_only=True))
    assert validated.HasField("pixels_to_read") and not validated.outputs and not validated.result.fields
    real = execute(vo_world, "analytics.execute", params, validate_only=False)
    assert not real.HasField("pixels_to_read") and len(real.outputs) == 2
    assert validated.pixels_to_read == json_format.MessageToDict(real.result)["pixels_read"] > 0
    # Errors are the real call's: another project's item.
    other = analytics_pb2.AnalyticsExecuteParams()
    other.CopyFrom(params)
    other.params.update({"after_item_id": vo_world.beta_items[SOURCE]})
    assert _same_error(vo_world, "analytics.execute", other).reason == "PROJECT_ACCESS_DENIED"


def test_a_method_that_cannot_count_answers_no_pixel_count(vo_world):
    params = analytics_pb2.AnalyticsExecuteParams(operation="zonal_stats", params=struct({
        "item_id": vo_world.items[SOURCE], "index_name": "NDVI", "geometry": AOI,
    }))  # fmt: skip
    validated = unchanged(vo_world, lambda: execute(vo_world, "analytics.execute", params, validate_only=True))
    assert not validated.HasField("pixels_to_read") and not validated.result.fields


def test_reads_answer_as_usual(vo_world):
    params = catalog_pb2.ItemsGetParams(item_id=vo_world.items[SOURCE])
    assert execute(vo_world, "items.get", params, validate_only=True) == execute(
        vo_world, "items.get", params, validate_only=False
    )


def http(world, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(world.server.http_url + path, data=json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {world.tokens['alpha']}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_the_http_projection_takes_validate_only_as_a_query_flag(vo_world):
    body = {"project_id": "alpha", "job_type_id": FLAT.id, "input_params": {"note": "http"}}
    key = {"Idempotency-Key": f"vo-http-{secrets.token_hex(4)}"}
    status, priced = unchanged(vo_world, lambda: http(vo_world, "/v1/op/processing.create?validate_only=true", body,
                                                      key))  # fmt: skip
    assert status == 200 and not priced["job"].get("id")
    assert priced["estimate"]["total_credits"] == "4" and priced["estimate"]["minimum_applied"] is True
    status, dear = unchanged(vo_world, lambda: http(vo_world, "/v1/op/processing.create?validate_only=1",
                                                    {**body, "job_type_id": TOO_DEAR.id}))  # fmt: skip
    assert status == 400 and dear["reason"] == "INSUFFICIENT_CREDITS"
    assert dear["details"]["metadata"]["required"] == "5000" and dear["details"]["metadata"]["flat"] == "5000.0"
    status, bad = unchanged(vo_world, lambda: http(vo_world, "/v1/op/processing.create?validate_only=maybe", body))
    assert status == 400 and bad["reason"] == "INVALID_VALIDATE_ONLY"
    status, real = http(vo_world, "/v1/op/processing.create?validate_only=false", body, key)
    assert status == 200 and real["job"]["id"] and real["estimate"] == priced["estimate"]
    cancel(vo_world, real["job"]["id"])
    with urllib.request.urlopen(vo_world.server.http_url + "/v1/openapi.json", timeout=30) as response:
        document = json.loads(response.read())
    for path, item in document["paths"].items():
        if path.startswith("/v1/op/"):
            assert "validate_only" in {p["name"] for p in item["post"]["parameters"]}, path
    assert "estimate" in json.dumps(document["components"]["schemas"])


def test_every_operation_validates_only(vo_world):
    """No operation acts when asked only to validate: each either validates (every
    operation here) or refuses VALIDATE_ONLY_UNSUPPORTED before its handler runs."""
    from geopera_kernel.server.api.operations import build_registry

    assert [op.name for op in build_registry() if not op.supports_validate_only] == []
