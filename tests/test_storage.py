"""Storage behaviour that the transports rely on, on both engines."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Sequence

import pytest
from sqlalchemy import insert, inspect, select
from sqlalchemy.exc import DBAPIError, IntegrityError, SAWarning

from server.domain.errors import Code, DomainError
from server.domain.events import StoredEvent
from server.domain.models import OutboundDraft, OutboundMessage, SessionState
from server.domain.paging import MESSAGES
from server.storage import migrate
from server.storage.accept import IdempotencyKey
from server.storage.coalesce import Coalesced
from server.storage.conversation_schema import sessions
from server.storage.db import make_engine
from server.storage.faults import is_unavailable
from server.storage.schema import metadata
from server.storage.store import SqlStore
from server.storage.tenant_schema import tenants
from server.storage.tx import Tx
from server.storage.writer import Writer

TENANT = "t1"


def _draft(text: str = "hi") -> OutboundDraft:
    return OutboundDraft(
        channel_id="sandbox",
        destination="+447700900123",
        type="text",
        text=text,
        content={"text": {"body": text}},
        conversation_id="c0ffee00-0000-0000-0000-000000000001",
    )


def _render(created: Sequence[OutboundMessage]) -> bytes:
    return ",".join(m.id for m in created).encode()


async def test_migrations_bring_an_empty_database_to_head(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        await migrate.upgrade(engine)
        assert await migrate.current(engine) == "0019"
        async with engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        assert set(metadata.tables) <= tables
        await migrate.upgrade(engine)  # a second run is a no-op
    finally:
        await engine.dispose()


async def test_idempotent_accept_replays_and_refuses_a_different_body(db_url: str) -> None:
    published: list[StoredEvent] = []
    store = await SqlStore.open(db_url, published.extend)
    try:
        key = IdempotencyKey.of("k1", b"body-a")
        first = await store.messages.accept(TENANT, [_draft()], key, _render)
        again = await store.messages.accept(TENANT, [_draft()], key, _render)
        assert again.replay == first.messages[0].id.encode()
        with pytest.raises(DomainError) as err:
            await store.messages.accept(
                TENANT, [_draft()], IdempotencyKey.of("k1", b"body-b"), _render
            )
        assert err.value.code is Code.ALREADY_EXISTS
        # Keys belong to a tenant: another tenant may use the same one.
        other = await store.messages.accept("t2", [_draft()], key, _render)
        assert other.replay is None and len(other.messages) == 1
    finally:
        await store.close()


async def test_fifty_concurrent_identical_requests_make_one_message(db_url: str) -> None:
    store = await SqlStore.open(db_url, lambda _events: None)
    try:
        key = IdempotencyKey.of("same", b"body")
        results = await asyncio.gather(
            *(store.messages.accept(TENANT, [_draft()], key, _render) for _ in range(50))
        )
        created = [r for r in results if r.replay is None]
        assert len(created) == 1
        message_id = created[0].messages[0].id
        assert all(r.replay == message_id.encode() for r in results if r.replay is not None)
        page = await store.messages.list_messages(TENANT, page=MESSAGES.request(TENANT, 100, ""))
        assert [m.id for m in page.items] == [message_id]
    finally:
        await store.close()


async def test_one_failing_write_does_not_sink_its_batch(db_url: str) -> None:
    store = await SqlStore.open(db_url, lambda _events: None)
    try:
        key = IdempotencyKey.of("k", b"a")
        await store.messages.accept(TENANT, [_draft()], key, _render)
        outcomes = await asyncio.gather(
            store.messages.accept(TENANT, [_draft("x")], IdempotencyKey.of("k", b"b"), _render),
            store.messages.accept(TENANT, [_draft("y")], None, _render),
            return_exceptions=True,
        )
        assert isinstance(outcomes[0], DomainError)
        assert not isinstance(outcomes[1], BaseException) and len(outcomes[1].messages) == 1
    finally:
        await store.close()


async def test_event_sequence_is_gapless_per_conversation(db_url: str) -> None:
    published: list[StoredEvent] = []
    store = await SqlStore.open(db_url, published.extend)
    try:
        await asyncio.gather(
            *(store.messages.accept(TENANT, [_draft(str(i))], None, _render) for i in range(30))
        )
        logged = await store.events.events_after(TENANT, 0, 1000)
        assert [e.sequence for e in logged] == list(range(1, 31))
        assert [e.cursor for e in published] == [e.cursor for e in logged]
    finally:
        await store.close()


async def test_session_transitions(db_url: str) -> None:
    store = await SqlStore.open(db_url, lambda _events: None)
    try:
        async with store.engine.begin() as conn:
            await conn.execute(
                sessions.insert().values(
                    id="s1",
                    tenant_id=TENANT,
                    contact_id="+447700900123",
                    channel_id="sandbox",
                    state="ACTIVE",
                    conversation_id="conv-1",
                    queue="",
                    agent="",
                    created_at=1,
                    updated_at=1,
                )
            )
        resolved = await store.sessions.transition_session(TENANT, "s1", SessionState.RESOLVED)
        assert resolved.state is SessionState.RESOLVED
        closed = await store.sessions.transition_session(TENANT, "s1", SessionState.CLOSED)
        assert closed.state is SessionState.CLOSED
        with pytest.raises(DomainError) as refused:
            await store.sessions.transition_session(TENANT, "s1", SessionState.RESOLVED)
        assert refused.value.code is Code.FAILED_PRECONDITION
        with pytest.raises(DomainError) as missing:
            await store.sessions.transition_session(TENANT, "nope", SessionState.CLOSED)
        assert missing.value.code is Code.NOT_FOUND
        with pytest.raises(DomainError) as hidden:
            await store.sessions.get_session("another-tenant", "s1")
        assert hidden.value.code is Code.NOT_FOUND
    finally:
        await store.close()


async def test_idempotency_keys_expire_after_a_day(db_url: str) -> None:
    clock = [1_800_000_000_000]
    store = await SqlStore.open(db_url, lambda _events: None, clock=lambda: clock[0])
    try:
        first = await store.messages.accept(
            TENANT, [_draft()], IdempotencyKey.of("daily", b"a"), _render
        )
        clock[0] += 24 * 3600 * 1000 - 1
        replay = await store.messages.accept(
            TENANT, [_draft()], IdempotencyKey.of("daily", b"a"), _render
        )
        assert replay.replay == first.messages[0].id.encode()
        clock[0] += 2
        # A day later the key is free again, even with a different body.
        fresh = await store.messages.accept(
            TENANT, [_draft("new")], IdempotencyKey.of("daily", b"b"), _render
        )
        assert fresh.replay is None and fresh.messages[0].id != first.messages[0].id
        clock[0] += 24 * 3600 * 1000 + 1
        await store.retention.prune()
        again = await store.messages.accept(
            TENANT, [_draft()], IdempotencyKey.of("daily", b"c"), _render
        )
        assert again.replay is None
    finally:
        await store.close()


async def test_coalesced_calls_share_one_write_and_a_bad_one_fails_alone(db_url: str) -> None:
    """Piled-up calls become one unit; a duplicate key fails only its own caller.

    The unit runs inside a group with an unrelated write, so the group's first
    pass fails and the writer reruns it apart: the other write still commits.
    """
    engine = make_engine(db_url)
    await migrate.upgrade(engine)
    writer = Writer(engine, lambda _events: None)
    writer.start()
    units: list[int] = []

    async def many(tx: Tx, ids: Sequence[str]) -> list[str]:
        units.append(len(ids))
        rows = [{"id": i, "name": i, "created_at": tx.now} for i in ids]
        await tx.conn.execute(insert(tenants), rows)
        return list(ids)

    async def one(tx: Tx, tenant_id: str) -> str:
        return (await many(tx, [tenant_id]))[0]

    async def other(tx: Tx) -> str:
        await tx.conn.execute(insert(tenants), [{"id": "other", "name": "o", "created_at": 1}])
        return "other"

    coalesced = Coalesced(writer, many, one)
    try:
        await coalesced("taken")
        outcomes = await asyncio.gather(
            writer.submit(other),
            *(coalesced(name) for name in ("a", "taken", "b")),
            return_exceptions=True,
        )
        assert outcomes[0] == "other"
        assert outcomes[1] == "a" and outcomes[3] == "b"
        assert isinstance(outcomes[2], IntegrityError)
        # One unit for the three calls on the first pass, then each on its own.
        assert units[1] == 3
        async with engine.connect() as conn:
            found = (await conn.execute(select(tenants.c.id).order_by(tenants.c.id))).scalars()
            assert list(found) == ["a", "b", "other", "taken"]
    finally:
        await writer.close()
        await engine.dispose()


async def test_a_group_that_loses_its_connection_fails_its_callers_and_the_next_one_commits(
    db_url: str,
) -> None:
    """The connection goes away while a group runs, so its rollback fails too:
    the caller gets the error, the writer does not roll back a transaction that
    rollback already ended (SQLAlchemy answers that with a warning), and the
    next group commits on a new connection."""
    engine = make_engine(db_url)
    await migrate.upgrade(engine)
    writer = Writer(engine, lambda _events: None)
    writer.start()

    async def lost(tx: Tx) -> None:
        await tx.conn.execute(insert(tenants), [{"id": "lost", "name": "l", "created_at": 1}])
        driver = (await tx.conn.get_raw_connection()).driver_connection
        if tx.conn.dialect.name == "sqlite":
            driver._conn.close()  # type: ignore[union-attr]
        else:
            driver.terminate()  # type: ignore[union-attr]
        raise ConnectionResetError("connection lost")

    async def after(tx: Tx) -> str:
        await tx.conn.execute(insert(tenants), [{"id": "after", "name": "a", "created_at": 2}])
        return "after"

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(DBAPIError) as failed:
                await writer.submit(lost)
            assert await writer.submit(after) == "after"
        assert [str(w.message) for w in caught if issubclass(w.category, SAWarning)] == []
        # What callers are told to retry (UNAVAILABLE): the rollback's own error.
        assert is_unavailable(failed.value), repr(failed.value)
        async with engine.connect() as conn:
            found = (await conn.execute(select(tenants.c.id).order_by(tenants.c.id))).scalars()
            assert list(found) == ["after"]
    finally:
        await writer.close()
        await engine.dispose()
