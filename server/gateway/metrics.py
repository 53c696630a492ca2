"""/metrics over HTTP, and the REST half of the request metrics.

REST calls are measured here, at the edge, by route template and HTTP status:
that is what a REST client saw, including refusals no gRPC handler ever ran
for (malformed JSON, unknown routes). /metrics does not count itself.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from server.observability.metrics import CONTENT_TYPE, HubMetrics

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
# What aiohttp answers with when a client goes away mid-request (nginx's number).
CLIENT_CLOSED = 499

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def request_middleware(metrics: HubMetrics) -> Callable[..., Awaitable[web.StreamResponse]]:
    bound = metrics.request

    @web.middleware
    async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        if resource is None:
            # Unknown paths and methods: one label, whatever scanners try.
            name = "unmatched"
        elif resource.canonical == METRICS_PATH:
            return await handler(request)
        else:
            name = f"{request.method} {resource.canonical}"
        began = time.perf_counter()
        status = 500
        timed = True
        try:
            response = await handler(request)
            status = response.status
            # Streams (SSE, WebSocket) and files are counted, not timed.
            timed = isinstance(response, web.Response)
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED
            raise
        finally:
            counter, timing = bound("rest", name, str(status))
            counter.inc()
            if timed:
                timing.observe(time.perf_counter() - began)

    return measure


def metrics_handler(metrics: HubMetrics, token: str = "") -> Handler:
    expected = f"Bearer {token}".encode() if token else b""

    async def serve(request: web.Request) -> web.Response:
        if expected:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return web.Response(
                    status=401,
                    text="a bearer token is required\n",
                    headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
                )
        try:
            await metrics.refresh()
        except Exception:
            # Counters are still worth serving while the database is away.
            log.warning("reading the outbox for /metrics failed", exc_info=True)
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    return serve


def add_metrics_route(app: web.Application, metrics: HubMetrics, token: str = "") -> None:
    app.router.add_route("GET", METRICS_PATH, metrics_handler(metrics, token))


def metrics_app(metrics: HubMetrics, token: str = "") -> web.Application:
    """An application serving /metrics alone, for a listener of its own."""
    app = web.Application()
    add_metrics_route(app, metrics, token)
    return app
