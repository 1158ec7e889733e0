"""Every registered operation x {no token, bad token, missing scope, other
project, ok}, generated from the registry so a new operation cannot skip it."""

from __future__ import annotations

import grpc
import pytest

from geopera_kernel.server.auth import ANY_SCOPE, USER_SCOPES
from tests.support.client import RpcFailure
from tests.support.matrix import CASES
from tests.support.registry import REGISTRY

OPERATIONS = REGISTRY.names()
# Each row runs only where it applies, so a normal run skips nothing: an operation open to
# every authenticated caller has no scope to miss, and one naming no project none to cross.
SCOPED = [name for name in OPERATIONS if REGISTRY.get(name).scope != ANY_SCOPE]
CROSSING = [name for name in OPERATIONS if CASES[name].other_project is not None]


def test_every_operation_has_a_matrix_case():
    assert sorted(CASES) == OPERATIONS


def test_the_rows_leave_out_only_what_they_cannot_apply_to():
    """A new operation lands in every row unless it is knowingly listed here."""
    assert sorted(set(OPERATIONS) - set(SCOPED)) == ["auth.whoami"]
    assert sorted(set(OPERATIONS) - set(CROSSING)) == [
        "analytics.operations.get",
        "analytics.operations.list",
        "auth.whoami",
        "processing.job_types.get",
        "processing.job_types.list",
        "projects.list",
        "workers.list",
    ]


def _fails(call, code: grpc.StatusCode, reason: str) -> RpcFailure:
    with pytest.raises(RpcFailure) as info:
        call()
    failure = info.value
    assert (failure.code, failure.reason) == (code, reason), failure
    assert failure.domain == "geopera.v1"
    return failure


@pytest.mark.parametrize("name", OPERATIONS)
def test_no_token_is_unauthenticated(world, name):
    params = CASES[name].ok(world)
    _fails(lambda: world.client(None).execute(name, params), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")


@pytest.mark.parametrize("name", OPERATIONS)
def test_unknown_token_is_unauthenticated(world, name):
    params = CASES[name].ok(world)
    bad = world.client("gpk_" + "x" * 43)
    _fails(lambda: bad.execute(name, params), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")


@pytest.mark.parametrize("name", SCOPED)
def test_missing_scope_is_permission_denied(world, name):
    operation = REGISTRY.get(name)
    scopes = [s for s in USER_SCOPES if s != operation.scope]
    token = world.make_token(scopes=scopes, projects=["alpha", "beta"])
    params = CASES[name].ok(world)
    failure = _fails(
        lambda: world.client(token).execute(name, params), grpc.StatusCode.PERMISSION_DENIED, "MISSING_SCOPE"
    )
    assert failure.metadata["required_scope"] == operation.scope


@pytest.mark.parametrize("name", CROSSING)
def test_other_projects_resources_are_permission_denied(world, name):
    case = CASES[name]
    assert case.other_project is not None
    params = case.other_project(world)
    _fails(
        lambda: world.client("alpha").execute(name, params),
        grpc.StatusCode.PERMISSION_DENIED,
        "PROJECT_ACCESS_DENIED",
    )


@pytest.mark.parametrize("name", OPERATIONS)
def test_member_with_scope_succeeds(world, name):
    case = CASES[name]
    result = world.client(case.ok_token).execute(name, case.ok(world))
    assert isinstance(result, REGISTRY.get(name).result_type)


@pytest.mark.parametrize("name", SCOPED)
def test_worker_credential_cannot_execute(world, name):
    params = CASES[name].ok(world)
    _fails(
        lambda: world.client("worker").execute(name, params),
        grpc.StatusCode.PERMISSION_DENIED,
        "MISSING_SCOPE",
    )


def test_projects_list_shows_only_memberships(world):
    from geopera.v1 import catalog_pb2

    mine = world.client("alpha").execute("projects.list", catalog_pb2.ProjectsListParams())
    assert [p.id for p in mine.projects] == ["alpha"]
    everything = world.client("admin").execute("projects.list", catalog_pb2.ProjectsListParams())
    assert [p.id for p in everything.projects] == ["alpha", "beta"]


def test_admin_sees_every_project(world):
    from geopera.v1 import catalog_pb2

    beta_item = next(iter(world.beta_items.values()))
    result = world.client("admin").execute("items.get", catalog_pb2.ItemsGetParams(item_id=beta_item))
    assert result.item.project_id == "beta"


def test_unknown_item_is_not_found_but_foreign_item_is_denied(world):
    from geopera.v1 import catalog_pb2

    _fails(
        lambda: world.client("alpha").execute("items.get", catalog_pb2.ItemsGetParams(item_id="it_nope")),
        grpc.StatusCode.NOT_FOUND,
        "ITEM_NOT_FOUND",
    )


def test_whoami_tells_the_token_its_scopes_and_projects(world):
    from geopera.v1 import auth_pb2

    me = world.client("alpha").execute("auth.whoami", auth_pb2.AuthWhoamiParams())
    assert (me.kind, list(me.project_ids)) == ("user", ["alpha"]) and me.principal_id.startswith("tok_")
    assert list(me.scopes) == sorted(USER_SCOPES)
    worker = world.client("worker").execute("auth.whoami", auth_pb2.AuthWhoamiParams())
    assert (worker.kind, list(worker.scopes)) == ("worker", ["worker"])


# ExecuteRequest.validate_only changes nothing about who may call what: the same refusals.
@pytest.mark.parametrize("name", OPERATIONS)
def test_validate_only_without_a_token_is_unauthenticated(world, name):
    params = CASES[name].ok(world)
    _fails(
        lambda: world.client(None).execute(name, params, validate_only=True),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )


@pytest.mark.parametrize("name", SCOPED)
def test_validate_only_missing_scope_is_permission_denied(world, name):
    operation = REGISTRY.get(name)
    token = world.make_token(scopes=[s for s in USER_SCOPES if s != operation.scope], projects=["alpha", "beta"])
    params = CASES[name].ok(world)
    _fails(
        lambda: world.client(token).execute(name, params, validate_only=True),
        grpc.StatusCode.PERMISSION_DENIED,
        "MISSING_SCOPE",
    )


@pytest.mark.parametrize("name", CROSSING)
def test_validate_only_other_projects_resources_are_permission_denied(world, name):
    other_project = CASES[name].other_project
    assert other_project is not None
    params = other_project(world)
    _fails(
        lambda: world.client("alpha").execute(name, params, validate_only=True),
        grpc.StatusCode.PERMISSION_DENIED,
        "PROJECT_ACCESS_DENIED",
    )


@pytest.mark.parametrize("name", OPERATIONS)
def test_validate_only_member_with_scope_gets_the_result_type(world, name):
    case = CASES[name]
    result = world.client(case.ok_token).execute(name, case.ok(world), validate_only=True)
    assert isinstance(result, REGISTRY.get(name).result_type)
