"""README promises about the server process (issue 17): SIGTERM drains calls in
flight and refuses new ones, a revoked token stops working within the token
cache time (5 s by default), and a lease held through a replica that died is
expired by another replica, whose worker then clips exactly what
rasterio.mask gives. Bounds on time are generous: behaviour, not speed."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import signal
import time
import urllib.error

import grpc
import pytest

from geopera.v1 import catalog_pb2, kernel_pb2, kernel_pb2_grpc, processing_pb2
from tests.conftest import SAMPLES, TEST_SERVER_ENV
from tests.jobs_support import (
    FAST_LEASES,
    STATUS,
    RawWorker,
    assert_clip_is_rasterio_mask,
    balance,
    declaration_of,
    ledger,
    start_world,
    struct,
    watch,
)
from tests.support.client import KernelClient, RpcFailure
from tests.support.mcp_client import http_post
from tests.support.server import ServerProcess
from tests.support.workers import WorkerProcess

SOURCE = "s2l1c_slovenia_20150711_bgrn"
AOI = json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())


def _projects_list(channel: grpc.Channel, token: str, timeout: float = 5):
    return KernelClient(channel, token).execute("projects.list", catalog_pb2.ProjectsListParams(), timeout=timeout)


# -- SIGTERM ------------------------------------------------------------------------------


def test_sigterm_lets_a_call_in_flight_finish_and_refuses_new_ones(database_url, tmp_path):
    world = start_world(database_url, tmp_path)
    try:
        token = world.tokens["alpha"]
        data = os.urandom(2 << 20)  # an upload takes any bytes; items.create would check them
        half = len(data) // 2
        outbound: queue.Queue[kernel_pb2.UploadAssetRequest | None] = queue.Queue()

        def requests():
            while (message := outbound.get()) is not None:
                yield message

        stub = kernel_pb2_grpc.KernelServiceStub(world.channel)
        upload = stub.UploadAsset.future(requests(), metadata=[("authorization", f"Bearer {token}")], timeout=60)
        outbound.put(kernel_pb2.UploadAssetRequest(
            project_id="alpha", file_name="drain.bin", total_size=len(data),
            sha256=hashlib.sha256(data).hexdigest(), write_offset=0, data=data[:half]))  # fmt: skip
        # The first half is staged: the upload is a call in flight on the server.
        deadline = time.monotonic() + 20
        while _staged_bytes(tmp_path) < half:
            assert time.monotonic() < deadline, "the first half never reached the server"
            time.sleep(0.05)

        world.server.process.send_signal(signal.SIGTERM)
        # New calls are refused (on a new connection) while the upload is still open...
        refused = None
        deadline = time.monotonic() + 8
        while refused is None and time.monotonic() < deadline:
            fresh = grpc.insecure_channel(world.server.address)
            try:
                _projects_list(fresh, token, timeout=1)
            except RpcFailure as failure:
                refused = failure
            finally:
                fresh.close()
            time.sleep(0.1)
        assert refused is not None, "new calls were still served after SIGTERM"
        assert (refused.code, refused.reason) == (grpc.StatusCode.UNAVAILABLE, "SERVER_SHUTTING_DOWN"), refused
        # The HTTP projection stops listening at SIGTERM: a new HTTP call is not served either.
        with pytest.raises(urllib.error.URLError) as refused_http:
            http_post(world, "projects.list", {}, token=token)
        assert isinstance(refused_http.value.reason, ConnectionRefusedError), refused_http.value
        assert not upload.done()
        # ... and the call in flight completes: the rest of the bytes, then its answer.
        outbound.put(kernel_pb2.UploadAssetRequest(write_offset=half, data=data[half:], finish_write=True))
        outbound.put(None)
        result = upload.result(timeout=30)
        assert result.committed_size == len(data) and result.sha256 == hashlib.sha256(data).hexdigest()
        assert result.upload_id
        assert world.server.process.wait(30) == 0
    finally:
        world.channel.close()
        world.server.stop()


def _staged_bytes(home) -> int:
    """Bytes of uploads being received, as the server stages them under its home."""
    return sum(p.stat().st_size for p in home.rglob("*") if p.is_file() and "upload" in str(p.relative_to(home)))


# -- token revocation at the default cache time --------------------------------------------


def test_a_revoked_token_works_at_most_the_default_5_s_then_is_unauthenticated(world):
    token_id, token = world.with_services(
        lambda services: services.tokens.create_token(
            name="revoked", kind="user", scopes=["catalog:read"], project_ids=["alpha"]
        )
    )
    _projects_list(world.channel, token)  # cached by the server from now on
    world.revoke_token(token_id)  # by another process: the server's cache is not told
    revoked_at = time.monotonic()
    last_success, first_failure = None, None
    while time.monotonic() - revoked_at < 15:
        try:
            _projects_list(world.channel, token)
            assert first_failure is None, "a revoked token worked again after it was refused"
            last_success = time.monotonic() - revoked_at
        except RpcFailure as failure:
            assert failure.code == grpc.StatusCode.UNAUTHENTICATED, failure
            if first_failure is None:
                first_failure = time.monotonic() - revoked_at
            elif time.monotonic() - revoked_at - first_failure > 2:
                break  # refused for good
        time.sleep(0.1)
    assert first_failure is not None, "the revoked token still worked 15 s later"
    # The default cache time is 5 s; a little more for the calls themselves.
    assert last_success is None or last_success <= 5.5, last_success
    assert first_failure <= 7.0, first_failure


# -- a lease expired by another replica -------------------------------------------------------


def test_a_lease_held_through_a_dead_replica_is_expired_by_another_and_the_clip_matches_rasterio_mask(
    database_url, tmp_path
):
    replica_a = start_world(database_url, tmp_path)
    replica_b = ServerProcess(database_url=database_url, home=tmp_path, extra_env={**FAST_LEASES, **TEST_SERVER_ENV})
    replica_b.log_path = tmp_path / "b.log"
    replica_b.port_file = tmp_path / "b.port"
    replica_b.start()
    channel_b = replica_b.channel()
    rescuer = None
    raw = None
    try:
        on_b = KernelClient(channel_b, replica_a.tokens["alpha"])
        before = balance(on_b)
        # A worker session on replica A takes the clip and then goes silent.
        raw = RawWorker(replica_a.channel, replica_a.tokens["worker"], [declaration_of(replica_a, "clip")])
        job = on_b.execute("clip.create_from_item", processing_pb2.ClipCreateFromItemParams(
            source_item_id=replica_a.items[SOURCE], project_id="alpha", aoi_geometry=struct(AOI),
            output_name="across_replicas"),
        ).job  # fmt: skip
        assignment = raw.next_assignment(timeout=20)
        assert assignment.job.id == job.id and assignment.attempt == 1
        # Replica A dies with the lease: it can expire nothing now; only B can.
        replica_a.server.stop(signal.SIGKILL)
        raw.die()
        rescuer = WorkerProcess(replica_b.address, replica_a.tokens["worker"], tmp_path, name="rescuer").start()
        events = watch(on_b, job.id, timeout=120)
        final = events[-1].job
        assert final.status == STATUS.JOB_STATUS_SUCCEEDED, final.error
        assert final.attempt == 2 and final.worker_id != raw.welcome.worker_id
        retry = next(e for e in events if e.event_type == "retrying")
        assert f"worker {raw.welcome.worker_id} lost its lease" in retry.job.message
        assert any('"lease reaper: 1"' in line or "lease reaper: 1" in line for line in replica_b.log().splitlines())
        kinds = [e.kind for e in ledger(on_b, job_id=job.id)]
        assert (kinds.count(2), kinds.count(3)) == (1, 1)  # reserved once, captured once
        assert balance(on_b).held == before.held

        # The clip run through the surviving replica: pixel for pixel what
        # rasterio.mask gives with the AOI reprojected by rasterio.warp itself.
        item = on_b.execute("items.get", catalog_pb2.ItemsGetParams(item_id=final.output_item_ids[0])).item
        body, _ = on_b.download(item.assets["data"].href)
        output = tmp_path / "clip.tif"
        output.write_bytes(body)
        assert_clip_is_rasterio_mask(output)
    finally:
        if raw is not None:
            raw.die()
        if rescuer is not None:
            rescuer.stop()
        channel_b.close()
        replica_b.stop()
        replica_a.channel.close()
        replica_a.server.stop()
