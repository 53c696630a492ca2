"""Provider callbacks: receipts and inbound messages arrive at /callbacks/{channel_id}.

These are not part of the public API, so they are not generated from the
proto; each adapter verifies its provider's signature and parses the payload.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import parse_qsl

from aiohttp import web

from server.api.field_guard import provider_problems
from server.domain.provider import (
    CallbackHandler,
    CallbackRejected,
    CallbackRequest,
    InboundMessage,
    ReceiptSink,
)

log = logging.getLogger(__name__)
InboundSink = Callable[[str, Sequence[InboundMessage]], Awaitable[None]]


def add_callback_routes(
    app: web.Application,
    handler_for: Callable[[str], object | None],
    *,
    public_url: Callable[[], str],
    on_receipt: ReceiptSink,
    on_inbound: InboundSink,
) -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        channel_id = request.match_info["channel_id"]
        # Looked up per call: channels come and go at runtime.
        handler = handler_for(channel_id)
        if handler is None or not hasattr(handler, "handle_callback"):
            raise web.HTTPNotFound()
        body = await request.read()
        form: dict[str, str] = {}
        if request.content_type == "application/x-www-form-urlencoded":
            form = dict(parse_qsl(body.decode(errors="replace"), keep_blank_values=True))
        callback = CallbackRequest(
            method=request.method,
            # Providers sign the URL they called, which is our public one.
            url=public_url().rstrip("/") + request.path_qs,
            headers={k.lower(): v for k, v in request.headers.items()},
            query=dict(request.query),
            body=body,
            form=form,
        )
        adapter: CallbackHandler = handler  # type: ignore[assignment]
        try:
            result = await adapter.handle_callback(callback)
        except CallbackRejected as exc:
            log.warning("callback for %s rejected: %s", channel_id, exc.reason)
            return web.Response(status=exc.status, text="rejected")
        # What the database would refuse is the provider's error, not ours.
        problems = provider_problems(result)
        if problems:
            log.warning("callback for %s refused: %s", channel_id, problems[0])
            return web.Response(status=400, text=f"{problems[0].field}: {problems[0].description}")
        for receipt in result.receipts:
            await on_receipt(channel_id, receipt)
        if result.inbound:
            await on_inbound(channel_id, result.inbound)
        return web.Response(
            status=result.status, body=result.body, content_type=result.content_type
        )

    app.router.add_route("GET", "/callbacks/{channel_id}", handle)
    app.router.add_route("POST", "/callbacks/{channel_id}", handle)
