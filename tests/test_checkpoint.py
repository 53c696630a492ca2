"""SQLite's WAL checkpoints run on the checkpointer's thread, not in a commit.

A commit that checkpoints copies the WAL into the database file (and
fsyncs) while the event loop waits; here the store's commits leave that to
the thread, whose PASSIVE checkpoints keep the WAL from growing.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import text

from server.domain.models import OutboundDraft
from server.storage.checkpoint import BACKSTOP_PAGES, Checkpointer
from server.storage.db import sqlite_file
from server.storage.store import SqlStore


def _drafts(start: int, count: int) -> list[OutboundDraft]:
    return [
        OutboundDraft(
            channel_id="sandbox-sms",
            destination=f"+4479111{i:05d}",
            type="text",
            text="x" * 2000,
            content={"text": {"body": "x" * 2000}},
            conversation_id=f"c0ffee00-0000-0000-0000-{i:012d}",
        )
        for i in range(start, start + count)
    ]


def _url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def _sizes(path: Path) -> tuple[int, int]:
    """The database file's size and its WAL's."""
    return path.stat().st_size, Path(f"{path}-wal").stat().st_size


def _unchecked_frames(path: Path) -> int:
    """Pages a checkpoint of our own still copies into the database file,
    with nobody writing: none once the thread has caught up."""
    before = path.stat().st_size
    with closing(sqlite3.connect(path)) as conn:
        busy, log, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert busy == 0 and log == copied
    return (path.stat().st_size - before) // 4096


async def _write_pages(store: SqlStore, pages: int) -> None:
    # Each draft is about a page of message row plus its history and event.
    written = 0
    while written < pages:
        await store.messages.accept("default", _drafts(written, 100), None, lambda _m: b"")
        written += 100


async def test_commits_leave_checkpoints_to_the_thread(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    # A thread that never gets round to it: whatever reaches the database
    # file was copied there by a commit.
    store = await SqlStore.open(_url(path), lambda _e: None, checkpoint_every=3600)
    try:
        async with store.engine.connect() as conn:
            pages = (await conn.execute(text("PRAGMA wal_autocheckpoint"))).scalar()
        assert pages == BACKSTOP_PAGES
        size, _ = _sizes(path)
        await _write_pages(store, 3000)  # well past SQLite's default 1000-page trigger
        after, wal = _sizes(path)
        assert wal > 3000 * 4096, "the WAL should hold every commit since the last checkpoint"
        assert after == size, "a commit copied the WAL into the database"
    finally:
        await store.close()


async def test_the_thread_checkpoints_what_commits_leave(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    store = await SqlStore.open(_url(path), lambda _e: None, checkpoint_every=0.02)
    try:
        checkpointer = store._checkpointer
        assert checkpointer is not None
        size, _ = _sizes(path)
        await _write_pages(store, 1500)
        done = checkpointer.checkpoints
        deadline = time.monotonic() + 10
        while checkpointer.checkpoints < done + 2:  # one that starts after the last commit
            assert time.monotonic() < deadline, "no checkpoint ran"
            await asyncio.sleep(0.02)
        assert _sizes(path)[0] > size + 1500 * 4096
        assert _unchecked_frames(path) == 0
    finally:
        await store.close()
    assert not checkpointer._thread.is_alive()


def test_an_in_memory_database_has_no_checkpointer() -> None:
    assert sqlite_file("sqlite+aiosqlite://") is None
    assert sqlite_file("sqlite+aiosqlite:///:memory:") is None
    assert sqlite_file("postgresql+asyncpg://u@h/db") is None
    assert sqlite_file("sqlite+aiosqlite:////var/lib/cimhub/hub.db") == "/var/lib/cimhub/hub.db"


def test_a_failing_checkpoint_is_logged_once_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "hub.db"
    path.write_bytes(b"not a database, " * 512)
    checkpointer = Checkpointer(str(path), every=0.01)
    with caplog.at_level(logging.INFO, logger="server.storage.checkpoint"):
        checkpointer.start()
        try:
            _wait(lambda: "checkpoint failed" in caplog.text)
            time.sleep(0.2)  # about twenty more tries, all failing
            path.unlink()
            with closing(sqlite3.connect(path)) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
            _wait(lambda: checkpointer.checkpoints > 0)
        finally:
            checkpointer.stop()
    failures = [r for r in caplog.records if "checkpoint failed" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].levelno == logging.WARNING
    assert "work again" in caplog.text


def _wait(done: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
