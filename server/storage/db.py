"""Engine creation for the two supported engines."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from functools import partial
from typing import Any

import aiosqlite
from sqlalchemy import event, make_url
from sqlalchemy.exc import DBAPIError, InvalidatePoolError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncTransaction,
    create_async_engine,
)
from sqlalchemy.util import await_

SQLITE_BUSY_TIMEOUT_S = 30.0
SQLITE_SYNCHRONOUS = ("NORMAL", "FULL", "EXTRA")
# The first and the longest sleep between tries for SQLite's write lock.
LOCK_RETRY_S = (0.0005, 0.02)
# conn.info key: the connection's busy timeout, in seconds.
_BUSY_TIMEOUT = "busy_timeout_s"
PG_CONNECT_TIMEOUT_S = 5.0
# A statement (BEGIN and COMMIT included) that has had no answer for this long
# fails, so a database that stops answering without closing its connections
# (a frozen host, a partition) turns into errors a client can retry, not hangs.
PG_COMMAND_TIMEOUT_S = 30.0
# A pooled PostgreSQL connection back in the pool for less than this is used
# without a check; an older one is checked first (see _ping_when_idle).
PG_PING_IDLE_S = 1.0
# record.info key: when the connection was opened or last given back.
_LAST_USED = "last_used"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


class _InlineConnection(aiosqlite.Connection):
    """An aiosqlite connection whose calls run on the event loop's own thread.

    aiosqlite sends every call to a worker thread and back, and SQLAlchemy makes
    several calls per statement: about 0.8 ms a statement, against tens of
    microseconds for the statement itself. SQLite in WAL mode with
    synchronous=NORMAL does no fsync on commit, so a call is short, and running
    it here costs less than the two thread switches it replaces. The worker
    thread still opens and closes the connection.
    """

    # Set where every commit fsyncs the WAL (synchronous FULL or EXTRA): a
    # commit then runs on aiosqlite's thread, which sqlite3 lets go of the GIL
    # for, so the loop goes on serving calls while the disk syncs. (The
    # writer that issued it awaits it and uses the connection for nothing else.)
    commit_on_thread = False

    async def _execute(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)

    async def commit(self) -> None:
        if self.commit_on_thread:
            await super()._execute(self._conn.commit)
        else:
            await self._execute(self._conn.commit)


def make_engine(
    url: str,
    *,
    connect_timeout: float = PG_CONNECT_TIMEOUT_S,
    command_timeout: float | None = PG_COMMAND_TIMEOUT_S,
    sqlite_synchronous: str = "NORMAL",
    sqlite_autocheckpoint: int | None = None,
) -> AsyncEngine:
    """An engine for url. On PostgreSQL, connect_timeout bounds opening a
    connection and waiting for one from the pool; command_timeout (None or 0:
    no bound) bounds each statement. SQLite's bound is its busy timeout,
    sqlite_synchronous (NORMAL, FULL or EXTRA) what a commit survives, and
    sqlite_autocheckpoint, when given, the WAL's size in pages at which a
    commit checkpoints (SQLite's default is 1000)."""
    if is_sqlite(url):
        parsed = make_url(url)
        database = parsed.database or ":memory:"
        # How long a write waits for another process's lock before it fails
        # (and the caller is told to retry): ?timeout=<seconds> in the URL.
        timeout = float(str(parsed.query.get("timeout", SQLITE_BUSY_TIMEOUT_S)))

        synchronous = str(parsed.query.get("synchronous", sqlite_synchronous)).upper()
        if synchronous not in SQLITE_SYNCHRONOUS:
            raise ValueError(f"SQLite synchronous must be one of {SQLITE_SYNCHRONOUS}")

        async def connect() -> aiosqlite.Connection:
            # Opened on aiosqlite's thread, then used from the loop's.
            opener = partial(sqlite3.connect, database, timeout=timeout, check_same_thread=False)
            conn = _InlineConnection(opener, 64)
            conn.commit_on_thread = synchronous != "NORMAL"
            return await conn

        engine = create_async_engine(parsed.set(query={}), async_creator=connect)
        _tune_sqlite(engine, timeout, synchronous, sqlite_autocheckpoint)
        return engine
    connect_args: dict[str, Any] = {"timeout": connect_timeout}
    if command_timeout:
        connect_args["command_timeout"] = command_timeout
    asyncpg = make_url(url).get_dialect().driver == "asyncpg"
    engine = create_async_engine(
        url,
        pool_size=10,
        max_overflow=20,
        pool_pre_ping=not asyncpg,
        # A database that does not answer fails the request in seconds (and
        # the caller is told to retry) instead of holding it for a minute.
        pool_timeout=connect_timeout,
        connect_args=connect_args,
    )
    if asyncpg:
        _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Check a pooled connection before use only if it has been idle a while.

    The pool's own pre-ping costs three round trips on asyncpg (BEGIN, an
    empty query, ROLLBACK) on every checkout, about a quarter of a lone
    send's. A connection given back within PG_PING_IDLE_S answered a moment
    ago; one idle for longer, which a restart, a failover or an idle timeout
    may have closed, is checked with one SELECT 1 in the simple protocol (no
    prepared statement, so a pooler in transaction mode takes it too). A
    connection found closed is replaced, and the pool's older connections
    with it, as pre-ping does; any other failure fails the checkout. A restart
    within the last second still reaches a request, as one in the middle of
    a statement does: the writer fails it as retryable.
    """
    dialect = engine.dialect

    @event.listens_for(engine.sync_engine, "connect")
    def _opened(dbapi_conn: Any, record: Any) -> None:
        record.info[_LAST_USED] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkin")
    def _given_back(dbapi_conn: Any, record: Any) -> None:
        record.info[_LAST_USED] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _check(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        if time.monotonic() - record.info.get(_LAST_USED, 0.0) < PG_PING_IDLE_S:
            return
        try:
            try:
                await_(dbapi_conn.driver_connection.execute("SELECT 1"))
            except Exception as error:
                dbapi_conn._handle_exception(error)  # SQLAlchemy's DB-API error; raises
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_conn, None):
                raise InvalidatePoolError() from error
            raise


def sqlite_file(url: str) -> str | None:
    """The database file of a SQLite url; None for any other url or an in-memory database."""
    if not is_sqlite(url):
        return None
    database = make_url(url).database or ""
    return None if database in ("", ":memory:") else database


def _tune_sqlite(
    engine: AsyncEngine, timeout: float, synchronous: str, autocheckpoint: int | None
) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_conn: Any, record: Any) -> None:
        # WAL lets readers run beside the single writer. NORMAL does no fsync
        # on commit: a commit survives the process dying, not the machine
        # losing power; FULL fsyncs the WAL on every commit and survives both.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        if autocheckpoint is not None:
            cursor.execute(f"PRAGMA wal_autocheckpoint={int(autocheckpoint)}")
        cursor.close()
        record.info[_BUSY_TIMEOUT] = timeout

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        # The driver's implicit transactions break SAVEPOINT handling, so we
        # turn them off on connect and issue BEGIN ourselves, on sqlite3
        # itself: every write group begins one, and SQLAlchemy's execution
        # path costs more than the statement (about 3 % of a lone send).
        raw: sqlite3.Connection = conn.connection.driver_connection._conn
        if raw.in_transaction:  # begun by begin_write, with the write lock
            return
        try:
            raw.execute("BEGIN")
        except sqlite3.Error as error:
            raise DBAPIError.instance("BEGIN", (), error, sqlite3.Error) from error


async def begin_write(conn: AsyncConnection) -> AsyncTransaction:
    """Begin a transaction that is going to write.

    On SQLite it takes the database's write lock first (BEGIN IMMEDIATE), as
    PostgreSQL's writers take their turn on an advisory lock. A transaction
    begun plainly takes the lock at its first write, and if it has read
    before then while another process (a dispatcher beside an api process)
    holds the lock, SQLite fails that write at once with SQLITE_BUSY: a
    reader may not wait for the lock, whatever the busy timeout. The lock is
    tried without SQLite's busy handler, which would sleep on the event
    loop's thread, and tried again after an asyncio sleep until the busy
    timeout has passed, so the process serves calls while it waits.
    """
    if conn.dialect.name != "sqlite":
        return await conn.begin()
    fairy = await conn.get_raw_connection()
    raw: sqlite3.Connection = fairy.driver_connection._conn  # type: ignore[union-attr]
    timeout = float(conn.info.get(_BUSY_TIMEOUT, SQLITE_BUSY_TIMEOUT_S))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay, longest = LOCK_RETRY_S
    raw.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as error:
                busy = (error.sqlite_errorcode & 0xFF) == sqlite3.SQLITE_BUSY
                if not busy or loop.time() >= deadline:
                    statement = "BEGIN IMMEDIATE"
                    raise DBAPIError.instance(statement, (), error, sqlite3.Error) from error
            await asyncio.sleep(delay)
            delay = min(delay * 2, longest)
    finally:
        raw.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    return await conn.begin()
