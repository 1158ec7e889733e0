"""A client-streaming call the server refuses before its client has finished
writing: the client must see the server's status and ErrorInfo, not a transport
error. A grpc.aio client whose write fails after the server answered reports
INTERNAL "Internal error from Core" in place of the status it received
(grpc/grpc#36066), so the edge reads the rest of a refused stream (within bounds)
before answering. `make fuzz` found it: one UploadAsset in a few thousand."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from geopera.v1 import kernel_pb2, kernel_pb2_grpc
from geopera_kernel.server.edge.interceptor import DRAIN_MAX_SECONDS
from tests.fuzz.invariants import Outcome, rpc_error_outcome

CHUNK = 64 << 10  # 64 messages of it: 4 MiB, within what the edge reads of a refused stream


async def _upload(address: str, token: str, first: kernel_pb2.UploadAssetRequest, chunks: int) -> Outcome:
    """An upload of `first` then `chunks` more 64 KiB messages, written as fast as the
    channel takes them; the server refuses it on `first`."""

    async def messages() -> AsyncIterator[kernel_pb2.UploadAssetRequest]:
        yield first
        for index in range(chunks):
            yield kernel_pb2.UploadAssetRequest(data=b"x" * CHUNK, write_offset=(index + 1) * CHUNK)

    async with grpc.aio.insecure_channel(address) as channel:
        stub = kernel_pb2_grpc.KernelServiceStub(channel)
        metadata = (("authorization", f"Bearer {token}"),)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.UploadAsset(messages(), metadata=metadata, timeout=30)
    return rpc_error_outcome(info.value)


GOOD = kernel_pb2.UploadAssetRequest(project_id="alpha", file_name="a.tif", data=b"x")
REFUSALS = {
    # By the catalogue: the first message names no project.
    "no project": (kernel_pb2.UploadAssetRequest(file_name="a.tif", data=b"x"), "admin", "PROJECT_ID_REQUIRED"),
    # While decoding, before the catalogue sees the message.
    "NUL": (
        kernel_pb2.UploadAssetRequest(project_id="alpha", file_name="a\x00b", data=b"x"),
        "admin",
        "INVALID_CHARACTER",
    ),
    # By the catalogue's scope check: a worker credential may not upload.
    "scope": (GOOD, "worker", "MISSING_SCOPE"),
    # By the edge, before the handler runs.
    "token": (GOOD, "not-a-token", "UNAUTHENTICATED"),
}


async def _many(address: str, token: str, first: kernel_pb2.UploadAssetRequest, calls: int) -> list[Outcome]:
    return list(await asyncio.gather(*(_upload(address, token, first, chunks=64) for _ in range(calls))))


@pytest.mark.parametrize("case", list(REFUSALS))
def test_an_aio_client_still_writing_sees_the_refusal_the_server_sent(world, case):
    first, token_name, reason = REFUSALS[case]
    failures = asyncio.run(_many(world.server.address, world.tokens.get(token_name, token_name), first, calls=16))
    seen = [(f.code, f.reason, f.has_error_info) for f in failures]
    assert all(reason == r and info for _, r, info in seen), seen


async def _stalled_upload() -> AsyncIterator[kernel_pb2.UploadAssetRequest]:
    """A first message the server refuses (no project), then nothing for a minute."""
    yield REFUSALS["no project"][0]
    await asyncio.sleep(60)


def test_a_refused_stream_whose_client_does_not_finish_is_answered_within_the_bound(world):
    # The first message, then nothing for a minute: the edge stops reading after
    # DRAIN_MAX_SECONDS and answers, rather than waiting on the client.
    async def call() -> Outcome:
        async with grpc.aio.insecure_channel(world.server.address) as channel:
            stub = kernel_pb2_grpc.KernelServiceStub(channel)
            metadata = (("authorization", f"Bearer {world.tokens['admin']}"),)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.UploadAsset(_stalled_upload(), metadata=metadata, timeout=90)
        return rpc_error_outcome(info.value)

    started = time.monotonic()
    failure = asyncio.run(call())
    waited = time.monotonic() - started
    assert failure.reason == "PROJECT_ID_REQUIRED" and failure.has_error_info
    assert DRAIN_MAX_SECONDS <= waited < DRAIN_MAX_SECONDS + 10, waited


def _access_line(world, request_id: str, timeout: float = 10.0) -> dict | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for raw in world.server.log_path.read_text().splitlines():
            if f'"request_id":"{request_id}"' in raw and '"logger":"geopera.access"' in raw:
                return json.loads(raw)
        time.sleep(0.05)
    return None


def test_a_client_that_goes_away_while_its_refused_stream_is_read_ends_the_call(world):
    # The client cancels while the edge is still reading its refused stream: the call ends
    # then (its access log line is written at once, not after the bound or the client's
    # minute) and the server serves the next call. (The line keeps the refusal's code: the
    # stream just ends for the edge, as when a client half-closes.)
    request_id = f"req_drain_{secrets.token_hex(4)}"

    async def call() -> None:
        async with grpc.aio.insecure_channel(world.server.address) as channel:
            stub = kernel_pb2_grpc.KernelServiceStub(channel)
            metadata = (("authorization", f"Bearer {world.tokens['admin']}"), ("x-request-id", request_id))
            upload = stub.UploadAsset(_stalled_upload(), metadata=metadata, timeout=90)
            await asyncio.sleep(DRAIN_MAX_SECONDS / 4)  # the edge is reading what is left
            upload.cancel()
            with pytest.raises(asyncio.CancelledError):
                await upload

    asyncio.run(call())
    line = _access_line(world, request_id)
    assert line is not None and line["duration_ms"] < 1000 * DRAIN_MAX_SECONDS, line
    again = asyncio.run(_upload(world.server.address, world.tokens["admin"], REFUSALS["no project"][0], chunks=1))
    assert again.reason == "PROJECT_ID_REQUIRED"
