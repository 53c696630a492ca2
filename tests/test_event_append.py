"""A group's events: numbered per conversation, ordered, and handed to webhooks.

On PostgreSQL a group's events are written by one statement that also upserts
the conversations' sequences and reads each tenant's webhook; on SQLite by
several. Both must store the same thing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import text

from server.domain.events import CommittedEvents, EventType, NewEvent
from server.storage import direct, migrate
from server.storage import events as event_log
from server.storage.db import make_engine
from server.storage.tx import Tx
from server.storage.webhooks import DEAD, PENDING, TENANT
from server.storage.writer import Writer

T1_HOOK = "https://hooks.example/t1"
T2_HOOK = "https://hooks.example/t2"


@pytest.fixture
async def writer(db_url: str) -> AsyncIterator[tuple[Writer, Any, list[CommittedEvents]]]:
    engine = make_engine(db_url)
    await migrate.upgrade(engine)
    published: list[CommittedEvents] = []
    writer = Writer(engine, published.append)
    writer.start()
    try:
        yield writer, engine, published
    finally:
        await writer.close()
        await engine.dispose()


def _appending(tenant: str, conversations: list[str], later: bool = True) -> Any:
    async def run(tx: Tx) -> None:
        for conversation in conversations:
            event = NewEvent(conversation_id=conversation, type=EventType.CONTENT, message="m")
            if later:
                await event_log.append_later(tx, tenant, event)
            else:
                await event_log.append(tx, tenant, event)

    return run


async def test_a_groups_events_are_numbered_per_conversation_and_reach_their_webhooks(
    writer: tuple[Writer, Any, list[CommittedEvents]],
) -> None:
    w, engine, published = writer

    async def hooks(tx: Tx) -> None:
        await event_log.set_tenant_webhook(tx, "t1", T1_HOOK)
        await event_log.set_tenant_webhook(tx, "t2", T2_HOOK)
        await tx.conn.execute(
            text("UPDATE tenant_webhooks SET disabled_at = 1 WHERE tenant_id = 't2'")
        )

    await w.submit(hooks)
    await w.submit(_appending("t1", ["a", "a"]))  # "a" is at sequence 2 already
    before = published[-1]
    # One group: writes of three tenants, conversations interleaved, a new
    # conversation's first event from the second write of the group.
    await asyncio.gather(
        w.submit(_appending("t1", ["a", "b"])),
        w.submit(_appending("t2", ["c", "b", "c"])),
        w.submit(_appending("t3", ["d"], later=False)),
        w.submit(_appending("t1", ["a", "d"])),
    )
    group = [e for commit in published[published.index(before) + 1 :] for e in commit]
    assert len(published) == published.index(before) + 2, "the four writes share one commit"
    commit = published[-1]
    assert commit.after == max(e.cursor for e in before)

    cursors = [e.cursor for e in group]
    assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
    assert min(cursors) > commit.after
    # The order the group's writes ran in: the third one's append writes
    # what the first two put off before its own event.
    order = [(e.tenant_id, e.event.conversation_id) for e in group]
    assert order == [
        ("t1", "a"),
        ("t1", "b"),
        ("t2", "c"),
        ("t2", "b"),
        ("t2", "c"),
        ("t3", "d"),
        ("t1", "a"),
        ("t1", "d"),
    ]
    assert [e.sequence for e in group] == [3, 1, 1, 2, 2, 1, 4, 2]

    async with engine.connect() as conn:
        stored = (
            await conn.execute(
                text("SELECT id, tenant_id, conversation_id, sequence FROM events ORDER BY id")
            )
        ).all()
        lasts = dict(
            (await conn.execute(text("SELECT id, last_sequence FROM conversations"))).all()
        )
        owners = dict((await conn.execute(text("SELECT id, tenant_id FROM conversations"))).all())
        queued = (
            await conn.execute(
                text(
                    "SELECT tenant_id, ordering_key, url, state, last_error FROM webhooks"
                    " WHERE endpoint = :tenant ORDER BY id"
                ),
                {"tenant": TENANT},
            )
        ).all()
    assert [tuple(r) for r in stored[-len(group) :]] == [
        (e.cursor, e.tenant_id, e.event.conversation_id, e.sequence) for e in group
    ]
    assert lasts == {"a": 4, "b": 2, "c": 2, "d": 2}
    # A conversation belongs to the tenant whose event created it.
    assert owners == {"a": "t1", "b": "t1", "c": "t2", "d": "t3"}
    # Each event of a tenant with a webhook is queued for it, in cursor order;
    # a disabled endpoint's are kept as dead letters; t3 has none.
    assert [tuple(r) for r in queued] == [
        ("t1", "a", T1_HOOK, PENDING, ""),
        ("t1", "a", T1_HOOK, PENDING, ""),
        ("t1", "a", T1_HOOK, PENDING, ""),
        ("t1", "b", T1_HOOK, PENDING, ""),
        ("t2", "c", T2_HOOK, DEAD, event_log.ENDPOINT_DISABLED),
        ("t2", "b", T2_HOOK, DEAD, event_log.ENDPOINT_DISABLED),
        ("t2", "c", T2_HOOK, DEAD, event_log.ENDPOINT_DISABLED),
        ("t1", "a", T1_HOOK, PENDING, ""),
        ("t1", "d", T1_HOOK, PENDING, ""),
    ]


async def test_an_event_is_read_back_whole_from_its_columns_and_its_trimmed_payload(
    writer: tuple[Writer, Any, list[CommittedEvents]],
) -> None:
    w, engine, published = writer
    full = NewEvent(
        conversation_id="conv-1",
        type=EventType.DELIVERY_STATUS,
        originator_id="agent-7",
        originator_role="AGENT",
        message="DELIVERED",
        content_type="text/plain",
        message_id="msg-1",
        status="DELIVERED",
        reason="handset",
        channel_id="sms-1",
        customer_id="+447900000001",
        audience="AGENTS",
        dialog_id="dialog-3",
        data={"segments": 2, "price": {"amount": "0.04"}},
    )
    bare = NewEvent(conversation_id="conv-2", type=EventType.CONTENT)

    async def append(tx: Tx) -> None:
        await event_log.append_all_later(tx, "t1", [full, bare])

    await w.submit(append)
    async with engine.connect() as conn:
        payloads = (
            (await conn.execute(text("SELECT payload FROM events ORDER BY id"))).scalars().all()
        )
        read = await event_log.read_after(conn, "t1", 0, 10)
    # What the row has columns for, and what is left at its default, is not
    # written again in the payload.
    decoded = [p if isinstance(p, dict) else json.loads(p) for p in payloads]
    assert decoded == [
        {
            "originator_id": "agent-7",
            "originator_role": "AGENT",
            "message": "DELIVERED",
            "content_type": "text/plain",
            "status": "DELIVERED",
            "reason": "handset",
            "dialog_id": "dialog-3",
            "data": {"segments": 2, "price": {"amount": "0.04"}},
        },
        {},
    ]
    assert [e.event for e in read] == [full, bare]
    assert [e.event for e in read] == [e.event for e in published[-1]]


async def test_an_event_stored_with_every_field_in_its_payload_reads_back_the_same(
    writer: tuple[Writer, Any, list[CommittedEvents]],
) -> None:
    """Rows written before the payload was trimmed repeat the columns in it."""
    _, engine, _ = writer
    old = {
        "conversation_id": "conv-9",
        "type": "DeliveryStatusEvent",
        "originator_id": "system",
        "originator_role": "SYSTEM",
        "message": "SENT",
        "content_type": "text/plain",
        "message_id": "msg-9",
        "status": "SENT",
        "reason": "",
        "channel_id": "sms-1",
        "customer_id": "+447900000009",
        "audience": "ALL",
        "dialog_id": "",
        "data": {},
    }
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO events (tenant_id, conversation_id, sequence, type, message_id,"
                " channel_id, customer_id, audience, payload, created_at) VALUES"
                " ('t1', 'conv-9', 1, 'DeliveryStatusEvent', 'msg-9', 'sms-1', '+447900000009',"
                " 'ALL', :payload, 5)"
            ),
            {"payload": json.dumps(old)},
        )
    async with engine.connect() as conn:
        (read,) = await event_log.read_after(conn, "t1", 0, 10)
    assert read.event == NewEvent(**{**old, "type": EventType.DELIVERY_STATUS})


async def test_a_groups_equal_payloads_are_encoded_once_and_stored_for_each_event(
    db_url: str, writer: tuple[Writer, Any, list[CommittedEvents]]
) -> None:
    w, engine, _ = writer

    def status(conversation: str, status: str) -> NewEvent:
        return NewEvent(
            conversation_id=conversation,
            type=EventType.DELIVERY_STATUS,
            message=status,
            status=status,
            message_id=f"m-{conversation}",
        )

    given = [status("c1", "SCHEDULED"), status("c2", "SCHEDULED"), status("c3", "FAILED")]
    given.append(status("c4", "SCHEDULED"))
    given.append(replace(given[0], conversation_id="c5", data={"segments": 1}))
    ran: list[tuple[str, Any]] = []

    def watch(statement: str, params: Any) -> None:
        ran.append((statement, params))

    async def append(tx: Tx) -> None:
        await event_log.append_all_later(tx, "t1", given)

    direct.watchers.append(watch)
    try:
        await w.submit(append)
    finally:
        direct.watchers.remove(watch)
    async with engine.connect() as conn:
        read = await event_log.read_after(conn, "t1", 0, 10)
    assert [e.event for e in read] == given
    if "sqlite" not in db_url:
        return  # PostgreSQL's one statement takes them as an array
    (rows,) = [params for statement, params in ran if statement.startswith("INSERT INTO events")]
    payloads = [next(v for v in row if isinstance(v, str) and v.startswith("{")) for row in rows]
    assert [json.loads(p) for p in payloads] == [
        {"message": s, "status": s} | ({"data": {"segments": 1}} if i == 4 else {})
        for i, s in enumerate(["SCHEDULED", "SCHEDULED", "FAILED", "SCHEDULED", "SCHEDULED"])
    ]
    # The three equal ones hold the very same text: it was encoded once.
    assert payloads[0] is payloads[1] is payloads[3]
    assert payloads[4] is not payloads[0]
