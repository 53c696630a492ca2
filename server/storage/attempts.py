"""The attempt log: every try at a provider, and receipt matching through it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.models import AttemptEntry
from server.domain.provider import AttemptRecord
from server.storage import direct
from server.storage.message_schema import attempts
from server.storage.tx import Tx


async def record(tx: Tx, message_id: str, entries: list[AttemptRecord]) -> None:
    if not entries:
        return
    found = await _LAST_NUMBERS.rows(tx.conn, {"ids": [message_id]})
    last = found[0][1] if found else 0
    await _insert(tx.conn, [_row(tx, message_id, last + i + 1, e) for i, e in enumerate(entries)])


# Built once: these run for every group of dispatch outcomes and receipts.
_LAST_NUMBERS = direct.Statement(
    select(attempts.c.message_id, func.max(attempts.c.number))
    .where(attempts.c.message_id.in_(bindparam("ids", expanding=True)))
    .group_by(attempts.c.message_id)
)
_KEYS = (
    "message_id",
    "number",
    "channel_id",
    "provider",
    "outcome",
    "provider_message_id",
    "error_code",
    "reason",
    "segments",
    "ts",
    "latency_ms",
)
_insert = direct.Insert(attempts, _KEYS)
_BY_PROVIDER_IDS = direct.Statement(
    select(attempts.c.message_id, attempts.c.channel_id, attempts.c.provider_message_id).where(
        attempts.c.channel_id.in_(bindparam("channels", expanding=True)),
        attempts.c.provider_message_id.in_(bindparam("ids", expanding=True)),
    )
)


async def record_many(tx: Tx, items: Sequence[tuple[str, list[AttemptRecord]]]) -> None:
    """record() for many messages: one read of the last numbers, one insert."""
    ids = [message_id for message_id, entries in items if entries]
    if not ids:
        return
    found = await _LAST_NUMBERS.rows(tx.conn, {"ids": list(set(ids))})
    last: dict[str, int] = {message_id: number or 0 for message_id, number in found}
    rows = []
    for message_id, entries in items:
        for e in entries:
            last[message_id] = last.get(message_id, 0) + 1
            rows.append(_row(tx, message_id, last[message_id], e))
    await _insert(tx.conn, rows)


def _row(tx: Tx, message_id: str, number: int, e: AttemptRecord) -> dict[str, Any]:
    # The keys of _KEYS, which the insert is compiled for.
    return {
        "message_id": message_id,
        "number": number,
        "channel_id": e.channel_id,
        "provider": e.provider,
        "outcome": e.outcome,
        "provider_message_id": e.provider_message_id or None,
        "error_code": e.error_code,
        "reason": e.reason,
        "segments": e.segments,
        "ts": tx.now,
        "latency_ms": e.latency_ms,
    }


async def messages_for(tx: Tx, wanted: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """message_for() for many (channel, provider id) pairs, in one query."""
    if not wanted:
        return {}
    rows = await _BY_PROVIDER_IDS.rows(
        tx.conn, {"channels": list({c for c, _ in wanted}), "ids": list({p for _, p in wanted})}
    )
    pairs = set(wanted)
    found: dict[tuple[str, str], str] = {}
    for r in rows:
        key = (r.channel_id, r.provider_message_id)
        if key in pairs:
            found.setdefault(key, r.message_id)
    return found


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
            r.latency_ms or 0,
        )
        for r in rows
    )
