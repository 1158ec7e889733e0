"""`/docs`: Swagger UI over `/v1/openapi.json`, every script and stylesheet
served by this server (from the `swagger-ui-py` package's copy of Swagger UI 5,
Apache-2.0), none from a CDN: the page works offline and its Content-Security-Policy
lets a browser load nothing from any other host."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from aiohttp import web

STATIC_PREFIX = "/docs/static/"
# The files the page uses (the package also ships Swagger Editor, not served).
_ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "index.css": "text/css",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
    "LICENSE": "text/plain",
}
# Scripts come from here only (no inline script); Swagger UI sets inline styles
# and shows its logo as a data: URL.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_PAGE = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Geopera kernel API</title>
  <link rel="stylesheet" href="{STATIC_PREFIX}swagger-ui.css">
  <link rel="stylesheet" href="{STATIC_PREFIX}index.css">
  <link rel="icon" type="image/png" href="{STATIC_PREFIX}favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{STATIC_PREFIX}swagger-ui-bundle.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"""

# validatorUrl null: Swagger UI would otherwise send the document to a public validator.
_INIT = """window.ui = SwaggerUIBundle({
  url: "/v1/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  persistAuthorization: false
});
"""


def swagger_ui_dir() -> Path:
    """The folder of Swagger UI's files in the installed `swagger-ui-py` (found
    without importing it: its package imports jinja2 and yaml, which we don't use)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def add_docs_routes(router: web.UrlDispatcher) -> None:
    static = swagger_ui_dir()
    headers = {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff"}

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=_PAGE, content_type="text/html", headers=headers)

    async def init_script(request: web.Request) -> web.Response:
        return web.Response(text=_INIT, content_type="text/javascript", headers=headers)

    async def asset(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        content_type = _ASSETS.get(name)
        if content_type is None:
            raise web.HTTPNotFound()
        return web.FileResponse(
            static / name,
            headers={**headers, "Content-Type": content_type, "Cache-Control": "public, max-age=86400"},
        )

    router.add_get("/docs", page)
    router.add_get("/docs/init.js", init_script)
    router.add_get(STATIC_PREFIX + "{name}", asset)
