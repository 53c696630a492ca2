"""Sessions: lookup, listing and state changes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.errors import not_found
from server.domain.events import EventType, NewEvent
from server.domain.models import Page, Session, SessionState
from server.domain.sessions import check_transition
from server.storage import events as event_log
from server.storage.schema import sessions
from server.storage.writer import Tx


async def get(conn: AsyncConnection, tenant_id: str, session_id: str) -> Session:
    row = (
        await conn.execute(
            select(sessions).where(sessions.c.tenant_id == tenant_id, sessions.c.id == session_id)
        )
    ).first()
    if row is None:
        raise not_found("session", session_id)
    return _from_row(row)


async def list_page(
    conn: AsyncConnection,
    tenant_id: str,
    *,
    page_size: int,
    page_token: str,
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
    if page_token:
        created_s, _, last_id = page_token.partition(":")
        created = int(created_s)
        query = query.where(
            or_(
                sessions.c.created_at < created,
                and_(sessions.c.created_at == created, sessions.c.id < last_id),
            )
        )
    rows = (
        await conn.execute(
            query.order_by(sessions.c.created_at.desc(), sessions.c.id.desc()).limit(page_size + 1)
        )
    ).all()
    items = tuple(_from_row(r) for r in rows[:page_size])
    token = f"{items[-1].created_at}:{items[-1].id}" if len(rows) > page_size else ""
    return Page(items, token)


async def transition(tx: Tx, tenant_id: str, session_id: str, target: SessionState) -> Session:
    current = await get(tx.conn, tenant_id, session_id)
    check_transition(current.state, target)
    await tx.conn.execute(
        update(sessions)
        .where(sessions.c.id == session_id)
        .values(state=target.value, updated_at=tx.now)
    )
    await event_log.append(
        tx,
        tenant_id,
        NewEvent(
            conversation_id=current.conversation_id,
            type=EventType.SESSION,
            message=f"SESSION_{target.value}",
            channel_id=current.channel_id,
            customer_id=current.contact_id,
            data={"sessionId": session_id, "from": current.state.value, "to": target.value},
        ),
    )
    return await get(tx.conn, tenant_id, session_id)


def _from_row(row: Any) -> Session:
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
    )
