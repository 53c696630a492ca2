"""Contacts, their preferred languages, and customer objects and events."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from server.domain.contacts import Contact, ContactInfo
from server.domain.customer import ContactPrefs, CustomerEvent, CustomerObject
from server.domain.models import Page
from server.domain.paging import PageRequest
from server.storage import contacts, customers
from server.storage.writer import Writer


class CustomerRows:
    def __init__(self, engine: AsyncEngine, writer: Writer) -> None:
        self._engine = engine
        self._writer = writer

    async def update_contact(self, tenant_id: str, info: ContactInfo) -> Contact:
        return await self._writer.submit(lambda tx: contacts.upsert(tx, tenant_id, info))

    async def get_contact(self, tenant_id: str, contact_id: str) -> Contact:
        async with self._engine.connect() as conn:
            return await contacts.get(conn, tenant_id, contact_id)

    async def set_contact_lang(self, tenant_id: str, contact_id: str, lang: str) -> ContactPrefs:
        return await self._writer.submit(
            lambda tx: customers.set_lang(tx, tenant_id, contact_id, lang)
        )

    async def contact_langs(self, tenant_id: str, contact_ids: Sequence[str]) -> dict[str, str]:
        async with self._engine.connect() as conn:
            return await customers.langs(conn, tenant_id, contact_ids)

    async def list_contacts(self, tenant_id: str, *, page: PageRequest) -> Page[Contact]:
        async with self._engine.connect() as conn:
            return await customers.list_contacts(conn, tenant_id, page=page)

    async def push_customer_object(self, tenant_id: str, obj: CustomerObject) -> CustomerObject:
        return await self._writer.submit(lambda tx: customers.upsert_object(tx, tenant_id, obj))

    async def list_customer_objects(
        self, tenant_id: str, contact_id: str, *, page: PageRequest
    ) -> Page[CustomerObject]:
        async with self._engine.connect() as conn:
            return await customers.list_objects(conn, tenant_id, contact_id, page=page)

    async def push_customer_event(self, tenant_id: str, event: CustomerEvent) -> CustomerEvent:
        return await self._writer.submit(lambda tx: customers.push_event(tx, tenant_id, event))

    async def list_customer_events(
        self, tenant_id: str, contact_id: str, *, page: PageRequest
    ) -> Page[CustomerEvent]:
        async with self._engine.connect() as conn:
            return await customers.list_events(conn, tenant_id, contact_id, page=page)
