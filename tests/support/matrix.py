"""Per-operation request builders for the auth matrix: for every registered
operation, params that succeed for a member of project `alpha`, and params
that name project `beta`'s resources instead (None when the operation has no
project to cross, e.g. a list of one's own projects)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf import struct_pb2
from google.protobuf.message import Message

from geopera.v1 import analytics_pb2, auth_pb2, catalog_pb2, credits_pb2, processing_pb2, webhooks_pb2
from tests.conftest import SAMPLES, World


@dataclass(frozen=True)
class MatrixCase:
    ok: Callable[[World], Message]
    other_project: Callable[[World], Message] | None
    # The token whose call must succeed (admin operations need an admin).
    ok_token: str = "alpha"


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


AOI = json.loads((SAMPLES / "aoi_epsg4326.geojson").read_text())


def _struct(value: dict) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def _clip_input(items: dict[str, str]) -> struct_pb2.Struct:
    return _struct({"source_item_id": _first(items), "aoi_geometry": AOI})


def _pending_job(project: str) -> Callable[[World], str]:
    def create(world: World) -> str:
        items = world.items if project == "alpha" else world.beta_items
        params = processing_pb2.ProcessingCreateParams(
            project_id=project, job_type_id="clip", input_params=_clip_input(items)
        )
        result = world.client(project).execute("processing.create", params)
        assert isinstance(result, processing_pb2.ProcessingCreateResult)
        return result.job.id

    return create


# A public address (no DNS lookup): the guard admits it on any server.
HOOK_URL = "http://93.184.215.14/matrix"


def _webhook_params(project: str) -> webhooks_pb2.WebhooksCreateParams:
    return webhooks_pb2.WebhooksCreateParams(project_id=project, url=HOOK_URL, event_types=["job.failed"])


def _hook(project: str) -> Callable[[World], str]:
    def create(world: World) -> str:
        result = world.client(project).execute("webhooks.create", _webhook_params(project))
        assert isinstance(result, webhooks_pb2.WebhooksCreateResult)
        return result.webhook.id

    return create


def _finished_job(project: str) -> Callable[[World], str]:
    """A job cancelled right away: finished, so it may be resubmitted."""

    def create(world: World) -> str:
        job_id = _pending_job(project)(world)
        params = processing_pb2.ProcessingJobsCancelParams(job_id=job_id, reason="matrix")
        world.client(project).execute("processing.jobs.cancel", params)
        return job_id

    return create


def _batch(project: str) -> Callable[[World], Message]:
    def build(world: World) -> Message:
        items = world.items if project == "alpha" else world.beta_items
        request = processing_pb2.BatchJobRequest(job_type_id="clip", input_params=_clip_input(items))
        return processing_pb2.ProcessingCreateBatchParams(project_id=project, requests=[request, request])

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
    "assets.sign": MatrixCase(
        lambda w: catalog_pb2.AssetsSignParams(resource_name=f"items/{_first(w.items)}/assets/data"),
        lambda w: catalog_pb2.AssetsSignParams(resource_name=f"items/{_first(w.beta_items)}/assets/data"),
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
    "clip.create_from_item": MatrixCase(
        lambda w: processing_pb2.ClipCreateFromItemParams(
            source_item_id=_first(w.items), project_id="alpha", aoi_geometry=_struct(AOI)
        ),
        lambda w: processing_pb2.ClipCreateFromItemParams(
            source_item_id=_first(w.beta_items), project_id="beta", aoi_geometry=_struct(AOI)
        ),
    ),
    "processing.create": MatrixCase(
        lambda w: processing_pb2.ProcessingCreateParams(
            project_id="alpha", job_type_id="clip", input_params=_clip_input(w.items)
        ),
        lambda w: processing_pb2.ProcessingCreateParams(
            project_id="beta", job_type_id="clip", input_params=_clip_input(w.beta_items)
        ),
    ),
    "processing.create_and_dispatch": MatrixCase(
        lambda w: processing_pb2.ProcessingCreateAndDispatchParams(
            project_id="alpha", job_type_id="clip", input_params=_clip_input(w.items)
        ),
        lambda w: processing_pb2.ProcessingCreateAndDispatchParams(
            project_id="beta", job_type_id="clip", input_params=_clip_input(w.beta_items)
        ),
    ),
    "processing.dispatch": MatrixCase(
        lambda w: processing_pb2.ProcessingDispatchParams(job_id=_pending_job("alpha")(w)),
        lambda w: processing_pb2.ProcessingDispatchParams(job_id=_pending_job("beta")(w)),
    ),
    "processing.jobs.get": MatrixCase(
        lambda w: processing_pb2.ProcessingJobsGetParams(job_id=_pending_job("alpha")(w)),
        lambda w: processing_pb2.ProcessingJobsGetParams(job_id=_pending_job("beta")(w)),
    ),
    "processing.jobs.logs": MatrixCase(
        lambda w: processing_pb2.ProcessingJobsLogsParams(job_id=_pending_job("alpha")(w), page_size=10),
        lambda w: processing_pb2.ProcessingJobsLogsParams(job_id=_pending_job("beta")(w)),
    ),
    "processing.jobs.cancel": MatrixCase(
        lambda w: processing_pb2.ProcessingJobsCancelParams(job_id=_pending_job("alpha")(w), reason="matrix"),
        lambda w: processing_pb2.ProcessingJobsCancelParams(job_id=_pending_job("beta")(w)),
    ),
    "processing.jobs.resubmit": MatrixCase(
        lambda w: processing_pb2.ProcessingJobsResubmitParams(job_id=_finished_job("alpha")(w)),
        lambda w: processing_pb2.ProcessingJobsResubmitParams(job_id=_finished_job("beta")(w)),
    ),
    "processing.create_batch": MatrixCase(_batch("alpha"), _batch("beta")),
    "processing.jobs.list": MatrixCase(
        lambda w: processing_pb2.ProcessingJobsListParams(project_id="alpha"),
        lambda w: processing_pb2.ProcessingJobsListParams(project_id="beta"),
    ),
    "processing.job_types.list": MatrixCase(lambda w: processing_pb2.ProcessingJobTypesListParams(), None),
    "processing.job_types.get": MatrixCase(
        lambda w: processing_pb2.ProcessingJobTypesGetParams(job_type_id="clip"), None
    ),
    "workers.list": MatrixCase(
        lambda w: processing_pb2.WorkersListParams(include_disconnected=True), None, ok_token="admin"
    ),
    "items.lineage": MatrixCase(
        lambda w: catalog_pb2.ItemsLineageParams(item_id=_first(w.items)),
        lambda w: catalog_pb2.ItemsLineageParams(item_id=_first(w.beta_items)),
    ),
    "analytics.execute": MatrixCase(
        lambda w: analytics_pb2.AnalyticsExecuteParams(
            operation="zonal_stats",
            params=_struct({"item_id": _first(w.items), "index_name": "NDVI", "geometry": AOI}),
        ),
        lambda w: analytics_pb2.AnalyticsExecuteParams(
            operation="zonal_stats",
            params=_struct({"item_id": _first(w.beta_items), "index_name": "NDVI", "geometry": AOI}),
        ),
    ),
    "analytics.submit": MatrixCase(
        lambda w: analytics_pb2.AnalyticsSubmitParams(
            operation="zonal_stats",
            params=_struct({"item_id": _first(w.items), "index_name": "NDVI", "geometry": AOI}),
            project_id="alpha",
        ),
        lambda w: analytics_pb2.AnalyticsSubmitParams(
            operation="zonal_stats",
            params=_struct({"item_id": _first(w.beta_items), "index_name": "NDVI", "geometry": AOI}),
            project_id="beta",
        ),
    ),
    "analytics.operations.list": MatrixCase(lambda w: analytics_pb2.AnalyticsOperationsListParams(), None),
    "analytics.operations.get": MatrixCase(
        lambda w: analytics_pb2.AnalyticsOperationsGetParams(name="zonal_stats"), None
    ),
    "auth.whoami": MatrixCase(lambda w: auth_pb2.AuthWhoamiParams(), None),
    "webhooks.create": MatrixCase(lambda w: _webhook_params("alpha"), lambda w: _webhook_params("beta")),
    "webhooks.list": MatrixCase(
        lambda w: webhooks_pb2.WebhooksListParams(project_id="alpha"),
        lambda w: webhooks_pb2.WebhooksListParams(project_id="beta"),
    ),
    "webhooks.delete": MatrixCase(
        lambda w: webhooks_pb2.WebhooksDeleteParams(webhook_id=_hook("alpha")(w)),
        lambda w: webhooks_pb2.WebhooksDeleteParams(webhook_id=_hook("beta")(w)),
    ),
    "webhooks.test": MatrixCase(
        lambda w: webhooks_pb2.WebhooksTestParams(webhook_id=_hook("alpha")(w)),
        lambda w: webhooks_pb2.WebhooksTestParams(webhook_id=_hook("beta")(w)),
    ),
    "webhooks.deliveries.list": MatrixCase(
        lambda w: webhooks_pb2.WebhooksDeliveriesListParams(webhook_id=_hook("alpha")(w)),
        lambda w: webhooks_pb2.WebhooksDeliveriesListParams(webhook_id=_hook("beta")(w)),
    ),
}
