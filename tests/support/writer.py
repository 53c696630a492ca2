"""A group-commit writer on a migrated database, for storage tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from server.storage import migrate
from server.storage.db import make_engine, sqlite_file
from server.storage.tx import CommitObserver
from server.storage.writer import Writer


@asynccontextmanager
async def running_writer(
    url: str, observer: CommitObserver | None = None, *, hold: bool = False
) -> AsyncIterator[Writer]:
    """A started writer on the database at url, drained and closed after.

    hold: as the store makes it, holding its connection on a SQLite file."""
    engine = make_engine(url)
    await migrate.upgrade(engine)
    held = hold and sqlite_file(url) is not None
    writer = Writer(engine, lambda _events: None, observer=observer, hold_connection=held)
    writer.start()
    try:
        yield writer
    finally:
        await writer.close()
        await engine.dispose()
