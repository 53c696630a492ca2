"""PostgreSQL's pooled connections: checked before use only after sitting idle.

A connection a restart, a failover or an idle timeout closed while it sat in
the pool must be replaced before a request uses it; one given back a moment
ago is used as it is, with no round trip spent on asking.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from server.storage import db
from server.storage.db import make_engine
from support.postgres import PostgresServer

pytestmark = pytest.mark.postgresql


async def _backend(engine: AsyncEngine, seen: list[str] | None = None) -> int:
    """The server process behind the connection the pool hands out next."""
    async with engine.connect() as conn:
        if seen is not None:
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None
            raw.add_query_logger(lambda query: seen.append(query.query))
        pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    await asyncio.sleep(0)  # the query loggers are called soon, not at once
    return int(pid)


async def _terminate(postgres_server: PostgresServer, pid: int) -> None:
    admin = await asyncpg.connect(postgres_server.dsn("postgres"))
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()


async def test_a_connection_closed_while_idle_is_replaced_before_use(
    postgres_server: PostgresServer, pg_url: str, monkeypatch: Any
) -> None:
    monkeypatch.setattr(db, "PG_PING_IDLE_S", 0.2)
    engine = make_engine(pg_url)
    try:
        first = await _backend(engine)
        await _terminate(postgres_server, first)
        await asyncio.sleep(0.3)
        # Checked, found closed and replaced: the caller sees no error.
        assert await _backend(engine) != first
    finally:
        await engine.dispose()


async def test_a_connection_given_back_a_moment_ago_is_used_without_a_check(
    pg_url: str, monkeypatch: Any
) -> None:
    monkeypatch.setattr(db, "PG_PING_IDLE_S", 60.0)
    engine = make_engine(pg_url)
    seen: list[str] = []
    try:
        pid = await _backend(engine, seen)
        for _ in range(3):
            assert await _backend(engine) == pid
        # Only the transactions' own BEGIN and ROLLBACK reached the driver's
        # simple-query path: no ping of any kind.
        assert seen and all(q.startswith(("BEGIN", "ROLLBACK")) for q in seen), seen
        assert sum(q.startswith("BEGIN") for q in seen) == 4

        monkeypatch.setattr(db, "PG_PING_IDLE_S", 0.0)
        seen.clear()
        assert await _backend(engine) == pid
        # Idle past the limit: checked once, with one query, alive, kept.
        assert [q for q in seen if not q.startswith(("BEGIN", "ROLLBACK"))] == ["SELECT 1"]
    finally:
        await engine.dispose()
