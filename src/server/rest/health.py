"""`/healthz` (liveness: the process answers) and `/readyz` (readiness: the
services are up, the database answers and is fully migrated; 503 with the
reason when not), for load balancers and orchestrators. Neither needs a token."""

from __future__ import annotations

import json
from collections.abc import Callable

from aiohttp import web

from geopera_kernel.server.api.execute import Executor
from geopera_kernel.server.domain.readiness import check_ready
from geopera_kernel.server.edge.call import Edge
from geopera_kernel.server.edge.call import request_id as request_id_of
from geopera_kernel.server.edge.status import domain_error_body
from geopera_kernel.server.errors import Code, DomainError

_NO_STORE = {"Cache-Control": "no-store"}


def _answer(body: dict[str, object], status: int) -> web.Response:
    return web.Response(
        text=json.dumps(body, separators=(",", ":")), status=status, content_type="application/json", headers=_NO_STORE
    )


def add_health_routes(router: web.UrlDispatcher, edge: Edge, executor: Callable[[], Executor | None]) -> None:
    """`executor()` is None until the server attached its services (after migrations)."""

    async def healthz(request: web.Request) -> web.Response:
        return _answer({"status": "ok"}, 200)

    async def readyz(request: web.Request) -> web.Response:
        running = executor()
        try:
            if edge.stopping:
                raise DomainError(Code.UNAVAILABLE, "SERVER_SHUTTING_DOWN", "the server is stopping")
            if running is None:
                raise DomainError(
                    Code.UNAVAILABLE, "NOT_READY", "the server is starting: waiting for the database and migrations"
                )
            await check_ready(running.services.db)
        except DomainError as err:
            return _answer(domain_error_body(err, request_id_of(request.headers.get("X-Request-Id"))), 503)
        return _answer({"status": "ready"}, 200)

    router.add_get("/healthz", healthz)
    router.add_get("/readyz", readyz)
