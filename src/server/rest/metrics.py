"""`GET /metrics`: the Prometheus text exposition of this replica's counters
(`geopera_kernel.server.metrics`) and of the shared database state (the job
queue, stored bytes), on the HTTP listener.

Who may scrape is `GEOPERA_METRICS`:
- `open` (default): no token, as `/healthz`; operators scrape on an internal
  address (the HTTP listener defaults to loopback). The page holds counts,
  job type ids and operation names, nothing of a project's data;
- `admin`: a bearer token with the `admin` scope, through the edge as every
  call (401/403 otherwise; Prometheus' `authorization` scrape setting sends it);
- `off`: no route (404).
"""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from geopera_kernel.server.edge.call import CallInfo, Edge
from geopera_kernel.server.errors import DomainError
from geopera_kernel.server.metrics import REGISTRY, DatabaseCollector
from geopera_kernel.server.rest.edged import through_edge
from geopera_kernel.server.rest.responses import error_response

log = logging.getLogger(__name__)

METRICS_MODES = ("open", "admin", "off")


class MetricsPage:
    """The page; `attach` hands it the database once the services are up
    (before that it reports the process counters only)."""

    def __init__(self, edge: Edge, mode: str) -> None:
        if mode not in METRICS_MODES:
            raise ValueError(f"GEOPERA_METRICS must be one of {', '.join(METRICS_MODES)}, not {mode!r}")
        self._edge = edge
        self._mode = mode
        self._database: DatabaseCollector | None = None
        # Per server (not the process-wide REGISTRY): two servers in one process each report their own database.
        self._database_registry = CollectorRegistry(auto_describe=True)

    def attach(self, db: object) -> None:
        self._database = DatabaseCollector(db)
        self._database_registry.register(self._database)

    def add_route(self, router: web.UrlDispatcher) -> None:
        if self._mode != "off":
            router.add_get("/metrics", self.serve)

    async def serve(self, request: web.Request) -> web.StreamResponse:
        if self._mode == "open":
            return await self._page()

        async def work(call: CallInfo) -> web.StreamResponse:
            principal = await self._edge.authenticate(call, request.headers.get("Authorization"))
            principal.require_scope("admin")
            return await self._page()

        async def on_error(error: DomainError, call: CallInfo) -> web.StreamResponse:
            return error_response(error, call.request_id)

        return await through_edge(self._edge, request, "HTTP GET /metrics", work, on_error)

    async def _page(self) -> web.Response:
        if self._database is not None:
            try:
                await self._database.refresh()
            except Exception as exc:  # a slow or lost database: the counters are still worth serving
                log.warning("metrics: database snapshot failed (%s); serving the last one", exc)
        body = generate_latest(REGISTRY) + generate_latest(self._database_registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})
