"""Worker credentials attacked with a real server, real worker processes and
real Connect streams (issue 10, hole 3): job types are granted per worker
credential, a hello cannot redefine a built-in or another credential's type,
worker ids are validated, a worker token limited to projects claims only
their jobs, revoked credentials lose their open streams, a reconnect keeps
its new session, and a dead server's workers drop out of workers.list."""

from __future__ import annotations

import asyncio
import http.client
import json
import queue
import signal
import threading
import time

import grpc
import psycopg
import pytest
from psycopg.types.json import Jsonb

from geopera.v1 import (
    auth_pb2,
    kernel_pb2,
    kernel_pb2_grpc,
    processing_pb2,
    resources_pb2,
    worker_pb2,
    worker_pb2_grpc,
)
from geopera_kernel.server.auth import USER_SCOPES, hash_token
from geopera_kernel.server.store.database import load_migrations, migrate
from tests.conftest import TEST_SERVER_ENV
from tests.jobs_support import (
    FAST_LEASES,
    STATUS,
    RawWorker,
    create_and_dispatch,
    declaration_of,
    start_world,
    struct,
    wait_for_job_type,
    wait_terminal,
)
from tests.support.client import RpcFailure
from tests.support.server import ServerProcess
from tests.support.workers import WorkerProcess
from tests.test_admin_cli import admin

# What a worker loading only the test plugins declares.
TEST_PLUGINS_ONLY = "tests.support.job_plugins"
TEST_TYPES = ("test_cog", "test_fail", "test_log", "test_noop")
TOKEN_CACHE_SECONDS = 5.0  # the server default
# Scheduling slack on a loaded machine, on top of the cache time.
SLACK_SECONDS = 3.0


@pytest.fixture(scope="module")
def world(database_factory, tmp_path_factory):
    world = start_world(database_factory.create(), tmp_path_factory.mktemp("hardening-workers"))
    yield world
    world.channel.close()
    world.server.stop()


def worker_token(world, *job_types: str, projects: tuple[str, ...] = ()) -> str:
    return world.make_token(kind="worker", scopes=["worker"], projects=list(projects), job_types=job_types)


def declaration(job_type_id: str, *, flat: float = 1, schema: dict | None = None) -> worker_pb2.JobTypeDeclaration:
    return worker_pb2.JobTypeDeclaration(
        job_type_id=job_type_id,
        description=f"{job_type_id} (test)",
        input_schema=struct(schema or {"type": "object"}),
        cost_model=resources_pb2.CostModel(flat=flat, minimum=1),
    )


def hello(world, token: str, job_types, *, worker_id: str = "", name: str = "probe") -> worker_pb2.WorkerWelcome:
    """One hello on a real Connect stream: the welcome, or the refusal raised
    as RpcFailure. The stream then ends (the probe hangs up)."""
    stub = worker_pb2_grpc.WorkerServiceStub(world.channel)
    message = worker_pb2.WorkerHello(name=name, capacity=1, job_types=job_types, worker_id=worker_id)
    try:
        responses = list(
            stub.Connect(
                iter([worker_pb2.ConnectRequest(hello=message)]),
                metadata=[("authorization", f"Bearer {token}")],
                timeout=30,
            )
        )
    except grpc.RpcError as err:
        raise RpcFailure.from_rpc_error(err) from None
    return responses[0].welcome


def refused(call) -> RpcFailure:
    with pytest.raises(RpcFailure) as info:
        call()
    assert info.value.domain == "geopera.v1"
    return info.value


def get_job(world, job_id: str) -> resources_pb2.Job:
    params = processing_pb2.ProcessingJobsGetParams(job_id=job_id)
    return world.client("admin").execute("processing.jobs.get", params).job


def workers(world, include_disconnected: bool = False) -> list[resources_pb2.Worker]:
    params = processing_pb2.WorkersListParams(include_disconnected=include_disconnected)
    return list(world.client("admin").execute("workers.list", params).workers)


def revoke(world, token: str) -> None:
    """With the real admin command, beside the running server."""
    token_id = world.client(token).execute("auth.whoami", auth_pb2.AuthWhoamiParams()).principal_id
    result = admin(world.home, "token", "revoke", token_id, database_url=world.database_url)
    assert result.returncode == 0, result.stderr


def test_a_worker_declares_only_the_job_types_its_credential_was_granted(world):
    token = worker_token(world, "test_noop")
    failure = refused(lambda: hello(world, token, [declaration("probe_ungranted")]))
    assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "JOB_TYPE_NOT_GRANTED")
    assert failure.metadata["job_type_id"] == "probe_ungranted"
    assert "--job-type probe_ungranted" in failure.message
    missing = refused(
        lambda: world.client("alpha").execute(
            "processing.job_types.get", processing_pb2.ProcessingJobTypesGetParams(job_type_id="probe_ungranted")
        )
    )
    assert missing.reason == "JOB_TYPE_NOT_FOUND"  # nothing of the refused hello was registered

    # A real worker loading more plugins than its credential was granted
    # stops at its hello and says why (PERMISSION_DENIED is fatal to it).
    worker = WorkerProcess(world.server.address, token, world.home, name="overreaching", plugins=TEST_PLUGINS_ONLY)
    try:
        assert worker.start().process.wait(timeout=60) == 1
    finally:
        worker.stop()
    assert "is not granted job type 'test_" in worker.log()
    assert all(w.name != "overreaching" for w in workers(world, include_disconnected=True))


def test_a_worker_token_limited_to_projects_claims_only_their_jobs(world):
    beta_only = worker_token(world, *TEST_TYPES, projects=("beta",))
    worker = WorkerProcess(world.server.address, beta_only, world.home, name="beta-only", plugins=TEST_PLUGINS_ONLY)
    try:
        worker.start()
        wait_for_job_type(world, "test_noop")
        alpha_job = create_and_dispatch(world.client("alpha"), "test_noop", {}).job
        beta_job = create_and_dispatch(world.client("beta"), "test_noop", {}, project="beta").job
        assert wait_terminal(world.client("beta"), beta_job.id).status == STATUS.JOB_STATUS_SUCCEEDED
        time.sleep(2.0)  # dispatch rounds (at least one a second) with the beta-only worker idle
        untouched = get_job(world, alpha_job.id)
        assert (untouched.status, untouched.worker_id, untouched.attempt) == (STATUS.JOB_STATUS_DISPATCHED, "", 0)

        # A worker credential without projects claims every project's jobs.
        anywhere = worker_token(world, *TEST_TYPES)
        everywhere = WorkerProcess(world.server.address, anywhere, world.home, name="anywhere",
                                   plugins=TEST_PLUGINS_ONLY)  # fmt: skip
        try:
            everywhere.start()
            assert wait_terminal(world.client("alpha"), alpha_job.id).status == STATUS.JOB_STATUS_SUCCEEDED
        finally:
            everywhere.stop()
    finally:
        worker.stop()


def test_a_hello_cannot_redefine_the_built_in_clip(world):
    token = worker_token(world, "clip")
    builtin = declaration_of(world, "clip")
    forged = worker_pb2.JobTypeDeclaration()
    forged.CopyFrom(builtin)
    forged.cost_model.CopyFrom(resources_pb2.CostModel(flat=0, minimum=1))  # free clips for everyone
    forged.input_schema.CopyFrom(struct({"type": "object"}))
    failure = refused(lambda: hello(world, token, [forged]))
    assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "JOB_TYPE_OWNED_BY_OTHER")
    assert failure.metadata == {"job_type_id": "clip", "owner": "builtin", "request_id": failure.metadata["request_id"]}
    assert declaration_of(world, "clip") == builtin
    # Declared exactly as the server defines it, clip is the worker's to run.
    assert hello(world, token, [builtin]).worker_id


def test_a_job_type_is_changed_only_by_the_credential_that_registered_it(world):
    owner, other = worker_token(world, "probe_shared"), worker_token(world, "probe_shared")
    first = declaration("probe_shared", flat=2, schema={"type": "object", "properties": {"a": {"type": "string"}}})
    assert hello(world, owner, [first]).worker_id
    assert hello(world, owner, [first]).worker_id  # the same definition again: fine
    assert hello(world, other, [first]).worker_id  # another granted credential runs it as it is

    forged = declaration("probe_shared", flat=0)
    failure = refused(lambda: hello(world, other, [forged]))
    assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "JOB_TYPE_OWNED_BY_OTHER")
    assert failure.metadata["owner"] == "other_credential"
    assert declaration_of(world, "probe_shared") == first

    # Its owner changes it (a new version of its workers): jobs created from
    # now on are estimated with the new cost model.
    second = declaration("probe_shared", flat=5)
    assert hello(world, owner, [second]).worker_id
    assert declaration_of(world, "probe_shared") == second
    job = (
        world.client("alpha")
        .execute(
            "processing.create",
            processing_pb2.ProcessingCreateParams(
                project_id="alpha", job_type_id="probe_shared", input_params=struct({})
            ),
        )
        .job
    )
    assert job.credits_reserved == 5
    world.client("alpha").execute("processing.jobs.cancel", processing_pb2.ProcessingJobsCancelParams(job_id=job.id))

    # Once the owner is revoked, another granted credential may take the type over.
    revoke(world, owner)
    assert hello(world, other, [forged]).worker_id
    assert declaration_of(world, "probe_shared") == forged


@pytest.mark.parametrize("worker_id", ["../../etc/passwd", "w" * 65, "wk 1", "-lead", "wk\u00fc", "wk\n1", "wk1\n"])
def test_an_invalid_worker_id_is_refused(world, worker_id):
    failure = refused(lambda: hello(world, world.tokens["worker"], [], worker_id=worker_id))
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_WORKER_ID")
    assert [field for field, _ in failure.violations] == ["hello.worker_id"]


def test_a_malformed_job_type_id_is_refused_before_any_grant_is_looked_at(world):
    failure = refused(lambda: hello(world, worker_token(world, "clip"), [declaration("Bad-" + "x" * 5000)]))
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_JOB_TYPE")
    assert [field for field, _ in failure.violations] == ["hello.job_types[0].job_type_id"]
    assert "x" * 100 not in failure.message


def test_a_job_type_id_with_a_trailing_newline_is_refused(world):
    failure = refused(lambda: hello(world, worker_token(world, "clip"), [declaration("clip\n")]))
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_JOB_TYPE")
    assert [field for field, _ in failure.violations] == ["hello.job_types[0].job_type_id"]


def test_a_valid_worker_id_and_name_limits(world):
    assert hello(world, world.tokens["worker"], [], worker_id="edge-7.gpu_2").worker_id == "edge-7.gpu_2"
    failure = refused(lambda: hello(world, world.tokens["worker"], [], name="n" * 201))
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_WORKER_NAME")


def _watch_until_error(world, token: str, job_id: str, opened: threading.Event, ended: queue.Queue) -> None:
    stub = kernel_pb2_grpc.KernelServiceStub(world.channel)
    try:
        for _ in stub.WatchJob(
            kernel_pb2.WatchJobRequest(job_id=job_id), metadata=[("authorization", f"Bearer {token}")], timeout=60
        ):
            opened.set()
        ended.put(("WatchJob", None, time.monotonic()))
    except grpc.RpcError as err:
        ended.put(("WatchJob", RpcFailure.from_rpc_error(err), time.monotonic()))


def _upload_until_error(world, token: str, ended: queue.Queue, release: threading.Event) -> None:
    def requests():
        yield kernel_pb2.UploadAssetRequest(project_id="alpha", file_name="slow.tif", total_size=10, data=b"12345")
        release.wait(60)  # a slow client: the second half never comes while the token lives

    try:
        kernel_pb2_grpc.KernelServiceStub(world.channel).UploadAsset(
            requests(), metadata=[("authorization", f"Bearer {token}")], timeout=60
        )
        ended.put(("UploadAsset", None, time.monotonic()))
    except grpc.RpcError as err:
        ended.put(("UploadAsset", RpcFailure.from_rpc_error(err), time.monotonic()))


def _http_events_until_error(world, token: str, job_id: str, opened: threading.Event, ended: queue.Queue) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", world.server.http_port, timeout=60)
    try:
        connection.request("GET", f"/v1/jobs/{job_id}/events", headers={"Authorization": f"Bearer {token}"})
        response = connection.getresponse()
        assert response.status == 200
        event = ""
        while line := response.readline().decode():
            if line.startswith("event: "):
                event = line.removeprefix("event: ").strip()
                opened.set()
            elif line.startswith("data: ") and event == "error":
                ended.put(("HTTP job events", json.loads(line.removeprefix("data: ")), time.monotonic()))
                return
        ended.put(("HTTP job events", None, time.monotonic()))
    finally:
        connection.close()


def test_a_revoked_credential_s_open_streams_end_within_the_token_cache_time(world):
    workers_token = worker_token(world, "probe_revoked")
    user_token = world.make_token(scopes=list(USER_SCOPES), projects=["alpha"])
    raw = RawWorker(world.channel, workers_token, [declaration("probe_revoked")])
    # A PENDING job never changes by itself: its watches stay open.
    job = (
        world.client(user_token)
        .execute(
            "processing.create",
            processing_pb2.ProcessingCreateParams(
                project_id="alpha", job_type_id="probe_revoked", input_params=struct({})
            ),
        )
        .job
    )
    ended: queue.Queue = queue.Queue()
    watching, streaming, release = threading.Event(), threading.Event(), threading.Event()
    threads = [
        threading.Thread(target=_watch_until_error, args=(world, user_token, job.id, watching, ended), daemon=True),
        threading.Thread(target=_upload_until_error, args=(world, user_token, ended, release), daemon=True),
        threading.Thread(target=_http_events_until_error, args=(world, user_token, job.id, streaming, ended),
                         daemon=True),
    ]  # fmt: skip
    try:
        for thread in threads:
            thread.start()
        assert watching.wait(15) and streaming.wait(15)
        time.sleep(TOKEN_CACHE_SECONDS + 0.5)  # every stream has outlived one cache period: all are long-lived
        assert ended.empty() and not raw.ended.is_set()

        revoke(world, workers_token)
        revoke(world, user_token)
        revoked = time.monotonic()

        assert raw.ended.wait(TOKEN_CACHE_SECONDS + SLACK_SECONDS), "Connect outlived the revocation"
        connect = RpcFailure.from_rpc_error(raw.error)
        assert (connect.code, connect.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
        results = {}
        for _ in threads:
            name, failure, when = ended.get(timeout=TOKEN_CACHE_SECONDS + SLACK_SECONDS)
            results[name] = failure
            assert when - revoked < TOKEN_CACHE_SECONDS + SLACK_SECONDS, name
        for name in ("WatchJob", "UploadAsset"):
            assert (results[name].code, results[name].reason) == (
                grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED"
            ), name  # fmt: skip
        http_error = results["HTTP job events"]
        assert (http_error["code"], http_error["reason"]) == ("UNAUTHENTICATED", "TOKEN_REVOKED")
    finally:
        release.set()
        raw.die()
    # The worker's session was closed properly: it is not listed as connected.
    assert raw.welcome is not None
    assert all(w.id != raw.welcome.worker_id for w in workers(world))


def test_a_reconnect_with_the_same_id_keeps_its_new_session_when_the_old_stream_ends(world):
    token = world.tokens["worker"]
    old = RawWorker(world.channel, token, ["raw_only"])
    assert old.welcome is not None
    worker_id = old.welcome.worker_id
    new = RawWorker(world.channel, token, ["raw_only"], worker_id=worker_id)
    try:
        assert new.welcome is not None and new.welcome.worker_id == worker_id
        # The server ends the superseded stream, and that stream's cleanup
        # runs now, after the new session registered.
        assert old.ended.wait(10), "the superseded session stayed open"
        ended = RpcFailure.from_rpc_error(old.error)
        assert (ended.code, ended.reason) == (grpc.StatusCode.ABORTED, "WORKER_SESSION_REPLACED")
        old.die()

        job = create_and_dispatch(world.client("alpha"), "raw_only", {}).job
        assignment = new.next_assignment(timeout=15)
        assert assignment.job.id == job.id
        assert [w.connected for w in workers(world) if w.id == worker_id] == [True]
        world.client("alpha").execute(
            "processing.jobs.cancel", processing_pb2.ProcessingJobsCancelParams(job_id=job.id)
        )
        assert new.cancels.get(timeout=10) == job.id  # the cancel reaches the new session too
    finally:
        old.die()
        new.die()


def test_a_reconnect_through_another_replica_takes_the_worker_over(world, tmp_path):
    """The old session lives on another server process: its heartbeats find
    the worker taken over and end it, and it claims nothing meanwhile."""
    replica = ServerProcess(
        database_url=world.database_url, home=tmp_path / "replica", extra_env={**FAST_LEASES, **TEST_SERVER_ENV}
    ).start()
    channel = replica.channel()
    old = RawWorker(channel, world.tokens["worker"], ["raw_outputs"])
    try:
        assert old.welcome is not None
        new = RawWorker(world.channel, world.tokens["worker"], ["raw_outputs"], worker_id=old.welcome.worker_id)
        try:
            assert old.ended.wait(10), "the session on the other replica stayed open"
            ended = RpcFailure.from_rpc_error(old.error)
            assert (ended.code, ended.reason) == (grpc.StatusCode.ABORTED, "WORKER_SESSION_REPLACED")
            job = create_and_dispatch(world.client("alpha"), "raw_outputs", {}).job
            assert new.next_assignment(timeout=15).job.id == job.id
            assert old.assignments.empty()
            world.client("alpha").execute(
                "processing.jobs.cancel", processing_pb2.ProcessingJobsCancelParams(job_id=job.id)
            )
        finally:
            new.die()
    finally:
        old.die()
        channel.close()
        replica.stop()


def test_workers_of_a_server_that_died_are_not_listed_as_connected_after_their_lease(world, tmp_path):
    replica = ServerProcess(
        database_url=world.database_url, home=tmp_path / "replica", extra_env={**FAST_LEASES, **TEST_SERVER_ENV}
    ).start()
    worker = WorkerProcess(replica.address, world.tokens["worker"], tmp_path / "worker", name="orphan",
                           plugins=TEST_PLUGINS_ONLY)  # fmt: skip
    try:
        worker.start()
        deadline = time.monotonic() + 30
        while not any(w.name == "orphan" and w.connected for w in workers(world)):
            assert time.monotonic() < deadline, "the worker never connected"
            time.sleep(0.1)

        replica.stop(signal.SIGKILL)  # no cleanup runs: its worker rows still say connected
        lease = float(FAST_LEASES["GEOPERA_LEASE_SECONDS"])
        deadline = time.monotonic() + lease + 5
        while any(w.name == "orphan" for w in workers(world)):
            assert time.monotonic() < deadline, "a dead server's worker is still listed as connected"
            time.sleep(0.1)
        orphan = [w for w in workers(world, include_disconnected=True) if w.name == "orphan"]
        assert [w.connected for w in orphan] == [False]
        types = (
            world.client("alpha")
            .execute("processing.job_types.list", processing_pb2.ProcessingJobTypesListParams())
            .job_types
        )
        assert {t.job_type_id: t.connected_workers for t in types}["test_cog"] == 0
    finally:
        worker.stop()
        replica.stop()


def test_admin_token_create_kind_worker_gets_worker_scope_and_its_job_types(world):
    def run(*args: str):
        return admin(world.home, "token", *args, database_url=world.database_url)

    result = run("create", "--kind", "worker", "--name", "fleet", "--job-type", "clip", "--job-type", "test_noop")
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert (created["kind"], created["scopes"]) == ("worker", ["worker"])
    assert created["job_type_ids"] == ["clip", "test_noop"]
    me = world.client(created["token"]).execute("auth.whoami", auth_pb2.AuthWhoamiParams())
    assert (me.kind, list(me.scopes), list(me.project_ids)) == ("worker", ["worker"], [])
    assert hello(world, created["token"], [declaration_of(world, "clip")]).worker_id
    assert refused(lambda: hello(world, created["token"], [declaration("probe_fleet")])).reason == (
        "JOB_TYPE_NOT_GRANTED"
    )
    listed = json.loads(run("list").stdout)
    assert [t["job_type_ids"] for t in listed if t["id"] == created["token_id"]] == [["clip", "test_noop"]]

    user_scopes = run("create", "--kind", "worker", "--scope", "catalog:read")
    assert user_scopes.returncode == 2 and "scope 'worker' only" in user_scopes.stderr
    granted_user = run("create", "--kind", "user", "--job-type", "clip")
    assert granted_user.returncode == 2 and "worker tokens only" in granted_user.stderr
    bad_type = run("create", "--kind", "worker", "--job-type", "Not-A-Type")
    assert bad_type.returncode == 2 and "invalid job type ids" in bad_type.stderr


def test_an_upgrade_grants_existing_worker_tokens_the_types_their_workers_declared(database_factory, tmp_path):
    """Running workers reconnect after the upgrade as before; their types
    belong to their credential; tokens that never ran a worker get nothing."""
    from tests.conftest import _services

    url = database_factory.create_empty()
    grants = next(m for m in load_migrations() if m.name.endswith("_worker_grants.sql"))

    async def upgrade() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(
                "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                " applied_time timestamptz NOT NULL DEFAULT now())"
            )
            for earlier in (m for m in load_migrations() if m.version < grants.version):
                await conn.execute(earlier.sql.encode())
                await conn.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (earlier.version, earlier.name))
            for token_id, token in (("tok_fleet", "gpk_fleet"), ("tok_idle", "gpk_idle")):
                await conn.execute(
                    "INSERT INTO tokens (id, token_hash, kind, scopes) VALUES (%s, %s, 'worker', '{worker}')",
                    (token_id, hash_token(token)),
                )
            await conn.execute(
                "INSERT INTO workers (id, token_id, name, job_type_ids, capacity)"
                " VALUES ('wk_old', 'tok_fleet', 'old', '{clip,sonar}', 1)"
            )
            await conn.execute(
                "INSERT INTO job_types (id, input_schema) VALUES ('sonar', %s)", (Jsonb({"type": "object"}),)
            )
            await migrate(conn)
            owner = await (await conn.execute("SELECT owner_token_id FROM job_types WHERE id = 'sonar'")).fetchone()
            assert owner == ("tok_fleet",)
        services = await _services(url, tmp_path)
        try:
            fleet = await services.tokens.authenticate("Bearer gpk_fleet")
            idle = await services.tokens.authenticate("Bearer gpk_idle")
        finally:
            await services.db.close()
        # `analytics` too: its workers run the built-in plugins, which declare it since
        # analytics jobs run on workers (0016_analytics_on_workers.sql).
        assert fleet.job_type_ids == {"analytics", "clip", "sonar"}
        assert idle.job_type_ids == frozenset()

    asyncio.run(upgrade())


def test_a_revoked_credential_s_slow_download_ends(world):
    """A download whose client reads slowly (the server waits on flow control)
    ends too: the client gets the revocation instead of the rest of the bytes."""
    token = world.make_token(scopes=list(USER_SCOPES), projects=["alpha"])
    item_id = world.items["s2l1c_slovenia_ndvi_68dates"]
    options = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 64 << 10)]
    with grpc.insecure_channel(world.server.address, options=options) as channel:
        stream = kernel_pb2_grpc.KernelServiceStub(channel).DownloadAsset(
            kernel_pb2.DownloadAssetRequest(resource_name=f"items/{item_id}/assets/data"),
            metadata=[("authorization", f"Bearer {token}")],
            timeout=60,
        )
        first = next(stream)
        assert first.total_size > 2 * len(first.data)  # most of the asset is still to come
        revoke(world, token)
        time.sleep(TOKEN_CACHE_SECONDS + SLACK_SECONDS)
        received = len(first.data)
        with pytest.raises(grpc.RpcError) as info:
            for message in stream:
                received += len(message.data)
        failure = RpcFailure.from_rpc_error(info.value)
        assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
        assert received < first.total_size
