"""The accept path's statements on each engine's driver store what SQLAlchemy would.

``server.storage.direct`` runs the hot inserts and reads on sqlite3 and on
asyncpg themselves. These tests hold it to the slow path it replaces: the
same stored values (JSON, NULLs, defaults), the same exception types, and the
same "committed before" cursor the writer used to ask the database for.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Column, Integer, MetaData, Table, bindparam, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError

from server.domain.events import CommittedEvents, EventType, NewEvent
from server.storage import direct, migrate
from server.storage import events as event_log
from server.storage.accept import _MESSAGE_KEYS, _insert_messages
from server.storage.db import make_engine
from server.storage.message_schema import messages
from server.storage.messages import PENDING
from server.storage.tx import Tx
from server.storage.writer import Writer


def _message(message_id: str, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": message_id,
        "tenant_id": "default",
        "channel_id": "sandbox",
        "destination": "+447911100001",
        "type": "text",
        "text": "héllo \u2603",
        "content": {"text": "héllo", "nested": {"list": [1, None, "x"]}},
        "conversation_id": "c1",
        "correlation_id": "",
        "status": "ACCEPTED",
        "priority": 0,
        "due_at": 1,
        "expire_at": None,
        "dispatch_state": PENDING,
        "lease_until": None,
        "attempts": 0,
        "provider_message_id": None,
        "last_error": "",
        "mask": 3,
        "created_at": 1,
        "updated_at": 1,
        "notify_url": None,
        "callback_data": None,
        "requested_receipts": ["DELIVERED"],
        "segments": 1,
        "request_id": None,
        "traceparent": None,
        "batch_id": None,
    }
    row.update(changes)
    assert set(row) == set(_MESSAGE_KEYS)
    return row


async def _stored(conn: Any, message_id: str) -> tuple[Any, ...]:
    # Untyped: JSON comes back as the text the database holds.
    found = await conn.execute(text("SELECT * FROM messages WHERE id = :id"), {"id": message_id})
    return tuple(found.one()[1:])  # all but the id


@contextmanager
def _watching() -> Iterator[list[str]]:
    """The statements the direct path runs meanwhile, in order."""
    ran: list[str] = []

    def watch(statement: str, _params: Any) -> None:
        ran.append(statement)

    direct.watchers.append(watch)
    try:
        yield ran
    finally:
        direct.watchers.remove(watch)


async def _begun(conn: Any) -> None:
    """Begin, and make the driver begin too: asyncpg's begins at the first statement."""
    await conn.begin()
    await conn.execute(text("SELECT 1"))


@pytest.mark.parametrize(
    "changes",
    [{}, {"content": {}, "requested_receipts": [], "expire_at": 9, "notify_url": "http://x/"}],
    ids=["full", "empty-json"],
)
async def test_a_message_row_is_stored_byte_for_byte_as_sqlalchemy_stores_it(
    db_url: str, changes: dict[str, Any]
) -> None:
    engine = make_engine(db_url)
    await migrate.upgrade(engine)
    try:
        async with engine.connect() as conn:
            await _begun(conn)
            with _watching() as ran:
                await _insert_messages(conn, [_message("by-driver", **changes)])
            await conn.execute(messages.insert(), [_message("by-sqlalchemy", **changes)])
            assert await _stored(conn, "by-driver") == await _stored(conn, "by-sqlalchemy")
            await conn.commit()
    finally:
        await engine.dispose()
    assert len(ran) == 1 and ran[0].startswith("INSERT INTO messages")  # on the driver


async def test_rows_sharing_a_json_value_store_it_once_encoded_and_each_row_as_sqlalchemy_does(
    db_url: str,
) -> None:
    """A batch's drafts share one content dict and one receipts tuple."""
    content = {"type": "text", "text": "héllo", "from": "CNNECT", "options": {}}
    receipts = ("DELIVERED", "READ")
    rows = [_message(f"shared-{i}", content=content, requested_receipts=receipts) for i in range(3)]
    # Equal to the shared one, and different, but objects of their own.
    rows.insert(1, _message("own-equal", content=dict(content), requested_receipts=receipts))
    rows.insert(3, _message("own", content={"text": "other"}, requested_receipts=["SENT"]))
    seen: list[Any] = []

    def watch(statement: str, params: Any) -> None:
        seen.append(params)

    engine = make_engine(db_url)
    await migrate.upgrade(engine)
    try:
        async with engine.connect() as conn:
            await _begun(conn)
            direct.watchers.append(watch)
            try:
                await _insert_messages(conn, rows)
            finally:
                direct.watchers.remove(watch)
            slow = [
                {**r, "id": f"slow-{r['id']}", "requested_receipts": list(r["requested_receipts"])}
                for r in rows
            ]
            await conn.execute(messages.insert(), slow)
            for row in rows:
                mine = row["id"]
                assert await _stored(conn, mine) == await _stored(conn, f"slow-{mine}"), mine
            await conn.commit()
    finally:
        await engine.dispose()
    (params,) = seen

    def json_texts(message_id: str) -> list[Any]:
        (values,) = [p for p in params if message_id in p]
        return [v for v in values if isinstance(v, str) and v.startswith(("{", "["))]

    # The shared dict and tuple were encoded once: their rows hold the very
    # same two strings.
    first = json_texts("shared-0")
    assert len(first) == 2
    for other in ("shared-1", "shared-2"):
        assert [id(v) for v in json_texts(other)] == [id(v) for v in first]
    assert json_texts("own-equal") == first


async def test_a_left_out_column_takes_its_default_as_sqlalchemy_gives_it(db_url: str) -> None:
    engine = make_engine(db_url)
    await migrate.upgrade(engine)
    keys = [k for k in _MESSAGE_KEYS if k not in ("attempts", "segments", "last_error")]
    partial = direct.Insert(messages, keys)
    try:
        async with engine.connect() as conn:
            await _begun(conn)
            row = {k: v for k, v in _message("by-driver").items() if k in keys}
            await partial(conn, [row])
            await conn.execute(messages.insert(), [{**row, "id": "by-sqlalchemy"}])
            assert await _stored(conn, "by-driver") == await _stored(conn, "by-sqlalchemy")
            await conn.commit()
    finally:
        await engine.dispose()


def test_a_column_with_a_computed_default_cannot_be_left_out() -> None:
    table = Table(
        "stamped",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("stamp", Integer, default=lambda: 5),
    )
    with pytest.raises(ValueError, match=r"stamped\.stamp"):
        direct.Insert(table, ["id"])
    assert direct.Insert(table, ["id", "stamp"]).values({"id": 1, "stamp": 2}) == (1, 2)


async def test_a_driver_error_is_raised_as_sqlalchemy_raises_it(db_url: str) -> None:
    engine = make_engine(db_url)
    await migrate.upgrade(engine)
    try:
        async with engine.connect() as conn:
            await _begun(conn)
            await _insert_messages(conn, [_message("twice")])
            with pytest.raises(IntegrityError) as raised:
                await _insert_messages(conn, [_message("twice")])
            await conn.rollback()
            with pytest.raises(IntegrityError) as theirs:
                await conn.execute(messages.insert(), [_message("twice")] * 2)
    finally:
        await engine.dispose()
    assert type(raised.value.orig) is type(theirs.value.orig)
    if "sqlite" in db_url:
        assert isinstance(raised.value.orig, sqlite3.IntegrityError)
    else:
        assert isinstance(raised.value.orig.__cause__, asyncpg.UniqueViolationError)
    assert "INSERT INTO messages" in str(raised.value.statement)


async def test_on_postgresql_a_statement_waits_for_the_drivers_transaction(db_url: str) -> None:
    """SQLAlchemy's asyncpg adapter begins the driver's transaction at its first
    statement. Run on the driver before then, an insert would commit on its own."""
    if "sqlite" in db_url:
        pytest.skip("sqlite3 begins at begin()")
    engine = make_engine(db_url)
    await migrate.upgrade(engine)
    try:
        async with engine.connect() as conn:
            await conn.begin()
            with _watching() as ran:
                await _insert_messages(conn, [_message("first")])
                assert ran == []  # through SQLAlchemy, which begins the driver's transaction
                await _insert_messages(conn, [_message("second")])
                assert len(ran) == 1  # on asyncpg, inside that transaction
                every = direct.Statement(select(messages.c.id).order_by(messages.c.id))
                found = await every.rows(conn, {})
                assert [r.id for r in found] == ["first", "second"] and len(ran) == 2
            await conn.rollback()
        async with engine.connect() as conn:
            left = (await conn.execute(text("SELECT count(*) FROM messages"))).scalar()
    finally:
        await engine.dispose()
    assert left == 0


async def test_a_transaction_begins_on_the_driver_and_a_failed_begin_is_wrapped(
    tmp_path: Path,
) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'begin.db'}")
    await migrate.upgrade(engine)
    try:
        async with engine.connect() as conn:
            raw = await direct.handle(conn)
            assert raw is not None and not raw.in_transaction
            await conn.begin()
            assert raw.in_transaction  # an explicit BEGIN, not the driver's implicit one
            await conn.rollback()
            raw.execute("BEGIN IMMEDIATE")  # as begin_write opens one, with the write lock
            await conn.begin()  # takes it over instead of beginning another
            assert raw.in_transaction
            await conn.rollback()
            assert not raw.in_transaction
            driver = conn.sync_connection.connection.driver_connection  # type: ignore[union-attr]
            driver._connection = _FailingDriver()
            try:
                with pytest.raises(OperationalError) as raised:
                    await conn.begin()
            finally:
                driver._connection = raw
            assert isinstance(raised.value.orig, sqlite3.OperationalError)
            assert raised.value.statement == "BEGIN"
    finally:
        await engine.dispose()


class _FailingDriver:
    """A sqlite3 connection whose every statement fails, as on a failing disk."""

    in_transaction = False

    def execute(self, _sql: str) -> None:
        raise sqlite3.OperationalError("disk I/O error")


async def test_every_commit_reports_the_cursor_committed_before_it(db_url: str) -> None:
    """The writer's "after" is what ``max(id) WHERE id < first`` says, commit by commit.

    Both engines take it from the event log's own write (SQLite's cursor
    read, PostgreSQL's insert statement); a wrong value would make live
    readers think they missed events or skip a gap.
    """
    engine = make_engine(db_url)
    await migrate.upgrade(engine)
    published: list[CommittedEvents] = []
    writer = Writer(engine, published.append)
    writer.start()

    def work(conversation: str, later: bool) -> Any:
        async def run(tx: Tx) -> None:
            event = NewEvent(conversation_id=conversation, type=EventType.CONTENT, message="m")
            if later:
                await event_log.append_later(tx, "default", event)
            else:
                await event_log.append(tx, "default", event)

        return run

    try:
        try:
            await writer.submit(work("solo", later=False))
            # Groups of several writes, both kinds mixed, and a write with no event.
            for round_ in range(3):
                await asyncio.gather(
                    *(writer.submit(work(f"c{round_}-{i}", later=i % 2 == 0)) for i in range(6)),
                    writer.submit(lambda tx: asyncio.sleep(0)),
                )
        finally:
            await writer.close()
        async with engine.connect() as conn:
            for commit in published:
                first = min(e.cursor for e in commit)
                found = await conn.execute(
                    text("SELECT max(id) FROM events WHERE id < :first"), {"first": first}
                )
                assert commit.after == int(found.scalar() or 0), commit
            stored = (await conn.execute(text("SELECT count(*) FROM events"))).scalar()
    finally:
        await engine.dispose()
    assert sum(len(c) for c in published) == stored == 19
    assert published[0].after == 0


async def test_a_compiled_select_gives_the_rows_sqlalchemy_gives(db_url: str) -> None:
    """JSON decoded, NULLs kept, an IN list expanded, on either driver."""
    engine = make_engine(db_url)
    await migrate.upgrade(engine)
    lock_many = direct.Statement(
        select(messages)
        .where(messages.c.id.in_(bindparam("ids", expanding=True)))
        .order_by(messages.c.id)
    )
    try:
        async with engine.begin() as conn:
            await conn.execute(
                messages.insert(),
                [_message("m1"), _message("m2", content={}, requested_receipts=[]), _message("m3")],
            )
            ours = await lock_many.rows(conn, {"ids": ["m1", "m2"]})
            theirs = (
                await conn.execute(select(messages).where(messages.c.id.in_(["m1", "m2"])))
            ).all()
            assert [tuple(r) for r in ours] == [tuple(r) for r in theirs]
            assert ours[0].content == {"text": "héllo", "nested": {"list": [1, None, "x"]}}
            assert ours[1].requested_receipts == [] and ours[0].expire_at is None
            # Two IN lists in one statement, each written out for its values.
            both = direct.Statement(
                select(messages.c.id).where(
                    messages.c.id.in_(bindparam("ids", expanding=True)),
                    messages.c.channel_id.in_(bindparam("channels", expanding=True)),
                )
            )
            found = await both.rows(conn, {"ids": ["m1", "m3", "x"], "channels": ["sandbox", "y"]})
            assert sorted(r.id for r in found) == ["m1", "m3"]
            assert await both.rows(conn, {"ids": ["m1"], "channels": ["y"]}) == []
            with _watching() as ran:
                for ids in (["m1"], ["m1", "m2", "m3"]):
                    await both.rows(conn, {"ids": ids, "channels": ["sandbox"]})
            if conn.dialect.name == "postgresql":
                assert ran[0] == ran[1]  # one prepared statement for lists of any length
            # NOT IN, and lists with nothing in them, as SQLAlchemy has them.
            others = direct.Statement(
                select(messages.c.id)
                .where(
                    messages.c.id.not_in(bindparam("skip", expanding=True)),
                    messages.c.channel_id.in_(bindparam("channels", expanding=True)),
                )
                .order_by(messages.c.id)
            )
            cases = [
                (["m2"], ["sandbox"], ["m1", "m3"]),
                ([], ["sandbox"], ["m1", "m2", "m3"]),
                (["m1"], [], []),
            ]
            for skip, channels, expected in cases:
                found = await others.rows(conn, {"skip": skip, "channels": channels})
                query = (
                    select(messages.c.id)
                    .where(messages.c.id.not_in(skip), messages.c.channel_id.in_(channels))
                    .order_by(messages.c.id)
                )
                assert [r.id for r in found] == expected
                assert [r.id for r in await conn.execute(query)] == expected
    finally:
        await engine.dispose()


async def test_a_compiled_update_writes_what_sqlalchemy_writes(db_url: str) -> None:
    engine = make_engine(db_url)
    await migrate.upgrade(engine)
    columns = ("status", "last_error", "segments")
    change = direct.Statement(
        update(messages)
        .where(messages.c.id == bindparam("_id"))
        .values({name: bindparam(name) for name in columns})
    )
    try:
        async with engine.begin() as conn:
            await conn.execute(messages.insert(), [_message(f"m{i}") for i in range(4)])
            # One parameter set, then several at once.
            await change.run(
                conn, [{"_id": "m0", "status": "SENT", "last_error": "", "segments": 2}]
            )
            await change.run(
                conn,
                [
                    {"_id": "m1", "status": "FAILED", "last_error": "no", "segments": 1},
                    {"_id": "m2", "status": "DELIVERED", "last_error": "", "segments": 3},
                ],
            )
            found = (
                await conn.execute(
                    select(messages.c.id, *(messages.c[c] for c in columns)).order_by(messages.c.id)
                )
            ).all()
    finally:
        await engine.dispose()
    assert [tuple(r) for r in found] == [
        ("m0", "SENT", "", 2),
        ("m1", "FAILED", "no", 1),
        ("m2", "DELIVERED", "", 3),
        ("m3", "ACCEPTED", "", 1),
    ]


async def test_sequences_count_on_across_groups_of_any_number_of_conversations(
    db_url: str,
) -> None:
    """Each conversation's events are numbered 1, 2, 3... in cursor order, however
    many conversations a group holds (SQLite upserts them in chunks of rows)."""
    engine = make_engine(db_url)
    await migrate.upgrade(engine)
    published: list[CommittedEvents] = []
    writer = Writer(engine, published.append)
    writer.start()

    def group(conversations: list[str]) -> Any:
        async def run(tx: Tx) -> None:
            for conversation in conversations:
                event = NewEvent(conversation_id=conversation, type=EventType.CONTENT)
                await event_log.append_later(tx, "default", event)

        return run

    first = [f"c{i}" for i in range(300)] + ["c0", "c0", "c299"]
    second = [f"c{i}" for i in range(0, 600, 2)] + ["c0"]
    try:
        try:
            for conversations in (first, second, ["c1"], [f"n{i}" for i in range(257)]):
                await writer.submit(group(conversations))
        finally:
            await writer.close()
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text("SELECT id, conversation_id, sequence FROM events ORDER BY id")
                )
            ).all()
            lasts = dict(
                (await conn.execute(text("SELECT id, last_sequence FROM conversations"))).all()
            )
    finally:
        await engine.dispose()
    numbered: dict[str, list[int]] = {}
    for _cursor, conversation, sequence in rows:
        numbered.setdefault(conversation, []).append(int(sequence))
    assert len(rows) == len(first) + len(second) + 1 + 257
    assert all(seqs == list(range(1, len(seqs) + 1)) for seqs in numbered.values()), numbered
    assert numbered["c0"] == [1, 2, 3, 4, 5] and numbered["c299"] == [1, 2]
    assert numbered["c2"] == [1, 2] and numbered["c1"] == [1, 2] and numbered["c598"] == [1]
    assert {c: len(s) for c, s in numbered.items()} == lasts
    # What subscribers were told matches what was stored, cursors included.
    told = [(e.cursor, e.event.conversation_id, e.sequence) for c in published for e in c]
    assert told == [(int(i), c, int(s)) for i, c, s in rows]
