"""Hostile and unlucky client input gets a clear client error (or a correct
answer), never INTERNAL, over gRPC and the HTTP projection; documented
behaviour (integer band_mapping, resuming WatchJob) works as documented.

Issue 10, holes 5 and 6: out-of-range Timestamps, geometry the raster's CRS
cannot express, histogram ranges NumPy cannot split, deeply nested bodies,
forged page tokens, error trailers over the client's metadata limit, band
indexes in band_mapping, and duplicate events on a resumed watch."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import urllib.error
import urllib.request
from typing import Any

import grpc
import psycopg
import pytest
from geopera_sdk import Client
from google.protobuf import json_format, struct_pb2, timestamp_pb2

from geopera.v1 import analytics_pb2, catalog_pb2, credits_pb2, kernel_pb2, processing_pb2
from tests.conftest import SAMPLES
from tests.jobs_support import create_and_dispatch, running_world, wait_terminal, watch
from tests.support.client import KernelClient, RpcFailure
from tests.support.mcp_client import McpClient
from tests.support.server import ServerProcess

AOI = json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())
BEFORE, AFTER = "s2l1c_slovenia_20150711_bgrn", "s2l1c_slovenia_20150830_bgrn"
# Sentinel-2 samples: bands blue, green, red, nir (B02, B03, B04, B08).
BY_INDEX = {"RED": 3, "NIR": 4}
BY_NAME = {"RED": "B04", "NIR": "B08"}
# Slovenia is in UTM 33N; lon 170..180 has no finite UTM 33N coordinates.
NEAR_ANTIMERIDIAN = [[[170.0, -10.0], [180.0, -10.0], [180.0, 10.0], [170.0, 10.0], [170.0, -10.0]]]
SMILE = "\U0001f642"  # 4 bytes in UTF-8


@pytest.fixture(scope="module")
def world(database_factory, tmp_path_factory):
    with running_world(database_factory.create(), tmp_path_factory.mktemp("input"), workers=1) as world:
        yield world


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def _fails(world, operation: str, params, token: str = "alpha") -> RpcFailure:
    with pytest.raises(RpcFailure) as info:
        world.client(token).execute(operation, params, timeout=60)
    return info.value


def _analytics(world, method: str, params: dict[str, Any]) -> dict[str, Any]:
    result = world.client("alpha").execute(
        "analytics.execute", analytics_pb2.AnalyticsExecuteParams(operation=method, params=_struct(params)), timeout=60
    )
    return json_format.MessageToDict(result.result)


def _analytics_fails(world, method: str, params: dict[str, Any]) -> RpcFailure:
    return _fails(
        world, "analytics.execute", analytics_pb2.AnalyticsExecuteParams(operation=method, params=_struct(params))
    )


def _http(world, path: str, body: Any = None, *, raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(world.server.http_url + path, data=data, method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {world.tokens['alpha']}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _zone_stats(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [zone["stats"] for zone in result["zones"]]


# --- Timestamps ---------------------------------------------------------------------------

OUT_OF_RANGE = [
    pytest.param(253_402_300_800, 0, id="after-year-9999"),
    pytest.param(-62_135_596_801, 0, id="before-year-1"),
    pytest.param(0, -1, id="negative-nanos"),
    pytest.param(0, 1_000_000_000, id="nanos-of-a-whole-second"),
]


def _timestamp_calls(when: timestamp_pb2.Timestamp) -> list[tuple[str, Any, str]]:
    return [
        ("items.list", catalog_pb2.ItemsListParams(project_id="alpha", datetime_start=when), "datetime_start"),
        ("items.list", catalog_pb2.ItemsListParams(project_id="alpha", datetime_end=when), "datetime_end"),
        ("items.create", catalog_pb2.ItemsCreateParams(project_id="alpha", name="t", datetime=when), "datetime"),
        (
            "processing.jobs.list",
            processing_pb2.ProcessingJobsListParams(project_id="alpha", create_time_start=when),
            "create_time_start",
        ),
        (
            "processing.jobs.list",
            processing_pb2.ProcessingJobsListParams(project_id="alpha", create_time_end=when),
            "create_time_end",
        ),
    ]


@pytest.mark.parametrize(("seconds", "nanos"), OUT_OF_RANGE)
def test_out_of_range_timestamps_are_invalid_argument(world, seconds, nanos):
    for operation, params, field in _timestamp_calls(timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)):
        failure = _fails(world, operation, params)
        assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TIMESTAMP"), (
            operation,
            failure,
        )
        assert failure.violations[0][0] == field


def test_the_extreme_valid_timestamps_are_accepted(world):
    client = world.client("alpha")
    first = timestamp_pb2.Timestamp(seconds=-62_135_596_800)
    last = timestamp_pb2.Timestamp(seconds=253_402_300_799, nanos=999_999_999)
    listed = client.execute(
        "items.list", catalog_pb2.ItemsListParams(project_id="alpha", datetime_start=first, datetime_end=last)
    )
    assert len(listed.items) == len(world.items)
    jobs = processing_pb2.ProcessingJobsListParams(project_id="alpha", create_time_start=first, create_time_end=last)
    client.execute("processing.jobs.list", jobs)


def test_out_of_range_timestamps_over_http_are_400(world):
    status, body = _http(world, "/v1/op/items.list", {"project_id": "alpha", "datetime_start": "10000-01-01T00:00:00Z"})
    assert (status, body["code"]) == (400, "INVALID_ARGUMENT"), body


# --- Geometry -----------------------------------------------------------------------------


def _with_far_part(aoi: dict[str, Any]) -> dict[str, Any]:
    """The sample AOI plus a polygon by the antimeridian, as one MultiPolygon."""
    polygons = [feature["geometry"]["coordinates"] for feature in aoi["features"]]
    return {"type": "MultiPolygon", "coordinates": [*polygons, NEAR_ANTIMERIDIAN]}


def test_a_zone_reaching_the_antimeridian_gets_the_answer_of_its_part_near_the_raster(world):
    item = world.items[BEFORE]
    aoi = {"type": "MultiPolygon", "coordinates": [f["geometry"]["coordinates"] for f in AOI["features"]]}
    for coverage in ("center", "exact"):
        params = {"item_id": item, "band": 3, "coverage": coverage, "stats": ["count", "mean", "min", "max"]}
        near = _analytics(world, "zonal_stats", {**params, "geometry": aoi})
        both = _analytics(world, "zonal_stats", {**params, "geometry": _with_far_part(AOI)})
        assert _zone_stats(both) == _zone_stats(near) and _zone_stats(near)[0]["count"] > 0
    # Zones away from the raster (GEOS used to fail on their infinite UTM coordinates).
    for far in (NEAR_ANTIMERIDIAN, [[[100.0, -89.0], [180.0, -89.0], [180.0, 89.0], [100.0, 89.0], [100.0, -89.0]]]):
        params = {"item_id": item, "band": 1, "geometry": {"type": "Polygon", "coordinates": far}, "stats": ["count"]}
        for coverage in ("center", "exact"):
            assert _zone_stats(_analytics(world, "zonal_stats", {**params, "coverage": coverage})) == [{"count": 0}]


def test_time_series_and_change_detection_take_a_zone_reaching_the_antimeridian(world):
    items = [world.items[BEFORE], world.items[AFTER]]
    aoi = {"type": "MultiPolygon", "coordinates": [f["geometry"]["coordinates"] for f in AOI["features"]]}
    series = {"item_ids": items, "index_name": "NDVI"}
    assert _analytics(world, "time_series", {**series, "geometry": _with_far_part(AOI)}) == _analytics(
        world, "time_series", {**series, "geometry": aoi}
    )
    change = {"before_item_id": items[0], "after_item_id": items[1], "index_name": "NDVI", "change_threshold": 0.05}
    near = _analytics(world, "change_detection", {**change, "geometry": aoi})
    both = _analytics(world, "change_detection", {**change, "geometry": _with_far_part(AOI)})
    keys = ("increase", "decrease", "no_change")
    assert {k: both[k] for k in keys} == {k: near[k] for k in keys}


@pytest.mark.parametrize(
    "geometry",
    [
        pytest.param({"type": "Polygon", "coordinates": [[[0, 0], [1e308, 0], [0, 1], [0, 0]]]}, id="1e308"),
        pytest.param(
            {"type": "Polygon", "coordinates": [[[14, 45], [15, 46], [15, 45], [14, 46], [14, 45]]]}, id="bowtie"
        ),
        pytest.param({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, float("inf")], [0, 0]]]}, id="inf"),
        pytest.param({"type": "Polygon", "coordinates": [[[1, 1], [1, 1], [1, 1], [1, 1]]]}, id="no-area"),
    ],
)
def test_degenerate_geometry_is_invalid_argument(world, geometry):
    failure = _analytics_fails(world, "zonal_stats", {"item_id": world.items[BEFORE], "band": 1, "geometry": geometry})
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT, failure
    assert failure.violations and failure.violations[0][0].startswith("params.geometry")


def test_nan_coordinates_over_http_are_a_client_error(world):
    ring = "[[[NaN, 45], [15, 45], [15, 46], [NaN, 45]]]"  # JSON has no NaN, Python's parser does
    body = json.dumps({"operation": "zonal_stats", "params": {"item_id": world.items[BEFORE], "band": 1, "geometry": {
        "type": "Polygon", "coordinates": "RING"}}}).replace('"RING"', ring)  # fmt: skip
    status, got = _http(world, "/v1/op/analytics.execute", raw=body.encode())
    assert 400 <= status < 500 and got["code"] == "INVALID_ARGUMENT", got


def test_items_list_intersects_across_the_antimeridian(world):
    world_wide = {"type": "Polygon", "coordinates": [[[-180, -90], [180, -90], [180, 90], [-180, 90], [-180, -90]]]}
    client = world.client("alpha")
    for area, expected in ((world_wide, len(world.items)), ({"type": "Polygon", "coordinates": NEAR_ANTIMERIDIAN}, 0)):
        listed = client.execute("items.list", catalog_pb2.ItemsListParams(project_id="alpha", intersects=_struct(area)))
        assert len(listed.items) == expected


# --- Histogram ranges ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value_range",
    [
        pytest.param([float("-inf"), float("inf")], id="infinite"),
        pytest.param([0.0, float("nan")], id="nan"),
        pytest.param([0.0, 5e-324], id="denormal"),
        pytest.param([-1e308, 1e308], id="overflowing-width"),
        pytest.param([1.0, 1.0000000000000002], id="one-ulp"),
    ],
)
def test_histogram_ranges_numpy_cannot_split_are_invalid_argument(world, value_range):
    params = {
        "item_id": world.items[BEFORE],
        "band": 1,
        "geometry": AOI,
        "histogram": {"bins": 10, "range": value_range},
    }
    failure = _analytics_fails(world, "zonal_stats", params)
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ANALYTICS_PARAMS"), failure
    assert any("histogram" in field for field, _ in failure.violations), failure.violations


def test_a_tiny_but_normal_histogram_range_still_works(world):
    params = {
        "item_id": world.items[BEFORE],
        "band": 1,
        "geometry": AOI,
        "histogram": {"bins": 4, "range": [0, 1e-300]},
    }
    result = _analytics(world, "zonal_stats", params)
    assert len(result["zones"][0]["histogram"]["edges"]) == 5


# --- REST nesting -------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_http_bodies_are_400(world, depth):
    raw = ('{"project_id": "alpha", "intersects": {"a": ' + "[" * depth + "]" * depth + "}}").encode()
    status, body = _http(world, "/v1/op/items.list", raw=raw)
    assert (status, body["reason"]) == (400, "PARAMS_UNPARSEABLE"), body
    status, _ = _http(world, "/v1/op/items.list", {"project_id": "alpha"})
    assert status == 200  # still serving


@pytest.mark.parametrize("zeros", [400, 5_000])  # 5,000: more digits than Python's int() reads by default
def test_numbers_too_large_for_a_double_over_http_are_400(world, zeros):
    raw = b'{"project_id": "alpha", "job_type_id": "test_noop", "input_params": {"n": 1' + b"0" * zeros + b"}}"
    status, body = _http(world, "/v1/op/processing.create", raw=raw)
    assert (status, body["reason"]) == (400, "PARAMS_UNPARSEABLE"), body


# --- Page tokens --------------------------------------------------------------------------


def _first_token(world) -> str:
    page = world.client("alpha").execute("items.list", catalog_pb2.ItemsListParams(project_id="alpha", page_size=1))
    assert page.next_page_token
    return page.next_page_token


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _unkeyed_token(cursor: dict[str, Any], filters: dict[str, Any]) -> str:
    """A token as anyone could mint it when tokens were an unkeyed hash."""
    fingerprint = hashlib.sha256(json.dumps(filters, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return _b64(json.dumps({"c": cursor, "f": fingerprint}, separators=(",", ":")).encode())


def _assert_invalid_token(failure: RpcFailure, case: str = "") -> None:
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN"), (case, failure)
    assert failure.violations[0][0] == "page_token"


def test_forged_page_tokens_are_invalid_page_token(world):
    genuine = _first_token(world)
    body, _, mac = genuine.partition(".")
    cursor = json.loads(_unb64(body))
    tampered = _b64(json.dumps({**cursor, "c": {**cursor["c"], "id": "it_zzzz"}}, separators=(",", ":")).encode())
    jobs_filters = {"op": "processing.jobs.list", "project_id": "alpha", "status": None, "job_type_id": None,
                    "start": None, "end": None}  # fmt: skip
    items_filters = {"op": "items.list", "project_id": "alpha", "collection_id": None, "bbox": None, "start": None,
                     "end": None, "intersects": None}  # fmt: skip
    forged = {
        "random bytes": _b64(secrets.token_bytes(48)),
        "random bytes with a dot": f"{_b64(secrets.token_bytes(30))}.{_b64(secrets.token_bytes(16))}",
        "tampered cursor": f"{tampered}.{mac}",
        "no signature": body,
        "garbage": "%%%.###",
        "huge": "A" * 100_000,
        "unkeyed cursor of junk": _unkeyed_token({"datetime": "not a time", "id": 1}, items_filters),
    }
    for name, token in forged.items():
        params = catalog_pb2.ItemsListParams(project_id="alpha", page_size=1, page_token=token)
        _assert_invalid_token(_fails(world, "items.list", params), name)
    jobs = processing_pb2.ProcessingJobsListParams(
        project_id="alpha", page_token=_unkeyed_token({"create_time": "not a time", "id": 1}, jobs_filters)
    )
    _assert_invalid_token(_fails(world, "processing.jobs.list", jobs))


def test_a_page_token_only_works_for_the_list_and_project_it_came_from(world):
    genuine = _first_token(world)
    other_list = credits_pb2.CreditsLedgerListParams(project_id="alpha", page_token=genuine)
    _assert_invalid_token(_fails(world, "credits.ledger.list", other_list))
    other_filter = catalog_pb2.ItemsListParams(project_id="alpha", collection_id="x", page_token=genuine)
    _assert_invalid_token(_fails(world, "items.list", other_filter))
    other_project = catalog_pb2.ItemsListParams(project_id="beta", page_token=genuine)
    _assert_invalid_token(_fails(world, "items.list", other_project, token="admin"))


def test_page_tokens_are_signed_with_the_key_in_the_database_and_every_replica_accepts_them(world, tmp_path):
    with psycopg.connect(world.database_url) as conn:
        (secret,) = conn.execute("SELECT secret FROM server_keys WHERE name = 'page_token'").fetchone()
    body, _, mac = _first_token(world).partition(".")
    assert hmac.compare_digest(_unb64(mac), hmac.new(bytes(secret), _unb64(body), hashlib.sha256).digest()[:16])
    replica = ServerProcess(database_url=world.database_url, home=tmp_path).start()
    try:
        with replica.channel() as channel:
            other = KernelClient(channel, world.tokens["alpha"])
            names, token = [], ""
            for page in range(len(world.items)):
                client = other if page % 2 else world.client("alpha")
                params = catalog_pb2.ItemsListParams(project_id="alpha", page_size=1, page_token=token)
                result = client.execute("items.list", params)
                names += [item.name for item in result.items]
                token = result.next_page_token
            assert not token and sorted(names) == sorted(world.items)
    finally:
        replica.stop()


# --- Error trailers -----------------------------------------------------------------------


def test_errors_quoting_four_byte_characters_reach_the_client_whole(world):
    for length in (300, 3_000, 20_000):
        failure = _fails(world, "items.get", catalog_pb2.ItemsGetParams(item_id=SMILE * length))
        assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "ITEM_NOT_FOUND"), failure
        assert failure.message.startswith("item '" + SMILE)
    # Many field violations, each quoting client text (unknown params keys).
    params = {f"{SMILE * 100}{n}": 1 for n in range(200)}
    failure = _analytics_fails(world, "zonal_stats", params)
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ANALYTICS_PARAMS"), failure
    assert failure.violations and failure.has_error_info


# --- band_mapping with band indexes -------------------------------------------------------


def test_band_mapping_takes_band_indexes_with_the_answer_of_band_names(world):
    before, after = world.items[BEFORE], world.items[AFTER]
    calls = [
        ("zonal_stats", {"item_id": before, "index_name": "NDVI", "geometry": AOI}),
        ("zonal_stats", {"item_id": before, "index_name": "NDVI", "geometry": AOI, "coverage": "exact"}),
        ("time_series", {"item_ids": [before, after], "index_name": "NDVI", "geometry": AOI}),
        (
            "change_detection",
            {
                "before_item_id": before,
                "after_item_id": after,
                "index_name": "NDVI",
                "change_threshold": 0.05,
                "geometry": AOI,
            },
        ),
    ]
    for method, params in calls:
        by_index = _analytics(world, method, {**params, "band_mapping": BY_INDEX})
        by_name = _analytics(world, method, {**params, "band_mapping": BY_NAME})
        for result in (by_index, by_name):
            result.pop("artifacts", None)  # change_detection stores a fresh raster per call
        assert json.dumps(by_index, sort_keys=True) == json.dumps(by_name, sort_keys=True), method
    status, body = _http(
        world,
        "/v1/op/analytics.execute",
        {"operation": "zonal_stats", "params": {**calls[0][1], "band_mapping": {"red": 3, "nir": 4}}},
    )
    assert status == 200, body


@pytest.mark.parametrize(
    ("mapping", "reason"),
    [
        pytest.param({"RED": 9, "NIR": 4}, "MISSING_BANDS", id="past-the-last-band"),
        pytest.param({"RED": 0, "NIR": 4}, "INVALID_ANALYTICS_PARAMS", id="zero"),
        pytest.param({"RED": 2.5, "NIR": 4}, "INVALID_ANALYTICS_PARAMS", id="fraction"),
        pytest.param({"RED": 1e300, "NIR": 4}, "MISSING_BANDS", id="huge"),
    ],
)
def test_a_band_index_out_of_range_is_invalid_argument(world, mapping, reason):
    params = {"item_id": world.items[BEFORE], "index_name": "NDVI", "geometry": AOI, "band_mapping": mapping}
    failure = _analytics_fails(world, "zonal_stats", params)
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason), failure
    assert any(field.startswith("params.band_mapping") for field, _ in failure.violations), failure.violations


# --- Resuming WatchJob --------------------------------------------------------------------


def _finished_job(world) -> tuple[str, kernel_pb2.WatchJobResponse]:
    """A job that ran to its end, and the snapshot a fresh watch of it gets."""
    client = world.client("alpha")
    job = create_and_dispatch(client, "test_noop", {}).job
    wait_terminal(client, job.id)
    (snapshot,) = watch(client, job.id)
    return job.id, snapshot


def test_resuming_a_finished_job_at_its_last_event_sends_nothing_and_ends(world):
    client = world.client("alpha")
    job_id, snapshot = _finished_job(world)
    last = snapshot.sequence
    assert last >= 3  # created, dispatched, ... ended
    for after in (last, last + 1, last + 1000):
        assert watch(client, job_id, after=after, timeout=20) == []  # ended OK, not by the deadline
    for after in range(1, last):
        resumed = watch(client, job_id, after=after)
        assert [e.sequence for e in resumed] == list(range(after + 1, last + 1))
        assert resumed[-1].job == snapshot.job
    request = urllib.request.Request(f"{world.server.http_url}/v1/jobs/{job_id}/events?after_sequence={last}")
    request.add_header("Authorization", f"Bearer {world.tokens['alpha']}")
    with urllib.request.urlopen(request, timeout=20) as response:
        assert (response.status, response.read()) == (204, b"")
    with Client(world.server.address, world.tokens["alpha"]) as sdk:
        assert list(sdk.jobs.watch(job_id, after_sequence=last, timeout=20)) == []
        assert [e.sequence for e in sdk.jobs.watch(job_id, after_sequence=last - 1, timeout=20)] == [last]


# --- MCP ----------------------------------------------------------------------------------


def test_the_mcp_projection_gets_the_same_answers(world):
    mcp = McpClient(world.server.address, world.tokens["alpha"], world.home / "mcp-input.log")
    try:
        late = mcp.error("items_list", {"project_id": "alpha", "datetime_start": "10000-01-01T00:00:00Z"})
        assert late["code"] == "INVALID_ARGUMENT"
        forged = mcp.error("items_list", {"project_id": "alpha", "page_token": _b64(secrets.token_bytes(40))})
        assert (forged["code"], forged["reason"]) == ("INVALID_ARGUMENT", "INVALID_PAGE_TOKEN")
        params = {"item_id": world.items[BEFORE], "index_name": "NDVI", "geometry": AOI}
        by_index = mcp.ok("analytics_zonal_stats", {**params, "band_mapping": BY_INDEX})
        assert by_index["result"] == mcp.ok("analytics_zonal_stats", {**params, "band_mapping": BY_NAME})["result"]
        far = {"type": "Polygon", "coordinates": NEAR_ANTIMERIDIAN}
        counted = mcp.ok("analytics_zonal_stats", {"item_id": world.items[BEFORE], "band": 1, "geometry": far})
        assert counted["result"]["zones"][0]["stats"]["count"] == 0
        histogram = {"item_id": world.items[BEFORE], "band": 1, "geometry": AOI, "histogram": {"range": [0, 5e-324]}}
        assert mcp.error("analytics_zonal_stats", histogram)["reason"] == "INVALID_ANALYTICS_PARAMS"
        huge = {"project_id": "alpha", "job_type_id": "test_noop", "input_params": {"n": 10**400}}
        assert mcp.error("processing_create", huge)["reason"] == "PARAMS_UNPARSEABLE"
        nested: Any = []
        for _ in range(150):
            nested = [nested]
        deep = mcp.error("analytics_zonal_stats", {"item_id": world.items[BEFORE], "band": 1, "geometry": nested})
        assert deep["code"] == "INVALID_ARGUMENT", deep
        deep = mcp.error("items_list", {"project_id": "alpha", "intersects": {"a": nested}})
        assert deep["code"] == "INVALID_ARGUMENT", deep
    finally:
        mcp.close()
