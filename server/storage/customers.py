"""Contact preferences, contact listing, customer objects and customer events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.contacts import Contact, ContactInfo
from server.domain.customer import (
    ContactPrefs,
    CustomerEvent,
    CustomerObject,
    Link,
    customer_event,
    links_json,
)
from server.domain.models import Page
from server.domain.paging import PageRequest
from server.storage import events as event_log
from server.storage.contacts import _from_row as contact_from_row
from server.storage.contacts import upsert as upsert_contact
from server.storage.customer_schema import (
    contact_prefs,
    contacts,
    customer_events,
    customer_objects,
)
from server.storage.keyset import Order, keyset_page
from server.storage.sql import insert_for
from server.storage.tx import Tx

# Customer events of one contact share a conversation, so their stream order is theirs.
# Oldest first. Contact and object ids run to 256 characters, more than a
# page token carries: their position holds a fingerprint of the id instead.
CONTACTS_ORDER = Order((contacts.c.created_at, contacts.c.contact_id), long_last=True)
OBJECTS_ORDER = Order((customer_objects.c.created_at, customer_objects.c.object_id), long_last=True)
EVENTS_ORDER = Order((customer_events.c.seq,), descending=True)


# -- preferences ---------------------------------------------------------------------


async def set_lang(tx: Tx, tenant_id: str, contact_id: str, lang: str) -> ContactPrefs:
    # A language is something the hub knows about a contact, so the contact exists
    # from then on, for reads by id and in the list, like one a channel reported.
    await upsert_contact(tx, tenant_id, ContactInfo(contact_id))
    values = {"lang": lang, "updated_at": tx.now}
    await tx.conn.execute(
        insert_for(tx.conn, contact_prefs)
        .values(tenant_id=tenant_id, contact_id=contact_id, **values)
        .on_conflict_do_update(
            index_elements=[contact_prefs.c.tenant_id, contact_prefs.c.contact_id], set_=values
        )
    )
    return ContactPrefs(contact_id, lang, tx.now)


async def langs(
    conn: AsyncConnection, tenant_id: str, contact_ids: Sequence[str]
) -> dict[str, str]:
    wanted = [c for c in contact_ids if c]
    if not wanted:
        return {}
    rows = (
        await conn.execute(
            select(contact_prefs.c.contact_id, contact_prefs.c.lang).where(
                contact_prefs.c.tenant_id == tenant_id, contact_prefs.c.contact_id.in_(wanted)
            )
        )
    ).all()
    return {r.contact_id: r.lang for r in rows}


async def list_contacts(
    conn: AsyncConnection, tenant_id: str, *, page: PageRequest
) -> Page[Contact]:
    query = select(contacts).where(contacts.c.tenant_id == tenant_id)
    return await keyset_page(conn, query, CONTACTS_ORDER, page, contact_from_row)


# -- customer objects ----------------------------------------------------------------


def _links(raw: Any) -> tuple[Link, ...]:
    return tuple(
        Link(str(x.get("linkName", "")), str(x.get("linkType", "")), str(x.get("linkValue", "")))
        for x in raw or ()
    )


async def upsert_object(tx: Tx, tenant_id: str, obj: CustomerObject) -> CustomerObject:
    values = {
        "type": obj.type,
        "contact_id": obj.contact_id,
        "data": dict(obj.data),
        "links": links_json(obj.links),
        "updated_at": tx.now,
    }
    await tx.conn.execute(
        insert_for(tx.conn, customer_objects)
        .values(tenant_id=tenant_id, object_id=obj.id, created_at=tx.now, **values)
        .on_conflict_do_update(
            index_elements=[customer_objects.c.tenant_id, customer_objects.c.object_id],
            set_=values,
        )
    )
    return CustomerObject(obj.id, obj.type, obj.data, obj.links, obj.contact_id, tx.now)


async def list_objects(
    conn: AsyncConnection, tenant_id: str, contact_id: str, *, page: PageRequest
) -> Page[CustomerObject]:
    t = customer_objects
    query = select(t).where(t.c.tenant_id == tenant_id, t.c.contact_id == contact_id)
    return await keyset_page(conn, query, OBJECTS_ORDER, page, _object)


def _object(r: Any) -> CustomerObject:
    return CustomerObject(
        r.object_id, r.type, dict(r.data), _links(r.links), r.contact_id, r.updated_at
    )


# -- customer events -----------------------------------------------------------------


async def push_event(tx: Tx, tenant_id: str, e: CustomerEvent) -> CustomerEvent:
    seq = (
        await tx.conn.execute(
            customer_events.insert()
            .values(
                tenant_id=tenant_id,
                event_id=e.id,
                event_name=e.event_name,
                contact_id=e.contact_id,
                links=links_json(e.links),
                created_at=tx.now,
            )
            .returning(customer_events.c.seq)
        )
    ).scalar_one()
    # Same transaction: a stored customer event is always on the live stream too.
    await event_log.append(tx, tenant_id, customer_event(tenant_id, e))
    return CustomerEvent(e.event_name, e.id, e.links, e.contact_id, tx.now, seq)


async def list_events(
    conn: AsyncConnection, tenant_id: str, contact_id: str, *, page: PageRequest
) -> Page[CustomerEvent]:
    t = customer_events
    query = select(t).where(t.c.tenant_id == tenant_id, t.c.contact_id == contact_id)
    return await keyset_page(conn, query, EVENTS_ORDER, page, _event)


def _event(r: Any) -> CustomerEvent:
    return CustomerEvent(
        r.event_name, r.event_id, _links(r.links), r.contact_id, r.created_at, r.seq
    )
