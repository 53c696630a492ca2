"""/healthz and /readyz: whether the process lives, and whether to send it traffic."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from server.api.readiness import Readiness


def add_health_routes(
    app: web.Application, serving: Callable[[], bool], readiness: Readiness
) -> None:
    """/healthz for restarts (the process answers), /readyz for traffic (it can work)."""

    async def healthz(_request: web.Request) -> web.Response:
        if serving():
            return web.json_response({"status": "SERVING"})
        return web.json_response({"status": "NOT_SERVING"}, status=503)

    async def readyz(_request: web.Request) -> web.Response:
        if not serving():
            return web.json_response({"status": "NOT_SERVING", "reason": "stopping"}, status=503)
        if not readiness.ready:
            return web.json_response(
                {"status": "NOT_SERVING", "reason": "store unreachable"}, status=503
            )
        return web.json_response({"status": "SERVING"})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
