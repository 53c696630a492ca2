"""Start a real Hub in-process on port 0, as `make run` would, against a given database."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import aiohttp
import grpc

from server.app import Hub
from server.config import DEFAULT_CHANNELS, Settings
from server.storage.tx import now_ms

# The key every test hub is started with (tenant "default").
TEST_API_ID = "ak_test"
TEST_API_KEY = "test-secret-0123456789abcdefghijklmnopqrstuvwxyz"
AUTH_HEADERS = {"x-api-id": TEST_API_ID, "x-api-key": TEST_API_KEY}
AUTH_METADATA = tuple(AUTH_HEADERS.items())
# Environment for a hub in a subprocess, to go with its other settings.
AUTH_ENV = {"CIMHUB_BOOTSTRAP_API_ID": TEST_API_ID, "CIMHUB_BOOTSTRAP_API_KEY": TEST_API_KEY}


def test_settings(db_url: str, **overrides: Any) -> Settings:
    base = replace(
        Settings(),
        grpc_port=0,
        http_port=0,
        database_url=db_url,
        channels=DEFAULT_CHANNELS,
        sandbox_delivery_delay=0.01,
        heartbeat_seconds=0.5,
        bootstrap_api_id=TEST_API_ID,
        bootstrap_api_key=TEST_API_KEY,
        # Fakes listen on loopback; SSRF tests build their own, stricter, clients.
        outbound_allow=("127.0.0.0/8", "::1/128"),
    )
    return replace(base, **overrides)


@asynccontextmanager
async def running_hub(
    db_url: str,
    adapters: dict[str, Any] | None = None,
    clock: Callable[[], int] = now_ms,
    monotonic: Callable[[], float] = time.monotonic,
    **overrides: Any,
) -> AsyncIterator[Hub]:
    settings = test_settings(db_url, **overrides)
    hub = await Hub.start(settings, adapters=adapters, clock=clock, monotonic=monotonic)
    try:
        yield hub
    finally:
        await hub.stop(grace=1)


def _with_key(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    metadata = list(details.metadata or ())
    # A test that sends its own credentials (or a token) is left to them.
    if not any(k in ("x-api-id", "x-api-key", "authorization") for k, _ in metadata):
        metadata.extend(AUTH_METADATA)
    return grpc.aio.ClientCallDetails(
        details.method,
        details.timeout,
        grpc.aio.Metadata(*metadata),
        details.credentials,
        details.wait_for_ready,
    )


class _UnaryKey(grpc.aio.UnaryUnaryClientInterceptor):
    """Signs every call with the test key, as a real client library would."""

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_key(details), request)


# A separate class: grpc registers an interceptor under its first matching kind only.
class _StreamKey(grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_key(details), request)


def authed_channel(target: str) -> grpc.aio.Channel:
    """A channel to target whose calls carry the test key."""
    return grpc.aio.insecure_channel(target, interceptors=[_UnaryKey(), _StreamKey()])


@asynccontextmanager
async def channel_to(hub: Hub) -> AsyncIterator[grpc.aio.Channel]:
    channel = authed_channel(f"127.0.0.1:{hub.grpc_port}")
    try:
        yield channel
    finally:
        await channel.close()


def rest_session(**kwargs: Any) -> aiohttp.ClientSession:
    """An HTTP client that sends the test key with every request."""
    headers = {**AUTH_HEADERS, **kwargs.pop("headers", {})}
    return aiohttp.ClientSession(headers=headers, **kwargs)


async def rest_call(
    hub: Hub, method: str, path: str, headers: dict[str, str], body: Any = None
) -> tuple[int, dict[str, Any]]:
    """One REST call with the given credentials; (status, decoded body)."""
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.request(method, f"http://127.0.0.1:{hub.http_port}{path}", json=body) as resp,
    ):
        return resp.status, await resp.json(content_type=None)
