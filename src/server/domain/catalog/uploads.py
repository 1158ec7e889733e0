"""Uploads: a client streams a file into staging (ByteStream-like Write), to
name it in an item's assets afterwards; unused uploads expire."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.catalog.reads import CatalogReads
from geopera_kernel.server.domain.models import UploadPart, UploadRecord
from geopera_kernel.server.domain.pending_objects import surely_rolled_back
from geopera_kernel.server.domain.quota import quota_exceeded
from geopera_kernel.server.errors import Code, DomainError, invalid_argument
from geopera_kernel.server.ids import new_id
from geopera_kernel.server.store import CommitProbe, Q

UPLOAD_TTL_SECONDS = 24 * 3600


class CatalogUploads(CatalogReads):
    def _discard_staging(self, upload_id: str) -> None:
        # The row is consumed; its staging file has no further use.
        path = self._staging_dir() / upload_id
        path.unlink(missing_ok=True)

    # -- uploads ----------------------------------------------------------

    def _staging_dir(self) -> Path:
        path = self._storage.scratch_dir() / "uploads"
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def receive_upload(self, principal: Principal, parts: AsyncIterator[UploadPart]) -> UploadRecord:
        # Authorised before a byte is staged: the scope at once, the project and
        # its storage quota on the first message; the staging file comes after.
        principal.require_scope("catalog:write")
        upload_id = new_id("up")
        path = self._staging_dir() / upload_id
        digest = hashlib.sha256()
        received = 0
        finished = False
        first: UploadPart | None = None
        out: BinaryIO | None = None
        used = quota = 0
        probe = CommitProbe()
        try:
            async for part in parts:
                if first is None:
                    first = part
                    if not part.project_id:
                        raise invalid_argument(
                            "PROJECT_ID_REQUIRED",
                            "the first message must name project_id",
                            field="project_id",
                        )
                    principal.require_project(part.project_id)
                    async with self._db.connection() as conn:
                        used, quota = await self.quota.usage(conn, part.project_id)
                    if used + part.total_size > quota:
                        raise quota_exceeded(part.project_id, used + part.total_size, quota)
                    out = path.open("wb")
                if finished:
                    raise invalid_argument("INVALID_WRITE_OFFSET", "data after finish_write", field="finish_write")
                if part.write_offset != received:
                    raise invalid_argument(
                        "INVALID_WRITE_OFFSET",
                        f"write_offset {part.write_offset} but {received} bytes were received",
                        field="write_offset",
                    )
                if len(part.data) > self.limits.max_chunk_bytes:
                    raise invalid_argument(
                        "CHUNK_TOO_LARGE",
                        f"chunks are at most {self.limits.max_chunk_bytes} bytes",
                        field="data",
                    )
                received += len(part.data)
                if received > self.limits.max_upload_bytes:
                    raise DomainError(
                        Code.RESOURCE_EXHAUSTED,
                        "UPLOAD_TOO_LARGE",
                        f"uploads are limited to {self.limits.max_upload_bytes} bytes",
                    )
                if used + received > quota:
                    raise quota_exceeded(first.project_id, used + received, quota)
                if part.data:
                    assert out is not None
                    digest.update(part.data)
                    await asyncio.to_thread(out.write, part.data)
                finished = part.finish_write
            if out is not None:
                out.close()
            if first is None or not finished:
                raise invalid_argument(
                    "INCOMPLETE_UPLOAD", "the upload stream ended without finish_write", field="finish_write"
                )
            sha = digest.hexdigest()
            if first.total_size and first.total_size != received:
                raise invalid_argument(
                    "INCOMPLETE_UPLOAD",
                    f"received {received} bytes but total_size was {first.total_size}",
                    field="total_size",
                )
            if first.sha256 and first.sha256.lower() != sha:
                raise invalid_argument("INCOMPLETE_UPLOAD", "the received bytes do not match sha256", field="sha256")
            async with self._db.transaction(probe) as conn:
                row = await (
                    await conn.execute(
                        Q.insert_upload,
                        {
                            "id": upload_id,
                            "project_id": first.project_id,
                            "token_id": principal.id,
                            "file_name": first.file_name[:255],
                            "staging_path": str(path),
                            "size_bytes": received,
                            "sha256": sha,
                            "ttl_seconds": UPLOAD_TTL_SECONDS,
                        },
                    )
                ).fetchone()
                await self.quota.check(conn, first.project_id)
        except BaseException as error:
            if out is not None:
                out.close()
            # Kept when the upload's row may have committed (the sweep removes
            # staging files without a row).
            if surely_rolled_back(probe, error):
                path.unlink(missing_ok=True)
            raise
        assert row is not None
        return UploadRecord(upload_id, received, sha, row["expire_time"])

    async def expire_uploads(self) -> int:
        async with self._db.connection() as conn:
            rows = await (await conn.execute(Q.expired_uploads)).fetchall()
        for row in rows:
            Path(row["staging_path"]).unlink(missing_ok=True)
        return len(rows)

    # -- downloads ----------------------------------------------------------
