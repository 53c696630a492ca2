"""The statements every send and status change runs, executed on SQLite's own driver.

Through SQLAlchemy's asyncio layer a statement costs about 170 µs here
(execution context, greenlet switches, the driver's async wrapper), against
about 5 µs for the same statement on ``sqlite3`` itself, and a send runs about
ten of them. The statements of the accept and dispatch paths are therefore
compiled once by SQLAlchemy, from the same tables, and run directly on the
connection SQLAlchemy opened, inside the transaction it began (the cached
handle lives in the connection's ``info``, which the pool clears when it
reconnects). On PostgreSQL they go through SQLAlchemy as before.

A driver error is wrapped as SQLAlchemy wraps it, so callers see one kind of
exception whichever path ran.
"""

from __future__ import annotations

import sqlite3
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Executable
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


class Statement:
    """A statement with named bind parameters, compiled once for SQLite.

    ``rows`` gives what a SELECT (or RETURNING) finds as named tuples, with
    the columns' result processing (JSON decoded, as SQLAlchemy's rows would
    have it); ``run`` executes a statement that returns nothing, for one or
    many parameter sets. Bind parameters may be ``expanding`` (IN lists).
    On PostgreSQL the statement goes through SQLAlchemy.
    """

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        compiled = statement.compile(dialect=_DIALECT)  # type: ignore[attr-defined]
        self._sql = compiled.string
        processors: Mapping[str, Any] = compiled._bind_processors
        self._binds = [(name, processors.get(name)) for name in compiled.positiontup or ()]
        # Values written into the statement itself (a literal in a WHERE, a
        # LIMIT's offset): used where the parameters do not name them.
        self._literals = {
            name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required
        }
        # IN lists, written out per call: as many placeholders as values.
        self._expanding = {n for n, _ in self._binds if f"__[POSTCOMPILE_{n}]" in self._sql}
        columns = compiled._result_columns
        self._processors = [c[3]._cached_result_processor(_DIALECT, None) for c in columns]
        self._row: Any = namedtuple("Row", [c[0] for c in columns]) if columns else None  # type: ignore[misc]

    def _bound(self, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        sql = self._sql
        values: list[Any] = []
        for name, process in self._binds:
            value = params[name] if name in params else self._literals[name]
            if name in self._expanding:
                sql = sql.replace(f"__[POSTCOMPILE_{name}]", ", ".join("?" * len(value)))
                values.extend([process(v) for v in value] if process else value)
            else:
                values.append(process(value) if process else value)
        return sql, values

    async def rows(self, conn: AsyncConnection, params: Mapping[str, Any]) -> list[Any]:
        raw = await handle(conn)
        if raw is None:
            return list(await conn.execute(self.statement, dict(params)))
        assert self._row is not None, "not a statement that returns rows"
        sql, values = self._bound(params)
        found = run(raw, sql, values).fetchall()
        processors = self._processors
        make = self._row._make
        if not any(processors):
            return [make(r) for r in found]
        return [make(p(v) if p else v for p, v in zip(processors, r, strict=True)) for r in found]

    async def run(self, conn: AsyncConnection, params: Sequence[Mapping[str, Any]]) -> None:
        raw = await handle(conn)
        if raw is None:
            await conn.execute(self.statement, [dict(p) for p in params])
            return
        if self._expanding or len(params) == 1:
            for one in params:
                sql, values = self._bound(one)
                run(raw, sql, values)
            return
        rows = [self._bound(p)[1] for p in params]
        run_many(raw, self._sql, [tuple(r) for r in rows])
