"""Keyset pages over SQL: a page starts after the sort key of the last row before it.

Every list query goes through keyset_page with the columns it is sorted by,
which together are unique. Its page token carries the last row's values of
those columns (server/domain/paging.py), and the next page asks for the rows
past them: no OFFSET, so a page costs the same however deep it is, and rows
inserted meanwhile neither repeat nor shift the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Row, Select, and_, or_
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.models import Page
from server.domain.paging import PageRequest, Position, fingerprint

T = TypeVar("T")


@dataclass(frozen=True)
class Order:
    """A list's sort order: columns that are unique together, all one direction.

    With ``long_last`` the last column's values can be longer than a token
    carries (ids of up to 256 characters): the position then holds the other
    columns, how many rows sharing them were listed, and a fingerprint of the
    last value, which is found again among the rows that share the others.
    """

    columns: tuple[Any, ...]
    descending: bool = False
    long_last: bool = False


async def keyset_rows(
    conn: AsyncConnection, query: Select[Any], order: Order, page: PageRequest
) -> Sequence[Row[Any]]:
    """Up to page.size + 1 rows past the page's position, in order."""
    if page.after is not None:
        past = await _past(conn, query, order, page.after)
        if past is not None:
            query = query.where(past)
    directed = [c.desc() if order.descending else c.asc() for c in order.columns]
    return (await conn.execute(query.order_by(*directed).limit(page.size + 1))).all()


async def keyset_page(
    conn: AsyncConnection,
    query: Select[Any],
    order: Order,
    page: PageRequest,
    item: Callable[[Row[Any]], T],
) -> Page[T]:
    rows = await keyset_rows(conn, query, order, page)
    cut = page.cut(rows, lambda row: _position(order, page, rows, row))
    return Page(tuple(item(r) for r in cut.items), cut.next_token)


def key_of(order: Order, row: Row[Any]) -> tuple[Any, ...]:
    return tuple(row._mapping[c] for c in order.columns)


def _beyond(columns: Sequence[Any], values: Sequence[Any], descending: bool) -> ColumnElement[bool]:
    """Rows whose key sorts after ``values``: (a, b) > (x, y) as a > x or (a = x and b > y)."""
    column, value = columns[0], values[0]
    after = column < value if descending else column > value
    if len(columns) == 1:
        return after
    return or_(after, and_(column == value, _beyond(columns[1:], values[1:], descending)))


def _from(columns: Sequence[Any], values: Sequence[Any], descending: bool) -> ColumnElement[bool]:
    """Rows whose key is ``values`` or sorts after it."""
    at = and_(*(c == v for c, v in zip(columns, values, strict=True)))
    return or_(at, _beyond(columns, values, descending))


async def _past(
    conn: AsyncConnection, query: Select[Any], order: Order, after: Position
) -> ColumnElement[bool] | None:
    if not order.long_last:
        return _beyond(order.columns, after, order.descending)
    shared, listed, last = after[:-2], int(after[-2]), after[-1]
    ahead = order.columns[:-1]
    # The rows that share the other columns are few (one creation time):
    # find the last value again by its fingerprint.
    group = query.with_only_columns(order.columns[-1]).where(
        *(c == v for c, v in zip(ahead, shared, strict=True))
    )
    tail = order.columns[-1]
    values = (
        await conn.execute(group.order_by(tail.desc() if order.descending else tail.asc()))
    ).scalars()
    found = list(values)
    value = next((v for v in found if fingerprint(v) == last), None)
    if value is None:
        # Deleted since: the rows before it that were listed are one fewer.
        kept = listed - 1
        if kept >= len(found):
            return _beyond(ahead, shared, order.descending) if ahead else None
        if kept <= 0:
            return _from(ahead, shared, order.descending) if ahead else None
        value = found[kept - 1]
    return _beyond(order.columns, (*shared, value), order.descending)


def _position(order: Order, page: PageRequest, rows: Sequence[Row[Any]], row: Row[Any]) -> Position:
    key = key_of(order, row)
    if not order.long_last:
        return key
    shared = key[:-1]
    listed = 0
    for earlier in rows:
        if key_of(order, earlier)[:-1] == shared:
            listed += 1
        if earlier is row:
            break
    if page.after is not None and tuple(page.after[:-2]) == shared:
        # The group began on an earlier page: count what was listed there.
        listed += int(page.after[-2])
    return (*shared, listed, fingerprint(key[-1]))
