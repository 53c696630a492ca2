"""The attempt log: every try at a provider, and receipt matching through it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ARRAY, bindparam, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.models import AttemptEntry
from server.domain.provider import AttemptRecord
from server.storage import direct
from server.storage.message_schema import attempts
from server.storage.tx import Tx


async def record(tx: Tx, message_id: str, entries: list[AttemptRecord]) -> None:
    await record_many(tx, [(message_id, entries)])


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


# PostgreSQL numbers the entries itself, each message's on from its last,
# so a group of outcomes writes its attempts in one round trip, not two, while
# it holds the write turn.
_PG_COLUMNS = tuple(name for name in _KEYS if name != "number")
_PG_RECORD = direct.Statement(
    text(
        f"INSERT INTO attempts ({', '.join(_KEYS)})"
        " SELECT g.message_id,"
        " coalesce((SELECT max(a.number) FROM attempts a WHERE a.message_id = g.message_id), 0)"
        " + row_number() OVER (PARTITION BY g.message_id ORDER BY g.n),"
        f" {', '.join('g.' + name for name in _PG_COLUMNS[1:])}"
        f" FROM unnest({', '.join(':' + name for name in _PG_COLUMNS)})"
        f" WITH ORDINALITY AS g({', '.join(_PG_COLUMNS)}, n)"
        " ORDER BY g.n"
    ).bindparams(*(bindparam(name, type_=ARRAY(attempts.c[name].type)) for name in _PG_COLUMNS))
)


async def record_many(tx: Tx, items: Sequence[tuple[str, list[AttemptRecord]]]) -> None:
    """Log each message's entries, numbered on from its last: one read and
    one insert in all, or one statement on PostgreSQL."""
    ids = [message_id for message_id, entries in items if entries]
    if not ids:
        return
    if tx.conn.dialect.name == "postgresql":
        rows = [_row(tx, message_id, 0, e) for message_id, entries in items for e in entries]
        await _PG_RECORD.run(tx.conn, [{n: [r[n] for r in rows] for n in _PG_COLUMNS}])
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
