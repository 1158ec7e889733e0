"""Money paths (issue 10, hole 2): a job without an AOI is priced by its
source footprint, a capture is never capped silently, and cost models and
estimates stay finite, non-negative and within int64.

Areas are checked against pyproj.Geod directly, not against the server's own
helper; after every scenario the project's ledger must add up
(available + held + captured = granted)."""

from __future__ import annotations

import math
import secrets

import grpc
import pytest
from google.protobuf import json_format
from pyproj import Geod
from shapely.geometry import shape

from geopera.v1 import catalog_pb2, processing_pb2, resources_pb2, worker_pb2
from geopera_kernel.raster.cost import CostModel
from geopera_kernel.server.domain.jobs import JobTypeRecord
from tests.jobs_support import (
    STATUS,
    balance,
    create_and_dispatch,
    ledger,
    ledger_sums,
    running_world,
    struct,
    wait_terminal,
)
from tests.support.client import RpcFailure
from tests.support.workers import connect_outcome

GEOD = Geod(ellps="WGS84")
KIND = resources_pb2.LedgerEntryKind
SOURCE = "s2l1c_slovenia_20150711_bgrn"
# Priced per km² only; takes any input (no source items needed).
AREA_PRICED = JobTypeRecord("money_area_priced", "test: 1 + 3 per km²", {"type": "object"}, CostModel(1, 3, 0, 1))
HUGE_PRICE = JobTypeRecord("money_huge_price", "test: 1e15 per km²", {"type": "object"}, CostModel(1, 1e15, 0, 1))


@pytest.fixture(scope="module")
def money_world(database_factory, tmp_path_factory):
    with running_world(database_factory.create(), tmp_path_factory.mktemp("money"), workers=1) as world:
        world.add_job_types(AREA_PRICED, HUGE_PRICE)
        yield world


def geodesic_km2(geojson: dict) -> float:
    return abs(GEOD.geometry_area_perimeter(shape(geojson))[0]) / 1e6


def item_geometry(client, item_id: str) -> dict:
    item = client.execute("items.get", catalog_pb2.ItemsGetParams(item_id=item_id)).item
    return json_format.MessageToDict(item.geometry)


def assert_ledger_adds_up(client, project: str = "alpha") -> None:
    current = balance(client, project)
    assert current.available + current.held + current.captured_total == current.granted_total
    sums = ledger_sums(ledger(client, project))
    assert current.granted_total == sums["grant"]
    assert current.available == sums["grant"] - sums["reserve"] + sums["release"]
    assert current.held == sums["reserve"] - sums["capture"] - sums["release"]
    assert current.captured_total == sums["capture"]


def job_ledger(client, job_id: str) -> list[tuple[int, int]]:
    return sorted((e.kind, e.amount) for e in ledger(client, job_id=job_id))


def _fails(call) -> RpcFailure:
    with pytest.raises(RpcFailure) as info:
        call()
    return info.value


def test_whole_scene_bathymetry_is_priced_and_charged_by_the_source_footprint(money_world):
    client = money_world.client("alpha")
    source = money_world.items[SOURCE]
    footprint_km2 = geodesic_km2(item_geometry(client, source))
    expected = math.ceil(2 + 1 * footprint_km2)  # bathymetry: 2 + 1 per km²
    assert expected > 2  # the footprint is not free (it used to be estimated at 0 km²)
    before = balance(client)

    # Depth ~ m1 - m0 = 10 m everywhere and nothing counts as land: every pixel is valid.
    params = {"source_item_id": source, "m0": 0.0, "m1": 10.0, "land_ndwi_threshold": -1.0,
              "output_name": f"whole_scene_{secrets.token_hex(3)}"}  # fmt: skip
    job = create_and_dispatch(client, "bathymetry", params).job
    assert job.credits_reserved == expected, (job.credits_reserved, footprint_km2)
    assert balance(client).held - before.held == expected

    final = wait_terminal(client, job.id, timeout=120)
    assert final.status == STATUS.JOB_STATUS_SUCCEEDED, final.error
    output_km2 = geodesic_km2(item_geometry(client, final.output_item_ids[0]))
    actual = math.ceil(2 + output_km2)
    assert final.credits_charged == min(actual, expected) == expected
    assert balance(client).available == before.available - final.credits_charged
    assert job_ledger(client, job.id) == [(KIND.LEDGER_ENTRY_KIND_RESERVE, expected),
                                          (KIND.LEDGER_ENTRY_KIND_CAPTURE, expected)]  # fmt: skip
    assert_ledger_adds_up(client)


def test_an_aoi_is_priced_by_its_overlap_with_the_footprint(money_world):
    client = money_world.client("alpha")
    source = money_world.items[SOURCE]
    footprint = shape(item_geometry(client, source))
    west, south, east, north = footprint.bounds
    # Half inside the footprint, half outside it.
    aoi = {"type": "Polygon", "coordinates": [[[west - (east - west) / 2, south], [(west + east) / 2, south],
                                               [(west + east) / 2, north], [west - (east - west) / 2, north],
                                               [west - (east - west) / 2, south]]]}  # fmt: skip
    overlap_km2 = abs(GEOD.geometry_area_perimeter(shape(aoi).intersection(footprint))[0]) / 1e6
    assert 0 < overlap_km2 < geodesic_km2(aoi)
    created = client.execute(
        "processing.create",
        processing_pb2.ProcessingCreateParams(
            project_id="alpha", job_type_id="bathymetry",
            input_params=struct({"source_item_id": source, "m0": 0, "m1": 10, "aoi_geometry": aoi}),
        ),
    ).job  # fmt: skip
    assert created.credits_reserved == math.ceil(2 + overlap_km2)
    client.execute("processing.jobs.cancel", processing_pb2.ProcessingJobsCancelParams(job_id=created.id))
    assert_ledger_adds_up(client)


def test_an_actual_cost_above_the_hold_captures_the_hold_and_records_the_excess(money_world):
    client = money_world.client("alpha")
    before = balance(client)
    # test_cog: 2 + 1 per asset. No source items: the estimate counts 0 input
    # assets (2), the job writes one output asset (actual 3).
    job = create_and_dispatch(client, "test_cog", {"name": f"over_{secrets.token_hex(3)}"}).job
    assert job.credits_reserved == 2
    final = wait_terminal(client, job.id)
    assert final.status == STATUS.JOB_STATUS_SUCCEEDED, final.error
    assert final.credits_charged == 2
    assert "actual cost 3 credits exceeds the 2 reserved: 1 waived" in final.message
    assert job_ledger(client, job.id) == [
        (KIND.LEDGER_ENTRY_KIND_RESERVE, 2),
        (KIND.LEDGER_ENTRY_KIND_CAPTURE, 2),
        (KIND.LEDGER_ENTRY_KIND_WAIVE, 1),
    ]
    waiver = next(e for e in ledger(client, job_id=job.id) if e.kind == KIND.LEDGER_ENTRY_KIND_WAIVE)
    after = balance(client)
    assert "exceeds" in waiver.note and (waiver.available_after, waiver.held_after) == (after.available, after.held)
    assert (before.available - after.available, after.held) == (2, before.held)
    assert_ledger_adds_up(client)


def test_an_actual_cost_below_the_hold_captures_it_and_releases_the_rest(money_world):
    client = money_world.client("alpha")
    sources = [money_world.items[name] for name in sorted(money_world.items)[:3]]
    before = balance(client)
    # Three one-asset sources: estimate 2 + 3; the job writes one asset: actual 2 + 1.
    job = create_and_dispatch(client, "test_cog", {"name": f"under_{secrets.token_hex(3)}", "source_item_ids": sources})
    assert job.job.credits_reserved == 5
    final = wait_terminal(client, job.job.id)
    assert final.status == STATUS.JOB_STATUS_SUCCEEDED, final.error
    assert final.credits_charged == 3
    assert job_ledger(client, job.job.id) == [
        (KIND.LEDGER_ENTRY_KIND_RESERVE, 5),
        (KIND.LEDGER_ENTRY_KIND_CAPTURE, 3),
        (KIND.LEDGER_ENTRY_KIND_RELEASE, 2),
    ]
    assert balance(client).available == before.available - 3
    assert_ledger_adds_up(client)


def test_a_per_km2_price_without_an_aoi_or_sources_is_refused_not_estimated_at_zero(money_world):
    client = money_world.client("alpha")
    before = balance(client)

    def create(params: dict):
        return client.execute(
            "processing.create",
            processing_pb2.ProcessingCreateParams(
                project_id="alpha", job_type_id=AREA_PRICED.id, input_params=struct(params)
            ),
        ).job

    failure = _fails(lambda: create({}))
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "COST_NOT_ESTIMABLE")
    assert failure.violations[0][0] == "input_params.aoi_geometry"
    assert balance(client) == before

    # With an AOI and no sources the AOI's own area is the price.
    aoi = {"type": "Polygon", "coordinates": [[[14.5, 45.8], [14.6, 45.8], [14.6, 45.9], [14.5, 45.9], [14.5, 45.8]]]}
    job = create({"aoi_geometry": aoi})
    assert job.credits_reserved == math.ceil(1 + 3 * geodesic_km2(aoi))
    client.execute("processing.jobs.cancel", processing_pb2.ProcessingJobsCancelParams(job_id=job.id))
    assert_ledger_adds_up(client)


def test_an_estimate_beyond_int64_is_refused_with_a_reason(money_world):
    client = money_world.client("alpha")
    before = balance(client)
    # ~1.1e8 km² x 1e15 credits/km² = ~1e23 credits: more than an int64 holds.
    aoi = {"type": "Polygon", "coordinates": [[[-60, -60], [60, -60], [60, 60], [-60, 60], [-60, -60]]]}
    failure = _fails(
        lambda: client.execute(
            "processing.create",
            processing_pb2.ProcessingCreateParams(
                project_id="alpha", job_type_id=HUGE_PRICE.id, input_params=struct({"aoi_geometry": aoi})
            ),
        )
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "COST_OUT_OF_RANGE")
    assert str(2**53 - 1) in failure.message
    assert balance(client) == before
    assert_ledger_adds_up(client)


def _hello_outcome(world, cost_model: resources_pb2.CostModel) -> RpcFailure | worker_pb2.ConnectResponse:
    """The first thing the real WorkerService answers to a hello declaring `cost_model`."""
    declaration = worker_pb2.JobTypeDeclaration(
        job_type_id="money_decl", input_schema=struct({"type": "object"}), cost_model=cost_model
    )
    hello = worker_pb2.WorkerHello(name="money", capacity=1, job_types=[declaration])
    return connect_outcome(world.channel, world.tokens["worker"], [worker_pb2.ConnectRequest(hello=hello)])


@pytest.mark.parametrize(
    ("cost_model", "field"),
    [
        (resources_pb2.CostModel(flat=1, per_km2=math.nan), "per_km2"),
        (resources_pb2.CostModel(flat=math.inf), "flat"),
        (resources_pb2.CostModel(flat=1, per_asset=-1), "per_asset"),
        (resources_pb2.CostModel(flat=-0.5), "flat"),
        (resources_pb2.CostModel(flat=1, minimum=-5), "minimum"),
        (resources_pb2.CostModel(flat=1e300), "flat"),
    ],
    ids=["nan", "inf", "negative-per-asset", "negative-flat", "negative-minimum", "beyond-int64"],
)
def test_a_worker_cannot_declare_a_non_finite_or_negative_cost_model(money_world, cost_model, field):
    outcome = _hello_outcome(money_world, cost_model)
    assert isinstance(outcome, RpcFailure), f"hello accepted: {outcome}"
    assert (outcome.code, outcome.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_COST_MODEL")
    assert outcome.violations[0][0] == f"hello.job_types[0].cost_model.{field}"


def test_a_sane_cost_model_is_still_accepted(money_world):
    outcome = _hello_outcome(money_world, resources_pb2.CostModel(flat=1, per_km2=0.5, per_asset=1, minimum=0))
    assert isinstance(outcome, worker_pb2.ConnectResponse) and outcome.WhichOneof("message") == "welcome"
