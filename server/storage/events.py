"""Writing and reading the event log."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sqlalchemy import delete, func, select, text

from server.domain.envelope import envelope
from server.domain.events import EventType, NewEvent, StoredEvent
from server.storage import webhooks
from server.storage.schema import conversations, events, retention_floors, tenant_webhooks
from server.storage.sql import insert_for
from server.storage.writer import WRITE_TURN_KEY, Tx


async def append(tx: Tx, tenant_id: str, event: NewEvent) -> StoredEvent:
    """Store an event with the next sequence of its conversation."""
    if tx.conn.dialect.name == "postgresql" and tx.conn.info.get("event_lock") != tx.batch:
        # Cursors must commit in the order they are assigned, or a subscriber
        # could see cursor 11 before 10 commits and skip 10 for good. The
        # writer takes this turn at the start of each batch; this covers
        # transactions opened outside it.
        await tx.conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_TURN_KEY})
        tx.conn.info["event_lock"] = tx.batch
    ins = insert_for(tx.conn, conversations).values(
        id=event.conversation_id, tenant_id=tenant_id, last_sequence=1, created_at=tx.now
    )
    ins = ins.on_conflict_do_update(
        index_elements=[conversations.c.id],
        set_={"last_sequence": conversations.c.last_sequence + 1},
    ).returning(conversations.c.last_sequence)
    sequence = (await tx.conn.execute(ins)).scalar_one()
    payload = _payload(event)
    cursor = (
        await tx.conn.execute(
            events.insert()
            .values(
                tenant_id=tenant_id,
                conversation_id=event.conversation_id,
                sequence=sequence,
                type=event.type.value,
                message_id=event.message_id,
                channel_id=event.channel_id,
                customer_id=event.customer_id,
                audience=event.audience,
                payload=payload,
                created_at=tx.now,
            )
            .returning(events.c.id)
        )
    ).scalar_one()
    stored = StoredEvent(cursor, tenant_id, sequence, tx.now, event)
    tx.events.append(stored)
    url = await _tenant_webhook(tx, tenant_id)
    if url:
        # Same transaction as the event: the tenant hears of everything that
        # committed, in per-conversation order (the outbox's ordering key).
        await webhooks.enqueue(tx, tenant_id, event.conversation_id, url, envelope([stored]))
    return stored


async def _tenant_webhook(tx: Tx, tenant_id: str) -> str:
    # One lookup per group commit, not per event.
    cache = tx.conn.info.get("tenant_webhooks")
    if cache is None or cache[0] != tx.batch:
        cache = (tx.batch, {})
        tx.conn.info["tenant_webhooks"] = cache
    known: dict[str, str] = cache[1]
    if tenant_id not in known:
        known[tenant_id] = (
            await tx.conn.execute(
                select(tenant_webhooks.c.url).where(tenant_webhooks.c.tenant_id == tenant_id)
            )
        ).scalar() or ""
    return known[tenant_id]


async def set_tenant_webhook(tx: Tx, tenant_id: str, url: str) -> None:
    ins = insert_for(tx.conn, tenant_webhooks).values(
        tenant_id=tenant_id, url=url, updated_at=tx.now
    )
    await tx.conn.execute(
        ins.on_conflict_do_update(
            index_elements=[tenant_webhooks.c.tenant_id], set_={"url": url, "updated_at": tx.now}
        )
    )
    tx.conn.info.pop("tenant_webhooks", None)


async def read_after(tx_conn: Any, tenant_id: str, cursor: int, limit: int) -> list[StoredEvent]:
    rows = (
        await tx_conn.execute(
            select(events)
            .where(events.c.tenant_id == tenant_id, events.c.id > cursor)
            .order_by(events.c.id)
            .limit(limit)
        )
    ).all()
    return [_from_row(r) for r in rows]


async def oldest_cursor(tx_conn: Any, tenant_id: str) -> int | None:
    return (
        await tx_conn.execute(select(func.min(events.c.id)).where(events.c.tenant_id == tenant_id))
    ).scalar()


async def newest_cursor(tx_conn: Any, tenant_id: str) -> int:
    return (
        await tx_conn.execute(select(func.max(events.c.id)).where(events.c.tenant_id == tenant_id))
    ).scalar() or 0


def _payload(event: NewEvent) -> dict[str, Any]:
    data = asdict(event)
    data["type"] = event.type.value
    data["data"] = dict(event.data)
    return data


def _from_row(row: Any) -> StoredEvent:
    payload = dict(row.payload)
    payload["type"] = EventType(payload["type"])
    return StoredEvent(row.id, row.tenant_id, row.sequence, row.created_at, NewEvent(**payload))


async def retention_floor(conn: Any, tenant_id: str) -> int:
    return (
        await conn.execute(
            select(retention_floors.c.cursor).where(retention_floors.c.tenant_id == tenant_id)
        )
    ).scalar() or 0


async def prune(tx: Tx, retention_ms: int) -> int:
    """Remove events older than retention and raise each tenant's floor to match."""
    cutoff = tx.now - retention_ms
    reached = (
        await tx.conn.execute(
            select(events.c.tenant_id, func.max(events.c.id))
            .where(events.c.created_at < cutoff)
            .group_by(events.c.tenant_id)
        )
    ).all()
    for tenant_id, cursor in reached:
        ins = insert_for(tx.conn, retention_floors).values(
            tenant_id=tenant_id, cursor=cursor, updated_at=tx.now
        )
        await tx.conn.execute(
            ins.on_conflict_do_update(
                index_elements=[retention_floors.c.tenant_id],
                set_={"cursor": func.greatest(retention_floors.c.cursor, cursor)}
                if tx.conn.dialect.name == "postgresql"
                else {"cursor": func.max(retention_floors.c.cursor, cursor)},
            )
        )
    if not reached:
        return 0
    removed = await tx.conn.execute(delete(events).where(events.c.created_at < cutoff))
    return int(removed.rowcount or 0)
