"""The consent ledger and each tenant's keyword settings."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from server.domain.consent import (
    Applied,
    ConsentChange,
    ConsentEntry,
    ConsentSettings,
    ConsentSource,
    ConsentState,
    ConsentStep,
)
from server.domain.models import Page
from server.domain.paging import PageRequest
from server.storage import consents
from server.storage.writer import Writer


class ConsentRows:
    def __init__(self, engine: AsyncEngine, writer: Writer) -> None:
        self._engine = engine
        self._writer = writer

    async def record_consent(
        self, tenant_id: str, change: ConsentChange, channel_ids: Sequence[str] = ()
    ) -> Applied:
        """Record a change; an opt-out withdraws unsent messages on `channel_ids`."""
        return await self._writer.submit(
            lambda tx: consents.apply(tx, tenant_id, change, channel_ids)
        )

    async def consent_states(
        self, tenant_id: str, channel_type: str, addresses: Sequence[str]
    ) -> dict[str, dict[str, ConsentState]]:
        async with self._engine.connect() as conn:
            return await consents.states(conn, tenant_id, channel_type, addresses)

    async def list_consents(
        self,
        tenant_id: str,
        *,
        page: PageRequest,
        state: ConsentState | None = None,
        channel_type: str = "",
        source: ConsentSource | None = None,
    ) -> Page[ConsentEntry]:
        async with self._engine.connect() as conn:
            return await consents.list_page(
                conn,
                tenant_id,
                page=page,
                state=state,
                channel_type=channel_type,
                source=source,
            )

    async def get_consent(
        self, tenant_id: str, channel_type: str, address: str
    ) -> tuple[list[ConsentEntry], list[ConsentStep]]:
        async with self._engine.connect() as conn:
            return await consents.get(conn, tenant_id, channel_type, address)

    async def consent_settings(self, tenant_id: str) -> ConsentSettings:
        async with self._engine.connect() as conn:
            return await consents.settings(conn, tenant_id)

    async def set_consent_settings(self, tenant_id: str, settings: ConsentSettings) -> None:
        await self._writer.submit(lambda tx: consents.put_settings(tx, tenant_id, settings))
