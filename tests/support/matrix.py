"""Per-operation request builders for the auth matrix: for every registered
operation, params that succeed for a member of project `alpha`, and params
that name project `beta`'s resources instead (None when the operation has no
project to cross, e.g. a list of one's own projects)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from geopera.v1 import catalog_pb2, credits_pb2
from google.protobuf.message import Message

from tests.conftest import SAMPLES, World


@dataclass(frozen=True)
class MatrixCase:
    ok: Callable[[World], Message]
    other_project: Callable[[World], Message] | None


def _first(items: dict[str, str]) -> str:
    return items["s2l1c_slovenia_20150711_bgrn"]


def _create_item(project: str) -> Callable[[World], Message]:
    def build(world: World) -> Message:
        data = (SAMPLES / "s2l1c_slovenia_20150711_bgrn.tif").read_bytes()
        upload = world.client("alpha").upload("alpha", data)
        return catalog_pb2.ItemsCreateParams(
            project_id=project,
            collection_id="matrix",
            name=f"matrix_{secrets.token_hex(4)}_20150711",
            assets=[catalog_pb2.AssetInput(key="data", upload_id=upload.upload_id)],
        )

    return build


CASES: dict[str, MatrixCase] = {
    "projects.get": MatrixCase(
        lambda w: catalog_pb2.ProjectsGetParams(project_id="alpha"),
        lambda w: catalog_pb2.ProjectsGetParams(project_id="beta"),
    ),
    "projects.list": MatrixCase(lambda w: catalog_pb2.ProjectsListParams(), None),
    "items.get": MatrixCase(
        lambda w: catalog_pb2.ItemsGetParams(item_id=_first(w.items)),
        lambda w: catalog_pb2.ItemsGetParams(item_id=_first(w.beta_items)),
    ),
    "items.list": MatrixCase(
        lambda w: catalog_pb2.ItemsListParams(project_id="alpha"),
        lambda w: catalog_pb2.ItemsListParams(project_id="beta"),
    ),
    "items.create": MatrixCase(_create_item("alpha"), _create_item("beta")),
    "credits.balance.get": MatrixCase(
        lambda w: credits_pb2.CreditsBalanceGetParams(project_id="alpha"),
        lambda w: credits_pb2.CreditsBalanceGetParams(project_id="beta"),
    ),
    "credits.ledger.list": MatrixCase(
        lambda w: credits_pb2.CreditsLedgerListParams(project_id="alpha"),
        lambda w: credits_pb2.CreditsLedgerListParams(project_id="beta"),
    ),
}
