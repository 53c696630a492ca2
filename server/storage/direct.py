"""The statements every send and status change runs, on each engine's own driver.

Through SQLAlchemy's asyncio layer a statement costs about 170 µs here
(execution context, greenlet switches, the driver's async wrapper), against
about 5 µs for the same statement on ``sqlite3`` itself; on PostgreSQL a
one-row SELECT costs about 190 µs through SQLAlchemy and 95 µs as a prepared
statement on asyncpg. A send runs about ten of them. The statements of the
accept and dispatch paths are therefore compiled once per engine by
SQLAlchemy, from the same tables, and run directly on the connection
SQLAlchemy opened, inside the transaction it began (the cached handle lives in
the connection's ``info``, which the pool clears when it reconnects).

SQLAlchemy's asyncpg adapter begins the driver's transaction at its first
statement, not at ``begin()``. Until then a statement goes through SQLAlchemy:
run on the driver, it would commit on its own.

A driver error is wrapped as SQLAlchemy wraps it, so callers see one kind of
exception whichever path ran.
"""

from __future__ import annotations

import re
import sqlite3
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Executable
from sqlalchemy.sql.schema import Table

_SQLITE = sqlite.dialect()
_HANDLE = "sqlite3"
_PG_HANDLE = "asyncpg"

# Called with each statement the direct path runs and its parameters, as
# SQLAlchemy's before_cursor_execute is: a tuple for one execution, a list of
# tuples for executemany. Lets a test look at everything that runs.
watchers: list[Callable[[str, Any], None]] = []


async def _cached(conn: AsyncConnection, key: str, pick: Callable[[Any], Any]) -> Any:
    """pick(the pooled connection's driver-level objects), kept in conn.info.

    info lives as long as the driver connection, so the lookup happens once.
    """
    info = conn.info
    found = info.get(key)
    if found is None:
        found = info[key] = pick(await conn.get_raw_connection())
    return found


async def handle(conn: AsyncConnection) -> sqlite3.Connection | None:
    """The sqlite3 connection under conn, or None on another engine."""
    if conn.dialect.name != "sqlite":
        return None
    found: sqlite3.Connection = await _cached(
        conn, _HANDLE, lambda raw: raw.driver_connection._conn
    )
    return found


async def pg_handle(conn: AsyncConnection) -> tuple[Any, Any] | None:
    """The asyncpg connection under conn and SQLAlchemy's adapter of it.

    None on another engine, or while the driver has no transaction open.
    """
    if conn.dialect.driver != "asyncpg":
        return None
    found = await _cached(
        conn, _PG_HANDLE, lambda raw: (raw.driver_connection, raw.dbapi_connection)
    )
    return found if found[0].is_in_transaction() else None  # type: ignore[no-any-return]


def _wrapped(statement: str, params: Any, error: sqlite3.Error) -> Exception:
    return sa_exc.DBAPIError.instance(statement, params, error, sqlite3.Error)


def _pg_wrapped(
    dialect: Dialect, adapter: Any, statement: str, params: Any, error: Exception
) -> Exception:
    try:
        # SQLAlchemy's own translation into its DB-API classes (a unique
        # violation becomes IntegrityError); it always raises.
        adapter._handle_exception(error)
    except Exception as translated:
        dbapi_error = dialect.loaded_dbapi.Error
        if not isinstance(translated, dbapi_error):
            return translated
        gone = dialect.is_disconnect(translated, adapter, None)
        return sa_exc.DBAPIError.instance(
            statement, params, translated, dbapi_error, connection_invalidated=gone
        )
    raise AssertionError("unreachable")


def _watch(statement: str, params: Any) -> None:
    for watch in watchers:
        watch(statement, params)


def run(raw: sqlite3.Connection, statement: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
    _watch(statement, tuple(params))
    try:
        return raw.execute(statement, params)
    except sqlite3.Error as error:
        raise _wrapped(statement, params, error) from error


def run_many(raw: sqlite3.Connection, statement: str, rows: list[tuple[Any, ...]]) -> None:
    _watch(statement, rows)
    try:
        raw.executemany(statement, rows)
    except sqlite3.Error as error:
        raise _wrapped(statement, rows[:1], error) from error


async def pg_run(
    conn: AsyncConnection, pg: tuple[Any, Any], statement: str, params: Any, many: bool = False
) -> Any:
    """fetch (or executemany, when many) on asyncpg, whose statement cache prepares it once."""
    _watch(statement, params if many else tuple(params))
    raw, adapter = pg
    try:
        if many:
            return await raw.executemany(statement, params)
        return await raw.fetch(statement, *params)
    except Exception as error:
        raise _pg_wrapped(
            conn.dialect, adapter, statement, params[:1] if many else params, error
        ) from error


class Insert:
    """``table.insert()`` for rows with the given keys, compiled once per engine.

    Columns left out take their scalar default, as SQLAlchemy would give them;
    a column with a computed default cannot be left out (ValueError).
    """

    def __init__(self, table: Table, keys: Sequence[str]) -> None:
        self.table = table
        self._keys = list(keys)
        self.statement, self._make = self._compile(_SQLITE)
        self._pg: tuple[str, _Maker] | None = None

    def _compile(self, dialect: Dialect) -> tuple[str, _Maker]:
        compiled = self.table.insert().compile(dialect=dialect, column_keys=self._keys)
        processors: Mapping[str, Any] = compiled._bind_processors
        given = set(self._keys)
        fields: list[tuple[str, Any, Any]] = []
        for name in compiled.positiontup or ():
            process = processors.get(name)
            if name in given:
                fields.append((name, process, None))
                continue
            default = self.table.c[name].default
            if default is None or not default.is_scalar:
                raise ValueError(f"{self.table.name}.{name} has no scalar default to leave it out")
            value = default.arg  # type: ignore[attr-defined]
            fields.append(("", None, process(value) if process else value))
        return compiled.string, _maker(fields)

    def values(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        """The row's parameters for SQLite, in the statement's order."""
        return self._make(row, {})

    async def __call__(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
        # Rows may share a value object (a batch's one content): it is
        # processed (JSON encoded) once for all of them.
        seen: dict[int, tuple[Any, Any]] = {}
        raw = await handle(conn)
        if raw is not None:
            make = self._make
            run_many(raw, self.statement, [make(r, seen) for r in rows])
            return
        pg = await pg_handle(conn)
        if pg is None:
            await conn.execute(self.table.insert(), rows)
            return
        if self._pg is None:
            self._pg = self._compile(conn.dialect)
        statement, make = self._pg
        await pg_run(conn, pg, statement, [make(r, seen) for r in rows], many=True)

    @property
    def keys(self) -> list[str]:
        return list(self._keys)

    def pg_compiled(self, dialect: Dialect) -> tuple[str, _Maker]:
        """The PostgreSQL insert and its row maker (see carry.py)."""
        if self._pg is None:
            self._pg = self._compile(dialect)
        return self._pg


# (row, seen) -> the row's parameters in the statement's order. ``seen``: id
# of a processed container -> (it, kept alive so the id stays its own; what
# processing made of it).
_Maker = Callable[[Mapping[str, Any], dict[int, tuple[Any, Any]]], tuple[Any, ...]]


def _maker(fields: list[tuple[str, Any, Any]]) -> _Maker:
    """One function that makes a row's parameters: (name, processor, fixed value)
    per placeholder, name "" for a fixed one.

    Written out as source and compiled, as dataclasses and namedtuple make
    their methods: a batch makes three rows per destination, and a loop over
    the fields took twice as long (1.9 µs a message row against 0.9, 0.27
    a history row against 0.10). The names are our own tables' column keys.
    """
    scope: dict[str, Any] = {"_processed": _processed}
    parts = []
    for i, (name, process, fixed) in enumerate(fields):
        if not name:
            scope[f"fixed{i}"] = fixed
            parts.append(f"fixed{i}")
        elif process is None:
            parts.append(f"row[{name!r}]")
        else:
            scope[f"process{i}"] = process
            parts.append(f"_processed(process{i}, row[{name!r}], seen)")
    made_of = f"({', '.join(parts)},)" if parts else "()"
    source = f"def make(row, seen):\n    return {made_of}\n"
    exec(source, scope)
    made: _Maker = scope["make"]
    return made


_CONTAINERS = frozenset({dict, list, tuple})


def _processed(process: Any, value: Any, seen: dict[int, tuple[Any, Any]]) -> Any:
    """A container is processed once per call however many rows hold it;
    strings and numbers are not kept."""
    if type(value) in _CONTAINERS:
        known = seen.get(id(value))
        if known is None:
            known = seen[id(value)] = (value, process(value))
        return known[1]
    return process(value)


class _Compiled:
    """A statement compiled for one dialect: its SQL, its binds, and how to read its rows."""

    def __init__(self, statement: Executable, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
        self.compiled = compiled
        self.sql: str = compiled.string
        processors: Mapping[str, Any] = compiled._bind_processors
        self.binds = [(name, processors.get(name)) for name in compiled.positiontup or ()]
        # Values written into the statement itself (a literal in a WHERE, a
        # LIMIT's offset): used where the parameters do not name them.
        self.literals = {
            name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required
        }
        # IN lists, written out per call: as many placeholders as values.
        self.expanding = {n for n, _ in self.binds if f"__[POSTCOMPILE_{n}]" in self.sql}
        # On PostgreSQL an IN list can be one array parameter instead: one
        # statement, prepared once, for lists of any length.
        self.arrays = None
        if self.expanding and dialect.paramstyle == "numeric_dollar":
            self.arrays = _as_arrays(compiled, self.expanding)
        columns = compiled._result_columns
        self.processors = [c[3]._cached_result_processor(dialect, None) for c in columns]
        self.row: Any = namedtuple("Row", [c[0] for c in columns]) if columns else None  # type: ignore[misc]

    def bound(self, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        """The SQL and its positional values; IN lists as "?, ?" (SQLite's style)."""
        sql = self.sql
        values: list[Any] = []
        for name, process in self.binds:
            value = self._value(name, process, params)
            if name in self.expanding:
                sql = sql.replace(f"__[POSTCOMPILE_{name}]", ", ".join("?" * len(value)))
                values.extend(value)
            else:
                values.append(value)
        return sql, values

    def _value(self, name: str, process: Any, params: Mapping[str, Any]) -> Any:
        """One parameter as the driver takes it; an IN list as a list of them."""
        value = params[name] if name in params else self.literals[name]
        if name in self.expanding:
            return [process(v) for v in value] if process else list(value)
        return process(value) if process else value

    def numbered(self, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        """The SQL and its values for $n placeholders: IN lists as arrays, or
        (lists of tuples) written out by SQLAlchemy."""
        if not self.expanding:
            return self.bound(params)
        if self.arrays is not None:
            return self.arrays, [self._value(name, p, params) for name, p in self.binds]
        state = self.compiled.construct_expanded_state(dict(params))
        processors = state.processors
        values = [
            processors[name](value) if name in processors else value
            for name, value in zip(
                state.positiontup or (), state.positional_parameters, strict=True
            )
        ]
        return state.statement, values

    def rows(self, found: Sequence[Any]) -> list[Any]:
        processors = self.processors
        make = self.row._make
        if not any(processors):
            return [make(r) for r in found]
        return [make(p(v) if p else v for p, v in zip(processors, r, strict=True)) for r in found]


_PLACEHOLDER = re.compile(r"(NOT )?IN \(__\[POSTCOMPILE_(\w+)\]\)|\$(\d+)")


def _as_arrays(compiled: Any, expanding: set[str]) -> str | None:
    """The statement with each IN list as "= ANY($n)" (NOT IN: "<> ALL($n)")
    and its parameters numbered in order; None where that cannot be done."""
    names = list(compiled.positiontup or ())
    if any(compiled.binds[n].type._is_tuple_type for n in expanding):
        return None  # an array of anonymous rows is not a parameter asyncpg can send
    seen: list[str] = []
    others = 0

    def renumber(found: re.Match[str]) -> str:
        nonlocal others
        if found.group(3) is not None:
            # SQLAlchemy numbers the other parameters in order, skipping lists.
            others += 1
            if int(found.group(3)) != others:
                raise ValueError(found.group(0))
            seen.append("")
            return f"${len(seen)}"
        seen.append(found.group(2))
        return f"{'<> ALL' if found.group(1) else '= ANY'}(${len(seen)})"

    try:
        sql = _PLACEHOLDER.sub(renumber, compiled.string)
    except ValueError:
        return None
    if len(seen) != len(names) or any(s and s != n for s, n in zip(seen, names, strict=True)):
        return None
    return sql


class Statement:
    """A statement with named bind parameters, compiled once per engine.

    ``rows`` gives what a SELECT (or RETURNING) finds as named tuples, with
    the columns' result processing (JSON decoded, as SQLAlchemy's rows would
    have it); ``run`` executes a statement that returns nothing, for one or
    many parameter sets. Bind parameters may be ``expanding`` (IN lists).
    """

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._sqlite = _Compiled(statement, _SQLITE)
        self._pg: _Compiled | None = None

    def pg_form(self, dialect: Dialect) -> _Compiled:
        if self._pg is None:
            self._pg = _Compiled(self.statement, dialect)
        return self._pg

    def bind_names(self) -> list[str]:
        """The SQLite form's bind parameters, in the order its placeholders take them."""
        return [name for name, _ in self._sqlite.binds]

    async def sqlite_tuples(self, conn: AsyncConnection, values: Sequence[Any]) -> list[Any]:
        """On SQLite's driver: the rows as plain tuples, for values already in
        bind_names() order that need no processing (checked), read as they come.

        For a statement with thousands of parameters (a group's conversations'
        upsert), naming each one and mapping it back cost more than the
        statement's own work in Python.
        """
        raw = await handle(conn)
        form = self._sqlite
        assert raw is not None, "a SQLite-only path"
        assert not form.expanding and not any(p for _, p in form.binds), "values need processing"
        assert not any(form.processors), "rows need processing"
        return run(raw, form.sql, values).fetchall()

    async def rows(self, conn: AsyncConnection, params: Mapping[str, Any]) -> list[Any]:
        raw = await handle(conn)
        if raw is not None:
            form = self._sqlite
            assert form.row is not None, "not a statement that returns rows"
            sql, values = form.bound(params)
            return form.rows(run(raw, sql, values).fetchall())
        pg = await pg_handle(conn)
        if pg is None:
            return list(await conn.execute(self.statement, dict(params)))
        form = self.pg_form(conn.dialect)
        assert form.row is not None, "not a statement that returns rows"
        sql, values = form.numbered(params)
        return form.rows(await pg_run(conn, pg, sql, values))

    async def run(self, conn: AsyncConnection, params: Sequence[Mapping[str, Any]]) -> None:
        raw = await handle(conn)
        if raw is not None:
            form = self._sqlite
            if form.expanding or len(params) == 1:
                for one in params:
                    run(raw, *form.bound(one))
                return
            run_many(raw, form.sql, [tuple(form.bound(p)[1]) for p in params])
            return
        pg = await pg_handle(conn)
        if pg is None:
            await conn.execute(self.statement, [dict(p) for p in params])
            return
        form = self.pg_form(conn.dialect)
        if form.expanding or len(params) == 1:
            for one in params:
                await pg_run(conn, pg, *form.numbered(one))
            return
        await pg_run(conn, pg, form.sql, [tuple(form.bound(p)[1]) for p in params], many=True)
