"""Which failures of the database mean "unavailable for now", not "broken".

A caller told UNAVAILABLE retries later; one told INTERNAL files a bug. The
driver exceptions differ by engine and by where they are raised (the pool,
the driver, SQLAlchemy's wrapper), so the whole cause chain is looked at.
"""

from __future__ import annotations

import sqlite3

import asyncpg
from sqlalchemy import exc as sa_exc

# How long a client is asked to wait before trying again.
RETRY_AFTER_S = 2.0

# SQLite primary result codes that say the file is busy or the disk is in trouble.
_SQLITE_UNAVAILABLE = {
    sqlite3.SQLITE_BUSY,  # "database is locked" past busy_timeout
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_NOMEM,
    sqlite3.SQLITE_READONLY,  # e.g. a file system remounted read-only
    sqlite3.SQLITE_IOERR,  # "disk I/O error"
    sqlite3.SQLITE_FULL,  # "database or disk is full"
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_PROTOCOL,
}

# PostgreSQL SQLSTATE classes and codes that a later retry can succeed on.
_PG_CLASSES = {
    "08",  # connection exception
    "53",  # insufficient resources: disk full, out of memory, too many connections
    "57",  # operator intervention: shutdown, cannot connect now, query canceled
    "58",  # system error: I/O error
    "40",  # transaction rollback: serialization failure, deadlock
}
_PG_CODES = {
    "55P03",  # lock_not_available: lock_timeout ran out
    "25006",  # read_only_sql_transaction: connected to a standby after a failover
}


class OutcomeUnknown(Exception):
    """The connection was lost while committing: the write may or may not have landed."""


def is_unavailable(error: BaseException) -> bool:
    """True when error (or what caused it) is the store being out of reach for now."""
    return any(_unavailable_link(link) for link in _chain(error))


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [error]
    while todo and len(seen) < 16:
        link = todo.pop()
        if link is None or any(link is s for s in seen):
            continue
        seen.append(link)
        todo.extend([link.__context__, link.__cause__, getattr(link, "orig", None)])
    return seen


def _unavailable_link(link: BaseException) -> bool:
    if isinstance(link, OSError):  # refused, reset, unreachable, timed out
        return True
    if isinstance(link, sa_exc.DBAPIError) and link.connection_invalidated:
        return True
    if isinstance(link, sa_exc.TimeoutError | sa_exc.DisconnectionError):  # pool, pre-ping
        return True
    if isinstance(link, asyncpg.InterfaceError | asyncpg.exceptions.PostgresConnectionError):
        return True
    if isinstance(link, sqlite3.Error):
        code = getattr(link, "sqlite_errorcode", None)
        return code is not None and code & 0xFF in _SQLITE_UNAVAILABLE
    if isinstance(link, asyncpg.PostgresError):
        state = str(getattr(link, "sqlstate", "") or "")
        return state[:2] in _PG_CLASSES or state in _PG_CODES
    return False
