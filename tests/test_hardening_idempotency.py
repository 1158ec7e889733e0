"""Idempotency keys are scoped per project (issue 10, hole 9): a retry from a
second token of the project, or after rotating the token, replays the first
response instead of spending twice; the same key in another project is another
key; a non-member never gets a stored response. Real server, real tokens."""

from __future__ import annotations

import secrets

import grpc
import psycopg
import pytest

from geopera.v1 import processing_pb2
from geopera_kernel.raster.cost import CostModel
from geopera_kernel.server.auth import USER_SCOPES
from geopera_kernel.server.domain.jobs import JobTypeRecord
from geopera_kernel.server.store.database import load_migrations
from tests.conftest import SAMPLES, TEST_SERVER_ENV, World, start_seeded_world, stop_world
from tests.jobs_support import balance, struct
from tests.support.client import RpcFailure

ONE_CREDIT = JobTypeRecord("idem_one_credit", "test: one credit", {"type": "object"}, CostModel(1, 0, 0, 1))
CLIP_AOI = {"type": "Polygon", "coordinates": [[[14.556, 45.868], [14.558, 45.868], [14.558, 45.870],
                                                [14.556, 45.870], [14.556, 45.868]]]}  # fmt: skip


@pytest.fixture(scope="module")
def idem_world(database_factory, tmp_path_factory):
    world = start_seeded_world(database_factory.create(), tmp_path_factory.mktemp("idempotency"), TEST_SERVER_ENV)
    try:
        world.add_job_types(ONE_CREDIT)
        yield world
    finally:
        stop_world(world)


def _token(world: World, projects: list[str]) -> tuple[str, str]:
    """(token id, token) of a new user token of `projects`."""

    return world.with_services(
        lambda services: services.tokens.create_token(
            name="idem", kind="user", scopes=list(USER_SCOPES), project_ids=projects
        )
    )


def _revoke(world: World, token_id: str) -> None:
    world.revoke_token(token_id)


def _create(world: World, token: str, key: str, project: str = "alpha", note: str = "first"):
    params = processing_pb2.ProcessingCreateParams(
        project_id=project, job_type_id=ONE_CREDIT.id, input_params=struct({"note": note})
    )
    return world.client(token).execute("processing.create", params, idempotency_key=key).job


def _fails(call) -> RpcFailure:
    with pytest.raises(RpcFailure) as info:
        call()
    return info.value


def test_a_second_token_of_the_project_replays_the_first_response(idem_world):
    _, first = _token(idem_world, ["alpha"])
    _, second = _token(idem_world, ["alpha"])
    key = f"two-tokens-{secrets.token_hex(4)}"
    before = balance(idem_world.client(first))
    job = _create(idem_world, first, key)
    again = _create(idem_world, second, key)
    assert again == job
    assert balance(idem_world.client(second)).held == before.held + 1  # reserved once

    failure = _fails(lambda: _create(idem_world, second, key, note="other"))
    assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_REUSED")
    assert balance(idem_world.client(first)).held == before.held + 1


def test_a_retry_after_rotating_the_token_replays_the_first_response(idem_world):
    old_id, old = _token(idem_world, ["alpha"])
    key = f"rotated-{secrets.token_hex(4)}"
    before = balance(idem_world.client(old))
    job = _create(idem_world, old, key)
    # Rotation: a new token for the project, the old one revoked.
    _, new = _token(idem_world, ["alpha"])
    _revoke(idem_world, old_id)
    assert _create(idem_world, new, key) == job
    assert balance(idem_world.client(new)).held == before.held + 1


def test_the_same_key_in_another_project_is_another_key(idem_world):
    key = f"per-project-{secrets.token_hex(4)}"
    alpha_job = _create(idem_world, "alpha", key, project="alpha")
    beta_job = _create(idem_world, "beta", key, project="beta")  # same params but the project
    assert beta_job.id != alpha_job.id and (alpha_job.project_id, beta_job.project_id) == ("alpha", "beta")
    # A token of both projects replays each project's own response.
    _, both = _token(idem_world, ["alpha", "beta"])
    assert _create(idem_world, both, key, project="alpha") == alpha_job
    assert _create(idem_world, both, key, project="beta") == beta_job


def test_a_non_member_never_gets_another_projects_stored_response(idem_world):
    key = f"private-{secrets.token_hex(4)}"
    _create(idem_world, "alpha", key, project="alpha")
    failure = _fails(lambda: _create(idem_world, "beta", key, project="alpha"))
    assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PROJECT_ACCESS_DENIED")


def test_clip_and_dispatch_keys_belong_to_the_project_of_their_item_and_job(idem_world):
    _, first = _token(idem_world, ["alpha"])
    _, second = _token(idem_world, ["alpha"])
    # clip.create_from_item without project_id: the source item's project.
    source = idem_world.items["s2l1c_slovenia_20150711_bgrn"]
    assert (SAMPLES / "s2l1c_slovenia_20150711_bgrn.tif").exists()
    clip = processing_pb2.ClipCreateFromItemParams(source_item_id=source, aoi_geometry=struct(CLIP_AOI))
    key = f"clip-{secrets.token_hex(4)}"
    clipped = idem_world.client(first).execute("clip.create_from_item", clip, idempotency_key=key)
    assert idem_world.client(second).execute("clip.create_from_item", clip, idempotency_key=key) == clipped

    # processing.dispatch: the job's project. A real second dispatch would say
    # "already dispatched"; the replay is the first response, word for word.
    job = (
        idem_world.client(first)
        .execute(
            "processing.create",
            processing_pb2.ProcessingCreateParams(
                project_id="alpha", job_type_id=ONE_CREDIT.id, input_params=struct({})
            ),
        )
        .job
    )
    dispatch = processing_pb2.ProcessingDispatchParams(job_id=job.id)
    key = f"dispatch-{secrets.token_hex(4)}"
    first_dispatch = idem_world.client(first).execute("processing.dispatch", dispatch, idempotency_key=key)
    assert "already" not in first_dispatch.dispatch.message
    assert idem_world.client(second).execute("processing.dispatch", dispatch, idempotency_key=key) == first_dispatch
    unkeyed = idem_world.client(second).execute("processing.dispatch", dispatch)
    assert "already" in unkeyed.dispatch.message


def test_the_upgrade_moves_per_token_keys_to_their_project(database_factory):
    """Keys stored before the upgrade (per token) keep protecting retries:
    a one-project token's keys move to its project; where two tokens of a
    project used one key the first use wins; keys of admin and multi-project
    tokens cannot be placed and are dropped."""
    migrations = load_migrations()
    index = next(i for i, m in enumerate(migrations) if m.name.endswith("_idempotency_per_project.sql"))
    with psycopg.connect(database_factory.create(), autocommit=True) as conn:
        # A schema of its own at the version before the upgrade.
        conn.execute("CREATE SCHEMA before_upgrade")
        conn.execute("SET search_path = before_upgrade")
        for migration in migrations[:index]:
            conn.execute(migration.sql.encode())
        conn.execute(
            "INSERT INTO projects (id) VALUES ('p1'), ('p2');"
            "INSERT INTO tokens (id, token_hash, kind, scopes) VALUES"
            " ('t1', 'h1', 'user', '{}'), ('t2', 'h2', 'user', '{}'), ('t3', 'h3', 'user', '{}'),"
            " ('adm', 'h4', 'admin', '{admin}');"
            "INSERT INTO token_projects VALUES ('t1', 'p1'), ('t2', 'p1'), ('t3', 'p1'), ('t3', 'p2');"
            "INSERT INTO idempotency_keys (principal_id, key, operation, fingerprint, response, create_time,"
            " expire_time) VALUES"
            " ('t1', 'k', 'processing.create', 'f1', 'r1', now() - interval '2 hours', now() + interval '1 day'),"
            " ('t2', 'k', 'processing.create', 'f2', 'r2', now() - interval '1 hour', now() + interval '1 day'),"
            " ('t2', 'only-t2', 'processing.create', 'f3', 'r3', now(), now() + interval '1 day'),"
            " ('t3', 'multi', 'processing.create', 'f4', 'r4', now(), now() + interval '1 day'),"
            " ('adm', 'admin', 'processing.create', 'f5', 'r5', now(), now() + interval '1 day')"
        )
        conn.execute(migrations[index].sql.encode())
        rows = conn.execute(
            "SELECT project_id, key, principal_id, response FROM idempotency_keys ORDER BY key"
        ).fetchall()
        assert rows == [("p1", "k", "t1", b"r1"), ("p1", "only-t2", "t2", b"r3")]
        primary_key = conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'before_upgrade.idempotency_keys'::regclass AND contype = 'p'"
        ).fetchone()
        assert primary_key == ("PRIMARY KEY (project_id, key)",)
