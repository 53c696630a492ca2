"""Server-streaming RPCs over HTTP: Server-Sent Events, or a WebSocket on upgrade.

Each notification is sent as the envelope itself (the event's data) with its
resume cursor as the event id, so SSE clients resume with Last-Event-ID and
WebSocket clients with ?after=.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import grpc
from aiohttp import WSMsgType, web

from server.aio import cancel_and_wait, supervised
from server.gateway.envelope import error_body, error_from_status
from server.gateway.jsonmap import to_json
from server.gateway.routes import Route, build_request

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MetadataOf = Callable[[web.Request], list[tuple[str, str]]]
TraceOf = Callable[[web.Request], str]

# How soon an SSE stream notices a client that went away without a word.
DISCONNECT_POLL_S = 0.2


def frame(item: Any) -> tuple[str, str, str]:
    """(event name, id, data) for one stream item."""
    kind = item.WhichOneof("item") or "heartbeat"
    payload = to_json(getattr(item, kind))
    return kind, item.cursor, json.dumps(payload, separators=(",", ":"))


def sse_bytes(event: str, event_id: str, data: str) -> bytes:
    head = f"id: {event_id}\n" if event_id and event != "heartbeat" else ""
    return f"{head}event: {event}\ndata: {data}\n\n".encode()


def stream_handler(
    channel: grpc.aio.Channel, route: Route, metadata_of: MetadataOf, trace_of: TraceOf
) -> Handler:
    open_stream = channel.unary_stream(
        route.method_full_path,
        request_serializer=route.request_cls.SerializeToString,
        response_deserializer=route.response_cls.FromString,
    )
    departures = Departures()

    async def handle(request: web.Request) -> web.StreamResponse:
        query = list(request.query.items())
        resume = request.headers.get("Last-Event-ID")
        if resume and not request.query.get("after"):
            query.append(("after", resume))
        message = build_request(route, None, request.match_info, query)
        call = open_stream(message, metadata=metadata_of(request))
        try:
            # Read the first item before answering, so a refused stream
            # (bad cursor, no credentials) gets a proper HTTP error status.
            first = await call.read()
            if first is grpc.aio.EOF:
                return web.Response(status=204)
            if request.headers.get("Upgrade", "").lower() == "websocket":
                return await _websocket(request, call, first, trace_of)
            return await _sse(request, call, first, trace_of, departures)
        finally:
            call.cancel()

    return handle


async def _sse(
    request: web.Request, call: Any, first: Any, trace_of: TraceOf, departures: Departures
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)

    async def pump() -> None:
        item = first
        try:
            while item is not grpc.aio.EOF:
                await response.write(sse_bytes(*frame(item)))
                item = await call.read()
        except grpc.aio.AioRpcError as exc:
            error = error_from_status(exc.code(), exc.details() or "", exc.trailing_metadata())
            await response.write(
                sse_bytes("error", "", json.dumps(error_body(error, trace_of(request))))
            )

    # Without this the stream (and its per-tenant place) would outlive the
    # client until the next write found the socket gone: a heartbeat away.
    await _until_first(pump(), departures.gone(request))
    return response


class Departures:
    """Tells each SSE handler when its client's connection is gone.

    aiohttp neither cancels a handler nor signals a GET's request body when the
    client goes away, so transports are looked at a few times a second: by one
    loop for all of a route's open streams, not a timer per stream.
    """

    def __init__(self, interval: float = DISCONNECT_POLL_S) -> None:
        self._interval = interval
        self._waiting: dict[asyncio.Future[None], web.Request] = {}
        self._watcher: asyncio.Task[None] | None = None

    async def gone(self, request: web.Request) -> None:
        """Returns once the request's connection is closed or closing."""
        departed = asyncio.get_running_loop().create_future()
        self._waiting[departed] = request
        if self._watcher is None or self._watcher.done():
            self._watcher = supervised(self._watch(), "sse-departures")
        try:
            await departed
        finally:
            self._waiting.pop(departed, None)
            if not self._waiting and self._watcher is not None:
                # Nothing left to watch: the loop must not outlive the server.
                self._watcher.cancel()
                self._watcher = None

    async def _watch(self) -> None:
        while self._waiting:
            await asyncio.sleep(self._interval)
            for departed, request in list(self._waiting.items()):
                transport = request.transport
                if (transport is None or transport.is_closing()) and not departed.done():
                    departed.set_result(None)


async def _until_first(*aws: Coroutine[Any, Any, None]) -> None:
    """Runs aws until one ends, then stops the rest; a vanished client is no error."""
    tasks = [asyncio.ensure_future(aw) for aw in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(*tasks)
    for task in tasks:
        if task.cancelled():
            continue
        error = task.exception()
        if error is not None and not isinstance(error, ConnectionError):
            raise error


async def _websocket(
    request: web.Request, call: Any, first: Any, trace_of: TraceOf
) -> web.StreamResponse:
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)

    async def pump() -> None:
        item = first
        try:
            while item is not grpc.aio.EOF:
                event, event_id, data = frame(item)
                await ws.send_str(f'{{"event":"{event}","id":"{event_id}","data":{data}}}')
                item = await call.read()
            await ws.close()
        except grpc.aio.AioRpcError as exc:
            error = error_from_status(exc.code(), exc.details() or "", exc.trailing_metadata())
            await ws.send_str(
                json.dumps(
                    {"event": "error", "id": "", "data": error_body(error, trace_of(request))}
                )
            )
            await ws.close(code=1011 if error.http_status >= 500 else 1008)

    async def receive() -> None:
        # The client only ever closes; anything it sends is ignored. A dropped
        # connection reads as CLOSED (or ERROR), which ends this loop at once.
        async for msg in ws:
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR):
                break

    await _until_first(pump(), receive())
    return ws
