"""A tenant's configuration: stored channels, webhook URL, global variables, templates."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from server.domain.batch import Template
from server.domain.customer import GlobalVar, TemplateRecord
from server.domain.models import Channel
from server.storage import config_data
from server.storage import events as event_log
from server.storage import templates as tmpl
from server.storage import webhooks as hooks
from server.storage.tx import Tx
from server.storage.writer import Writer


class ConfigRows:
    def __init__(self, engine: AsyncEngine, writer: Writer) -> None:
        self._engine = engine
        self._writer = writer

    async def stored_channels(self) -> list[tuple[str, Channel]]:
        async with self._engine.connect() as conn:
            return await config_data.all_channels(conn)

    async def channels_fingerprint(self) -> tuple[int, int, int]:
        async with self._engine.connect() as conn:
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

    async def set_tenant_webhook(self, tenant_id: str, url: str) -> str:
        """Store the tenant's webhook URL; returns the tenant's signing secret."""

        async def work(tx: Tx) -> str:
            await event_log.set_tenant_webhook(tx, tenant_id, url)
            return await hooks.secret_for(tx, tenant_id)

        return await self._writer.submit(work)

    async def list_global_vars(self, tenant_id: str, channel_id: str = "") -> list[GlobalVar]:
        async with self._engine.connect() as conn:
            return await config_data.list_vars(conn, tenant_id, channel_id)

    async def set_global_var(self, tenant_id: str, var: GlobalVar) -> GlobalVar:
        return await self._writer.submit(lambda tx: config_data.set_var(tx, tenant_id, var))

    async def delete_global_var(self, tenant_id: str, key: str, channel_id: str) -> None:
        await self._writer.submit(lambda tx: config_data.delete_var(tx, tenant_id, key, channel_id))

    async def find_template(
        self, tenant_id: str, *, template_id: str = "", code: str = "", lang: str = ""
    ) -> Template | None:
        async with self._engine.connect() as conn:
            return await tmpl.find(conn, tenant_id, template_id=template_id, code=code, lang=lang)

    async def create_template(self, tenant_id: str, **fields: Any) -> Template:
        return await self._writer.submit(lambda tx: tmpl.create(tx, tenant_id, **fields))

    async def list_templates(
        self, tenant_id: str, *, channel_id: str = "", status: str = ""
    ) -> list[TemplateRecord]:
        async with self._engine.connect() as conn:
            return await tmpl.list_records(conn, tenant_id, channel_id=channel_id, status=status)

    async def insert_template(self, tenant_id: str, t: TemplateRecord) -> TemplateRecord:
        return await self._writer.submit(lambda tx: tmpl.insert_record(tx, tenant_id, t))

    async def replace_template(self, tenant_id: str, t: TemplateRecord) -> TemplateRecord:
        return await self._writer.submit(lambda tx: tmpl.replace_record(tx, tenant_id, t))

    async def delete_template(self, tenant_id: str, template_id: str) -> None:
        await self._writer.submit(lambda tx: tmpl.delete_record(tx, tenant_id, template_id))
