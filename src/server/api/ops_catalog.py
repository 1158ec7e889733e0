"""Catalog and credit operations: unpack params, call the service, pack results."""

from __future__ import annotations

from geopera.v1 import auth_pb2, catalog_pb2, credits_pb2
from geopera_kernel.server.api import convert, wire
from geopera_kernel.server.api.registry import Operation, OperationContext
from geopera_kernel.server.api.wire import EncodedResult
from geopera_kernel.server.domain.models import AssetInput, ItemCreate, ItemQuery
from geopera_kernel.server.errors import failed_precondition, invalid_argument
from geopera_kernel.server.services import Services
from geopera_kernel.server.signing import ttl_or_default


async def projects_get(
    s: Services, ctx: OperationContext, p: catalog_pb2.ProjectsGetParams
) -> catalog_pb2.ProjectsGetResult:
    record = await s.catalog.get_project(ctx.principal, p.project_id)
    return catalog_pb2.ProjectsGetResult(project=convert.project(record))


async def projects_list(
    s: Services, ctx: OperationContext, p: catalog_pb2.ProjectsListParams
) -> catalog_pb2.ProjectsListResult:
    records, next_token = await s.catalog.list_projects(ctx.principal, p.page_size, p.page_token)
    return catalog_pb2.ProjectsListResult(projects=[convert.project(r) for r in records], next_page_token=next_token)


async def items_get(s: Services, ctx: OperationContext, p: catalog_pb2.ItemsGetParams) -> EncodedResult:
    # The catalog hands back the item already encoded (convert.item_bytes): the
    # result is wrapped around those bytes, never parsed and serialized again.
    body = await s.catalog.get_item_rendered(ctx.principal, p.item_id)
    return EncodedResult(
        catalog_pb2.ItemsGetResult, wire.length_delimited(catalog_pb2.ItemsGetResult.ITEM_FIELD_NUMBER, body)
    )


async def items_list(s: Services, ctx: OperationContext, p: catalog_pb2.ItemsListParams) -> catalog_pb2.ItemsListResult:
    query = ItemQuery(
        project_id=p.project_id,
        collection_id=p.collection_id or None,
        bbox=convert.bbox_param(list(p.bbox)),
        datetime_start=convert.from_timestamp(p.datetime_start, p.HasField("datetime_start"), field="datetime_start"),
        datetime_end=convert.from_timestamp(p.datetime_end, p.HasField("datetime_end"), field="datetime_end"),
        page_size=p.page_size,
        page_token=p.page_token,
        intersects=convert.struct_to_dict(p.intersects) if p.HasField("intersects") else None,
    )
    if p.view not in catalog_pb2.ItemView.values():
        raise invalid_argument("INVALID_VIEW", f"unknown item view {p.view}", field="view")
    records, next_token = await s.catalog.list_items(ctx.principal, query)
    build = convert.item if p.view == catalog_pb2.ITEM_VIEW_FULL else convert.item_basic
    return catalog_pb2.ItemsListResult(items=[build(r) for r in records], next_page_token=next_token)


async def items_create(
    s: Services, ctx: OperationContext, p: catalog_pb2.ItemsCreateParams
) -> catalog_pb2.ItemsCreateResult:
    spec = ItemCreate(
        project_id=p.project_id,
        collection_id=p.collection_id or "default",
        name=p.name,
        datetime=convert.from_timestamp(p.datetime, p.HasField("datetime"), field="datetime"),
        properties=convert.struct_to_dict(p.properties),
        assets=[AssetInput(a.key, a.upload_id, a.server_href, list(a.roles), a.title) for a in p.assets],
        convert_to_cog=p.convert_to_cog,
    )
    record = await s.catalog.create_item(ctx.principal, spec, validate_only=ctx.validate_only)
    return catalog_pb2.ItemsCreateResult(item=convert.item(record))


async def balance_get(
    s: Services, ctx: OperationContext, p: credits_pb2.CreditsBalanceGetParams
) -> credits_pb2.CreditsBalanceGetResult:
    record = await s.credits.balance(ctx.principal, p.project_id)
    return credits_pb2.CreditsBalanceGetResult(balance=convert.balance(record))


async def ledger_list(
    s: Services, ctx: OperationContext, p: credits_pb2.CreditsLedgerListParams
) -> credits_pb2.CreditsLedgerListResult:
    rows, next_token = await s.credits.ledger(ctx.principal, p.project_id, p.job_id, p.page_size, p.page_token)
    return credits_pb2.CreditsLedgerListResult(
        entries=[convert.ledger_entry(r) for r in rows], next_page_token=next_token
    )


async def auth_whoami(s: Services, ctx: OperationContext, p: auth_pb2.AuthWhoamiParams) -> auth_pb2.AuthWhoamiResult:
    principal = ctx.principal
    return auth_pb2.AuthWhoamiResult(
        principal_id=principal.id,
        kind=principal.kind,
        name=principal.name,
        scopes=sorted(principal.scopes),
        project_ids=sorted(principal.project_ids),
    )


async def assets_sign(
    s: Services, ctx: OperationContext, p: catalog_pb2.AssetsSignParams
) -> catalog_pb2.AssetsSignResult:
    ttl = ttl_or_default(p.ttl_seconds)
    # The download's own check (scope by resource kind, project, existence) decides.
    await s.catalog.asset_file(ctx.principal, p.resource_name)
    if not s.public_url:
        raise failed_precondition(
            "HTTP_OFF", "this server has no HTTP projection to sign URLs for; set GEOPERA_PUBLIC_URL or --http-listen"
        )
    url, expires = s.signer.signed_url(s.public_url, "/v1/" + p.resource_name, ttl)
    result = catalog_pb2.AssetsSignResult(url=url)
    result.expire_time.FromSeconds(expires)
    return result


OPERATIONS = (
    Operation.declared(
        auth_pb2.AuthWhoamiParams,
        auth_pb2.AuthWhoamiResult,
        auth_whoami,
        "Who the calling token is: kind, scopes and project memberships.",
    ),
    Operation.declared(
        catalog_pb2.ProjectsGetParams,
        catalog_pb2.ProjectsGetResult,
        projects_get,
        "Get a project.",
    ),
    Operation.declared(
        catalog_pb2.ProjectsListParams,
        catalog_pb2.ProjectsListResult,
        projects_list,
        "List the projects the caller belongs to.",
    ),
    Operation.declared(
        catalog_pb2.ItemsGetParams,
        catalog_pb2.ItemsGetResult,
        items_get,
        "Get an item with its assets.",
    ),
    Operation.declared(
        catalog_pb2.ItemsListParams,
        catalog_pb2.ItemsListResult,
        items_list,
        "List a project's items by collection, bbox and datetime range.",
    ),
    Operation.declared(
        catalog_pb2.ItemsCreateParams,
        catalog_pb2.ItemsCreateResult,
        items_create,
        "Register an uploaded (or server-local) COG as an item.",
        validates_only=True,
    ),
    Operation.declared(
        catalog_pb2.AssetsSignParams,
        catalog_pb2.AssetsSignResult,
        assets_sign,
        "A URL that downloads an item's asset or an artifact over HTTP with no header, until it expires.",
    ),
    Operation.declared(
        credits_pb2.CreditsBalanceGetParams,
        credits_pb2.CreditsBalanceGetResult,
        balance_get,
        "A project's available and held credits.",
    ),
    Operation.declared(
        credits_pb2.CreditsLedgerListParams,
        credits_pb2.CreditsLedgerListResult,
        ledger_list,
        "A project's credit ledger, newest first.",
    ),
)
