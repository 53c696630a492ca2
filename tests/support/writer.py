"""A group-commit writer on a migrated database, for storage tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from server.storage import migrate
from server.storage.db import make_engine
from server.storage.tx import CommitObserver
from server.storage.writer import Writer


@asynccontextmanager
async def running_writer(url: str, observer: CommitObserver | None = None) -> AsyncIterator[Writer]:
    """A started writer on the database at url, drained and closed after."""
    engine = make_engine(url)
    await migrate.upgrade(engine)
    writer = Writer(engine, lambda _events: None, observer=observer)
    writer.start()
    try:
        yield writer
    finally:
        await writer.close()
        await engine.dispose()
