"""The web portal on the HTTP projection: `GET /` answers the single page
(`static/index.html`) and `GET /portal/{path}` its ES modules, styles and vendored
libraries. Nothing else: every figure the portal shows comes from the same
operations and HTTP routes any other client calls (`POST /v1/op/...`, tiles,
downloads), with the caller's bearer token.

A strict Content-Security-Policy: only this origin's scripts, styles and
connections; images also from `data:` (Leaflet's icons) and `blob:` (previews
fetched with the bearer token). index.html is never cached, so a new release is
seen on the next load; the other files are revalidated (ETag/Last-Modified)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from aiohttp import web

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
# What a served file or folder may be called: no dot-files (nor `..`), no NUL or other bytes.
_SAFE_NAME: Final = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
CONTENT_SECURITY_POLICY: Final = "; ".join(
    [
        "default-src 'self'",
        "img-src 'self' data: blob:",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ]
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# aiohttp guesses from the system's mime table, which may not know ES modules.
MEDIA_TYPES: Final = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


async def _index(_request: web.Request) -> web.StreamResponse:
    return web.FileResponse(
        STATIC_DIR / "index.html",
        headers={**SECURITY_HEADERS, "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"},
    )


async def _static(request: web.Request) -> web.StreamResponse:
    path = _static_file(request.match_info["path"])
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
    if path.suffix in MEDIA_TYPES:
        headers["Content-Type"] = MEDIA_TYPES[path.suffix]
    return web.FileResponse(path, headers=headers)


def _static_file(relative: str) -> Path:
    """The file under STATIC_DIR that `relative` names, or 404 (also for `..`, a
    directory, a hidden or odd name: nothing outside the folder is ever served)."""
    parts = relative.split("/")
    if not all(_SAFE_NAME.fullmatch(part) for part in parts):
        raise web.HTTPNotFound()
    path = STATIC_DIR.joinpath(*parts).resolve()
    if not path.is_relative_to(STATIC_DIR) or not path.is_file():
        raise web.HTTPNotFound()
    return path


def add_portal_routes(app: web.Application) -> None:
    app.router.add_get("/", _index)
    app.router.add_get("/portal/{path:.+}", _static)
