"""Tenants, their apps and API keys."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from server.storage import auth as keys
from server.storage.tx import Tx
from server.storage.writer import Writer


class KeyRows:
    def __init__(self, engine: AsyncEngine, writer: Writer) -> None:
        self._engine = engine
        self._writer = writer

    async def create_tenant(self, tenant_id: str, name: str = "") -> None:
        await self._writer.submit(lambda tx: keys.create_tenant(tx, tenant_id, name))

    async def count_tenants(self) -> int:
        async with self._engine.connect() as conn:
            return await keys.count_tenants(conn)

    async def create_api_key(self, tenant_id: str, app_id: str = "") -> keys.NewKey:
        return await self._writer.submit(
            lambda tx: keys.create_key(tx, tenant_id, app_id or tenant_id)
        )

    async def ensure_api_key(self, tenant_id: str, api_id: str, secret: str) -> keys.EnsuredKey:
        return await self._writer.submit(lambda tx: keys.ensure_key(tx, tenant_id, api_id, secret))

    async def get_api_key(self, api_id: str) -> keys.KeyRecord | None:
        async with self._engine.connect() as conn:
            return await keys.get_key(conn, api_id)

    async def list_api_keys(self, tenant_id: str) -> list[keys.KeyRecord]:
        async with self._engine.connect() as conn:
            return await keys.list_keys(conn, tenant_id)

    async def revoke_api_key(self, api_id: str) -> bool:
        return await self._writer.submit(lambda tx: keys.revoke_key(tx, api_id))

    async def ensure_app(self, tenant_id: str, app_id: str) -> None:
        async def work(tx: Tx) -> None:
            await keys.ensure_tenant(tx, tenant_id)
            await keys.ensure_app(tx, tenant_id, app_id)

        await self._writer.submit(work)

    async def tenant_of_app(self, app_id: str) -> str | None:
        async with self._engine.connect() as conn:
            return await keys.tenant_of_app(conn, app_id)
