"""Projects: reading and listing them, and creating one with its credit account."""

from __future__ import annotations

import psycopg

from geopera_kernel.server.auth import Principal
from geopera_kernel.server.domain.catalog.reads import CatalogReads
from geopera_kernel.server.domain.models import ProjectExtent, ProjectRecord
from geopera_kernel.server.domain.rows import fetch_project_row
from geopera_kernel.server.errors import already_exists, invalid_argument
from geopera_kernel.server.pagination import decode_page_token, page, page_size_or_default
from geopera_kernel.server.store import Q


class CatalogProjects(CatalogReads):
    async def get_project(self, principal: Principal, project_id: str) -> ProjectRecord:
        principal.require_project(project_id)
        async with self._db.connection() as conn:
            row = await fetch_project_row(conn, Q.get_project, {"id": project_id}, project_id)
        return ProjectRecord(**row)

    async def project_extent(self, principal: Principal, project_id: str) -> ProjectExtent:
        """The bounding box and time span of a project's items (a STAC collection's extent)."""
        principal.require_project(project_id)
        async with self._db.connection() as conn:
            row = await (await conn.execute(Q.project_extent, {"project_id": project_id})).fetchone()
        assert row is not None  # an aggregate always answers one row
        corners = (row["west"], row["south"], row["east"], row["north"])
        return ProjectExtent(
            bbox=None if row["west"] is None else corners,
            first_datetime=row["first_datetime"],
            last_datetime=row["last_datetime"],
        )

    async def list_projects(
        self, principal: Principal, page_size: int, page_token: str
    ) -> tuple[list[ProjectRecord], str]:
        limit = page_size_or_default(page_size)
        cursor = decode_page_token(page_token, {"op": "projects.list"})
        member_ids = None if principal.is_admin else sorted(principal.project_ids)
        async with self._db.connection() as conn:
            cur = await conn.execute(
                Q.list_projects,
                {"after_id": (cursor or {}).get("id", ""), "member_ids": member_ids, "limit": limit + 1},
            )
            rows = await cur.fetchall()
        return page(rows, limit, lambda r: ProjectRecord(**r), lambda last: {"id": last.id}, {"op": "projects.list"})

    async def create_project(self, project_id: str, display_name: str) -> ProjectRecord:
        try:
            async with self._db.transaction() as conn:
                row = await (
                    await conn.execute(Q.insert_project, {"id": project_id, "display_name": display_name})
                ).fetchone()
                await self._credits.open_account(conn, project_id)
        except psycopg.errors.UniqueViolation as exc:
            raise already_exists("PROJECT_EXISTS", f"project {project_id!r} already exists") from exc
        except psycopg.errors.CheckViolation as exc:
            raise invalid_argument(
                "INVALID_PROJECT_ID",
                "project ids are 1-63 lower-case letters, digits, '-' or '_'",
                field="project_id",
            ) from exc
        assert row is not None
        return ProjectRecord(**row)

    # -- items ------------------------------------------------------------
