"""Conversation state, kept in step with its sessions; every change is an event."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain import conversations as conv_rules
from server.domain.conversations import Conversation, ConversationState, Dialog, Participant
from server.domain.models import Session, new_id
from server.storage import events as event_log
from server.storage import sessions as sess
from server.storage.conversation_schema import conversation_states, conversations
from server.storage.sql import insert_for
from server.storage.tx import Tx


async def load(conn: AsyncConnection, tenant_id: str, conversation_id: str) -> Conversation | None:
    row = (
        await conn.execute(
            select(conversation_states).where(
                conversation_states.c.tenant_id == tenant_id,
                conversation_states.c.id == conversation_id,
            )
        )
    ).first()
    return None if row is None else _from_row(row)


async def known(conn: AsyncConnection, tenant_id: str, conversation_id: str) -> bool:
    """Whether the id names a conversation: one with sessions, or outbound traffic only."""
    if await load(conn, tenant_id, conversation_id) is not None:
        return True
    found = await conn.execute(
        select(conversations.c.id).where(
            conversations.c.tenant_id == tenant_id, conversations.c.id == conversation_id
        )
    )
    return found.first() is not None


async def sync(tx: Tx, tenant_id: str, session: Session) -> Conversation:
    """Recompute the session's conversation from all its sessions, save it, report it."""
    before = await load(tx.conn, tenant_id, session.conversation_id)
    base = before or conv_rules.started(session, tx.now)
    sessions = await sess.of_conversation(tx.conn, tenant_id, session.conversation_id)
    after = conv_rules.with_sessions(base, sessions, tx.now)
    await _save(tx, after, new=before is None)
    await _report(tx, tenant_id, after, sessions, conv_rules.change_code(before, after))
    return after


async def dialog_for(tx: Tx, tenant_id: str, conv: Conversation, dialog_type: str) -> str:
    """The id of the open dialog of this type, opening one (a reported change) if needed."""
    found = conv_rules.dialog_of_type(conv, dialog_type)
    if found is not None:
        return found.id
    after = conv_rules.open_dialog(conv, dialog_type, new_id(), tx.now)
    await _save(tx, after, new=False)
    sessions = await sess.of_conversation(tx.conn, tenant_id, conv.id)
    await _report(tx, tenant_id, after, sessions, conv_rules.UPDATED)
    opened = conv_rules.dialog_of_type(after, dialog_type)
    assert opened is not None
    return opened.id


async def _report(
    tx: Tx, tenant_id: str, conv: Conversation, sessions: Sequence[Session], code: str
) -> None:
    await event_log.append(tx, tenant_id, conv_rules.change_event(conv, sessions, code))


async def _save(tx: Tx, conv: Conversation, *, new: bool) -> None:
    values: dict[str, Any] = {
        "channel_id": conv.channel_id,
        "customer_id": conv.customer_id,
        "address": conv.address,
        "state": conv.state.value,
        "close_reason": conv.close_reason,
        "participants": [{"id": p.id, "role": p.role, "state": p.state} for p in conv.participants],
        "dialogs": [
            {"id": d.id, "type": d.type, "state": d.state, "createdAt": d.created_at}
            for d in conv.dialogs
        ],
        "updated_at": conv.updated_at,
    }
    if new:
        # A concurrent first session of the same conversation wins or loses
        # cleanly: the later write recomputes the same state from the sessions.
        await tx.conn.execute(
            insert_for(tx.conn, conversation_states)
            .values(id=conv.id, tenant_id=conv.tenant_id, created_at=conv.created_at, **values)
            .on_conflict_do_update(index_elements=[conversation_states.c.id], set_=values)
        )
    else:
        await tx.conn.execute(
            update(conversation_states).where(conversation_states.c.id == conv.id).values(**values)
        )


def _from_row(row: Any) -> Conversation:
    return Conversation(
        id=row.id,
        tenant_id=row.tenant_id,
        channel_id=row.channel_id,
        customer_id=row.customer_id,
        address=row.address,
        state=ConversationState(row.state),
        participants=tuple(
            Participant(p["id"], p["role"], p["state"]) for p in row.participants or ()
        ),
        dialogs=tuple(
            Dialog(d["id"], d["type"], d["state"], d.get("createdAt", 0)) for d in row.dialogs or ()
        ),
        close_reason=row.close_reason,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
