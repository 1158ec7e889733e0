"""Provenance: the graph of items and the jobs that derived them from others."""

from __future__ import annotations

from geopera_kernel.server.auth import Principal
from geopera_kernel.server.errors import invalid_argument, not_found
from geopera_kernel.server.store import Database, Q

Node = tuple[str, str, str]  # kind ("item" or "job"), id, label
Edge = tuple[str, str, str, str]  # output item, relation, job, source item ("" for none)


class LineageService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def lineage(
        self, principal: Principal, item_id: str, direction: str, max_depth: int
    ) -> tuple[list[Node], list[Edge]]:
        """Nodes and edges reachable from `item_id` within `max_depth` edges."""
        if not item_id:
            raise invalid_argument("ITEM_ID_REQUIRED", "item_id is required", field="item_id")
        direction = direction or "both"
        if direction not in ("upstream", "downstream", "both"):
            raise invalid_argument(
                "INVALID_DIRECTION", "direction must be upstream, downstream or both", field="direction"
            )
        if not 0 <= max_depth <= 32:
            raise invalid_argument("INVALID_MAX_DEPTH", "max_depth must be 1..32 (0 means 8)", field="max_depth")
        depth = max_depth or 8
        async with self._db.connection() as conn:
            start = await (await conn.execute(Q.get_item, {"id": item_id})).fetchone()
            if start is None:
                raise not_found("ITEM_NOT_FOUND", f"item {item_id!r} does not exist", item_id=item_id)
            principal.require_project(start["project_id"])
            edges: dict[Edge, None] = {}
            up, down = {item_id}, {item_id}
            for _ in range(depth):
                frontier_up: set[str] = set()
                if direction in ("upstream", "both") and up:
                    for e in await (await conn.execute(Q.item_sources, {"ids": list(up)})).fetchall():
                        edges[(e["output_item_id"], e["relation"], e["job_id"], e["source_item_id"] or "")] = None
                        if e["source_item_id"]:
                            frontier_up.add(e["source_item_id"])
                frontier_down: set[str] = set()
                if direction in ("downstream", "both") and down:
                    rows = await (await conn.execute(Q.item_derivatives, {"ids": list(down)})).fetchall()
                    derived = {e["output_item_id"] for e in rows}
                    if derived:
                        rows += await (await conn.execute(Q.item_sources, {"ids": list(derived)})).fetchall()
                    for e in rows:
                        edges[(e["output_item_id"], e["relation"], e["job_id"], e["source_item_id"] or "")] = None
                    frontier_down = derived
                up, down = frontier_up, frontier_down
                if not up and not down:
                    break
            item_ids = [item_id, *sorted({e[0] for e in edges} | {e[3] for e in edges if e[3]} - {item_id})]
            job_ids = sorted({e[2] for e in edges})
            labels = await (await conn.execute(Q.lineage_labels, {"item_ids": item_ids, "job_ids": job_ids})).fetchall()
        by_key = {(r["kind"], r["id"]): r for r in labels}
        nodes = [("item", i, by_key[("item", i)]["label"]) for i in item_ids if ("item", i) in by_key]
        nodes += [("job", j, by_key[("job", j)]["label"]) for j in job_ids if ("job", j) in by_key]
        return nodes, list(edges)
