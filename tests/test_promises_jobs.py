"""Promises about jobs, credits and workers that no test held before (issue 17):
credits released when attempts run out or a plugin crashes, the cost model by
numbers, WatchJob's and WorkerService's error reasons, and what a job token
may download. Every error is asserted by status code and ErrorInfo reason
over a real server; areas come from pyproj.Geod, not the server's helpers.
The credits of every module's databases are checked again when it ends
(tests/conftest.py)."""

from __future__ import annotations

import json
import math
import secrets
from pathlib import Path

import grpc
import numpy as np
import pytest
import rasterio
import rasterio.shutil
from google.protobuf import json_format
from google.rpc import error_details_pb2
from pyproj import Geod
from rasterio.io import MemoryFile
from rasterio.transform import from_origin
from shapely.geometry import shape
from shapely.ops import unary_union

from geopera.v1 import catalog_pb2, kernel_pb2, processing_pb2, resources_pb2, worker_pb2
from geopera_kernel.raster.cog import COG_CREATION_OPTIONS
from geopera_kernel.raster.cost import CostModel
from geopera_kernel.server.domain.jobs import JobTypeRecord
from tests.conftest import SAMPLES, ledger_violations
from tests.jobs_support import (
    STATUS,
    RawWorker,
    balance,
    create_and_dispatch,
    job_metadata,
    ledger,
    running_world,
    struct,
    wait_terminal,
    watch,
)
from tests.support.client import RpcFailure
from tests.support.workers import connect_outcome

GEOD = Geod(ellps="WGS84")
KIND = resources_pb2.LedgerEntryKind
SOURCE = "s2l1c_slovenia_20150711_bgrn"
SQUARE = {"type": "Polygon", "coordinates": [[[14.55, 45.86], [14.56, 45.86], [14.56, 45.87], [14.55, 45.87],
                                              [14.55, 45.86]]]}  # fmt: skip
# Test job types priced so each term of the cost model shows on its own.
MINIMUM_PRICED = JobTypeRecord("promise_minimum", "test: 0.2 flat, at least 5", {"type": "object"},
                               CostModel(0.2, 0, 0, 5))  # fmt: skip
EVERY_TERM = JobTypeRecord("promise_every_term", "test: 0.5 + 0.25/km² + 2/asset", {"type": "object"},
                           CostModel(0.5, 0.25, 2, 0))  # fmt: skip
RAW_TYPE = "promise_raw"


@pytest.fixture(scope="module")
def promise_world(database_factory, tmp_path_factory):
    with running_world(database_factory.create(), tmp_path_factory.mktemp("promises"), workers=1) as world:
        world.add_job_types(MINIMUM_PRICED, EVERY_TERM)
        yield world


def _fails(call) -> RpcFailure:
    with pytest.raises(RpcFailure) as info:
        call()
    return info.value


def _rpc_fails(call) -> RpcFailure:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return RpcFailure.from_rpc_error(info.value)


def error_reason(job: resources_pb2.Job) -> str:
    """The ErrorInfo reason inside a failed job's `error` (a google.rpc.Status)."""
    for detail in job.error.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


def job_ledger(client, job_id: str) -> list[tuple[int, int]]:
    return sorted((e.kind, e.amount) for e in ledger(client, job_id=job_id))


def geodesic_km2(geometry) -> float:
    return abs(GEOD.geometry_area_perimeter(geometry)[0]) / 1e6


def item_shape(client, item_id: str):
    item = client.execute("items.get", catalog_pb2.ItemsGetParams(item_id=item_id)).item
    return shape(json_format.MessageToDict(item.geometry)), item


def cancel(client, job_id: str) -> None:
    client.execute("processing.jobs.cancel", processing_pb2.ProcessingJobsCancelParams(job_id=job_id))


# -- credits released ------------------------------------------------------------------


def test_running_out_of_attempts_releases_every_credit(promise_world):
    client = promise_world.client("alpha")
    before = balance(client)
    job = create_and_dispatch(client, "test_fail", {"retryable": True}).job
    assert job.credits_reserved == 3  # test_fail: flat 3
    final = wait_terminal(client, job.id)
    assert final.status == STATUS.JOB_STATUS_FAILED and final.attempt == 3
    assert error_reason(final) == "ATTEMPTS_EXHAUSTED" and final.credits_charged == 0
    assert job_ledger(client, job.id) == [(KIND.LEDGER_ENTRY_KIND_RESERVE, 3), (KIND.LEDGER_ENTRY_KIND_RELEASE, 3)]
    after = balance(client)
    assert (after.available, after.held, after.captured_total) == (before.available, before.held, before.captured_total)


def test_a_crashing_plugin_releases_every_credit(promise_world):
    client = promise_world.client("alpha")
    before = balance(client)
    job = create_and_dispatch(client, "test_fail", {"crash": True, "message": "boom"}).job
    final = wait_terminal(client, job.id)
    assert final.status == STATUS.JOB_STATUS_FAILED and final.attempt == 3
    assert error_reason(final) == "ATTEMPTS_EXHAUSTED" and "boom" in final.error.message
    assert final.credits_charged == 0 and not final.output_item_ids
    assert job_ledger(client, job.id) == [(KIND.LEDGER_ENTRY_KIND_RESERVE, 3), (KIND.LEDGER_ENTRY_KIND_RELEASE, 3)]
    after = balance(client)
    assert (after.available, after.held, after.captured_total) == (before.available, before.held, before.captured_total)


def test_the_end_of_module_check_finds_credits_that_do_not_add_up(database_url):
    """The conftest's end-of-module check is no formality: a balance that
    drifted from its ledger, or a ledger whose `after` columns lie, is found."""
    import psycopg

    assert ledger_violations(database_url) == []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO projects (id, display_name) VALUES ('drift', 'Drift')")
        conn.execute("INSERT INTO credit_accounts (project_id, available, granted_total) VALUES ('drift', 10, 10)")
        conn.execute("INSERT INTO credit_ledger (project_id, kind, amount, available_after, held_after) "
                     "VALUES ('drift', 'grant', 10, 10, 0)")  # fmt: skip
        assert ledger_violations(database_url) == []
        conn.execute("UPDATE credit_accounts SET available = 9, held = 1 WHERE project_id = 'drift'")
        assert ledger_violations(database_url) == ["drift: balance [9, 1, 10, 0] != ledger replay [10, 0, 10, 0]"]
        conn.execute("INSERT INTO credit_ledger (project_id, kind, amount, available_after, held_after) "
                     "VALUES ('drift', 'reserve', 1, 10, 0)")  # fmt: skip
        assert ledger_violations(database_url) == ["drift: after a reserve of 1 the ledger says 10/0, the replay 9/1"]
        conn.execute("UPDATE credit_accounts SET available = 8 WHERE project_id = 'drift'")
        assert "drift: 8 + 1 + 0 != 10" in ledger_violations(database_url)
        conn.execute("DELETE FROM credit_ledger WHERE project_id = 'drift'")
        conn.execute("DELETE FROM credit_accounts WHERE project_id = 'drift'")
    assert ledger_violations(database_url) == []


# -- the cost model by numbers ------------------------------------------------------------


def test_clip_costs_1_plus_half_a_credit_per_km2_plus_1_per_asset(promise_world):
    client = promise_world.client("alpha")
    source = promise_world.items[SOURCE]
    footprint, item = item_shape(client, source)
    aoi = json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())
    aoi_shape = unary_union([shape(f["geometry"]) for f in aoi["features"]])  # the sample is a FeatureCollection
    overlap_km2 = geodesic_km2(aoi_shape.intersection(footprint))
    assets = sum(1 for a in item.assets.values() if a.media_type.startswith("image/tiff"))
    assert overlap_km2 > 0 and assets == 1
    expected = math.ceil(1 + 0.5 * overlap_km2 + 1 * assets)
    before = balance(client)
    result = client.execute("clip.create_from_item", processing_pb2.ClipCreateFromItemParams(
        source_item_id=source, project_id="alpha", aoi_geometry=struct(aoi),
        output_name=f"clip_cost_{secrets.token_hex(3)}"))  # fmt: skip
    assert result.job.credits_reserved == expected, (overlap_km2, assets)
    assert balance(client).held - before.held == expected
    final = wait_terminal(client, result.job.id, timeout=120)
    assert final.status == STATUS.JOB_STATUS_SUCCEEDED, final.error
    # The actual cost: the output's own footprint and asset count, never above the hold.
    output_shape, output = item_shape(client, final.output_item_ids[0])
    actual = math.ceil(1 + 0.5 * geodesic_km2(output_shape) + 1 * len(output.assets))
    charged = min(actual, expected)
    assert final.credits_charged == charged
    entries = [(KIND.LEDGER_ENTRY_KIND_RESERVE, expected), (KIND.LEDGER_ENTRY_KIND_CAPTURE, charged)]
    if expected > charged:
        entries.append((KIND.LEDGER_ENTRY_KIND_RELEASE, expected - charged))
    if actual > charged:
        entries.append((KIND.LEDGER_ENTRY_KIND_WAIVE, actual - charged))
    assert job_ledger(client, final.id) == sorted(entries)
    assert balance(client).available == before.available - charged


def test_bathymetry_costs_2_plus_1_per_km2_of_the_aoi_inside_the_scene(promise_world):
    client = promise_world.client("alpha")
    source = promise_world.items[SOURCE]
    footprint, _ = item_shape(client, source)
    west, south, east, north = footprint.bounds
    dx, dy = (east - west) / 5, (north - south) / 5
    cx, cy = footprint.centroid.x, footprint.centroid.y
    # A box wholly inside the scene: priced by its own geodesic area.
    aoi = {"type": "Polygon", "coordinates": [[[cx - dx, cy - dy], [cx + dx, cy - dy], [cx + dx, cy + dy],
                                               [cx - dx, cy + dy], [cx - dx, cy - dy]]]}  # fmt: skip
    assert footprint.contains(shape(aoi))
    km2 = geodesic_km2(shape(aoi))
    expected = math.ceil(2 + 1 * km2)
    before = balance(client)
    job = client.execute("processing.create", processing_pb2.ProcessingCreateParams(
        project_id="alpha", job_type_id="bathymetry",
        input_params=struct({"source_item_id": source, "m0": 0, "m1": 10, "aoi_geometry": aoi})),
    ).job  # fmt: skip
    assert job.credits_reserved == expected, km2
    assert balance(client).held - before.held == expected
    cancel(client, job.id)
    assert job_ledger(client, job.id) == [(KIND.LEDGER_ENTRY_KIND_RESERVE, expected),
                                          (KIND.LEDGER_ENTRY_KIND_RELEASE, expected)]  # fmt: skip
    assert balance(client) == before


def test_every_term_of_the_cost_model_counts_and_the_sum_is_rounded_up(promise_world):
    client = promise_world.client("alpha")
    names = sorted(promise_world.items)[:3]
    sources = [promise_world.items[n] for n in names]
    shapes_and_items = [item_shape(client, s) for s in sources]
    footprint = unary_union([s for s, _ in shapes_and_items])
    assets = sum(len(i.assets) for _, i in shapes_and_items)
    west, south, east, north = footprint.bounds
    aoi = {"type": "Polygon", "coordinates": [[[west, south], [(west + east) / 2, south], [(west + east) / 2, north],
                                               [west, north], [west, south]]]}  # fmt: skip
    km2 = geodesic_km2(shape(aoi).intersection(footprint))
    price = 0.5 + 0.25 * km2 + 2 * assets
    assert price % 1 != 0  # the ceil shows
    expected = math.ceil(price)
    job = client.execute("processing.create", processing_pb2.ProcessingCreateParams(
        project_id="alpha", job_type_id=EVERY_TERM.id,
        input_params=struct({"aoi_geometry": aoi, "source_item_ids": sources})),
    ).job  # fmt: skip
    assert job.credits_reserved == expected, (km2, assets)
    assert [(e.kind, e.amount) for e in ledger(client, job_id=job.id)] == [(KIND.LEDGER_ENTRY_KIND_RESERVE, expected)]
    cancel(client, job.id)
    # Fewer assets (asset_keys names one), same area: exactly 2 credits per asset less.
    fewer = client.execute("processing.create", processing_pb2.ProcessingCreateParams(
        project_id="alpha", job_type_id=EVERY_TERM.id,
        input_params=struct({"aoi_geometry": aoi, "source_item_ids": sources, "asset_keys": ["data"]})),
    ).job  # fmt: skip
    assert fewer.credits_reserved == math.ceil(0.5 + 0.25 * km2 + 2 * 1)
    cancel(client, fewer.id)


def test_the_minimum_applies_when_the_formula_is_below_it(promise_world):
    client = promise_world.client("alpha")
    before = balance(client)
    job = client.execute("processing.create", processing_pb2.ProcessingCreateParams(
        project_id="alpha", job_type_id=MINIMUM_PRICED.id, input_params=struct({})),
    ).job  # fmt: skip
    assert job.credits_reserved == 5  # ceil(0.2) = 1, raised to the minimum 5
    assert balance(client).held - before.held == 5
    cancel(client, job.id)
    assert balance(client) == before


# -- WatchJob errors -------------------------------------------------------------------


def test_watch_job_errors_carry_their_reasons(promise_world):
    alpha = promise_world.client("alpha")
    beta_job = create_and_dispatch(promise_world.client("beta"), "test_noop", {}, project="beta").job
    own_job = create_and_dispatch(alpha, "test_noop", {}).job
    no_read = promise_world.make_token(scopes=["processing:process", "catalog:read"], projects=["alpha"])

    def watch_fails(client, job_id: str, after: int = 0) -> RpcFailure:
        return _rpc_fails(lambda: watch(client, job_id, after=after, timeout=20))

    failure = watch_fails(alpha, "job_does_not_exist")
    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "JOB_NOT_FOUND")
    failure = watch_fails(alpha, beta_job.id)
    assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PROJECT_ACCESS_DENIED")
    failure = watch_fails(alpha, own_job.id, after=-1)
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_SEQUENCE")
    assert failure.violations[0][0] == "after_sequence"
    failure = watch_fails(promise_world.client(no_read), own_job.id)
    assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "MISSING_SCOPE")
    # The same job watched properly ends with its terminal event.
    assert wait_terminal(alpha, own_job.id).status == STATUS.JOB_STATUS_SUCCEEDED


# -- sources and job tokens ------------------------------------------------------------


def test_a_source_item_of_another_project_is_refused_at_create_and_moves_no_credit(promise_world):
    client = promise_world.client("alpha")
    before = balance(client)
    beta_source = next(iter(promise_world.beta_items.values()))
    # A member of alpha only: the other project's item is not even visible.
    failure = _fails(lambda: create_and_dispatch(
        client, "test_cog", {"name": f"x_{secrets.token_hex(3)}", "source_item_ids": [beta_source]}))  # fmt: skip
    assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PROJECT_ACCESS_DENIED")
    failure = _fails(lambda: client.execute("clip.create_from_item", processing_pb2.ClipCreateFromItemParams(
        source_item_id=beta_source, project_id="alpha", aoi_geometry=struct(SQUARE))))  # fmt: skip
    assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PROJECT_ACCESS_DENIED")
    # A member of both: the item is visible, but a job's sources are its own project's.
    both = promise_world.client(promise_world.make_token(
        scopes=["processing:process", "processing:read"], projects=["alpha", "beta"]))  # fmt: skip
    failure = _fails(lambda: create_and_dispatch(
        both, "test_cog", {"name": f"x_{secrets.token_hex(3)}", "source_item_ids": [beta_source]}))  # fmt: skip
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "SOURCE_IN_OTHER_PROJECT")
    assert failure.violations[0][0] == "input_params.source_item_ids[0]"
    assert balance(client) == before
    listing = processing_pb2.ProcessingJobsListParams(
        project_id="alpha", job_type_id="test_cog", page_size=1000, view=processing_pb2.JOB_VIEW_FULL)  # fmt: skip
    jobs = client.execute("processing.jobs.list", listing).jobs
    assert not [j for j in jobs if beta_source in j.input_params.fields["source_item_ids"].list_value.values]


def _download(world, token: str, item_id: str) -> bytes:
    stub = kernel_pb2_grpc_stub(world)
    parts = list(stub.DownloadAsset(kernel_pb2.DownloadAssetRequest(resource_name=f"items/{item_id}/assets/data"),
                                    metadata=job_metadata(token), timeout=30))  # fmt: skip
    return b"".join(p.data for p in parts)


def kernel_pb2_grpc_stub(world):
    from geopera.v1 import kernel_pb2_grpc

    return kernel_pb2_grpc.KernelServiceStub(world.channel)


def test_a_job_token_downloads_only_its_sources_and_only_while_its_attempt_lives(promise_world):
    raw = RawWorker(promise_world.channel, promise_world.tokens["worker"], [RAW_TYPE])
    try:
        client = promise_world.client("alpha")
        source, other = promise_world.items[SOURCE], promise_world.items["s2l1c_slovenia_20150909_bgrn"]
        job = create_and_dispatch(client, RAW_TYPE, {"source_item_ids": [source]}).job
        token = raw.next_assignment().job_token
        expected, _ = client.download(f"items/{source}/assets/data")
        assert _download(promise_world, token, source) == expected
        failure = _rpc_fails(lambda: _download(promise_world, token, other))
        assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "JOB_TOKEN_NOT_ALLOWED")
        # The attempt ends (cancelled): its token downloads nothing more, not even its source.
        cancel(client, job.id)
        failure = _rpc_fails(lambda: _download(promise_world, token, source))
        assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "JOB_ATTEMPT_OVER")
    finally:
        raw.die()


# -- WorkerService error reasons --------------------------------------------------------------


def hello(capacity: int = 1, job_type_id: str = RAW_TYPE, worker_id: str = "") -> worker_pb2.ConnectRequest:
    declaration = worker_pb2.JobTypeDeclaration(job_type_id=job_type_id, input_schema=struct({"type": "object"}))
    return worker_pb2.ConnectRequest(hello=worker_pb2.WorkerHello(
        name="promise", capacity=capacity, job_types=[declaration], worker_id=worker_id))  # fmt: skip


@pytest.mark.parametrize(
    ("messages", "reason", "field"),
    [
        ([worker_pb2.ConnectRequest(heartbeat=worker_pb2.WorkerHeartbeat())], "HELLO_REQUIRED", "hello"),
        ([], "HELLO_REQUIRED", "hello"),
        ([hello(capacity=0)], "INVALID_CAPACITY", "capacity"),
        ([hello(capacity=65)], "INVALID_CAPACITY", "capacity"),
        ([hello(job_type_id="")], "INVALID_JOB_TYPE", "hello.job_types[0].job_type_id"),
        ([hello(job_type_id="Not-A-Type")], "INVALID_JOB_TYPE", "hello.job_types[0].job_type_id"),
    ],
    ids=["heartbeat-first", "no-message", "capacity-0", "capacity-65", "empty-job-type", "bad-job-type"],
)
def test_connect_refuses_a_bad_hello_with_its_reason(promise_world, messages, reason, field):
    outcome = connect_outcome(promise_world.channel, promise_world.tokens["worker"], messages)
    assert isinstance(outcome, RpcFailure), f"accepted: {outcome}"
    assert (outcome.code, outcome.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert outcome.violations[0][0] == field


def test_a_capacity_at_the_limits_is_accepted(promise_world):
    for capacity in (1, 64):
        outcome = connect_outcome(promise_world.channel, promise_world.tokens["worker"], [hello(capacity=capacity)])
        assert isinstance(outcome, worker_pb2.ConnectResponse) and outcome.WhichOneof("message") == "welcome"


def test_a_worker_id_of_another_credential_is_taken(promise_world):
    raw = RawWorker(promise_world.channel, promise_world.tokens["worker"], [RAW_TYPE])
    try:
        worker_id = raw.welcome.worker_id
        other_credential = promise_world.make_token(kind="worker", scopes=["worker"], projects=[], job_types=[RAW_TYPE])
        outcome = connect_outcome(promise_world.channel, other_credential, [hello(worker_id=worker_id)])
        assert isinstance(outcome, RpcFailure), f"accepted: {outcome}"
        assert (outcome.code, outcome.reason) == (grpc.StatusCode.PERMISSION_DENIED, "WORKER_ID_TAKEN")
        # A user token may not open a worker session at all.
        outcome = connect_outcome(promise_world.channel, promise_world.tokens["alpha"], [hello()])
        assert (outcome.code, outcome.reason) == (grpc.StatusCode.PERMISSION_DENIED, "MISSING_SCOPE")
    finally:
        raw.die()


def _plain_geotiff(path: Path) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8", crs="EPSG:4326",
                       transform=from_origin(14.55, 45.87, 0.01 / 64, 0.01 / 64), nodata=0) as dataset:  # fmt: skip
        dataset.write(np.full((1, 64, 64), 7, np.uint8))
    return path


def _cog_without_statistics(path: Path) -> Path:
    with MemoryFile() as memory:
        with memory.open(driver="GTiff", width=64, height=64, count=1, dtype="uint8", crs="EPSG:4326",
                         transform=from_origin(14.55, 45.87, 0.01 / 64, 0.01 / 64), nodata=0) as dataset:  # fmt: skip
            dataset.write(np.full((1, 64, 64), 7, np.uint8))
        with memory.open() as source:
            rasterio.shutil.copy(source, path, driver="COG", **{**COG_CREATION_OPTIONS, "STATISTICS": "NO"})
    return path


def _register(raw: RawWorker, job_id: str, token: str, path: Path):
    item = worker_pb2.OutputItem(output_key="0", name=f"promise_{secrets.token_hex(3)}", geometry=struct(SQUARE),
                                 assets=[worker_pb2.OutputAsset(key="data")])  # fmt: skip
    chunk = worker_pb2.OutputChunk(output_key="0", asset_key="data", data=path.read_bytes(), finish_write=True)
    return raw.stub.RegisterOutputs(iter([
        worker_pb2.RegisterOutputsRequest(job_id=job_id, item=item),
        worker_pb2.RegisterOutputsRequest(chunk=chunk),
        worker_pb2.RegisterOutputsRequest(commit=True),
    ]), metadata=job_metadata(token), timeout=30)  # fmt: skip


def test_register_outputs_without_a_job_id_is_refused_and_the_attempt_lives(promise_world):
    raw = RawWorker(promise_world.channel, promise_world.tokens["worker"], [RAW_TYPE])
    try:
        client = promise_world.client("alpha")
        job = create_and_dispatch(client, RAW_TYPE, {}).job
        token = raw.next_assignment().job_token
        only_commit = iter([worker_pb2.RegisterOutputsRequest(commit=True)])
        failure = _rpc_fails(lambda: raw.stub.RegisterOutputs(only_commit, metadata=job_metadata(token), timeout=30))
        assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "JOB_ID_REQUIRED")
        assert failure.violations[0][0] == "job_id"
        state = client.execute("processing.jobs.get", processing_pb2.ProcessingJobsGetParams(job_id=job.id)).job
        assert state.status in (STATUS.JOB_STATUS_DISPATCHED, STATUS.JOB_STATUS_RUNNING)
        cancel(client, job.id)
    finally:
        raw.die()


@pytest.mark.parametrize(("write", "reason"), [(_plain_geotiff, "NOT_A_COG"),
                                                (_cog_without_statistics, "MISSING_STATISTICS")])  # fmt: skip
def test_an_output_that_breaks_the_cog_convention_fails_the_job_with_its_reason(promise_world, tmp_path, write,
                                                                                reason):  # fmt: skip
    raw = RawWorker(promise_world.channel, promise_world.tokens["worker"], [RAW_TYPE])
    try:
        client = promise_world.client("alpha")
        before = balance(client)
        job = create_and_dispatch(client, RAW_TYPE, {}).job
        token = raw.next_assignment().job_token
        failure = _rpc_fails(lambda: _register(raw, job.id, token, write(tmp_path / "out.tif")))
        assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
        state = client.execute("processing.jobs.get", processing_pb2.ProcessingJobsGetParams(job_id=job.id)).job
        assert state.status == STATUS.JOB_STATUS_FAILED and error_reason(state) == reason and state.attempt == 1
        assert not state.output_item_ids and state.credits_charged == 0
        assert balance(client) == before
        listed = client.execute("items.list", catalog_pb2.ItemsListParams(project_id="alpha", collection_id=RAW_TYPE))
        assert not listed.items
    finally:
        raw.die()


def test_the_same_outputs_written_properly_are_accepted(promise_world, tmp_path):
    """The refusals above are about the files, not about the raw session."""
    from geopera_kernel.raster import write_cog

    raw = RawWorker(promise_world.channel, promise_world.tokens["worker"], [RAW_TYPE])
    try:
        client = promise_world.client("alpha")
        job = create_and_dispatch(client, RAW_TYPE, {}).job
        token = raw.next_assignment().job_token
        path = tmp_path / "good.tif"
        write_cog(path, np.full((1, 64, 64), 7, np.uint8), crs="EPSG:4326",
                  transform=(0.01 / 64, 0, 14.55, 0, -0.01 / 64, 45.87), nodata=0, descriptions=["value"])  # fmt: skip
        done = _register(raw, job.id, token, path)
        assert done.job.status == STATUS.JOB_STATUS_SUCCEEDED and len(done.items) == 1
    finally:
        raw.die()


def test_an_idempotency_key_lives_48_hours_by_default(promise_world):
    import psycopg

    client = promise_world.client("alpha")
    key = f"default-ttl-{secrets.token_hex(4)}"
    params = processing_pb2.ProcessingCreateParams(project_id="alpha", job_type_id="test_noop", input_params=struct({}))
    job = client.execute("processing.create", params, idempotency_key=key).job
    with psycopg.connect(promise_world.database_url) as conn:
        (lifetime,) = conn.execute(
            "SELECT extract(epoch FROM expire_time - create_time)::float8 FROM idempotency_keys WHERE key = %s", (key,)
        ).fetchone()
    assert lifetime == 48 * 3600
    cancel(client, job.id)
