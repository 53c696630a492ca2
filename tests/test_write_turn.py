"""PostgreSQL's write turn: taken by the writes that write events, and only by them.

Event cursors must commit in the order they are assigned, so on PostgreSQL
every transaction that writes events first takes one advisory lock. Writes
that write none (a dispatcher's claim and start, a webhook's bookkeeping) do
not wait for it, so a send never waits for them either.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import text

from server.domain.events import EventType, NewEvent
from server.storage import events as event_log
from server.storage.tx import Tx
from server.storage.writer import WRITE_TURN_KEY, Writer
from support.postgres import PostgresServer
from support.writer import running_writer

pytestmark = pytest.mark.postgresql


@pytest.fixture
async def writer(pg_url: str) -> AsyncIterator[Writer]:
    async with running_writer(pg_url) as w:
        yield w


@pytest.fixture
async def turn_held(postgres_server: PostgresServer, pg_url: str) -> AsyncIterator[None]:
    """Another process's transaction holds the write turn until the test ends."""
    other = await asyncpg.connect(postgres_server.dsn(pg_url.rsplit("/", 1)[1]))
    held = other.transaction()
    await held.start()
    await other.execute("SELECT pg_advisory_xact_lock($1)", WRITE_TURN_KEY)
    try:
        yield
    finally:
        await held.rollback()
        await other.close()


async def _no_event(tx: Tx) -> int:
    found = await tx.conn.execute(text("SELECT count(*) FROM events"))
    return int(found.scalar_one())


async def _one_event(tx: Tx) -> None:
    event = NewEvent(conversation_id="c1", type=EventType.CONTENT, message="m")
    await event_log.append_later(tx, "default", event)


async def test_a_write_with_no_events_commits_while_another_holds_the_turn(
    writer: Writer, turn_held: None
) -> None:
    async with asyncio.timeout(5):
        assert await writer.submit(_no_event, events=False) == 0


@pytest.mark.parametrize("declared", [True, False], ids=["declared", "undeclared"])
async def test_a_write_of_events_waits_for_the_turn(
    writer: Writer, turn_held: None, declared: bool
) -> None:
    # An undeclared one takes the turn when it writes the event.
    write = asyncio.ensure_future(writer.submit(_one_event, events=declared))
    await asyncio.sleep(0.5)
    assert not write.done()
    write.cancel()


async def test_declared_and_undeclared_event_writes_commit_once_the_turn_is_free(
    writer: Writer,
) -> None:
    await writer.submit(_one_event)
    await writer.submit(_one_event, events=False)
    assert await writer.submit(_no_event, events=False) == 2
