"""Session changes, each in the same transaction as the events that report it.

Every change emits a SessionEvent (the code in ``message``, old and new values
in ``data``) followed by the conversation's complete state.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update

from server.domain.models import Session, SessionState, new_id
from server.domain.routing import (
    RouteChange,
    assigned_data,
    assignment_changed,
    check_route,
    routed_data,
)
from server.domain.sessions import (
    CLOSED_BY_API,
    INACTIVITY_TIMEOUT,
    SESSION_ASSIGNED,
    SESSION_ROUTED,
    SESSION_STARTED,
    check_routable,
    check_transition,
    open_key,
    session_event,
    summary,
    transition_code,
    transition_data,
)
from server.storage import conversations
from server.storage import events as event_log
from server.storage import sessions as sess
from server.storage.conversation_schema import sessions
from server.storage.sql import insert_for
from server.storage.tx import Tx


async def open_or_touch(
    tx: Tx, tenant_id: str, channel_id: str, contact_id: str, address: str, conversation_id: str
) -> Session:
    """The contact's open session on the channel, started or reactivated as needed."""
    key = open_key(channel_id, contact_id)
    current = await sess.find_open(tx.conn, tenant_id, key, for_update=True)
    if current is None:
        session_id = new_id()
        inserted = await tx.conn.execute(
            insert_for(tx.conn, sessions)
            .values(
                id=session_id,
                tenant_id=tenant_id,
                contact_id=contact_id,
                channel_id=channel_id,
                state=SessionState.ACTIVE.value,
                conversation_id=conversation_id,
                address=address,
                created_at=tx.now,
                updated_at=tx.now,
                last_activity_at=tx.now,
                open_key=key,
            )
            .on_conflict_do_nothing(index_elements=[sessions.c.tenant_id, sessions.c.open_key])
            .returning(sessions.c.id)
        )
        if inserted.first() is not None:
            started = await sess.get(tx.conn, tenant_id, session_id)
            await _report(tx, started, SESSION_STARTED, summary(started))
            await conversations.sync(tx, tenant_id, started)
            return started
        # A concurrent first message opened it; carry on with that session.
        current = await sess.find_open(tx.conn, tenant_id, key, for_update=True)
        assert current is not None
    if current.state is SessionState.RESOLVED:
        return await transition(tx, tenant_id, current.id, SessionState.ACTIVE)
    await tx.conn.execute(
        update(sessions)
        .where(sessions.c.id == current.id)
        .values(last_activity_at=tx.now, updated_at=tx.now)
    )
    return await sess.get(tx.conn, tenant_id, current.id)


async def transition(
    tx: Tx, tenant_id: str, session_id: str, target: SessionState, reason: str = ""
) -> Session:
    current = await sess.get(tx.conn, tenant_id, session_id, for_update=True)
    check_transition(current.state, target)
    values: dict[str, Any] = {"state": target.value, "updated_at": tx.now}
    if target is SessionState.CLOSED:
        reason = reason or CLOSED_BY_API
        values.update(open_key=None, closed_at=tx.now, close_reason=reason)
    elif target is SessionState.ACTIVE:
        values["last_activity_at"] = tx.now
    await tx.conn.execute(update(sessions).where(sessions.c.id == session_id).values(**values))
    after = await sess.get(tx.conn, tenant_id, session_id)
    data = transition_data(session_id, current.state, target, reason)
    await _report(tx, after, transition_code(target), data, reason=reason)
    await conversations.sync(tx, tenant_id, after)
    return after


async def route(tx: Tx, tenant_id: str, change: RouteChange) -> Session:
    """Assign the session; SESSION_ROUTED always, SESSION_ASSIGNED when agent or team change."""
    check_route(change)
    before = await sess.get(tx.conn, tenant_id, change.session_id, for_update=True)
    check_routable(before)
    routing_id = new_id()
    await tx.conn.execute(
        update(sessions)
        .where(sessions.c.id == before.id)
        .values(
            queue=change.queue,
            agent=change.agent,
            team=change.team,
            skills=list(change.skills),
            params=dict(change.params),
            routing_id=routing_id,
            updated_at=tx.now,
            last_activity_at=tx.now,
        )
    )
    after = await sess.get(tx.conn, tenant_id, before.id)
    await _report(tx, after, SESSION_ROUTED, routed_data(before, change, routing_id))
    if assignment_changed(before, change):
        await _report(tx, after, SESSION_ASSIGNED, assigned_data(before, change))
    await conversations.sync(tx, tenant_id, after)
    return after


async def close_inactive(tx: Tx, timeout_ms: int, limit: int = 200) -> int:
    """Close open sessions with no activity for timeout_ms; returns how many."""
    last_seen = func.coalesce(sessions.c.last_activity_at, sessions.c.updated_at)
    rows = (
        await tx.conn.execute(
            select(sessions.c.id, sessions.c.tenant_id)
            .where(
                sessions.c.state.in_([SessionState.ACTIVE.value, SessionState.RESOLVED.value]),
                last_seen < tx.now - timeout_ms,
            )
            .order_by(last_seen)
            .limit(limit)
            # Replicas sweeping at once split the work instead of closing twice.
            .with_for_update(skip_locked=True)
        )
    ).all()
    for row in rows:
        await transition(tx, row.tenant_id, row.id, SessionState.CLOSED, INACTIVITY_TIMEOUT)
    return len(rows)


async def _report(tx: Tx, s: Session, code: str, data: dict[str, Any], *, reason: str = "") -> None:
    await event_log.append(tx, s.tenant_id, session_event(s, code, data, reason))
