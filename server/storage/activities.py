"""Third-party activities: published on active conversations, always kept in history."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.activities import Activity, ActivityInput, published_event
from server.domain.conversations import Conversation, ConversationState
from server.domain.errors import not_found
from server.domain.models import Page, Session, new_id
from server.domain.paging import PageRequest
from server.storage import conversations
from server.storage import events as event_log
from server.storage import sessions as sess
from server.storage.conversation_schema import activities
from server.storage.keyset import Order, keyset_page
from server.storage.tx import Tx


async def push(tx: Tx, tenant_id: str, a: ActivityInput) -> Activity:
    """Store the activity; on an active conversation also publish it as an event.

    Pushing the same activity id again returns the first result and publishes nothing.
    """
    if a.id:
        earlier = await _find(tx.conn, tenant_id, a.id)
        if earlier is not None:
            return earlier
    session, conv = await _anchor(tx.conn, tenant_id, a)
    conversation_id = a.conversation_id or (session.conversation_id if session else "")
    customer_id = a.customer_id or (
        session.contact_id if session else conv.customer_id if conv else ""
    )
    activity_id = a.id or new_id()
    message = dict(a.message)
    message["id"] = activity_id
    published = conv is not None and conv.state is ConversationState.ACTIVE
    if published and conv is not None:
        dialog_id = (
            await conversations.dialog_for(tx, tenant_id, conv, a.dialog_type)
            if a.dialog_type
            else ""
        )
        await event_log.append(
            tx, tenant_id, published_event(a, activity_id, message, conv, dialog_id)
        )
    seq = (
        await tx.conn.execute(
            activities.insert()
            .values(
                tenant_id=tenant_id,
                activity_id=activity_id,
                customer_id=customer_id,
                conversation_id=conversation_id,
                channel_session_id=a.channel_session_id,
                published=int(published),
                message=message,
                created_at=tx.now,
            )
            .returning(activities.c.seq)
        )
    ).scalar_one()
    return Activity(
        id=activity_id,
        tenant_id=tenant_id,
        customer_id=customer_id,
        conversation_id=conversation_id,
        channel_session_id=a.channel_session_id,
        published=published,
        message=message,
        created_at=tx.now,
        seq=seq,
    )


async def _anchor(
    conn: AsyncConnection, tenant_id: str, a: ActivityInput
) -> tuple[Session | None, Conversation | None]:
    """The session and conversation the activity belongs to; both None when stand-alone."""
    session = None
    if a.channel_session_id:
        session = await sess.get(conn, tenant_id, a.channel_session_id)
    conversation_id = a.conversation_id or (session.conversation_id if session else "")
    if not conversation_id:
        return None, None
    conv = await conversations.load(conn, tenant_id, conversation_id)
    if conv is None and not await conversations.known(conn, tenant_id, conversation_id):
        raise not_found("conversation", conversation_id)
    return session, conv


async def list_page(
    conn: AsyncConnection,
    tenant_id: str,
    *,
    page: PageRequest,
    customer_id: str = "",
    conversation_id: str = "",
) -> Page[Activity]:
    query = select(activities).where(activities.c.tenant_id == tenant_id)
    if customer_id:
        query = query.where(activities.c.customer_id == customer_id)
    if conversation_id:
        query = query.where(activities.c.conversation_id == conversation_id)
    return await keyset_page(conn, query, NEWEST_FIRST, page, _from_row)


NEWEST_FIRST = Order((activities.c.created_at, activities.c.seq), descending=True)


async def _find(conn: AsyncConnection, tenant_id: str, activity_id: str) -> Activity | None:
    row = (
        await conn.execute(
            select(activities).where(
                activities.c.tenant_id == tenant_id, activities.c.activity_id == activity_id
            )
        )
    ).first()
    return None if row is None else _from_row(row)


def _from_row(row: Any) -> Activity:
    return Activity(
        id=row.activity_id,
        tenant_id=row.tenant_id,
        customer_id=row.customer_id,
        conversation_id=row.conversation_id,
        channel_session_id=row.channel_session_id,
        published=bool(row.published),
        message=row.message,
        created_at=row.created_at,
        seq=row.seq,
    )
