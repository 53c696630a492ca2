"""Group commit: concurrent writes share one transaction, each in its own savepoint.

A request's reply waits for the commit that holds its write, so nothing is
acknowledged before it is durable, yet a burst of N requests costs one commit
instead of N. Events produced by a write are published only after the commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.aio import cancel_and_wait
from server.domain.events import CommittedEvents, StoredEvent

log = logging.getLogger(__name__)
T = TypeVar("T")
# Any fixed number: write transactions on PostgreSQL serialise on it.
WRITE_TURN_KEY = 0x43494D48


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Tx:
    """What a unit of work sees: the connection, a clock reading, and its events."""

    conn: AsyncConnection
    now: int
    events: list[StoredEvent] = field(default_factory=list)
    # Identifies the enclosing group-commit transaction (several Tx share one).
    batch: int = 0


Work = Callable[[Tx], Awaitable[T]]


@dataclass
class _Item(Generic[T]):
    work: Work[T]
    future: asyncio.Future[T]


class Writer:
    def __init__(
        self,
        engine: AsyncEngine,
        publish: Callable[[Sequence[StoredEvent]], None],
        *,
        workers: int = 1,
        max_batch: int = 512,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._engine = engine
        self._publish = publish
        self._workers = workers
        self._max_batch = max_batch
        self._clock = clock
        self._queue: asyncio.Queue[_Item[Any]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._batches = 0
        # Commit and publish happen under one lock, so live subscribers see
        # events in the order their transactions committed.
        self._commit_order = asyncio.Lock()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name=f"writer-{i}") for i in range(self._workers)
        ]

    async def close(self) -> None:
        # Drain what was already submitted so accepted work is not dropped on shutdown.
        if self._tasks:
            await self._queue.join()
        await cancel_and_wait(*self._tasks)
        self._tasks = []

    async def submit(self, work: Work[T]) -> T:
        if not self._tasks:
            raise RuntimeError("writer is not running")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(work, future))
        return await asyncio.shield(future)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._commit(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _commit(self, batch: list[_Item[Any]]) -> None:
        outcomes: list[tuple[_Item[Any], bool, Any, list[StoredEvent]]] = []
        self._batches += 1
        batch_id = self._batches
        try:
            async with self._engine.connect() as conn:
                trans = await conn.begin()
                try:
                    await self._take_turn(conn, batch_id)
                    for item in batch:
                        tx = Tx(conn, self._clock(), batch=batch_id)
                        try:
                            async with conn.begin_nested():
                                result = await item.work(tx)
                        except Exception as exc:  # one bad request must not sink the batch
                            outcomes.append((item, False, exc, []))
                        else:
                            outcomes.append((item, True, result, tx.events))
                    after = await self._committed_before(conn, outcomes)
                except BaseException:
                    await trans.rollback()
                    raise
                async with self._commit_order:
                    await trans.commit()
                    self._settle(outcomes, after)
        except Exception as exc:
            log.exception("group commit of %d writes failed", len(batch))
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)

    @staticmethod
    async def _take_turn(conn: AsyncConnection, batch_id: int) -> None:
        """On PostgreSQL, write transactions take turns, first thing.

        Event cursors must commit in the order they are assigned, so event
        writers serialise on an advisory lock. Taking it before any row lock
        keeps the lock order the same everywhere, so two batches can never
        deadlock. Group commit is what keeps throughput up, not parallel writers.
        """
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_TURN_KEY})
            conn.info["event_lock"] = batch_id

    @staticmethod
    async def _committed_before(
        conn: AsyncConnection, outcomes: list[tuple[_Item[Any], bool, Any, list[StoredEvent]]]
    ) -> int | None:
        """The highest cursor committed before this batch's events.

        Still inside the write turn, so nothing below our first cursor can
        commit later: readers of other processes' commits use it to tell a
        missed commit from a contiguous one.
        """
        cursors = [e.cursor for _item, ok, _value, events in outcomes if ok for e in events]
        if not cursors:
            return None
        found = await conn.execute(
            text("SELECT max(id) FROM events WHERE id < :first"), {"first": min(cursors)}
        )
        return int(found.scalar() or 0)

    def _settle(
        self,
        outcomes: list[tuple[_Item[Any], bool, Any, list[StoredEvent]]],
        after: int | None = None,
    ) -> None:
        published: list[StoredEvent] = []
        for item, ok, value, events in outcomes:
            if ok:
                # Committed events are published even if the caller went away.
                published.extend(events)
            if item.future.done():
                continue
            if ok:
                item.future.set_result(value)
            else:
                item.future.set_exception(value)
        if published:
            self._publish(CommittedEvents(published, after))
