"""Outbound HTTP for tests whose fake servers listen on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from server.net.addresses import AddressPolicy
from server.net.http import OutboundHttp

LOOPBACK = ("127.0.0.0/8", "::1/128")


def loopback_http(**kwargs: Any) -> OutboundHttp:
    """An OutboundHttp whose guard lets loopback through, as local development does."""
    return OutboundHttp(policy=AddressPolicy.of(LOOPBACK), **kwargs)


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """The app on a free loopback port while the block runs; yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
