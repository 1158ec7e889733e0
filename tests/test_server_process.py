"""The server process itself: readiness, health, reflection, graceful stop,
and the embedded PostgreSQL default."""

from __future__ import annotations

import signal
import time

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from geopera.v1 import catalog_pb2
from geopera_kernel.server.store.database import _MIGRATION_LOCK_ID
from tests.support.client import KernelClient, RpcFailure
from tests.support.registry import REGISTRY
from tests.support.server import ServerProcess


def _health(channel: grpc.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def test_health_is_not_serving_until_the_database_is_ready(database_url, tmp_path):
    # Holding the migration lock keeps the server in its start-up phase.
    with psycopg.connect(database_url, autocommit=True) as blocker:
        blocker.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK_ID,))
        server = ServerProcess(database_url=database_url, home=tmp_path).launch()
        try:
            port = server.wait_listening()
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                assert _health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
                assert _health(channel, "geopera.v1.KernelService") == health_pb2.HealthCheckResponse.NOT_SERVING
                with pytest.raises(RpcFailure) as info:
                    KernelClient(channel, "x").execute("projects.list", catalog_pb2.ProjectsListParams())
                assert (info.value.code, info.value.reason) == (grpc.StatusCode.UNAVAILABLE, "NOT_READY")
                blocker.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK_ID,))
                deadline = time.monotonic() + 30
                while _health(channel) != health_pb2.HealthCheckResponse.SERVING:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
                assert _health(channel, "geopera.v1.KernelService") == health_pb2.HealthCheckResponse.SERVING
        finally:
            server.stop()


def test_reflection_resolves_every_payload_type_and_the_error_details(world):
    stub = reflection_pb2_grpc.ServerReflectionStub(world.channel)
    symbols = [op.params_type.DESCRIPTOR.full_name for op in REGISTRY]
    symbols += [op.result_type.DESCRIPTOR.full_name for op in REGISTRY]
    symbols += [
        "google.rpc.ErrorInfo",
        "google.rpc.BadRequest",
        "google.rpc.Status",
        "geopera.v1.ExpectedSchema",
        "geopera.v1.ClipCreateFromItemParams",
        "geopera.v1.AnalyticsExecuteResult",
    ]
    requests = [reflection_pb2.ServerReflectionRequest(file_containing_symbol=s) for s in symbols]
    responses = list(stub.ServerReflectionInfo(iter(requests), timeout=10))
    assert len(responses) == len(symbols)
    for symbol, response in zip(symbols, responses, strict=True):
        assert response.WhichOneof("message_response") == "file_descriptor_response", symbol


def test_sigterm_stops_gracefully(database_url, tmp_path):
    server = ServerProcess(database_url=database_url, home=tmp_path).start()
    assert server.stop(signal.SIGTERM) == 0
    assert '"msg":"stopped"' in server.log()


def test_the_embedded_database_is_the_default(tmp_path):
    """No GEOPERA_DATABASE_URL: the server runs its own PostgreSQL under GEOPERA_HOME."""
    server = ServerProcess(database_url=None, home=tmp_path / "home").start(timeout=120)
    try:
        assert (tmp_path / "home" / "pgdata" / "PG_VERSION").exists()
        with server.channel() as channel:
            assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(RpcFailure) as info:
                KernelClient(channel, "gpk_unknown").execute("projects.list", catalog_pb2.ProjectsListParams())
            assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        assert server.stop() == 0
