"""A send's group writes its messages, history and events in one statement on PostgreSQL.

Each statement there is a round trip made while holding the write turn, which
every process's event writers wait for. On SQLite the same writes run as
statements of their own, in the same order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from server.domain.events import EventType
from server.domain.models import OutboundDraft, OutboundMessage
from server.domain.status import DeliveryStatus
from server.storage import direct
from server.storage import events as event_log
from server.storage.message_schema import messages, status_history
from server.storage.store import SqlStore
from server.storage.tx import CARRY_ROWS

TENANT = "t1"
DELIVERY = EventType.DELIVERY_STATUS.value


def _draft(n: int, message_id: str = "") -> OutboundDraft:
    return OutboundDraft(
        channel_id="sandbox",
        destination=f"+4477009{n:05d}",
        type="text",
        text=f"hi {n}",
        content={"text": {"body": f"hi {n}"}, "n": n},
        conversation_id=f"c0ffee00-0000-0000-0000-{n:012d}",
        message_id=message_id,
        requested_receipts=("DELIVERED",),
    )


def _render(created: Sequence[OutboundMessage]) -> bytes:
    return ",".join(m.id for m in created).encode()


def _inserts(statement: str) -> list[str]:
    return [
        table
        for table in ("messages", "status_history", "events")
        if f"INSERT INTO {table} " in statement
    ]


async def _rows_of(store: SqlStore, message_ids: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    """Per message: its stored row's fields, its history and its events."""
    found: dict[str, tuple[Any, ...]] = {}
    async with store.engine.connect() as conn:
        stored = await event_log.read_after(conn, TENANT, 0, 100)
        for message_id in message_ids:
            row = (await conn.execute(select(messages).where(messages.c.id == message_id))).one()
            history = (
                await conn.execute(
                    select(status_history.c.status, status_history.c.reason).where(
                        status_history.c.message_id == message_id
                    )
                )
            ).all()
            mine = [
                (e.event.type.value, e.event.status)
                for e in stored
                if e.event.message_id == message_id
            ]
            found[message_id] = (
                row.destination,
                row.content,
                row.requested_receipts,
                row.status,
                row.dispatch_state,
                [tuple(h) for h in history],
                mine,
            )
    return found


async def test_a_sends_group_writes_its_rows_in_one_statement(db_url: str) -> None:
    ran: list[str] = []
    store = await SqlStore.open(db_url, lambda _events: None)
    direct.watchers.append(lambda statement, _params: ran.append(statement))
    try:
        results = await asyncio.gather(
            *(store.messages.accept(TENANT, [_draft(n)], None, _render) for n in range(4)),
            store.messages.accept(TENANT, [_draft(4), _draft(5)], None, _render),
        )
    finally:
        direct.watchers.clear()
    try:
        created = [m for result in results for m in result.messages]
        found = await _rows_of(store, [m.id for m in created])
    finally:
        await store.close()

    assert [found[m.id] for m in created] == [
        (
            f"+4477009{n:05d}",
            {"text": {"body": f"hi {n}"}, "n": n},
            ["DELIVERED"],
            "ACCEPTED",
            "PENDING",
            [("ACCEPTED", "")],
            [(EventType.DELIVERY_STATUS.value, "ACCEPTED")],
        )
        for n in range(6)
    ]
    writes = [_inserts(s) for s in ran if _inserts(s)]
    if "sqlite" in db_url:
        # One statement each, in the order the group puts them off.
        assert {tuple(w) for w in writes} == {("messages",), ("status_history",), ("events",)}
        order = [w[0] for w in writes]
        assert order.index("messages") < order.index("status_history") < order.index("events")
    else:
        assert writes and all(w == ["messages", "status_history", "events"] for w in writes)


async def test_a_duplicate_id_in_the_one_statement_fails_only_its_own_send(db_url: str) -> None:
    store = await SqlStore.open(db_url, lambda _events: None)
    try:
        await store.messages.accept(TENANT, [_draft(0, "m-taken")], None, _render)
        outcomes = await asyncio.gather(
            store.messages.accept(TENANT, [_draft(1)], None, _render),
            store.messages.accept(TENANT, [_draft(2, "m-taken")], None, _render),
            store.messages.accept(TENANT, [_draft(3)], None, _render),
            return_exceptions=True,
        )
        assert isinstance(outcomes[1], IntegrityError), outcomes[1]
        kept = [m.id for o in (outcomes[0], outcomes[2]) for m in o.messages]  # type: ignore[union-attr]
        found = await _rows_of(store, ["m-taken", *kept])
        async with store.engine.connect() as conn:
            counted = (await conn.execute(select(func.count()).select_from(messages))).scalar_one()
    finally:
        await store.close()

    assert counted == 3
    # The first holder of the id is untouched: one row, one history entry, one event.
    assert found["m-taken"][0] == "+447700900000"
    assert found["m-taken"][5:] == (
        [("ACCEPTED", "")],
        [(EventType.DELIVERY_STATUS.value, "ACCEPTED")],
    )
    for message_id in kept:
        assert found[message_id][3:] == (
            DeliveryStatus.ACCEPTED.value,
            "PENDING",
            [("ACCEPTED", "")],
            [(EventType.DELIVERY_STATUS.value, "ACCEPTED")],
        )


async def test_a_batch_past_the_carry_limit_writes_its_rows_on_their_own(db_url: str) -> None:
    """Past CARRY_ROWS, asyncpg's encoding of every value as an array element
    costs more than the round trips it would save."""
    ran: list[str] = []
    store = await SqlStore.open(db_url, lambda _events: None)
    direct.watchers.append(lambda statement, _params: ran.append(statement))
    try:
        result = await store.messages.accept(
            TENANT, [_draft(n) for n in range(CARRY_ROWS)], None, _render
        )
    finally:
        direct.watchers.clear()
    try:
        found = await _rows_of(store, [m.id for m in result.messages])
    finally:
        await store.close()

    # Its messages and their history are 2 x CARRY_ROWS rows.
    assert [w for s in ran if (w := _inserts(s))] == [["messages"], ["status_history"], ["events"]]
    assert len(found) == CARRY_ROWS
    assert all(f[5:] == ([("ACCEPTED", "")], [(DELIVERY, "ACCEPTED")]) for f in found.values())
