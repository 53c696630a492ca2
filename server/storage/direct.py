"""The statements every send runs, executed on SQLite's own driver.

Through SQLAlchemy's asyncio layer a statement costs about 170 µs here
(execution context, greenlet switches, the driver's async wrapper), against
about 5 µs for the same statement on ``sqlite3`` itself, and a send runs about
ten of them. The statements of the accept path are therefore compiled once by
SQLAlchemy, from the same tables, and run directly on the connection SQLAlchemy
opened, inside the transaction it began. On PostgreSQL they go through
SQLAlchemy as before.

A driver error is wrapped as SQLAlchemy wraps it, so callers see one kind of
exception whichever path ran.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.schema import Table

_DIALECT = sqlite.dialect()
_HANDLE = "sqlite3"

# Called with each statement the direct path runs and its parameters, as
# SQLAlchemy's before_cursor_execute is: a tuple for one execution, a list of
# tuples for executemany. Lets a test look at everything that runs.
watchers: list[Callable[[str, Any], None]] = []


async def handle(conn: AsyncConnection) -> sqlite3.Connection | None:
    """The sqlite3 connection under conn, or None on another engine."""
    if conn.dialect.name != "sqlite":
        return None
    # info lives as long as the driver connection, so the lookup happens once.
    info = conn.info
    found = info.get(_HANDLE)
    if found is None:
        raw = await conn.get_raw_connection()
        found = info[_HANDLE] = raw.driver_connection._conn  # type: ignore[union-attr]
    return found  # type: ignore[no-any-return]


def _wrapped(statement: str, params: Any, error: sqlite3.Error) -> Exception:
    return sa_exc.DBAPIError.instance(statement, params, error, sqlite3.Error)


def run(raw: sqlite3.Connection, statement: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
    for watch in watchers:
        watch(statement, tuple(params))
    try:
        return raw.execute(statement, params)
    except sqlite3.Error as error:
        raise _wrapped(statement, params, error) from error


def run_many(raw: sqlite3.Connection, statement: str, rows: list[tuple[Any, ...]]) -> None:
    for watch in watchers:
        watch(statement, rows)
    try:
        raw.executemany(statement, rows)
    except sqlite3.Error as error:
        raise _wrapped(statement, rows[:1], error) from error


class Insert:
    """``table.insert()`` for rows with the given keys, compiled once.

    Columns left out take their scalar default, as SQLAlchemy would give them;
    a column with a computed default cannot be left out (ValueError).
    """

    def __init__(self, table: Table, keys: Sequence[str]) -> None:
        self.table = table
        compiled = table.insert().compile(dialect=_DIALECT, column_keys=list(keys))
        processors: Mapping[str, Any] = compiled._bind_processors
        given = set(keys)
        self.statement = compiled.string
        self._fields: list[tuple[str, Any, Any]] = []
        for name in compiled.positiontup or ():
            process = processors.get(name)
            if name in given:
                self._fields.append((name, process, None))
                continue
            default = table.c[name].default
            if default is None or not default.is_scalar:
                raise ValueError(f"{table.name}.{name} has no scalar default to leave it out")
            value = default.arg  # type: ignore[attr-defined]
            self._fields.append(("", None, process(value) if process else value))

    def values(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        out = []
        for name, process, fixed in self._fields:
            if not name:
                out.append(fixed)
            elif process is None:
                out.append(row[name])
            else:
                out.append(process(row[name]))
        return tuple(out)

    async def __call__(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
        raw = await handle(conn)
        if raw is None:
            await conn.execute(self.table.insert(), rows)
        else:
            run_many(raw, self.statement, [self.values(r) for r in rows])
