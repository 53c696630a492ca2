"""Opening the store: for the hub with its settings, and for the admin commands.

Only the composition root names SqlStore (an import-linter contract says so);
everything else is handed one of its parts and sees it through its own port.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from server.config import Settings
from server.domain.events import CommittedEvents
from server.storage.key_rows import KeyRows
from server.storage.store import SqlStore
from server.storage.tx import CommitObserver


async def open_store(
    settings: Settings,
    publish: Callable[[CommittedEvents], None],
    *,
    clock: Callable[[], int],
    observer: CommitObserver | None,
) -> SqlStore:
    return await SqlStore.open(
        settings.database_url,
        publish,
        clock=clock,
        observer=observer,
        connect_timeout=settings.db_connect_timeout_s,
        command_timeout=settings.db_command_timeout_s or None,
        sqlite_synchronous=settings.sqlite_synchronous,
    )


@asynccontextmanager
async def tenant_keys(database_url: str) -> AsyncIterator[KeyRows]:
    """The database's tenants and API keys, for the admin commands; closed on exit."""
    store = await SqlStore.open(database_url, lambda _events: None)
    try:
        yield store.keys
    finally:
        await store.close()
