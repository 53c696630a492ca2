"""Serving the OpenAPI document at /openapi.json and Swagger UI at /docs."""

from __future__ import annotations

import json
import mimetypes
import os
from pathlib import Path

from aiohttp import web

from .extra_routes import DOCS_ASSETS, EXTRA_ROUTES
from .openapi import build_openapi
from .routes import Route

__all__ = ["DOCS_ASSETS_ENV", "add_docs_routes", "default_assets_dir"]

DOCS_ASSETS_ENV = "CIMHUB_DOCS_ASSETS"
_ASSETS_KEY = web.AppKey("cim_docs_assets", str)


def default_assets_dir() -> str:
    """$CIMHUB_DOCS_ASSETS, else swagger-ui-dist as `make node-tools` installs it
    (npm ci from tools/node/package-lock.json)."""
    configured = os.environ.get(DOCS_ASSETS_ENV, "")
    if configured:
        return configured
    root = Path(__file__).resolve().parents[2]
    return str(root / "tools" / "node" / "node_modules" / "swagger-ui-dist")


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>CIM Hub API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/swagger-ui-standalone-preset.js"></script>
<script>
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
  layout: "StandaloneLayout"
});
</script>
</body>
</html>
"""


def add_docs_routes(
    app: web.Application, routes: list[Route], *, assets_dir: str | None = None
) -> None:
    """Serve /openapi.json and /docs. Call after every other route is added."""
    app[_ASSETS_KEY] = assets_dir or default_assets_dir()
    # Optional routes (/metrics can be switched off) are described when served.
    served = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource}
    own = {("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/docs/{asset}")}
    extra = {k: op for k, op in EXTRA_ROUTES.items() if k in served or k in own}
    spec_text = json.dumps(build_openapi(routes, extra))

    async def spec(_request: web.Request) -> web.Response:
        return web.Response(text=spec_text, content_type="application/json")

    async def page(request: web.Request) -> web.Response:
        if not _assets_present(request.app[_ASSETS_KEY]):
            return _no_assets()
        return web.Response(text=_PAGE, content_type="text/html")

    async def asset(request: web.Request) -> web.StreamResponse:
        name = request.match_info["asset"]
        if name not in DOCS_ASSETS:
            raise web.HTTPNotFound()
        folder = request.app[_ASSETS_KEY]
        if not _assets_present(folder):
            return _no_assets()
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return web.FileResponse(Path(folder) / name, headers={"Content-Type": kind})

    app.router.add_route("GET", "/openapi.json", spec)
    app.router.add_route("GET", "/docs", page)
    app.router.add_route("GET", "/docs/{asset}", asset)


def _assets_present(folder: str) -> bool:
    return (Path(folder) / "swagger-ui-bundle.js").is_file()


def _no_assets() -> web.Response:
    return web.Response(
        status=503,
        text="Documentation assets are not installed; run `make docs-assets`.\n",
        content_type="text/plain",
    )
