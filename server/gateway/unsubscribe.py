"""One-click unsubscribe (RFC 8058) at /unsubscribe/{token}, outside the API's auth.

The signed token is the whole authority. Only a POST unsubscribes: mail
scanners and link previews follow GETs, so a GET answers with a page whose
button makes the POST.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

OneClick = Callable[[str], Awaitable[Any | None]]

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Unsubscribe</title></head>
<body><form method="post" action="{action}">
<input type="hidden" name="List-Unsubscribe" value="One-Click">
<p>Stop receiving these emails?</p><button type="submit">Unsubscribe</button>
</form></body></html>
"""
_DONE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Unsubscribed</title></head>
<body><p>You are unsubscribed.</p></body></html>
"""


def add_unsubscribe_routes(app: web.Application, one_click: OneClick) -> None:
    async def page(request: web.Request) -> web.Response:
        # Changes nothing, whatever the token: only says what a POST would do.
        action = html.escape(request.path, quote=True)
        return web.Response(text=_PAGE.format(action=action), content_type="text/html")

    async def unsubscribe(request: web.Request) -> web.Response:
        applied = await one_click(request.match_info["token"])
        if applied is None:
            return web.Response(status=403, text="This unsubscribe link is not valid.\n")
        return web.Response(text=_DONE, content_type="text/html")

    app.router.add_route("GET", "/unsubscribe/{token}", page)
    app.router.add_route("POST", "/unsubscribe/{token}", unsubscribe)
