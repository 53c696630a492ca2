"""The sessions table: lookups, listing and row mapping. Changes with events are in lifecycle."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.errors import not_found
from server.domain.models import Page, Session, SessionState
from server.domain.paging import PageRequest
from server.storage.conversation_schema import sessions
from server.storage.keyset import Order, keyset_page


async def get(
    conn: AsyncConnection, tenant_id: str, session_id: str, *, for_update: bool = False
) -> Session:
    query = select(sessions).where(sessions.c.tenant_id == tenant_id, sessions.c.id == session_id)
    if for_update:
        # Serialises concurrent changes of one session on PostgreSQL; SQLite has one writer.
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    if row is None:
        raise not_found("session", session_id)
    return from_row(row)


async def find_open(
    conn: AsyncConnection, tenant_id: str, open_key: str, *, for_update: bool = False
) -> Session | None:
    query = select(sessions).where(
        sessions.c.tenant_id == tenant_id, sessions.c.open_key == open_key
    )
    if for_update:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return None if row is None else from_row(row)


async def latest_open_of_contact(
    conn: AsyncConnection, tenant_id: str, contact_id: str
) -> Session | None:
    row = (
        await conn.execute(
            select(sessions)
            .where(
                sessions.c.tenant_id == tenant_id,
                sessions.c.contact_id == contact_id,
                sessions.c.state != SessionState.CLOSED.value,
            )
            .order_by(sessions.c.updated_at.desc())
            .limit(1)
        )
    ).first()
    return None if row is None else from_row(row)


async def of_conversation(
    conn: AsyncConnection, tenant_id: str, conversation_id: str
) -> list[Session]:
    rows = (
        await conn.execute(
            select(sessions)
            .where(sessions.c.tenant_id == tenant_id, sessions.c.conversation_id == conversation_id)
            .order_by(sessions.c.created_at, sessions.c.id)
        )
    ).all()
    return [from_row(r) for r in rows]


async def list_page(
    conn: AsyncConnection,
    tenant_id: str,
    *,
    page: PageRequest,
    contact_id: str = "",
    state: SessionState | None = None,
    queue: str = "",
) -> Page[Session]:
    query = select(sessions).where(sessions.c.tenant_id == tenant_id)
    if contact_id:
        query = query.where(sessions.c.contact_id == contact_id)
    if state is not None:
        query = query.where(sessions.c.state == state.value)
    if queue:
        query = query.where(sessions.c.queue == queue)
    return await keyset_page(conn, query, NEWEST_FIRST, page, from_row)


NEWEST_FIRST = Order((sessions.c.created_at, sessions.c.id), descending=True)


def from_row(row: Any) -> Session:
    return Session(
        id=row.id,
        tenant_id=row.tenant_id,
        contact_id=row.contact_id,
        channel_id=row.channel_id,
        state=SessionState(row.state),
        conversation_id=row.conversation_id,
        queue=row.queue,
        agent=row.agent,
        created_at=row.created_at,
        updated_at=row.updated_at,
        team=row.team,
        skills=tuple(row.skills or ()),
        params=dict(row.params or {}),
        routing_id=row.routing_id,
        close_reason=row.close_reason,
        address=row.address,
        last_activity_at=row.last_activity_at or row.updated_at,
        closed_at=row.closed_at,
    )
