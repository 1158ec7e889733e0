"""Fuzzing every operation over gRPC: for each operation of the registry,
hostile requests generated from its params descriptor (tests/fuzz/strategies.py)
are sent to a real server with `Execute`; so are hostile first messages of the
streaming RPCs. Nothing may answer INTERNAL/UNKNOWN or another status outside
the client errors, every error carries ErrorInfo, no error shows a server
path, and the server still serves afterwards.

A bounded, derandomized sample (GEOPERA_FUZZ_EXAMPLES per operation, default
30); `make fuzz` sends at least 10,000 per operation (bench/fuzz.py)."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from geopera.v1 import kernel_pb2
from tests.fuzz import strategies
from tests.fuzz.invariants import Outcome, grpc_violation, rpc_error_outcome
from tests.fuzz.support import FOCUS_SAMPLE, SAMPLE, Shown, assert_serving, first_failure, forbidden_texts
from tests.support.registry import REGISTRY

PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))
IDEMPOTENCY_KEYS = st.one_of(st.none(), st.text(alphabet=PRINTABLE, max_size=300))


def _execute(stub, request: kernel_pb2.ExecuteRequest, metadata: list[tuple[str, str]]) -> Outcome:
    try:
        stub.Execute(request, metadata=metadata, timeout=60)
    except grpc.RpcError as err:
        return rpc_error_outcome(err)
    return Outcome("OK")


@pytest.mark.parametrize("name", REGISTRY.names())
def test_hostile_params_get_clear_client_errors(world, corpus, name):
    """Fully generated requests, then each part of a valid request made
    hostile on its own (so the rest gets past validation and lookups)."""
    operation = REGISTRY.get(name)
    stub = world.client(None).stub
    tokens = {t: world.tokens[t] for t in ("alpha", "admin")}
    forbidden = forbidden_texts(world.home)
    spend = operation.idempotency_key

    failures: list[str] = []

    def send(request: kernel_pb2.ExecuteRequest, token: str, key: str | None) -> None:
        metadata = [("authorization", f"Bearer {tokens[token]}")]
        if key is not None:
            metadata.append(("idempotency-key", key))
        problem = grpc_violation(_execute(stub, request, metadata), forbidden)
        assert problem is None, f"{name}: {problem} for {Shown(request)!r} (token {token}, idempotency key {key!r})"

    def check(requests: st.SearchStrategy[kernel_pb2.ExecuteRequest], sample) -> None:
        @sample
        @given(
            request=requests.map(Shown),
            token=st.sampled_from(sorted(tokens)),
            key=IDEMPOTENCY_KEYS if spend else st.none(),
        )
        def one(request: Shown, token: str, key: str | None) -> None:
            send(request.value, token, key)

        try:
            one()
        except Exception as failure:  # keep going: report every part that fails
            failures.append(first_failure(failure))

    check(strategies.execute_requests(operation, corpus), SAMPLE)
    for focus in strategies.focus_points(operation, corpus):
        for known in strategies.catalogue(focus, corpus):
            try:
                send(strategies.pack(operation, known), "alpha", None)
            except AssertionError as failure:
                failures.append(str(failure)[:3000])
        focused = strategies.focused(focus, corpus, name).map(lambda m: strategies.pack(operation, m))
        check(focused, FOCUS_SAMPLE)
    assert_serving(world.channel)
    assert not failures, f"{len(failures)} failing parts:\n" + "\n".join(failures)


def test_hostile_envelopes_get_clear_client_errors(world, corpus):
    """Operation names nobody registered, with any params."""
    stub = world.client("alpha").stub
    metadata = world.client("alpha").metadata()
    forbidden = forbidden_texts(world.home)

    @SAMPLE
    @given(name=strategies.hostile_text(), params=st.binary(max_size=64))
    def check(name: str, params: bytes) -> None:
        request = kernel_pb2.ExecuteRequest(operation=name)
        request.params.value = params
        problem = grpc_violation(_execute(stub, request, metadata), forbidden)
        assert problem is None, f"{problem} for operation {name!r}"

    check()
    assert_serving(world.channel)


def _first_of_stream(call) -> Outcome:
    """The first answer of a server stream: a message, or its error."""
    try:
        next(iter(call), None)
    except grpc.RpcError as err:
        return rpc_error_outcome(err)
    finally:
        call.cancel()
    return Outcome("OK")


@pytest.mark.parametrize("rpc", ["WatchJob", "WatchJobs", "DownloadAsset", "UploadAsset"])
def test_hostile_first_messages_of_streams_get_clear_client_errors(world, corpus, rpc):
    client = world.client("alpha")
    forbidden = forbidden_texts(world.home)
    request_type = {
        "WatchJob": kernel_pb2.WatchJobRequest,
        "WatchJobs": kernel_pb2.WatchJobsRequest,
        "DownloadAsset": kernel_pb2.DownloadAssetRequest,
        "UploadAsset": kernel_pb2.UploadAssetRequest,
    }[rpc]
    first = strategies.stream_requests(request_type.DESCRIPTOR, corpus, rpc)
    rest = st.lists(first, max_size=2) if rpc == "UploadAsset" else st.just([])

    @SAMPLE
    @given(first=first.map(Shown), rest=rest.map(Shown))
    def check(first: Shown, rest: Shown) -> None:
        if rpc == "UploadAsset":
            try:
                client.stub.UploadAsset(iter([first.value, *rest.value]), metadata=client.metadata(), timeout=60)
                outcome = Outcome("OK")
            except grpc.RpcError as err:
                outcome = rpc_error_outcome(err)
        else:
            method = getattr(client.stub, rpc)
            # A watch of a live job waits for its next event: only the first answer counts.
            timeout = 3 if rpc in ("WatchJob", "WatchJobs") else 60
            outcome = _first_of_stream(method(first.value, metadata=client.metadata(), timeout=timeout))
            if rpc in ("WatchJob", "WatchJobs") and outcome.code == "DEADLINE_EXCEEDED":
                outcome = Outcome("OK")
        problem = grpc_violation(outcome, forbidden)
        assert problem is None, f"{rpc}: {problem} for {first!r} then {rest!r}"

    check()
    assert_serving(world.channel)
