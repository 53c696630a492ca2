"""A SQLite file's writer keeps its connection from group to group.

Checking a connection out of the pool and back for every group cost as much
as a lone send's begin and commit; a failed group must still leave nothing
on the connection the next group uses, and closing the writer gives it back.
PostgreSQL's writers, several at once, check out per group.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import OperationalError

from server.storage import migrate
from server.storage.db import make_engine
from server.storage.tenant_schema import tenants
from server.storage.tx import Tx
from server.storage.writer import Writer


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Any]:
    # A short busy timeout: a group that cannot take the write lock fails fast.
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/held.db?timeout=0.2")
    await migrate.upgrade(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


async def _raw(tx: Tx) -> Any:
    return (await tx.conn.get_raw_connection()).driver_connection


def _add(tenant: str) -> Any:
    async def add(tx: Tx) -> Any:
        await tx.conn.execute(insert(tenants).values(id=tenant, name=tenant, created_at=tx.now))
        return await _raw(tx)

    return add


async def _tenants(engine: Any) -> list[str]:
    async with engine.connect() as conn:
        return sorted((await conn.execute(select(tenants.c.id))).scalars())


async def test_groups_run_on_one_held_connection_until_a_group_fails(
    engine: Any, tmp_path: Path
) -> None:
    writer = Writer(engine, lambda _events: None, hold_connection=True)
    writer.start()
    try:
        first = await writer.submit(_add("t1"))
        assert await writer.submit(_add("t2")) is first
        # Held, not in the pool: the pool has it checked out between groups.
        assert engine.pool.checkedout() == 1

        async def fails(tx: Tx) -> None:
            await tx.conn.execute(insert(tenants).values(id="t3", name="t3", created_at=tx.now))
            raise RuntimeError("the work failed after writing")

        # One write failing is the group's business: rolled back, and the
        # group goes on, on the same connection.
        with pytest.raises(RuntimeError, match="after writing"):
            await writer.submit(fails)
        assert await writer.submit(_add("t4")) is first

        # A group that fails as a whole (here it cannot take the write lock)
        # gives its connection back to the pool, which resets it; the next
        # group checks one out again, and holds that.
        other = sqlite3.connect(tmp_path / "held.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(OperationalError, match="locked"):
                await writer.submit(_add("t5"))
            assert engine.pool.checkedout() == 0
        finally:
            other.execute("ROLLBACK")
            other.close()
        after = await writer.submit(_add("t6"))
        assert not after.in_transaction
        assert await writer.submit(_add("t7")) is after

        async def connection(tx: Tx) -> Any:
            return tx.conn

        held = await writer.submit(connection)
    finally:
        await writer.close()
    assert held.closed
    assert engine.pool.checkedout() == 0
    assert await _tenants(engine) == ["t1", "t2", "t4", "t6", "t7"]


async def test_without_holding_each_group_checks_its_connection_out_and_back(
    engine: Any,
) -> None:
    writer = Writer(engine, lambda _events: None)
    writer.start()
    try:
        await writer.submit(_add("t1"))
        assert engine.pool.checkedout() == 0

        async def count(tx: Tx) -> int:
            return int((await tx.conn.execute(select(func.count()).select_from(tenants))).scalar())

        assert await writer.submit(count) == 1
        assert engine.pool.checkedout() == 0
    finally:
        await writer.close()


def test_a_held_connection_serves_one_worker_only(engine: Any) -> None:
    with pytest.raises(AssertionError, match="one worker"):
        Writer(engine, lambda _events: None, workers=2, hold_connection=True)
