"""Start a real Hub in-process on port 0, as `make run` would, against a given database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import grpc

from server.app import Hub
from server.config import DEFAULT_CHANNELS, Settings
from server.storage.writer import now_ms


def test_settings(db_url: str, **overrides: Any) -> Settings:
    base = replace(
        Settings(),
        grpc_port=0,
        http_port=0,
        database_url=db_url,
        channels=DEFAULT_CHANNELS,
        sandbox_delivery_delay=0.01,
        heartbeat_seconds=0.5,
    )
    return replace(base, **overrides)


@asynccontextmanager
async def running_hub(
    db_url: str,
    adapters: dict[str, Any] | None = None,
    clock: Callable[[], int] = now_ms,
    **overrides: Any,
) -> AsyncIterator[Hub]:
    hub = await Hub.start(test_settings(db_url, **overrides), adapters=adapters, clock=clock)
    try:
        yield hub
    finally:
        await hub.stop(grace=1)


@asynccontextmanager
async def channel_to(hub: Hub) -> AsyncIterator[grpc.aio.Channel]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{hub.grpc_port}")
    try:
        yield channel
    finally:
        await channel.close()
