"""The auth matrix on every surface: each registered operation x {no token,
bad token, revoked token, missing scope, another project's resources, a
worker credential, ok} over gRPC, HTTP (`POST /v1/op/...`) and MCP (`geopera
mcp` tools), generated from the registry and the matrix's request builders
(tests/support/matrix.py) so a new operation cannot skip it. Then every
streaming RPC (WatchJob, WatchJobs, UploadAsset, DownloadAsset) and every WorkerService
RPC with user, worker and job tokens.

Expected: UNAUTHENTICATED (HTTP 401), PERMISSION_DENIED (HTTP 403) with the
reason; MCP answers a tool error whose body has the same code and reason."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message

from geopera.v1 import auth_pb2, kernel_pb2, processing_pb2, resources_pb2, worker_pb2, worker_pb2_grpc
from geopera_kernel.server.api.registry import Operation
from geopera_kernel.server.auth import ANY_SCOPE, USER_SCOPES
from geopera_kernel.server.mcp.tools import tool_name
from tests.conftest import TEST_SERVER_ENV, World, seed_world
from tests.jobs_support import RawWorker, create_and_dispatch, job_metadata
from tests.support.client import RpcFailure
from tests.support.matrix import CASES
from tests.support.mcp_client import McpClient
from tests.support.registry import REGISTRY
from tests.support.server import ServerProcess

OPERATIONS = REGISTRY.names()
SURFACES = ["grpc", "http", "mcp"]
WHO = ["no_token", "bad_token", "revoked_token", "missing_scope", "other_project", "worker_token", "ok"]
UNAUTHENTICATED = ("UNAUTHENTICATED", "UNAUTHENTICATED")
OK = ("OK", "")
HTTP_STATUS = {"OK": 200, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403}
BAD_TOKEN = "gpk_" + "x" * 43
# Short, so a revoked token stops working at once here (the default is 5 s).
TOKEN_CACHE_SECONDS = 0.3
RAW_TYPE = "raw_auth_matrix"
STATUS = resources_pb2.JobStatus
TERMINAL = (STATUS.JOB_STATUS_SUCCEEDED, STATUS.JOB_STATUS_FAILED, STATUS.JOB_STATUS_CANCELLED)


def denied(reason: str) -> tuple[str, str]:
    return ("PERMISSION_DENIED", reason)


@pytest.fixture(scope="module")
def matrix_world(database_factory, tmp_path_factory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("matrix-surfaces")
    url = database_factory.create()
    env = {**TEST_SERVER_ENV, "GEOPERA_TOKEN_CACHE_SECONDS": str(TOKEN_CACHE_SECONDS)}
    server = ServerProcess(database_url=url, home=home, extra_env=env).start()
    world = World(server=server, database_url=url, home=home)
    try:
        asyncio.run(seed_world(world))
        world.channel = server.channel()
        world.tokens["revoked"] = _revoked_token(world)
        yield world
    finally:
        if world.channel is not None:
            world.channel.close()
        server.stop()


def _revoked_token(world: World) -> str:
    """A token with every user scope on both projects, used once (so the
    server has it cached), then revoked, and the cache time waited out."""
    token = world.make_token(scopes=list(USER_SCOPES), projects=["alpha", "beta"])
    token_id = world.client(token).execute("auth.whoami", auth_pb2.AuthWhoamiParams()).principal_id

    world.revoke_token(token_id)
    time.sleep(TOKEN_CACHE_SECONDS * 3)
    return token


@pytest.fixture(scope="module")
def scope_tokens(matrix_world) -> Callable[[str], str]:
    """A token of both projects holding every user scope but `scope`."""
    made: dict[str, str] = {}

    def token(scope: str) -> str:
        if scope not in made:
            made[scope] = matrix_world.make_token(scopes=[s for s in USER_SCOPES if s != scope],
                                                  projects=["alpha", "beta"])  # fmt: skip
        return made[scope]

    return token


@pytest.fixture(scope="module")
def mcp_clients(matrix_world) -> Iterator[Callable[[str | None], McpClient]]:
    """One `geopera mcp` process per token, started when first needed."""
    clients: dict[str, McpClient] = {}

    def client(token: str | None) -> McpClient:
        key = token or ""
        if key not in clients:
            log = matrix_world.home / f"mcp-{hashlib.sha256(key.encode()).hexdigest()[:8]}.log"
            clients[key] = McpClient(matrix_world.server.address, key, log)
        return clients[key]

    yield client
    for client_ in clients.values():
        client_.close()


def expected(operation: Operation, who: str) -> tuple[str, str] | None:
    """What `who` gets for `operation` (None: the cell does not exist)."""
    if who in ("no_token", "bad_token", "revoked_token"):
        return UNAUTHENTICATED
    if who == "missing_scope":
        return None if operation.scope == ANY_SCOPE else denied("MISSING_SCOPE")
    if who == "other_project":
        return None if CASES[operation.name].other_project is None else denied("PROJECT_ACCESS_DENIED")
    if who == "worker_token":
        return OK if operation.scope == ANY_SCOPE else denied("MISSING_SCOPE")
    return OK


def request_for(world: World, operation: Operation, who: str, scope_token: Callable[[str], str]):
    """(token, params) of the cell."""
    case = CASES[operation.name]
    tokens: dict[str, Callable[[], str | None]] = {
        "no_token": lambda: None,
        "bad_token": lambda: BAD_TOKEN,
        "revoked_token": lambda: world.tokens["revoked"],
        "missing_scope": lambda: scope_token(operation.scope),
        "other_project": lambda: world.tokens["alpha"],
        "worker_token": lambda: world.tokens["worker"],
        "ok": lambda: world.tokens[case.ok_token],
    }
    build = case.other_project if who == "other_project" else case.ok
    assert build is not None
    return tokens[who](), build(world)


def call_grpc(world: World, token: str | None, operation: Operation, params: Message, _: Any) -> tuple[str, str]:
    try:
        world.client(token).execute(operation.name, params)
    except RpcFailure as failure:
        assert failure.has_error_info and failure.domain == "geopera.v1", failure
        return failure.code.name, failure.reason
    return OK


def call_http(world: World, token: str | None, operation: Operation, params: Message, _: Any) -> tuple[str, str]:
    body = json.dumps(json_format.MessageToDict(params, preserving_proto_field_name=True)).encode()
    request = urllib.request.Request(f"{world.server.http_url}/v1/op/{operation.name}", data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, answer = response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        status, answer = err.code, json.loads(err.read())
    if status == 200:
        return OK
    assert status == HTTP_STATUS.get(answer["code"]), (status, answer)
    assert answer["message"] and answer["request_id"], answer
    return answer["code"], answer["reason"]


def call_mcp(world: World, token: str | None, operation: Operation, params: Message, clients: Any) -> tuple[str, str]:
    arguments = json_format.MessageToDict(params, preserving_proto_field_name=True)
    result = clients(token).call(tool_name(operation.name), arguments)
    body = result.structured_content
    assert json.loads(result.content[0].text) == body
    if not result.is_error:
        return OK
    assert {"code", "reason", "message", "details"} <= set(body), body
    return body["code"], body["reason"]


CALLS = {"grpc": call_grpc, "http": call_http, "mcp": call_mcp}


def test_every_operation_has_a_matrix_case():
    assert sorted(CASES) == OPERATIONS


# The cells that exist: no missing-scope cell for an operation open to any token,
# no other-project cell for one that names no project.
CELLS = [(name, who) for name in OPERATIONS for who in WHO if expected(REGISTRY.get(name), who) is not None]


def test_the_matrix_leaves_out_only_what_cannot_apply():
    """A new operation gets every cell unless it is knowingly open or project-less."""
    left_out = {(name, who) for name in OPERATIONS for who in WHO} - set(CELLS)
    open_to_all = {name for name in OPERATIONS if REGISTRY.get(name).scope == ANY_SCOPE}
    projectless = {name for name in OPERATIONS if CASES[name].other_project is None}
    assert open_to_all == {"auth.whoami"}
    assert left_out == {(n, "missing_scope") for n in open_to_all} | {(n, "other_project") for n in projectless}


@pytest.mark.parametrize(("name", "who"), CELLS)
@pytest.mark.parametrize("surface", SURFACES)
def test_auth_matrix(matrix_world, scope_tokens, mcp_clients, surface, name, who):
    operation = REGISTRY.get(name)
    want = expected(operation, who)
    token, params = request_for(matrix_world, operation, who, scope_tokens)
    got = CALLS[surface](matrix_world, token, operation, params, mcp_clients)
    assert got == want, f"{surface} {name} as {who}"
    if who == "missing_scope" and surface == "grpc":
        with pytest.raises(RpcFailure) as info:
            matrix_world.client(token).execute(name, params)
        assert info.value.metadata["required_scope"] == operation.scope


# --- streaming RPCs -------------------------------------------------------

STREAM_SCOPES = {
    "WatchJob": "processing:read",
    "WatchJobs": "processing:read",
    "UploadAsset": "catalog:write",
    "DownloadAsset": "catalog:read",
}
STREAM_WHO = {
    "no_token": UNAUTHENTICATED,
    "bad_token": UNAUTHENTICATED,
    "revoked_token": UNAUTHENTICATED,
    "missing_scope": denied("MISSING_SCOPE"),
    "other_project": denied("PROJECT_ACCESS_DENIED"),
    "worker_token": denied("MISSING_SCOPE"),
    "job_token": denied("JOB_TOKEN_NOT_ALLOWED"),
    "ok": OK,
}


@pytest.fixture(scope="module")
def raw_worker(matrix_world) -> Iterator[RawWorker]:
    worker = RawWorker(matrix_world.channel, matrix_world.tokens["worker"], [RAW_TYPE], capacity=16)
    yield worker
    worker.die()


@pytest.fixture(scope="module")
def assign(matrix_world, raw_worker) -> Callable[[], worker_pb2.JobAssignment]:
    """A new job of alpha, assigned to the raw worker: its job token is live."""

    def assignment() -> worker_pb2.JobAssignment:
        job = create_and_dispatch(matrix_world.client("alpha"), RAW_TYPE, {}).job
        while True:  # skip jobs handed back earlier (ReleaseJob) and assigned again
            got = raw_worker.next_assignment(timeout=20)
            if got.job.id == job.id:
                return got

    return assignment


@pytest.fixture(autouse=True)
def _cancel_raw_jobs(request) -> Iterator[None]:
    """Free the raw worker's capacity after each test that assigned jobs."""
    yield
    if "assign" not in request.fixturenames:
        return
    world = request.getfixturevalue("matrix_world")
    client = world.client("alpha")
    listed = client.execute(
        "processing.jobs.list", processing_pb2.ProcessingJobsListParams(project_id="alpha", job_type_id=RAW_TYPE)
    )
    for job in listed.jobs:
        if job.status not in TERMINAL:
            client.execute("processing.jobs.cancel", processing_pb2.ProcessingJobsCancelParams(job_id=job.id))


def _outcome(call: Callable[[], Any]) -> tuple[str, str]:
    try:
        call()
    except grpc.RpcError as err:
        failure = RpcFailure.from_rpc_error(err)
        assert failure.has_error_info and failure.domain == "geopera.v1", failure
        return failure.code.name, failure.reason
    return OK


def _stream_token(world: World, who: str, rpc: str, scope_token: Callable[[str], str], assign: Any) -> str | None:
    return {
        "no_token": lambda: None,
        "bad_token": lambda: BAD_TOKEN,
        "revoked_token": lambda: world.tokens["revoked"],
        "missing_scope": lambda: scope_token(STREAM_SCOPES[rpc]),
        "other_project": lambda: world.tokens["alpha"],
        "worker_token": lambda: world.tokens["worker"],
        "job_token": lambda: assign().job_token,
        "ok": lambda: world.tokens["alpha"],
    }[who]()


@pytest.mark.parametrize("who", list(STREAM_WHO))
@pytest.mark.parametrize("rpc", list(STREAM_SCOPES))
def test_streaming_rpcs_auth(matrix_world, scope_tokens, assign, rpc, who):
    world = matrix_world
    token = _stream_token(world, who, rpc, scope_tokens, assign)
    client = world.client(token)
    project = "beta" if who == "other_project" else "alpha"
    items = world.beta_items if project == "beta" else world.items
    item_id = next(iter(items.values()))

    def watch() -> None:
        case = CASES["processing.jobs.get"]
        build = case.ok if project == "alpha" else case.other_project
        assert build is not None
        job = build(world)
        request = kernel_pb2.WatchJobRequest(job_id=job.job_id)
        call = client.stub.WatchJob(request, metadata=client.metadata(), timeout=30)
        try:
            assert next(iter(call)).job.id == job.job_id
        finally:
            call.cancel()

    def watch_jobs() -> None:
        case = CASES["processing.jobs.get"]
        build = case.ok if project == "alpha" else case.other_project
        assert build is not None
        build(world)  # a pending job of the project, so that the stream has a first event
        request = kernel_pb2.WatchJobsRequest(project_id=project, status=resources_pb2.JOB_STATUS_PENDING)
        call = client.stub.WatchJobs(request, metadata=client.metadata(), timeout=30)
        try:
            assert next(iter(call)).job.project_id == project
        finally:
            call.cancel()

    def upload() -> None:
        data = b"auth matrix upload"
        message = kernel_pb2.UploadAssetRequest(project_id=project, file_name="m.bin", total_size=len(data),
                                                data=data, finish_write=True)  # fmt: skip
        client.stub.UploadAsset(iter([message]), metadata=client.metadata(), timeout=30)

    def download() -> None:
        call = client.stub.DownloadAsset(
            kernel_pb2.DownloadAssetRequest(resource_name=f"items/{item_id}/assets/data"),
            metadata=client.metadata(), timeout=30,
        )  # fmt: skip
        try:
            assert next(iter(call)).total_size > 0
        finally:
            call.cancel()

    rpcs = {"WatchJob": watch, "WatchJobs": watch_jobs, "UploadAsset": upload, "DownloadAsset": download}
    got = _outcome(rpcs[rpc])
    assert got == STREAM_WHO[who], f"{rpc} as {who}"


def test_a_job_token_downloads_only_its_jobs_sources(matrix_world, assign):
    """The one door a job token has into KernelService: its own sources (the
    raw job has none, so any item is refused; see test_jobs for a clip job)."""
    client = matrix_world.client(assign().job_token)
    item_id = next(iter(matrix_world.items.values()))
    got = _outcome(lambda: list(client.stub.DownloadAsset(
        kernel_pb2.DownloadAssetRequest(resource_name=f"items/{item_id}/assets/data"), metadata=client.metadata(),
        timeout=30,
    )))  # fmt: skip
    assert got == denied("JOB_TOKEN_NOT_ALLOWED")


# --- WorkerService --------------------------------------------------------

WORKER_RPCS = ["Connect", "ReportProgress", "ReportFailure", "ReleaseJob", "RegisterOutputs", "SignOutputUploads"]
WORKER_WHO = ["no_token", "bad_token", "revoked_token", "user_token", "admin_token", "worker_token",
              "other_jobs_token", "job_token"]  # fmt: skip


def worker_expected(rpc: str, who: str) -> tuple[str, str]:
    if who in ("no_token", "bad_token", "revoked_token"):
        return UNAUTHENTICATED
    if rpc == "Connect":
        # A worker session needs scope `worker` (admin holds every scope); a job token opens nothing.
        return {"user_token": denied("MISSING_SCOPE"), "admin_token": OK, "worker_token": OK}.get(
            who, denied("JOB_TOKEN_NOT_ALLOWED")
        )
    if rpc == "SignOutputUploads" and who == "job_token":
        # Past authorisation: this server stores in a local directory (no presigned uploads).
        return ("FAILED_PRECONDITION", "PRESIGNED_UPLOADS_UNAVAILABLE")
    # The job calls take the job token of that very job and attempt.
    return {"other_jobs_token": denied("JOB_TOKEN_MISMATCH"), "job_token": OK}.get(who, denied("JOB_TOKEN_REQUIRED"))


@pytest.mark.parametrize("who", WORKER_WHO)
@pytest.mark.parametrize("rpc", WORKER_RPCS)
def test_worker_service_auth(matrix_world, assign, rpc, who):
    world = matrix_world
    stub = worker_pb2_grpc.WorkerServiceStub(world.channel)
    job = assign()  # the job the call names
    token = {
        "no_token": None,
        "bad_token": BAD_TOKEN,
        "revoked_token": world.tokens["revoked"],
        "user_token": world.tokens["alpha"],
        "admin_token": world.tokens["admin"],
        "worker_token": world.tokens["worker"],
        "other_jobs_token": assign().job_token if who == "other_jobs_token" else None,
        "job_token": job.job_token,
    }[who]
    metadata = job_metadata(token) if token is not None else []
    job_id = job.job.id

    def connect() -> None:
        hello = worker_pb2.WorkerHello(name="auth-matrix", capacity=1)
        call = stub.Connect(iter([worker_pb2.ConnectRequest(hello=hello)]), metadata=metadata, timeout=30)
        try:
            assert next(iter(call)).WhichOneof("message") == "welcome"
        finally:
            call.cancel()

    calls: dict[str, Callable[[], Any]] = {
        "Connect": connect,
        "ReportProgress": lambda: stub.ReportProgress(
            worker_pb2.ReportProgressRequest(job_id=job_id, progress=0.5), metadata=metadata, timeout=30
        ),
        "ReportFailure": lambda: stub.ReportFailure(
            worker_pb2.ReportFailureRequest(job_id=job_id, message="matrix", reason="MATRIX"),
            metadata=metadata,
            timeout=30,
        ),
        "ReleaseJob": lambda: stub.ReleaseJob(
            worker_pb2.ReleaseJobRequest(job_id=job_id, reason="matrix"), metadata=metadata, timeout=30
        ),
        "SignOutputUploads": lambda: stub.SignOutputUploads(
            worker_pb2.SignOutputUploadsRequest(job_id=job_id), metadata=metadata, timeout=30
        ),
        "RegisterOutputs": lambda: stub.RegisterOutputs(
            iter([worker_pb2.RegisterOutputsRequest(job_id=job_id, commit=True)]), metadata=metadata, timeout=30
        ),
    }
    assert _outcome(calls[rpc]) == worker_expected(rpc, who), f"{rpc} as {who}"
