"""The attempt log: every try at a provider, and receipt matching through it."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.models import AttemptEntry
from server.domain.provider import AttemptRecord
from server.storage.schema import attempts
from server.storage.writer import Tx


async def record(tx: Tx, message_id: str, entries: list[AttemptRecord]) -> None:
    if not entries:
        return
    last = (
        await tx.conn.execute(
            select(func.max(attempts.c.number)).where(attempts.c.message_id == message_id)
        )
    ).scalar() or 0
    await tx.conn.execute(
        attempts.insert(),
        [
            {
                "message_id": message_id,
                "number": last + i + 1,
                "channel_id": e.channel_id,
                "provider": e.provider,
                "outcome": e.outcome,
                "provider_message_id": e.provider_message_id or None,
                "error_code": e.error_code,
                "reason": e.reason,
                "segments": e.segments,
                "ts": tx.now,
            }
            for i, e in enumerate(entries)
        ],
    )


async def message_for(tx: Tx, channel_id: str, provider_message_id: str) -> str | None:
    return (
        await tx.conn.execute(
            select(attempts.c.message_id)
            .where(
                attempts.c.channel_id == channel_id,
                attempts.c.provider_message_id == provider_message_id,
            )
            .limit(1)
        )
    ).scalar()


async def log_of(conn: AsyncConnection, message_id: str) -> tuple[AttemptEntry, ...]:
    rows = (
        await conn.execute(
            select(attempts).where(attempts.c.message_id == message_id).order_by(attempts.c.number)
        )
    ).all()
    return tuple(
        AttemptEntry(
            r.number,
            r.channel_id,
            r.provider,
            r.outcome,
            r.provider_message_id or "",
            r.error_code,
            r.reason,
            r.segments,
            r.ts,
        )
        for r in rows
    )
