"""Base for fake provider servers: a real HTTP server on loopback with a chosen behaviour.

Each provider's fake subclasses FakeProviderServer, adds the provider's real
routes, and asks `misbehave()` first so every fake offers the same behaviours:

- HAPPY: accepts everything.
- THROTTLED: answers 429 with Retry-After for the first `failures` requests.
- FLAKY: answers 5xx for the first `failures` requests, then accepts.
- BLACK_HOLE: accepts the connection and never answers.
- REJECTING: refuses every message with the provider's permanent error.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from aiohttp import web


class Behaviour(Enum):
    HAPPY = "happy"
    THROTTLED = "throttled"
    FLAKY = "flaky"
    BLACK_HOLE = "black_hole"
    REJECTING = "rejecting"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    body: bytes
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)


class FakeProviderServer:
    def __init__(
        self, behaviour: Behaviour = Behaviour.HAPPY, *, failures: int = 1, retry_after: int = 1
    ) -> None:
        self.behaviour = behaviour
        self.failures = failures
        self.retry_after = retry_after
        self.requests: list[Recorded] = []
        self.app = web.Application()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeProviderServer:
        # A black-holed request would otherwise hold shutdown for aiohttp's default minute.
        self._runner = web.AppRunner(self.app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeProviderServer:
        return await self.start()

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def record(self, request: web.Request) -> Recorded:
        body = await request.read()
        rec = Recorded(
            request.method, request.path, dict(request.headers), dict(request.query), body
        )
        ctype = request.headers.get("Content-Type", "")
        if "json" in ctype and body:
            rec.json = await request.json()
        elif "form" in ctype:
            rec.form = {k: str(v) for k, v in (await request.post()).items()}
        self.requests.append(rec)
        return rec

    async def misbehave(self) -> web.Response | None:
        """The response a non-happy behaviour gives instead of the real one, if any.

        Call after record(); `len(self.requests)` counts this request.
        """
        n = len(self.requests)
        if self.behaviour is Behaviour.BLACK_HOLE:
            await asyncio.Event().wait()
        if self.behaviour is Behaviour.THROTTLED and n <= self.failures:
            return web.json_response(
                self.throttled_body(), status=429, headers={"Retry-After": str(self.retry_after)}
            )
        if self.behaviour is Behaviour.FLAKY and n <= self.failures:
            return web.json_response(self.server_error_body(), status=503)
        return None

    # Providers word their errors differently; subclasses override these.
    def throttled_body(self) -> Any:
        return {"error": "too many requests"}

    def server_error_body(self) -> Any:
        return {"error": "service unavailable"}
