"""Every typed helper of the sync client once, paging iterators, the generic
`execute` and typed errors, against a real server and worker."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid

import grpc
import pytest
from geopera_sdk import (
    Client,
    FailedPrecondition,
    GeoperaError,
    InvalidArgument,
    Job,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    params_type,
    result_type,
)

from geopera.v1 import catalog_pb2, processing_pb2, resources_pb2
from tests.conftest import SAMPLES

S2 = "s2l1c_slovenia_20150711_bgrn"
AOI = json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())


def test_message_types_follow_the_naming_rule():
    assert params_type("clip.create_from_item") is processing_pb2.ClipCreateFromItemParams
    assert result_type("processing.jobs.list") is processing_pb2.ProcessingJobsListResult
    assert params_type("items.list") is catalog_pb2.ItemsListParams


def test_projects(client, admin):
    assert client.projects.get("alpha").display_name == "Alpha"
    assert [p.id for p in client.projects.list()] == ["alpha"]
    everything = [p.id for p in admin.projects.list(page_size=1)]
    assert everything == sorted(everything) and {"alpha", "beta"} <= set(everything)
    assert [p.id for p in admin.projects.list(page_size=1, max_items=1)] == everything[:1]


def test_items_get_list_and_filters(client, world):
    item = client.items.get(world.items[S2])
    assert item.name == S2 and item.assets["data"].href == f"items/{item.id}/assets/data"
    everything = list(client.items.list("alpha", page_size=100))
    assert len(everything) >= 7
    # Across pages of 2, stopping after 5: the same first five in order.
    paged = list(client.items.list("alpha", page_size=2, max_items=5))
    assert [i.id for i in paged] == [i.id for i in everything[:5]]
    assert list(client.items.list("alpha", max_items=0)) == []
    july = list(
        client.items.list(
            "alpha",
            collection_id="s2_slovenia",
            datetime_start=dt.datetime(2015, 7, 1, tzinfo=dt.UTC),
            datetime_end="2015-08-01T00:00:00Z",
        )
    )
    assert {i.name for i in july} >= {S2, "s2l1c_slovenia_20150731_bgrn"}
    assert all(dt.datetime(2015, 7, 1) <= i.datetime.ToDatetime() < dt.datetime(2015, 8, 1) for i in july)
    assert list(client.items.list("alpha", bbox=[0, 0, 1, 1])) == []
    assert any(i.id == item.id for i in client.items.list("alpha", intersects=AOI))


def test_credits_balance_and_ledger(client):
    balance = client.credits.balance("alpha")
    assert balance.project_id == "alpha" and balance.granted_total == 1000
    entries = list(client.credits.ledger("alpha", page_size=1))
    assert entries and entries[-1].kind == resources_pb2.LEDGER_ENTRY_KIND_GRANT
    assert [e.id for e in client.credits.ledger("alpha", page_size=1, max_items=2)] == [e.id for e in entries[:2]]


def test_job_types_and_workers(client, admin):
    types = {t.job_type_id: t for t in client.job_types.list()}
    assert {"clip", "test_cog", "test_noop", "test_fail"} <= set(types)
    # A worker counts as connected while its heartbeats are younger than the lease (1.5 s
    # here): on a loaded machine one may be late, so wait for the next one.
    deadline = time.monotonic() + 20
    while (cog := client.job_types.get("test_cog")).connected_workers < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cog.connected_workers >= 1 and "name" in cog.input_schema["properties"]
    while not (workers := admin.workers.list()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert workers and workers[0].connected and "test_cog" in workers[0].job_type_ids
    assert len(admin.workers.list(include_disconnected=True)) >= len(workers)


def test_create_dispatch_get_wait_list_and_cancel(client):
    pending = client.jobs.create("alpha", "test_noop", {"note": "sdk"})
    assert isinstance(pending, Job) and pending.status_name == "PENDING" and pending.credits_reserved >= 1
    assert client.jobs.get(pending.id).status == resources_pb2.JOB_STATUS_PENDING
    dispatched = client.jobs.dispatch(pending.id)
    assert dispatched.id == pending.id and dispatched.dispatch_result is not None
    assert dispatched.dispatch_result.accepted
    assert dispatched.wait(timeout=30).status_name == "SUCCEEDED"
    assert pending.refresh().succeeded and pending.terminal

    running = client.jobs.create_and_dispatch(
        "alpha", "test_cog", {"name": "sdk_cancelled", "steps": 200, "step_seconds": 0.05}
    )
    cancelled = running.cancel(reason="changed my mind")
    assert cancelled.status_name == "CANCELLED" and cancelled.wait(timeout=30).status_name == "CANCELLED"
    again = client.jobs.cancel(running.id)  # cancelling a cancelled job returns it unchanged
    assert again.status_name == "CANCELLED"

    newest = list(client.jobs.list("alpha", page_size=1, max_items=2))
    assert [j.id for j in newest] == [running.id, pending.id]
    assert all(isinstance(j, Job) for j in newest)
    assert next(j.id for j in client.jobs.list("alpha", status="cancelled")) == running.id
    assert pending.id in {j.id for j in client.jobs.list("alpha", job_type_id="test_noop", page_size=1)}
    assert pending.id in {j.id for j in client.jobs.list("alpha", status=resources_pb2.JOB_STATUS_SUCCEEDED)}
    since = running.create_time.ToDatetime(tzinfo=dt.UTC)
    assert [j.id for j in client.jobs.list("alpha", create_time_start=since)] == [running.id]
    assert client.jobs.wait(pending.id, timeout=10).succeeded


def test_clip_watch_and_lineage(client, world):
    source = world.items[S2]
    job = client.clip(source, AOI, output_name="sdk_clip")  # project defaults to the source's
    assert job.project_id == "alpha" and job.result.assets_to_clip == 1 and list(job.result.asset_keys) == ["data"]
    watch = client.jobs.watch(job.id, timeout=60)
    events = list(watch)
    assert events[0].event_type == "snapshot" and events[-1].job.status == resources_pb2.JOB_STATUS_SUCCEEDED
    sequences = [e.sequence for e in events]
    assert sequences == sorted(set(sequences)) and watch.resumes == 0
    # Resuming from a sequence replays exactly what came later.
    later = list(client.jobs.watch(job.id, after_sequence=sequences[1]))
    assert [e.sequence for e in later] == sequences[2:]
    output = job.refresh().output_item_ids[0]
    assert client.items.get(output).name == "sdk_clip"
    lineage = client.items.lineage(output, direction="upstream")
    assert {n.id for n in lineage.nodes} >= {output, job.id, source}
    assert {(e.relation, e.source_item_id) for e in lineage.edges} >= {("derived_from", source)}


def test_execute_takes_messages_or_dicts(client, world):
    by_dict = client.execute("items.list", {"projectId": "alpha", "pageSize": 1, "collectionId": "s2_slovenia"})
    assert isinstance(by_dict, catalog_pb2.ItemsListResult) and len(by_dict.items) == 1
    by_snake = client.execute("items.list", {"project_id": "alpha", "page_size": 1})
    assert len(by_snake.items) == 1 and by_snake.next_page_token
    by_message = client.execute("items.get", catalog_pb2.ItemsGetParams(item_id=world.items[S2]))
    assert by_message.item.id == world.items[S2]
    assert client.execute("processing.job_types.list").job_types  # no params at all
    with pytest.raises(LookupError, match="not known"):
        client.execute("no_such.operation", {"x": 1})


def test_typed_errors(client, world):
    with pytest.raises(NotFound) as info:
        client.items.get("it_doesnotexist")
    error = info.value
    assert (error.code, error.reason, error.domain) == (grpc.StatusCode.NOT_FOUND, "ITEM_NOT_FOUND", "geopera.v1")
    assert error.request_id and isinstance(error, GeoperaError) and error.request_id in str(error)

    with pytest.raises(PermissionDenied) as info:
        client.items.get(next(iter(world.beta_items.values())))
    assert info.value.reason == "PROJECT_ACCESS_DENIED"
    with pytest.raises(PermissionDenied) as info:
        client.workers.list()
    assert info.value.reason == "MISSING_SCOPE"

    with Client(world.server.address, "gpk_not_a_token") as stranger, pytest.raises(Unauthenticated) as info:
        stranger.projects.get("alpha")
    assert info.value.code == grpc.StatusCode.UNAUTHENTICATED

    with pytest.raises(InvalidArgument) as info:
        list(client.items.list("alpha", bbox=[1, 2, 3]))
    assert info.value.reason == "INVALID_BBOX" and [f for f, _ in info.value.field_violations] == ["bbox"]

    with pytest.raises(InvalidArgument) as info:
        client.execute("no.such_op", catalog_pb2.ItemsGetParams())
    assert info.value.reason == "UNKNOWN_OPERATION" and "items.get" in info.value.metadata["known_operations"]


def test_invalid_job_params_carry_violations_and_the_expected_schema(client):
    before = client.credits.balance("alpha").available
    with pytest.raises(InvalidArgument) as info:
        client.jobs.create("alpha", "test_cog", {"steps": "many", "bogus": 1})
    error = info.value
    assert error.reason == "INVALID_JOB_PARAMS"
    violations = dict(error.field_violations)
    assert violations["input_params.steps"]
    assert violations["input_params.name"] == "'name' is required"
    assert violations["input_params.bogus"] == "unexpected property 'bogus'"
    assert error.expected_schema is not None and error.expected_schema_subject == "test_cog"
    assert {"name", "steps", "step_seconds"} <= set(error.expected_schema["properties"])
    assert client.credits.balance("alpha").available == before


def test_an_explicit_idempotency_key_makes_one_job(client):
    key = f"sdk-{uuid.uuid4()}"
    count = len(list(client.jobs.list("alpha", job_type_id="test_noop")))
    first = client.jobs.create("alpha", "test_noop", {"note": "once"}, idempotency_key=key)
    second = client.jobs.create("alpha", "test_noop", {"note": "once"}, idempotency_key=key)
    assert first.id == second.id
    assert len(list(client.jobs.list("alpha", job_type_id="test_noop"))) == count + 1
    # Without a key, each call is new work.
    assert client.jobs.create("alpha", "test_noop", {"note": "once"}).id != first.id
    with pytest.raises(FailedPrecondition) as info:
        client.jobs.create("alpha", "test_noop", {"note": "other"}, idempotency_key=key)
    assert info.value.reason == "IDEMPOTENCY_KEY_REUSED"
    client.jobs.cancel(first.id)
