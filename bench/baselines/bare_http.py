"""Bare aiohttp JSON handler: parses the JSON body and answers a small JSON reply.

No project code is involved. Serves POST /api/v1/message/send with a reply of
the same shape and size as the façade's 202 envelope.

Prints "bare-http: listening on HOST:PORT" once serving; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import uuid

from aiohttp import web


async def send(request: web.Request) -> web.Response:
    body = await request.json()
    return web.json_response(
        {
            "status": 202,
            "statusKey": "SUCCESS",
            "data": {
                "messageId": str(uuid.uuid4()),
                "status": "ACCEPTED",
                "channelId": body.get("channelId", ""),
                "conversationId": str(uuid.uuid4()),
            },
        },
        status=202,
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/api/v1/message/send", send)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"bare-http: listening on {args.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
