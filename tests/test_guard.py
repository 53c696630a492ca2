"""The guard interceptor hands every handler kind its caller's tenant, and only that one."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from server.api.auth import Authenticator
from server.api.context import tenant_of
from server.api.errors import ErrorInterceptor
from server.api.guard import GuardInterceptor
from server.api.limits import RateLimiter, StreamCounter
from server.api.tokens import TokenRules


@dataclass(frozen=True)
class StoredKey:
    tenant_id: str
    secret_sha256: bytes
    revoked_at: int | None = None


class KeysInMemory:
    """A key table held in a dict: the guard's only dependency, without a database."""

    def __init__(self, keys: dict[str, tuple[str, str]]) -> None:
        self._keys = {
            api_id: StoredKey(tenant, hashlib.sha256(secret.encode()).digest())
            for api_id, (tenant, secret) in keys.items()
        }

    async def get_api_key(self, api_id: str) -> StoredKey | None:
        return self._keys.get(api_id)

    async def tenant_of_app(self, app_id: str) -> str | None:
        return None


async def _unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await asyncio.sleep(0)
    return tenant_of(context).encode()


async def _generator(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for _ in range(3):
        await asyncio.sleep(0.01)
        yield tenant_of(context).encode()


async def _writer(request: bytes, context: grpc.aio.ServicerContext) -> None:
    for _ in range(3):
        await asyncio.sleep(0.01)
        await context.write(tenant_of(context).encode())


async def test_unary_generator_and_writer_handlers_all_see_the_callers_tenant() -> None:
    auth = Authenticator(
        KeysInMemory({"ak_a": ("tenant-a", "secret-a"), "ak_b": ("tenant-b", "secret-b")}),
        TokenRules({}),
    )
    server = grpc.aio.server(
        interceptors=[
            GuardInterceptor(auth, RateLimiter(1000, 1000), StreamCounter(100), 100),
            ErrorInterceptor(),
        ]
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "test.Guarded",
                {
                    "Unary": grpc.unary_unary_rpc_method_handler(_unary),
                    "Generator": grpc.unary_stream_rpc_method_handler(_generator),
                    "Writer": grpc.unary_stream_rpc_method_handler(_writer),
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            unary = channel.unary_unary("/test.Guarded/Unary")
            generator = channel.unary_stream("/test.Guarded/Generator")
            writer = channel.unary_stream("/test.Guarded/Writer")

            async def as_tenant(api_id: str, secret: str) -> list[Any]:
                md = (("x-api-id", api_id), ("x-api-key", secret))
                one = await unary(b"", metadata=md)
                many = [item async for item in generator(b"", metadata=md)]
                written = [item async for item in writer(b"", metadata=md)]
                return [one, *many, *written]

            # Interleaved callers of both tenants must never see each other's tenant.
            results = await asyncio.gather(
                *(as_tenant("ak_a", "secret-a") for _ in range(10)),
                *(as_tenant("ak_b", "secret-b") for _ in range(10)),
            )
            for call in (unary(b""), generator(b"").read(), writer(b"").read()):
                try:
                    await call
                    raise AssertionError("a call without credentials got through")
                except grpc.aio.AioRpcError as err:
                    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await server.stop(None)
    assert results[:10] == [[b"tenant-a"] * 7] * 10
    assert results[10:] == [[b"tenant-b"] * 7] * 10
