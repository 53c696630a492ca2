"""Inserts that ride in another statement on PostgreSQL: one round trip for several writes.

A group's put-off writes (messages, their history, their events) all run
inside the write turn, which every process's event writers wait for. Each
statement there is a round trip; on SQLite a statement costs microseconds.
So on PostgreSQL the inserts become CTEs ahead of the events statement's own,
each taking its columns as arrays, and the group makes one round trip where
it made three. The inserts must not depend on one another or on what the
statement reads: every part of one statement sees the same snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from server.storage import direct

Riders = Sequence[tuple[direct.Insert, list[dict[str, Any]]]]

# "INSERT INTO t (a, b)" and the SQL types of a and b, per insert.
_columns: dict[direct.Insert, tuple[str, list[str]]] = {}
# The combined SQL, per statement and the inserts it carries.
_combined: dict[tuple[direct.Statement, tuple[direct.Insert, ...]], str] = {}


async def rows_carrying(
    statement: direct.Statement, conn: AsyncConnection, params: Mapping[str, Any], riders: Riders
) -> list[Any]:
    """statement.rows(params), with the riders' rows inserted first.

    The statement must begin with its CTEs ("WITH ...") and take no IN lists.
    Elsewhere than on PostgreSQL's driver, each insert runs on its own.
    """
    pg = await direct.pg_handle(conn)
    if pg is None or not riders:
        for insert, rows in riders:
            await insert(conn, rows)
        return await statement.rows(conn, params)
    form = statement.pg_form(conn.dialect)
    assert form.row is not None and not form.expanding, "a statement of fixed shape"
    assert form.sql.startswith("WITH "), "a statement that begins with its CTEs"
    sql, values = form.bound(params)
    key = (statement, tuple(insert for insert, _ in riders))
    combined = _combined.get(key)
    if combined is None:
        parts = []
        first = len(values) + 1
        for i, (insert, _) in enumerate(riders):
            head, types = _columns_of(insert, conn.dialect)
            casts = ", ".join(f"${first + n}::{t}[]" for n, t in enumerate(types))
            parts.append(f"rider{i} AS ({head} SELECT * FROM unnest({casts}))")
            first += len(types)
        combined = _combined[key] = f"WITH {', '.join(parts)}, {sql[len('WITH ') :]}"
    for insert, rows in riders:
        values.extend(_arrays(insert, conn.dialect, rows))
    return form.rows(await direct.pg_run(conn, pg, combined, values))


def _columns_of(insert: direct.Insert, dialect: Dialect) -> tuple[str, list[str]]:
    """In the order the compiled insert, and so its row maker, takes them."""
    found = _columns.get(insert)
    if found is None:
        table = insert.table
        compiled = table.insert().compile(dialect=dialect, column_keys=insert.keys)
        head = compiled.string.split(" VALUES (", 1)[0]
        names = compiled.positiontup or ()
        found = _columns[insert] = (head, [table.c[n].type.compile(dialect=dialect) for n in names])
    return found


def _arrays(insert: direct.Insert, dialect: Dialect, rows: list[dict[str, Any]]) -> list[list[Any]]:
    """The rows' parameters column by column."""
    _sql, make = insert.pg_compiled(dialect)
    seen: dict[int, tuple[Any, Any]] = {}
    return [list(column) for column in zip(*(make(r, seen) for r in rows), strict=True)]
