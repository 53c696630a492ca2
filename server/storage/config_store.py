"""SqlStore's part for configuration and customer data (mixed into SqlStore)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from server.domain.contacts import Contact
from server.domain.customer import (
    ContactPrefs,
    CustomerEvent,
    CustomerObject,
    GlobalVar,
    TemplateRecord,
)
from server.domain.models import Channel, Page
from server.domain.paging import PageRequest
from server.storage import config_data, customers
from server.storage import templates as tmpl
from server.storage.writer import Writer


class ConfigStoreMixin:
    engine: AsyncEngine
    _writer: Writer

    # -- global variables ---------------------------------------------------
    async def list_global_vars(self, tenant_id: str, channel_id: str = "") -> list[GlobalVar]:
        async with self.engine.connect() as conn:
            return await config_data.list_vars(conn, tenant_id, channel_id)

    async def set_global_var(self, tenant_id: str, var: GlobalVar) -> GlobalVar:
        return await self._writer.submit(lambda tx: config_data.set_var(tx, tenant_id, var))

    async def delete_global_var(self, tenant_id: str, key: str, channel_id: str) -> None:
        await self._writer.submit(lambda tx: config_data.delete_var(tx, tenant_id, key, channel_id))

    # -- channels created over the API --------------------------------------
    async def stored_channels(self) -> list[tuple[str, Channel]]:
        async with self.engine.connect() as conn:
            return await config_data.all_channels(conn)

    async def channels_fingerprint(self) -> tuple[int, int, int]:
        async with self.engine.connect() as conn:
            return await config_data.channels_fingerprint(conn)

    async def insert_channel(self, tenant_id: str, channel: Channel) -> Channel:
        return await self._writer.submit(
            lambda tx: config_data.insert_channel(tx, tenant_id, channel)
        )

    async def replace_channel(self, tenant_id: str, channel: Channel) -> Channel:
        return await self._writer.submit(
            lambda tx: config_data.replace_channel(tx, tenant_id, channel)
        )

    async def delete_channel(self, tenant_id: str, channel_id: str) -> None:
        await self._writer.submit(lambda tx: config_data.delete_channel(tx, tenant_id, channel_id))

    # -- templates, as the API sees them ------------------------------------
    async def list_templates(
        self, tenant_id: str, *, channel_id: str = "", status: str = ""
    ) -> list[TemplateRecord]:
        async with self.engine.connect() as conn:
            return await tmpl.list_records(conn, tenant_id, channel_id=channel_id, status=status)

    async def insert_template(self, tenant_id: str, t: TemplateRecord) -> TemplateRecord:
        return await self._writer.submit(lambda tx: tmpl.insert_record(tx, tenant_id, t))

    async def replace_template(self, tenant_id: str, t: TemplateRecord) -> TemplateRecord:
        return await self._writer.submit(lambda tx: tmpl.replace_record(tx, tenant_id, t))

    async def delete_template(self, tenant_id: str, template_id: str) -> None:
        await self._writer.submit(lambda tx: tmpl.delete_record(tx, tenant_id, template_id))

    # -- contacts and customer data -----------------------------------------
    async def set_contact_lang(self, tenant_id: str, contact_id: str, lang: str) -> ContactPrefs:
        return await self._writer.submit(
            lambda tx: customers.set_lang(tx, tenant_id, contact_id, lang)
        )

    async def contact_langs(self, tenant_id: str, contact_ids: Sequence[str]) -> dict[str, str]:
        async with self.engine.connect() as conn:
            return await customers.langs(conn, tenant_id, contact_ids)

    async def list_contacts(self, tenant_id: str, *, page: PageRequest) -> Page[Contact]:
        async with self.engine.connect() as conn:
            return await customers.list_contacts(conn, tenant_id, page=page)

    async def push_customer_object(self, tenant_id: str, obj: CustomerObject) -> CustomerObject:
        return await self._writer.submit(lambda tx: customers.upsert_object(tx, tenant_id, obj))

    async def list_customer_objects(
        self, tenant_id: str, contact_id: str, *, page: PageRequest
    ) -> Page[CustomerObject]:
        async with self.engine.connect() as conn:
            return await customers.list_objects(conn, tenant_id, contact_id, page=page)

    async def push_customer_event(self, tenant_id: str, event: CustomerEvent) -> CustomerEvent:
        return await self._writer.submit(lambda tx: customers.push_event(tx, tenant_id, event))

    async def list_customer_events(
        self, tenant_id: str, contact_id: str, *, page: PageRequest
    ) -> Page[CustomerEvent]:
        async with self.engine.connect() as conn:
            return await customers.list_events(conn, tenant_id, contact_id, page=page)
