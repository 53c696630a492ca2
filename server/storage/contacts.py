"""Contacts: created by the first report about them, merged with every later one."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.contacts import Contact, ContactInfo, merge
from server.domain.errors import not_found
from server.storage.customer_schema import contacts
from server.storage.sql import insert_for
from server.storage.tx import Tx


async def get(conn: AsyncConnection, tenant_id: str, contact_id: str) -> Contact:
    found = await _find(conn, tenant_id, contact_id)
    if found is None:
        raise not_found("contact", contact_id)
    return found


async def upsert(tx: Tx, tenant_id: str, info: ContactInfo) -> Contact:
    existing = await _find(tx.conn, tenant_id, info.contact_id, for_update=True)
    if existing is None:
        created = merge(None, info, tenant_id, tx.now)
        inserted = await tx.conn.execute(
            insert_for(tx.conn, contacts)
            .values(**_values(created), created_at=created.created_at)
            .on_conflict_do_nothing()
            .returning(contacts.c.contact_id)
        )
        if inserted.first() is not None:
            return created
        # Created concurrently: merge into that row instead.
        existing = await _find(tx.conn, tenant_id, info.contact_id, for_update=True)
        assert existing is not None
    merged = merge(existing, info, tenant_id, tx.now)
    await tx.conn.execute(
        update(contacts)
        .where(contacts.c.tenant_id == tenant_id, contacts.c.contact_id == info.contact_id)
        .values(**_values(merged))
    )
    return merged


async def _find(
    conn: AsyncConnection, tenant_id: str, contact_id: str, *, for_update: bool = False
) -> Contact | None:
    query = select(contacts).where(
        contacts.c.tenant_id == tenant_id, contacts.c.contact_id == contact_id
    )
    if for_update:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return None if row is None else _from_row(row)


def _values(c: Contact) -> dict[str, Any]:
    return {
        "tenant_id": c.tenant_id,
        "contact_id": c.contact_id,
        "contact_type": c.contact_type,
        "channel_id": c.channel_id,
        "csid": c.csid,
        "lane": c.lane,
        "profile": dict(c.profile),
        "business_profile": dict(c.business_profile),
        "updated_at": c.updated_at,
    }


def _from_row(row: Any) -> Contact:
    return Contact(
        tenant_id=row.tenant_id,
        contact_id=row.contact_id,
        contact_type=row.contact_type,
        channel_id=row.channel_id,
        csid=row.csid,
        lane=row.lane,
        profile=dict(row.profile or {}),
        business_profile=dict(row.business_profile or {}),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
