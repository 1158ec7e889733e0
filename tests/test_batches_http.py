"""WatchJobs over HTTP (`GET /v1/projects/{project_id}/jobs/events`, server-
sent events) and the batch operations through `POST /v1/op`: a batch's events
with per-job resume, and the route's auth (own project, other project,
missing scope, no token, unknown token)."""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.jobs_support import running_world

CLIP_AOI = {"type": "Polygon", "coordinates": [[[14.555, 45.868], [14.56, 45.868], [14.56, 45.872], [14.555, 45.868]]]}


@pytest.fixture(scope="module")
def http_world(database_factory, tmp_path_factory):
    with running_world(database_factory.create(), tmp_path_factory.mktemp("batches_http")) as world:
        yield world


def _post(world, path: str, body: dict[str, Any], token: str = "alpha") -> dict[str, Any]:
    request = urllib.request.Request(
        world.server.http_url + path, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {world.tokens[token]}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _events(world, path: str, token: str | None, count: int | None = None) -> tuple[int, list[dict[str, Any]]]:
    """(status, events) of the stream; stops after `count` events when given."""
    request = urllib.request.Request(world.server.http_url + path)
    if token is not None:
        request.add_header("Authorization", f"Bearer {world.tokens.get(token, token)}")
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            if response.status == 204:
                return 204, []
            assert response.headers["Content-Type"].startswith("text/event-stream")
            for raw_line in response:
                line = raw_line.decode().rstrip("\n")
                if not line:
                    if current:
                        events.append(current)
                        if count is not None and len(events) >= count:
                            break
                    current = {}
                    continue
                field, _, value = line.partition(": ")
                current[field] = json.loads(value) if field == "data" else value
            return response.status, events
    except urllib.error.HTTPError as err:
        return err.code, [json.loads(err.read())]


def _clip_batch(world) -> dict[str, Any]:
    """Two clips of one item (each its own output name: one name twice is refused, OUTPUT_NAME_TAKEN)."""
    item_id = next(iter(world.items.values()))
    requests = [
        {"job_type_id": "clip", "input_params": {"source_item_id": item_id, "aoi_geometry": CLIP_AOI,
                                                 "output_name": f"sse_{secrets.token_hex(4)}"}}
        for _ in range(2)
    ]  # fmt: skip
    return _post(world, "/v1/op/processing.create_batch", {"project_id": "alpha", "requests": requests})


def test_a_batch_streams_over_sse_and_resumes_per_job(http_world):
    batch = _clip_batch(http_world)
    assert batch.get("created_count", batch.get("createdCount")) == 2, batch["errors"]
    batch_id = batch.get("batchId") or batch["batch_id"]
    ids = {job["id"] for job in batch["jobs"]}
    path = f"/v1/projects/alpha/jobs/events?batch_id={batch_id}"
    status, first = _events(http_world, path, "alpha", count=2)
    assert status == 200 and {e["data"]["job"]["id"] for e in first} == ids
    assert all(e["event"] == "snapshot" and e["id"] == f"{e['data']['job']['id']}:1" for e in first)
    for job_id in ids:
        _post(http_world, "/v1/op/processing.jobs.cancel", {"job_id": job_id})
    after = ",".join(e["id"] for e in first)
    status, rest = _events(http_world, f"{path}&after_sequences={after}", "alpha")
    assert status == 200 and {e["data"]["job"]["id"] for e in rest} == ids
    assert all(e["event"] == "cancelled" for e in rest)
    done = ",".join(e["id"] for e in rest)
    assert _events(http_world, f"{path}&after_sequences={done}", "alpha")[0] == 204


def test_the_project_events_route_checks_auth_and_input(http_world):
    batch = _clip_batch(http_world)
    batch_id = batch.get("batchId") or batch["batch_id"]
    path = f"/v1/projects/alpha/jobs/events?batch_id={batch_id}"
    status, body = _events(http_world, path, None)
    assert status == 401 and body[0]["reason"] == "UNAUTHENTICATED"
    assert _events(http_world, path, "not-a-token")[0] == 401
    status, body = _events(http_world, "/v1/projects/alpha/jobs/events", "beta")
    assert status == 403 and body[0]["reason"] == "PROJECT_ACCESS_DENIED"
    status, body = _events(http_world, path.replace("/alpha/", "/beta/"), "beta")
    assert status == 403 and body[0]["reason"] == "PROJECT_ACCESS_DENIED"

    async def reader(services: Any) -> str:
        return (await services.tokens.create_token(name="no-read", kind="user", scopes=["catalog:read"],
                                                   project_ids=["alpha"]))[1]  # fmt: skip

    no_read = http_world.with_services(reader)
    status, body = _events(http_world, path, no_read)
    assert status == 403 and body[0]["reason"] == "MISSING_SCOPE"
    for bad in ("nonsense", "job_x:99999999999999999999", "job_x:%C2%B2", "job_x:" + "9" * 5000):
        status, body = _events(http_world, path + "&after_sequences=" + bad, "alpha")
        assert status == 400 and body[0]["reason"] == "INVALID_SEQUENCE", (bad[:40], status, body)
    status, body = _events(http_world, "/v1/projects/alpha/jobs/events?status=NOPE", "alpha")
    assert status == 400 and body[0]["reason"] == "INVALID_STATUS"
    status, body = _events(http_world, "/v1/projects/alpha/jobs/events?batch_id=batch_missing", "alpha")
    assert status == 404 and body[0]["reason"] == "BATCH_NOT_FOUND"
    for job in batch["jobs"]:
        _post(http_world, "/v1/op/processing.jobs.cancel", {"job_id": job["id"]})
