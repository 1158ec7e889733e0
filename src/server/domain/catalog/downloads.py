"""Downloads: the file behind a resource name (an item's asset, or an
analytics artifact), for the caller that may read it."""

from __future__ import annotations

import re

from geopera_kernel.server import callstats
from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.catalog.reads import CatalogReads
from geopera_kernel.server.domain.models import FileRef
from geopera_kernel.server.errors import failed_precondition, invalid_argument, not_found, permission_denied
from geopera_kernel.server.store import Q

# Stands in for a job token whose read of a source item was allowed above.
SOURCE_READER = Principal(id="job-source-reader", kind="admin", scopes=frozenset({"admin"}))
ARTIFACT_RESOURCE = re.compile(r"^artifacts/(?P<artifact_id>[^/]+)$")
ASSET_RESOURCE = re.compile(r"^items/(?P<item_id>[^/]+)/assets/(?P<key>[^/]+)$")


class CatalogDownloads(CatalogReads):
    async def asset_file(self, principal: Principal, resource_name: str) -> FileRef:
        artifact = ARTIFACT_RESOURCE.match(resource_name)
        if artifact:
            return await self._artifact_file(principal, artifact.group("artifact_id"))
        match = ASSET_RESOURCE.match(resource_name)
        if not match:
            raise invalid_argument(
                "INVALID_RESOURCE_NAME",
                "resource_name must be items/{item_id}/assets/{asset_key} or artifacts/{artifact_id}",
                field="resource_name",
            )
        item_id, key = match.group("item_id"), match.group("key")
        if principal.kind == "job":
            # A job token reads its own job's sources, while its attempt lives.
            if item_id not in principal.source_item_ids:
                raise permission_denied("JOB_TOKEN_NOT_ALLOWED", "a job token may only read its job's source items")
            await self._require_live_attempt(principal)
            principal = SOURCE_READER
        principal.require_scope("catalog:read")
        # An asset never changes once registered (caches.py): HTTP range reads of one
        # file, one request per tile, skip the database after the first.
        cached = self._asset_files.get(resource_name)
        callstats.cache_lookup("asset_file", cached is not None)
        if cached is not None:
            principal.require_project(cached[0])
            return cached[1]
        async with self._db.connection() as conn:
            row = await (await conn.execute(Q.get_asset_file, {"item_id": item_id, "key": key})).fetchone()
            if row is None:
                owner = await (await conn.execute(Q.item_project, {"id": item_id})).fetchone()
                if owner is None:
                    raise not_found("ITEM_NOT_FOUND", f"item {item_id!r} does not exist", item_id=item_id)
                principal.require_project(owner["project_id"])
                raise not_found("ASSET_NOT_FOUND", f"item {item_id!r} has no asset {key!r}")
        ref = FileRef(row["storage_key"], row["media_type"], row["size_bytes"], row["sha256"])
        self._asset_files.put(resource_name, (row["project_id"], ref))
        principal.require_project(row["project_id"])
        return ref

    async def _artifact_file(self, principal: Principal, artifact_id: str) -> FileRef:
        principal.require_scope("analytics:read")
        async with self._db.connection() as conn:
            row = await (await conn.execute(Q.get_artifact_file, {"id": artifact_id})).fetchone()
        if row is None:
            raise not_found("ARTIFACT_NOT_FOUND", f"artifact {artifact_id!r} does not exist", artifact_id=artifact_id)
        principal.require_project(row["project_id"])
        return FileRef(row["storage_key"], row["media_type"], row["size_bytes"], row["sha256"])

    async def _require_live_attempt(self, principal: Principal) -> None:
        async with self._db.connection() as conn:
            row = await (await conn.execute(Q.get_job, {"id": principal.job_id})).fetchone()
        if (
            row is None
            or row["attempt"] != principal.attempt
            or row["worker_id"] != principal.name
            or row["status"] not in ("DISPATCHED", "RUNNING")
        ):
            raise failed_precondition(
                "JOB_ATTEMPT_OVER", f"attempt {principal.attempt} of job {principal.job_id} is over"
            )
