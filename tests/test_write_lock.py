"""Writers in two processes on one SQLite file take turns instead of failing.

An api process and a dispatcher process share one database file. A write
group that reads before it writes may not wait for SQLite's write lock once
it has read, so the writer takes the lock when it begins. Here a plain
sqlite3 connection stands in for the other process and holds the lock.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import OperationalError

from server.storage.faults import is_unavailable
from server.storage.tenant_schema import tenants
from server.storage.tx import Tx
from support.writer import running_writer

HELD_S = 0.2


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "shared.db"


def _other_process(db: Path) -> sqlite3.Connection:
    """A connection that holds the write lock, as another process's group does."""
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO tenants (id, name, created_at) VALUES ('other', 'other', 1)")
    return other


async def _read_then_write(tx: Tx) -> int:
    # Reads first, as an accept does (idempotency, sequences) before it inserts.
    before = (await tx.conn.execute(select(func.count()).select_from(tenants))).scalar_one()
    await tx.conn.execute(insert(tenants), [{"id": "mine", "name": "mine", "created_at": tx.now}])
    return int(before)


async def test_a_group_waits_for_another_processs_lock_and_then_commits(db: Path) -> None:
    async with running_writer(f"sqlite+aiosqlite:///{db}") as writer:
        base = _tenants(db)
        other = _other_process(db)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        loop = asyncio.get_running_loop()
        loop.call_later(HELD_S, other.execute, "COMMIT")
        beside = asyncio.create_task(ticker())
        try:
            seen = await writer.submit(_read_then_write)
        finally:
            beside.cancel()
        other.close()
        # It saw the other process's row: it began after that commit.
        assert seen == base + 1
        # The event loop kept running while the group waited for the lock.
        assert ticks >= HELD_S / 0.01 / 2
        ids = {row[0] for row in sqlite3.connect(db).execute("SELECT id FROM tenants")}
        assert {"other", "mine"} <= ids


async def test_a_lock_held_past_the_busy_timeout_fails_as_unavailable(db: Path) -> None:
    async with running_writer(f"sqlite+aiosqlite:///{db}?timeout=0.2") as writer:
        other = _other_process(db)
        try:
            with pytest.raises(OperationalError) as failed:
                await writer.submit(_read_then_write)
            assert is_unavailable(failed.value)
        finally:
            other.execute("ROLLBACK")
            other.close()
        # The writer is not stuck: the next group commits.
        assert await writer.submit(_read_then_write) >= 0


def _tenants(db: Path) -> int:
    return int(sqlite3.connect(db).execute("SELECT count(*) FROM tenants").fetchone()[0])
