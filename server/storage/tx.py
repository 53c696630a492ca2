"""A unit of work inside a group commit, and the writes it puts off to the group's end.

Storage functions take a Tx; the Writer (writer.py) makes one per write of a
group and commits them together.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, TypeVar, cast

from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.events import StoredEvent
from server.storage.direct import Insert

T = TypeVar("T")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class StatusMove(NamedTuple):
    """A message's status as a write changed it, reported once its commit is durable."""

    channel_id: str
    status: str
    # When the message was accepted (ms), for accept-to-status timings.
    accepted_at: int
    at: int


class CommitObserver(Protocol):
    """Told of every group commit that held writes: for the metrics."""

    def committed(self, seconds: float, writes: int, moves: Sequence[StatusMove]) -> None: ...


@dataclass
class Tx:
    """What a unit of work sees: the connection, a clock reading, and its events."""

    conn: AsyncConnection
    now: int
    events: list[StoredEvent] = field(default_factory=list)
    # Status changes of messages, reported to the observer after the commit.
    moves: list[StatusMove] = field(default_factory=list)
    # Webhooks queued to be sent: only a commit that queued one wakes the sender.
    webhooks: int = 0
    # Identifies the enclosing group-commit transaction (several Tx share one).
    batch: int = 0
    # Shared by the group; None writes at once (a Tx made outside the writer).
    later_writes: Later | None = None
    # True in a group's first pass, where any failure reruns the whole group
    # with each write in its own savepoint (Writer._apart), so work may skip
    # savepoints of its own.
    first_pass: bool = False

    async def later(self, order: int, flush: Flush, entry: Any) -> None:
        """Write entry with others of its kind at the end of the group."""
        await self.later_all(order, flush, [entry])

    async def later_all(self, order: int, flush: Flush, entries: list[Any]) -> None:
        """later() for many entries of one kind: a batch's thousand rows in one call."""
        if self.later_writes is None:
            if entries:
                await flush(self.conn, entries)
        else:
            self.later_writes.extend(order, flush, entries)

    async def flush(self, upto: int | None = None) -> None:
        """Write what was put off now (up to a kind), before reading it back."""
        if self.later_writes is not None:
            await self.later_writes.flush(self.conn, upto)


Work = Callable[[Tx], Awaitable[T]]
Flush = Callable[[AsyncConnection, list[Any]], Awaitable[None]]


class Carrier:
    """A put-off write that can carry the group's earlier inserts in its own statement.

    A base class, not a Protocol: Later.flush asks every group whether its
    last write is one, and isinstance on a runtime-checkable Protocol costs
    5-10 µs a time, a plain class well under one.
    """

    async def __call__(self, conn: AsyncConnection, entries: list[Any]) -> None:
        raise NotImplementedError

    async def carrying(
        self,
        conn: AsyncConnection,
        entries: list[Any],
        riders: list[tuple[Insert, list[dict[str, Any]]]],
    ) -> None:
        raise NotImplementedError


# Up to this many rows ride in the events statement (see Later.flush). Past
# it, asyncpg's encoding of the rows as arrays, which checks each value in
# Python, costs more than the round trips it saves: a batch of 1000 sends
# cost 3-4 µs more a destination that way than as executemany's rows.
CARRY_ROWS = 64

# The order in which put-off writes reach the database, lowest first.
LATER_MESSAGES, LATER_HISTORY, LATER_EVENTS = 0, 1, 2


class Later:
    """Writes put off to the end of a group, kept in order within each kind."""

    def __init__(self) -> None:
        self._kinds: dict[int, tuple[Flush, list[Any]]] = {}

    def extend(self, order: int, flush: Flush, entries: list[Any]) -> None:
        if not entries:
            return  # a flush is never called with nothing to write
        kind = self._kinds.get(order)
        if kind is None:
            self._kinds[order] = (flush, list(entries))
        else:
            kind[1].extend(entries)

    async def flush(self, conn: AsyncConnection, upto: int | None = None) -> None:
        kinds = [
            self._kinds.pop(order) for order in sorted(self._kinds) if upto is None or order <= upto
        ]
        if not kinds:
            return
        *first, (last, entries) = kinds
        if (
            isinstance(last, Carrier)
            and all(isinstance(f, Insert) for f, _ in first)
            and sum(len(rows) for _, rows in first) <= CARRY_ROWS
        ):
            # The inserts ride in the last kind's statement: on PostgreSQL a
            # send's group writes its messages, history and events in one
            # round trip, all of it inside the write turn.
            riders = [(cast(Insert, f), rows) for f, rows in first]
            await last.carrying(conn, entries, riders)
            return
        for flush, kind_entries in kinds:
            await flush(conn, kind_entries)
