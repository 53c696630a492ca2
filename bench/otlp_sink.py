"""A stand-in trace collector: accepts OTLP/HTTP span exports and discards them.

Serves POST /v1/traces, counting requests, spans and bytes (GET /stats), so a
hub with its exporter on pays for encoding and sending spans without a real
collector, and the bench can tell whether spans were dropped on the way.

Prints "otlp-sink: listening on HOST:PORT" once serving; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

STATS = {"requests": 0, "spans": 0, "bytes": 0}


async def traces(request: web.Request) -> web.Response:
    body = await request.read()
    STATS["requests"] += 1
    STATS["bytes"] += len(body)
    export = ExportTraceServiceRequest.FromString(body)
    STATS["spans"] += sum(
        len(scope.spans) for resource in export.resource_spans for scope in resource.scope_spans
    )
    # An empty ExportTraceServiceResponse: success, nothing rejected.
    return web.Response(body=b"", content_type="application/x-protobuf")


async def stats(_request: web.Request) -> web.Response:
    return web.json_response(STATS)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/stats", stats)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"otlp-sink: listening on {args.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
