"""A webhook receiver: a real HTTP server on loopback that records what it is sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from .net import serving


@dataclass
class Receiver:
    """A real HTTP server on loopback; each path answers its current status."""

    answers: dict[str, int] = field(default_factory=dict)
    hits: list[tuple[str, str, int]] = field(default_factory=list)  # (path, webhook-id, status)
    base: str = ""

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def ids(self, path: str, status: int | None = None) -> list[str]:
        return [i for p, i, s in self.hits if p == path and status in (None, s)]


@asynccontextmanager
async def receiver(**answers: int) -> AsyncIterator[Receiver]:
    found = Receiver({f"/{k}": v for k, v in answers.items()})

    async def hook(request: web.Request) -> web.Response:
        status = found.answers.get(request.path, 200)
        found.hits.append((request.path, request.headers["webhook-id"], status))
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/{name}", hook)
    async with serving(app) as found.base:
        yield found
