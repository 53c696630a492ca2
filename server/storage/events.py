"""Writing and reading the event log."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import MISSING, fields
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    String,
    bindparam,
    column,
    delete,
    func,
    select,
    text,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.envelope import envelope
from server.domain.events import EventType, NewEvent, StoredEvent
from server.storage import carry, direct, webhooks
from server.storage.conversation_schema import conversations, events, retention_floors
from server.storage.sql import insert_for
from server.storage.tx import LATER_EVENTS, Carrier, Tx
from server.storage.webhook_schema import tenant_webhooks
from server.storage.writer import COMMITTED_BEFORE, WRITE_TURN_KEY


async def append(tx: Tx, tenant_id: str, event: NewEvent) -> StoredEvent:
    """Store an event with the next sequence of its conversation, now."""
    # Events put off earlier in the group come first: cursors follow the order
    # in which the group's writes ran.
    await tx.flush()
    await _write(tx.conn, [(tx, tenant_id, event)], [])
    return tx.events[-1]


async def append_later(tx: Tx, tenant_id: str, event: NewEvent) -> None:
    """Store an event at the end of the group, with the others of the group.

    For writers that do not need the cursor: it reaches tx.events before commit.
    """
    await tx.later(LATER_EVENTS, _append, (tx, tenant_id, event))


async def append_all_later(tx: Tx, tenant_id: str, events: Sequence[NewEvent]) -> None:
    """append_later for many events of one tenant, in their order."""
    await tx.later_all(LATER_EVENTS, _append, [(tx, tenant_id, event) for event in events])


_EVENT_KEYS = (
    "id",
    "tenant_id",
    "conversation_id",
    "sequence",
    "type",
    "message_id",
    "channel_id",
    "customer_id",
    "audience",
    "payload",
    "created_at",
)
_insert_events = direct.Insert(events, _EVENT_KEYS)


def _upsert_with(ins: Any) -> Any:
    """Add each conversation's new events to its sequence; returns its new last."""
    return ins.on_conflict_do_update(
        index_elements=[conversations.c.id],
        set_={"last_sequence": conversations.c.last_sequence + ins.excluded.last_sequence},
    ).returning(conversations.c.id, conversations.c.last_sequence)


# On PostgreSQL each is one statement for any number of rows, its columns
# passed as arrays (typed as the tables type them) and unnested by the
# server, so one prepared statement serves every group.
def _arrays(table: Any, names: Sequence[str]) -> list[Any]:
    return [bindparam(name, type_=ARRAY(table.c[name].type)) for name in names]


_PG_EVENT_COLUMNS = tuple(name for name in _EVENT_KEYS if name != "id")
_PG_GIVEN = tuple(name for name in _PG_EVENT_COLUMNS if name != "sequence")
# One round trip for all a group's events: the conversations' sequences, the
# events numbered from them, the tenant's webhook and the cursor committed
# before them. Each is a statement of its own on SQLite, where a statement
# costs microseconds; on PostgreSQL each would cost a round trip.
# - firsts: each conversation once, with its first event's tenant and time
#   (the row a new conversation gets) and how many events it gains.
# - Each event id is drawn from the sequence as its row is inserted, in the
#   ORDER BY's order, so the ids ascend in the order the events were given.
# - committed_before reads the statement's snapshot, which holds no row of
#   this statement: with the write turn held, every lower cursor committed.
_PG_APPEND = direct.Statement(
    text(
        "WITH given AS ("
        f" SELECT * FROM unnest({', '.join(':' + name for name in _PG_GIVEN)})"
        f" WITH ORDINALITY AS g({', '.join(_PG_GIVEN)}, n)"
        "), firsts AS ("
        " SELECT DISTINCT ON (conversation_id) conversation_id, tenant_id, created_at,"
        " count(*) OVER (PARTITION BY conversation_id) AS added"
        " FROM given ORDER BY conversation_id, n"
        "), lasts AS ("
        " INSERT INTO conversations (id, tenant_id, last_sequence, created_at)"
        " SELECT conversation_id, tenant_id, added, created_at FROM firsts"
        " ON CONFLICT (id) DO UPDATE"
        " SET last_sequence = conversations.last_sequence + excluded.last_sequence"
        " RETURNING id, last_sequence"
        "), stored AS ("
        f" INSERT INTO events ({', '.join(_PG_EVENT_COLUMNS)})"
        " SELECT g.tenant_id, g.conversation_id,"
        " l.last_sequence - f.added"
        " + row_number() OVER (PARTITION BY g.conversation_id ORDER BY g.n),"
        f" {', '.join('g.' + name for name in _PG_GIVEN[2:])}"
        " FROM given g JOIN firsts f ON f.conversation_id = g.conversation_id"
        " JOIN lasts l ON l.id = g.conversation_id"
        " ORDER BY g.n"
        " RETURNING id, tenant_id, sequence"
        ")"
        " SELECT s.id, s.sequence, coalesce(w.url, '') AS webhook_url,"
        " w.disabled_at IS NOT NULL AS webhook_disabled,"
        " (SELECT max(e.id) FROM events e WHERE e.id < (SELECT min(id) FROM stored))"
        " AS committed_before"
        " FROM stored s LEFT JOIN tenant_webhooks w ON w.tenant_id = s.tenant_id"
        " ORDER BY s.id"
    )
    .bindparams(*_arrays(events, _PG_GIVEN))
    .columns(
        events.c.id,
        events.c.sequence,
        column("webhook_url", String),
        column("webhook_disabled", Boolean),
        column("committed_before", BigInteger),
    )
)


# On SQLite the group's statements run on the driver itself (see direct.py).
# sqlite3 returns no rows from executemany, so the sequences are upserted with
# multi-row statements: chunks of _UPSERT_ROWS, the rest in powers of two, so
# a handful of statements, each compiled once, serve any group.
_UPSERT_ROWS = 256
_UPSERT_COLUMNS = ("id", "tenant_id", "last_sequence", "created_at")
_sqlite_upserts: dict[int, direct.Statement] = {}


def _sqlite_upsert(size: int) -> direct.Statement:
    statement = _sqlite_upserts.get(size)
    if statement is None:
        rows: list[dict[str, Any]] = [
            {c: bindparam(f"{c}_{i}") for c in _UPSERT_COLUMNS} for i in range(size)
        ]
        statement = direct.Statement(_upsert_with(sqlite.insert(conversations).values(rows)))
        # _sqlite_sequences passes the values row by row, in _UPSERT_COLUMNS' order.
        expected = [f"{c}_{i}" for i in range(size) for c in _UPSERT_COLUMNS]
        assert statement.bind_names() == expected, "the upsert's placeholders moved"
        _sqlite_upserts[size] = statement
    return statement


async def _sqlite_sequences(conn: AsyncConnection, rows: list[dict[str, Any]]) -> list[Any]:
    """Each conversation's new last sequence, as (id, last_sequence) rows in any order."""
    found: list[Any] = []
    start = 0
    while start < len(rows):
        left = len(rows) - start
        size = _UPSERT_ROWS if left >= _UPSERT_ROWS else 1 << (left.bit_length() - 1)
        values = [row[c] for row in rows[start : start + size] for c in _UPSERT_COLUMNS]
        found.extend(await _sqlite_upsert(size).sqlite_tuples(conn, values))
        start += size
    return found


_LAST_CURSOR = direct.Statement(select(func.max(events.c.id)))


class _Append(Carrier):
    """The events' put-off write; it carries the group's inserts (see Later.flush)."""

    async def __call__(self, conn: AsyncConnection, entries: list[Any]) -> None:
        await _write(conn, entries, [])

    async def carrying(
        self,
        conn: AsyncConnection,
        entries: list[Any],
        riders: list[tuple[direct.Insert, list[dict[str, Any]]]],
    ) -> None:
        await _write(conn, entries, riders)


_append = _Append()


async def _write(
    conn: AsyncConnection,
    entries: list[tuple[Tx, str, NewEvent]],
    riders: list[tuple[direct.Insert, list[dict[str, Any]]]],
) -> None:
    """The conversations' sequences and the events, in one go, after the
    inserts that ride with them."""
    first = entries[0][0]
    if conn.dialect.name == "postgresql" and conn.info.get("event_lock") != first.batch:
        # Cursors must commit in the order they are assigned, or a subscriber
        # could see cursor 11 before 10 commits and skip 10 for good. The
        # writer takes this turn at the start of each batch; this covers
        # transactions opened outside it.
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_TURN_KEY})
        conn.info["event_lock"] = first.batch
    # Equal payloads share one dict, which the insert then encodes once: a
    # batch's accept events all say the same thing, each to its conversation.
    payloads: dict[tuple[tuple[str, Any], ...], dict[str, Any]] = {}
    values = []
    for tx, tenant_id, event in entries:
        payload = _payload(event)
        if "data" not in payload:  # the rest are strings
            payload = payloads.setdefault(tuple(payload.items()), payload)
        values.append(
            {
                "tenant_id": tenant_id,
                "conversation_id": event.conversation_id,
                "type": event.type.value,
                "message_id": event.message_id,
                "channel_id": event.channel_id,
                "customer_id": event.customer_id,
                "audience": event.audience,
                "payload": payload,
                "created_at": tx.now,
            }
        )
    if conn.dialect.name == "sqlite":
        for insert, rows in riders:
            await insert(conn, rows)
        cursors, sequences, before = await _sqlite_write(conn, values)
    else:
        found = await carry.rows_carrying(
            _PG_APPEND, conn, {name: [row[name] for row in values] for name in _PG_GIVEN}, riders
        )
        cursors = [row.id for row in found]
        sequences = [row.sequence for row in found]
        before = found[0].committed_before or 0
        hooks = _webhooks_known(first)
        for (_tx, tenant_id, _event), row in zip(entries, found, strict=True):
            hooks[tenant_id] = (row.webhook_url, row.webhook_disabled)
    if conn.info.get(COMMITTED_BEFORE, (None,))[0] != first.batch:
        # The group's first events: every cursor below them has committed.
        conn.info[COMMITTED_BEFORE] = (first.batch, before)
    # Looked up once per tenant, not per event (a batch is a thousand of one tenant's).
    tenants = {tenant_id for _, tenant_id, _ in entries}
    hooks = {tenant_id: await _tenant_webhook(first, tenant_id) for tenant_id in tenants}
    for (tx, tenant_id, event), sequence, cursor in zip(entries, sequences, cursors, strict=True):
        stored = StoredEvent(cursor, tenant_id, sequence, tx.now, event)
        tx.events.append(stored)
        url, disabled = hooks[tenant_id]
        if url:
            # Same transaction as the event: the tenant hears of everything that
            # committed, in per-conversation order (the outbox's ordering key).
            # While the endpoint is disabled the delivery is kept as a dead
            # letter, to be redriven once it is enabled again.
            await webhooks.enqueue(
                tx,
                stored.tenant_id,
                stored.event.conversation_id,
                url,
                envelope([stored]),
                message_id=stored.event.message_id,
                dead_reason=ENDPOINT_DISABLED if disabled else "",
            )


async def _sqlite_write(
    conn: AsyncConnection, values: list[dict[str, Any]]
) -> tuple[Iterable[int], list[int], int]:
    """Store the events; returns their cursors, their sequences and the
    highest cursor before them."""
    counts: dict[str, int] = {}
    owners: dict[str, tuple[str, int]] = {}
    for row in values:
        cid = row["conversation_id"]
        counts[cid] = counts.get(cid, 0) + 1
        owners.setdefault(cid, (row["tenant_id"], row["created_at"]))
    rows = [
        {"id": cid, "tenant_id": owners[cid][0], "last_sequence": n, "created_at": owners[cid][1]}
        for cid, n in counts.items()
    ]
    lasts = await _sqlite_sequences(conn, rows)
    # The next sequence of each conversation: its new last, less what this call adds.
    after = {cid: last - counts[cid] for cid, last in lasts}
    sequences: list[int] = []
    for row in values:
        after[row["conversation_id"]] += 1
        row["sequence"] = after[row["conversation_id"]]
        sequences.append(row["sequence"])
    # SQLite does not say which RETURNING row belongs to which VALUES row,
    # so SQLAlchemy would insert row by row. The writer is its only writer,
    # so we hand out the ids it would have: one past the highest, in order.
    # The writer's transaction holds SQLite's only write lock, so every
    # cursor below them has committed or is this group's own.
    start = (await _LAST_CURSOR.rows(conn, {}))[0][0] or 0
    for i, row in enumerate(values, start + 1):
        row["id"] = i
    await _insert_events(conn, values)
    return range(start + 1, start + 1 + len(values)), sequences, start


ENDPOINT_DISABLED = "endpoint disabled"
_WEBHOOK_URL = direct.Statement(
    select(tenant_webhooks.c.url, tenant_webhooks.c.disabled_at).where(
        tenant_webhooks.c.tenant_id == bindparam("tenant_id")
    )
)


def _webhooks_known(tx: Tx) -> dict[str, tuple[str, bool]]:
    """The group's lookups of tenant webhooks: one per group commit, not per event."""
    cache = tx.conn.info.get("tenant_webhooks")
    if cache is None or cache[0] != tx.batch:
        cache = (tx.batch, {})
        tx.conn.info["tenant_webhooks"] = cache
    known: dict[str, tuple[str, bool]] = cache[1]
    return known


async def _tenant_webhook(tx: Tx, tenant_id: str) -> tuple[str, bool]:
    known = _webhooks_known(tx)
    if tenant_id not in known:
        found = await _WEBHOOK_URL.rows(tx.conn, {"tenant_id": tenant_id})
        known[tenant_id] = (
            (found[0].url, found[0].disabled_at is not None) if found else ("", False)
        )
    return known[tenant_id]


def forget_tenant_webhooks(tx: Tx) -> None:
    """Drop this group's cached lookups after a change to tenant_webhooks."""
    tx.conn.info.pop("tenant_webhooks", None)


async def set_tenant_webhook(tx: Tx, tenant_id: str, url: str) -> None:
    ins = insert_for(tx.conn, tenant_webhooks).values(
        tenant_id=tenant_id, url=url, updated_at=tx.now
    )
    # Setting the webhook again is a fresh start: enabled, with no failures counted.
    fresh = {"disabled_at": None, "disabled_reason": "", "failing_since": None}
    await tx.conn.execute(
        ins.on_conflict_do_update(
            index_elements=[tenant_webhooks.c.tenant_id],
            set_={"url": url, "updated_at": tx.now, **fresh},
        )
    )
    forget_tenant_webhooks(tx)


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


async def newest_cursor(tx_conn: Any, tenant_id: str) -> int:
    return (
        await tx_conn.execute(select(func.max(events.c.id)).where(events.c.tenant_id == tenant_id))
    ).scalar() or 0


# Fields the event row has columns for; the payload holds the rest, and of
# those only what differs from NewEvent's defaults. A batch writes an event
# per destination: the full dump was three times the bytes, and its
# encoding a third of the time spent on each event.
_IN_COLUMNS = ("conversation_id", "type", "message_id", "channel_id", "customer_id", "audience")
_DEFAULTS = tuple(
    (f.name, f.default)
    for f in fields(NewEvent)
    if f.name not in _IN_COLUMNS and f.default is not MISSING
)


def _payload(event: NewEvent) -> dict[str, Any]:
    data = {}
    for name, default in _DEFAULTS:
        value = getattr(event, name)
        if value != default:
            data[name] = value
    if event.data:
        data["data"] = dict(event.data)
    return data


def _from_row(row: Any) -> StoredEvent:
    # Rows written before the payload was trimmed carry every field: the same
    # values as the columns, so either may win.
    event = NewEvent(
        conversation_id=row.conversation_id,
        type=EventType(row.type),
        message_id=row.message_id,
        channel_id=row.channel_id,
        customer_id=row.customer_id,
        audience=row.audience,
        **{k: v for k, v in row.payload.items() if k not in _IN_COLUMNS},
    )
    return StoredEvent(row.id, row.tenant_id, row.sequence, row.created_at, event)


async def retention_floor(conn: Any, tenant_id: str) -> int:
    return (
        await conn.execute(
            select(retention_floors.c.cursor).where(retention_floors.c.tenant_id == tenant_id)
        )
    ).scalar() or 0


async def prune(tx: Tx, retention_ms: int) -> int:
    """Remove events older than retention and raise each tenant's floor to match."""
    cutoff = tx.now - retention_ms
    # Read through ix_events_created and grouped here: as a GROUP BY, SQLite
    # walked the whole log in tenant order instead of just the expired rows.
    reached: dict[str, int] = {}
    expired = await tx.conn.execute(
        select(events.c.tenant_id, events.c.id).where(events.c.created_at < cutoff)
    )
    for tenant_id, event_id in expired:
        if event_id > reached.get(tenant_id, 0):
            reached[tenant_id] = event_id
    for tenant_id, cursor in reached.items():
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
