"""The inbound path: customer messages, status reports, chat signals and contacts.

The webhook and the provider adapters both end here. A message is claimed by
its channel message id first, so a repeat changes nothing, not even the session.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.cim import SessionItem, inbound_cim, outbound_cim
from server.domain.consent import KeywordOutcome
from server.domain.errors import DomainError
from server.domain.inbound import (
    ChatSignal,
    InboundBatch,
    ReceivedMessage,
    StatusReport,
    content_event,
    signal_event,
)
from server.domain.models import Page, Session, conversation_for, new_id
from server.domain.paging import PageRequest
from server.storage import consents, contacts, lifecycle
from server.storage import events as event_log
from server.storage import messages as msgs
from server.storage import sessions as sess
from server.storage.conversation_schema import inbound_messages
from server.storage.keyset import Order, keyset_rows
from server.storage.message_schema import attempts, messages
from server.storage.sql import insert_for
from server.storage.tx import Tx


@dataclass(frozen=True, slots=True)
class ReceiveOutcome:
    message_ids: tuple[str, ...] = ()
    session_ids: tuple[str, ...] = ()
    duplicates: int = 0
    statuses_applied: int = 0
    statuses_unmatched: int = 0
    contacts_updated: int = 0
    events_applied: int = 0
    events_ignored: int = 0
    # Messages that were consent keywords, and whether each moved the ledger.
    keywords: tuple[KeywordOutcome, ...] = ()


async def receive(tx: Tx, tenant_id: str, batch: InboundBatch) -> ReceiveOutcome:
    """Apply a whole webhook payload in one transaction."""
    for info in batch.contacts:
        await contacts.upsert(tx, tenant_id, info)
    message_ids: list[str] = []
    session_ids: list[str] = []
    keywords: list[KeywordOutcome] = []
    for message in batch.messages:
        stored = await record(tx, tenant_id, message, keywords)
        if stored is not None:
            message_ids.append(stored[0])
            session_ids.append(stored[1])
    applied = [await apply_status(tx, tenant_id, s) for s in batch.statuses]
    signalled = [await signal(tx, tenant_id, s) for s in batch.signals]
    return ReceiveOutcome(
        message_ids=tuple(message_ids),
        session_ids=tuple(session_ids),
        duplicates=len(batch.messages) - len(message_ids),
        statuses_applied=sum(applied),
        statuses_unmatched=len(applied) - sum(applied),
        contacts_updated=len(batch.contacts),
        events_applied=sum(signalled),
        events_ignored=batch.ignored_events + len(signalled) - sum(signalled),
        keywords=tuple(keywords),
    )


async def record(
    tx: Tx, tenant_id: str, m: ReceivedMessage, keywords: list[KeywordOutcome] | None = None
) -> tuple[str, str] | None:
    """Store one message in its session; (message id, session id), or None for a repeat.

    A keyword changes the ledger in the same commit, so a repeat of the
    message (same channel message id) changes nothing there either.
    """
    conversation_id = conversation_for(tenant_id, m.channel_id, m.address)
    message_id = new_id()
    claimed = await tx.conn.execute(
        insert_for(tx.conn, inbound_messages)
        .values(
            id=message_id,
            tenant_id=tenant_id,
            channel_id=m.channel_id,
            external_id=m.external_id,
            conversation_id=conversation_id,
            contact_id=m.contact_id,
            type=m.type,
            text=m.text,
            cim={},
            created_at=tx.now,
        )
        .on_conflict_do_nothing(
            index_elements=[
                inbound_messages.c.tenant_id,
                inbound_messages.c.channel_id,
                inbound_messages.c.external_id,
            ]
        )
        .returning(inbound_messages.c.id)
    )
    if claimed.first() is None:
        return None
    session = await lifecycle.open_or_touch(
        tx, tenant_id, m.channel_id, m.contact_id, m.address, conversation_id
    )
    cim = inbound_cim(m, message_id, session.id, conversation_id, tx.now)
    await tx.conn.execute(
        update(inbound_messages)
        .where(inbound_messages.c.id == message_id)
        .values(session_id=session.id, queue=session.queue, agent=session.agent, cim=cim)
    )
    consent = await _apply_keyword(tx, tenant_id, m, message_id, keywords)
    await event_log.append(tx, tenant_id, content_event(m, message_id, session, cim, consent))
    return message_id, session.id


async def _apply_keyword(
    tx: Tx,
    tenant_id: str,
    m: ReceivedMessage,
    message_id: str,
    keywords: list[KeywordOutcome] | None,
) -> dict[str, Any]:
    """What the keyword did, as the content event reports it; {} for no keyword."""
    if m.keyword is None:
        return {}
    word = m.keyword.keyword
    change = m.keyword.change(m.address, message_id)
    applied = None
    if change is not None:
        applied = await consents.apply(tx, tenant_id, change, m.keyword.channel_ids)
    if keywords is not None:
        changed = applied is not None and applied.changed
        keywords.append(KeywordOutcome(m.channel_id, m.address, word.action, changed))
    marked: dict[str, Any] = {"keyword": word.word, "action": word.action.value}
    if applied is not None:
        marked.update(
            scope=applied.entry.scope, state=applied.entry.state.value, changed=applied.changed
        )
    return marked


async def apply_status(tx: Tx, tenant_id: str, report: StatusReport) -> bool:
    """Move the matching outbound message forward; False when none matches."""
    message_id = await _outbound_for(tx.conn, tenant_id, report)
    if message_id is None:
        return False
    await msgs.set_status(tx, message_id, report.status, reason=report.reason, dispatch_state=None)
    return True


async def _outbound_for(conn: AsyncConnection, tenant_id: str, report: StatusReport) -> str | None:
    """``id`` is the hub's message id; ``messageIdExt`` the provider's, on any attempt."""
    if report.message_id:
        found = await conn.execute(
            select(messages.c.id).where(
                messages.c.tenant_id == tenant_id, messages.c.id == report.message_id
            )
        )
        if (hit := found.scalar()) is not None:
            return str(hit)
    if not report.external_id:
        return None
    found = await conn.execute(
        select(messages.c.id)
        .outerjoin(attempts, attempts.c.message_id == messages.c.id)
        .where(
            messages.c.tenant_id == tenant_id,
            or_(
                messages.c.provider_message_id == report.external_id,
                attempts.c.provider_message_id == report.external_id,
            ),
        )
        .limit(1)
    )
    hit = found.scalar()
    return None if hit is None else str(hit)


async def signal(tx: Tx, tenant_id: str, s: ChatSignal) -> bool:
    """A ChatStateEvent or AcceptStatusEvent in the session's conversation."""
    session: Session | None = None
    if s.session_id:
        try:
            session = await sess.get(tx.conn, tenant_id, s.session_id)
        except DomainError:  # an unknown session is reported as ignored, not as an error
            session = None
    if session is None and s.contact_id:
        session = await sess.latest_open_of_contact(tx.conn, tenant_id, s.contact_id)
    if session is None:
        return False
    await event_log.append(tx, tenant_id, signal_event(s, session))
    return True


async def session_page(
    conn: AsyncConnection, session: Session, page: PageRequest
) -> Page[SessionItem]:
    """Both directions, oldest first, by (time, id).

    Each table yields at most one page past the position; the merged page is
    then within what the two queries returned.
    """
    inbound_query = select(inbound_messages).where(
        inbound_messages.c.tenant_id == session.tenant_id,
        inbound_messages.c.session_id == session.id,
    )
    outbound_query = select(messages).where(
        messages.c.tenant_id == session.tenant_id,
        messages.c.conversation_id == session.conversation_id,
        messages.c.created_at >= session.created_at,
    )
    if session.closed_at is not None:
        outbound_query = outbound_query.where(messages.c.created_at <= session.closed_at)
    inbound_rows = await keyset_rows(conn, inbound_query, _INBOUND_ORDER, page)
    outbound_rows = await keyset_rows(conn, outbound_query, _OUTBOUND_ORDER, page)
    items = [SessionItem(r.id, r.created_at, r.cim, None, r.queue, r.agent) for r in inbound_rows]
    for row in outbound_rows:
        m = msgs.from_row(row)
        items.append(SessionItem(m.id, m.created_at, outbound_cim(m, session.id), m.status))
    items.sort(key=lambda i: (i.created_at, i.id))
    return page.cut(items[: page.size + 1], lambda i: (i.created_at, i.id))


_INBOUND_ORDER = Order((inbound_messages.c.created_at, inbound_messages.c.id))
_OUTBOUND_ORDER = Order((messages.c.created_at, messages.c.id))
