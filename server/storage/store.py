"""SqlStore: an open database, and one object per kind of row for the rest of the server.

No consumer sees SqlStore itself. Each declares the narrow protocol it uses
beside itself (the dispatcher's Outbox, the webhook sender's WebhookQueue,
...), and the composition root (server.app) hands it the part of the store
that satisfies it: `store.outbox`, `store.webhooks`, ... Each part is given
the engine for reads and the group-commit writer for writes, and shares
nothing else with the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from server.domain.events import CommittedEvents
from server.storage import migrate
from server.storage.checkpoint import BACKSTOP_PAGES, CHECKPOINT_EVERY_S, Checkpointer
from server.storage.config_rows import ConfigRows
from server.storage.consent_rows import ConsentRows
from server.storage.customer_rows import CustomerRows
from server.storage.db import (
    PG_COMMAND_TIMEOUT_S,
    PG_CONNECT_TIMEOUT_S,
    is_sqlite,
    make_engine,
    sqlite_file,
)
from server.storage.event_rows import EventRows
from server.storage.key_rows import KeyRows
from server.storage.message_rows import MessageRows
from server.storage.outbox_rows import OutboxRows
from server.storage.retention_rows import RetentionRows
from server.storage.session_rows import SessionRows
from server.storage.tx import CommitObserver, now_ms
from server.storage.webhook_rows import WebhookRows
from server.storage.writer import Writer


class SqlStore:
    def __init__(
        self, engine: AsyncEngine, writer: Writer, checkpointer: Checkpointer | None = None
    ) -> None:
        self.engine = engine
        self._writer = writer
        self._checkpointer = checkpointer
        self.messages = MessageRows(engine, writer)
        self.outbox = OutboxRows(engine, writer)
        self.events = EventRows(engine, writer)
        self.retention = RetentionRows(writer)
        self.sessions = SessionRows(engine, writer)
        self.customers = CustomerRows(engine, writer)
        self.config = ConfigRows(engine, writer)
        self.consents = ConsentRows(engine, writer)
        self.webhooks = WebhookRows(engine, writer)
        self.keys = KeyRows(engine, writer)

    @classmethod
    async def open(
        cls,
        url: str,
        publish: Callable[[CommittedEvents], None],
        *,
        run_migrations: bool = True,
        clock: Callable[[], int] = now_ms,
        observer: CommitObserver | None = None,
        connect_timeout: float = PG_CONNECT_TIMEOUT_S,
        command_timeout: float | None = PG_COMMAND_TIMEOUT_S,
        sqlite_synchronous: str = "NORMAL",
        checkpoint_every: float = CHECKPOINT_EVERY_S,
    ) -> SqlStore:
        # A SQLite file's checkpoints run on a thread of their own (see checkpoint.py).
        path = sqlite_file(url)
        engine = make_engine(
            url,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
            sqlite_synchronous=sqlite_synchronous,
            sqlite_autocheckpoint=BACKSTOP_PAGES if path else None,
        )
        if run_migrations and is_sqlite(url):
            await migrate.upgrade(engine)  # the same engine: an in-memory database is per engine
        elif run_migrations:
            # A migration may rewrite a large table: no statement bound for it.
            migrating = make_engine(url, connect_timeout=connect_timeout, command_timeout=None)
            try:
                await migrate.upgrade(migrating)
            finally:
                await migrating.dispose()
        # SQLite has one writer anyway; PostgreSQL gains from a few in parallel.
        workers = 1 if is_sqlite(url) else 4
        writer = Writer(
            engine,
            publish,
            workers=workers,
            clock=clock,
            observer=observer,
            hold_connection=path is not None,
        )
        writer.start()
        checkpointer = None
        if path:
            checkpointer = Checkpointer(path, checkpoint_every)
            checkpointer.start()
        return cls(engine, writer, checkpointer)

    async def ping(self) -> None:
        """One round trip to the database; raises while it cannot be reached."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self._writer.close()
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.stop)
        await self.engine.dispose()
