"""Group commit: concurrent writes share one transaction.

A request's reply waits for the commit that holds its write, so nothing is
acknowledged before it is durable, yet a burst of N requests costs one commit
instead of N. Events produced by a write are published only after the commit.

A group first runs straight through, and appends that nobody in the group
reads back (new messages, status history, events) are put off to its end and
written as one multi-row statement per table. Only if something in the group
fails is it run again, each write in its own savepoint, so one bad request
does not sink the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction

from server.aio import cancel_and_wait, supervised
from server.domain.events import CommittedEvents, StoredEvent
from server.storage.db import begin_write
from server.storage.faults import OutcomeUnknown, is_unavailable
from server.storage.held import GroupConnections
from server.storage.tx import CommitObserver, Later, Tx, Work, now_ms

log = logging.getLogger(__name__)
T = TypeVar("T")
# Any fixed number: write transactions on PostgreSQL serialise on it.
WRITE_TURN_KEY = 0x43494D48
# How long a group waits for more writes, and only while writes are arriving
# together: when the last group held several of the first write's kind (sends,
# or the others) and committed within this long. A lone write on a quiet
# writer never waits.
GATHER_S = 0.006
# After it, the wait goes on while writes of that kind still come in (the
# last less than GATHER_QUIET_S ago), up to GATHER_MAX_S in all. On a busy
# loop a request spends about a millisecond of CPU before it reaches the
# writer, so 64 callers' requests arrive over tens of milliseconds: a commit
# every 6 ms split them into groups of about 8, and every group costs a commit
# that rewrites the same index pages.
GATHER_QUIET_S = 0.001
GATHER_MAX_S = 0.024
# Sends need not wait out GATHER_S once as many are queued as the last group
# of sends held, if none came in while it committed (so its callers were all
# there are): then the wait lasts only while more still come in. With 8
# callers, all 8 are back within a millisecond or two and nobody else is
# coming; 64 callers arrive during commits too, and gather as before.
# conn.info key: (group id, the highest event cursor committed before the
# group's first), left by the event log at the group's first write of events.
COMMITTED_BEFORE = "committed_before"
# conn.info key: (batch id, the hints of that group's writes). A read every
# write of a group makes (a send's consent read) can be made once for all of
# them, inside the group's transaction, by whichever write runs first; on
# PostgreSQL each read is a round trip made while holding the write turn.
GROUP_HINTS = "group_hints"


def _settle_once(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


# One write of a group: its item, whether it held, its result or error, its Tx.
_Outcome = tuple["_Item[Any]", bool, Any, Tx | None]


@dataclass
class _Item(Generic[T]):
    work: Work[T]
    future: asyncio.Future[T]
    # Its first pass skips savepoints, so a failure there says nothing final.
    split: bool = False
    # The accept of a send (rather than any other write).
    send: bool = False
    # It may write events, so its group takes the write turn (PostgreSQL).
    events: bool = True
    # What it is going to read, for the group's first reader (see GROUP_HINTS).
    hint: Any = None


class Writer:
    def __init__(
        self,
        engine: AsyncEngine,
        publish: Callable[[CommittedEvents], None],
        *,
        workers: int = 1,
        max_batch: int = 512,
        clock: Callable[[], int] = now_ms,
        observer: CommitObserver | None = None,
        hold_connection: bool = False,
    ) -> None:
        """hold_connection: keep one connection from group to group (see
        held.py); only for a single worker."""
        assert workers == 1 or not hold_connection, "a held connection serves one worker"
        self._connections = GroupConnections(engine, hold=hold_connection)
        self._observer = observer
        self._publish = publish
        self._workers = workers
        self._max_batch = max_batch
        self._clock = clock
        self._queue: asyncio.Queue[_Item[Any]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._batches = 0
        # Writes of each kind (sends, and the others) in the last group, and
        # when its commit ended.
        self._last_of = {True: 0, False: 0}
        self._last_end = 0.0
        # When the last write of each kind was submitted.
        self._last_put = {True: 0.0, False: 0.0}
        # How many groups waited out the gathering window.
        self.gathered = 0
        # Set while a group waits for more of the others' writes; resolved
        # True to end the wait early (see submit).
        self._others_pause: asyncio.Future[bool] | None = None
        # Sends in the last group that held any.
        self._sends_together = 0
        # Sends in the queue, and how many were when the last commit ended;
        # and set while a group waits for more sends.
        self._queued_sends = 0
        self._sends_after_commit = 0
        self._sends_pause: asyncio.Future[bool] | None = None
        # Commit and publish happen under one lock, so live subscribers see
        # events in the order their transactions committed.
        self._commit_order = asyncio.Lock()

    def now(self) -> int:
        """The clock the writer stamps transactions with."""
        return self._clock()

    def start(self) -> None:
        self._tasks = [supervised(self._run(), f"writer-{i}") for i in range(self._workers)]

    async def close(self) -> None:
        # Drain what was already submitted so accepted work is not dropped on shutdown.
        if self._tasks:
            await self._queue.join()
        await cancel_and_wait(*self._tasks)
        self._tasks = []
        await self._connections.close()

    async def submit(
        self,
        work: Work[T],
        *,
        split: bool = False,
        send: bool = False,
        events: bool = True,
        hint: Any = None,
    ) -> T:
        """Run work in the next group and return its result after the commit.

        split marks work made of several callers' writes, which runs apart
        (with savepoints of its own) after a failed first pass, even alone.
        send marks the accept of a send. Sends and the other writes (the
        dispatcher's claims and outcomes, receipts, configuration) come in
        bursts of their own, so only several of the same kind in the last
        group open the gathering window: a send never waits because claims
        came together. Nor does it wait out a window the others' writes
        opened, unless sends too are coming together (the last group that
        held any held several). A send that makes up the last group's number
        shortens the window it waits in to the quiet time.

        events=False marks work that writes no events (a claim, a start, a
        webhook's bookkeeping). On PostgreSQL a group made only of such work
        does not take the write turn, so it never waits for it and no send
        waits for it (see _take_turn).

        hint says what the work is going to read; the group's hints are in
        conn.info[GROUP_HINTS] while it runs (see GROUP_HINTS).
        """
        if not self._tasks:
            raise RuntimeError("writer is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if send and self._others_pause is not None and self._sends_together <= 1:
            # The group waits for more of the others' writes (the
            # dispatcher's, mostly), but sends are not coming together: this
            # one would wait for writes it has nothing to do with.
            _settle_once(self._others_pause, True)
        self._last_put[send] = loop.time()
        if send:
            self._queued_sends += 1
            if self._sends_pause is not None and self._all_back():
                # Wake the wait to shorten it (see _gather).
                _settle_once(self._sends_pause, False)
        self._queue.put_nowait(_Item(work, future, split, send, events, hint))
        return await asyncio.shield(future)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            self._queued_sends -= batch[0].send
            if self._last_of[batch[0].send] > 1 and loop.time() - self._last_end < GATHER_S:
                # Writes came together last time and still are, so more
                # are likely on the way: a short wait lets them share this
                # commit (as PostgreSQL's commit_delay waits only when
                # sibling transactions are active).
                self.gathered += 1
                await self._gather(loop, batch[0].send)
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
                self._queued_sends -= batch[-1].send
            sends = sum(1 for item in batch if item.send)
            self._last_of = {True: sends, False: len(batch) - sends}
            if sends:
                self._sends_together = sends
            try:
                await self._commit(batch)
            finally:
                self._last_end = loop.time()
                self._sends_after_commit = self._queued_sends
                for _ in batch:
                    self._queue.task_done()

    async def _gather(self, loop: asyncio.AbstractEventLoop, send: bool) -> None:
        """Wait GATHER_S, then on while writes of this kind keep coming.

        A wait for the others' writes ends early if a lone send arrives.
        """
        began = loop.time()
        wait = GATHER_S
        while True:
            if send and self._all_back():
                # As many sends as the last group held are here: wait only
                # while more keep coming. At low concurrency nobody else is.
                quiet = loop.time() - self._last_put[True]
                if quiet >= GATHER_QUIET_S:
                    return
                wait = min(wait, GATHER_QUIET_S - quiet)
            pause = loop.create_future()
            if not send:
                self._others_pause = pause
            else:
                self._sends_pause = pause
            timer = loop.call_later(wait, _settle_once, pause, False)
            try:
                if await pause:
                    return
            finally:
                timer.cancel()
                self._others_pause = None
                self._sends_pause = None
            now = loop.time()
            quiet = now - self._last_put[send]
            if quiet >= GATHER_QUIET_S or now - began >= GATHER_MAX_S:
                return
            wait = GATHER_QUIET_S - quiet

    def _all_back(self) -> bool:
        """The last group's callers are all back, and there are no others."""
        return self._sends_after_commit == 0 and self._queued_sends + 1 >= self._sends_together

    async def _commit(self, batch: list[_Item[Any]]) -> None:
        outcomes: list[_Outcome] = []
        began = time.perf_counter()
        self._batches += 1
        batch_id = self._batches
        try:
            async with self._connections.one() as conn:
                trans = await begin_write(conn)
                turn = any(item.events for item in batch)
                try:
                    if turn:
                        await self._take_turn(conn, batch_id)
                    _hint(conn, batch, batch_id)
                    outcomes, failed, error = await self._together(conn, batch, batch_id)
                    if failed is not None or error is not None:
                        # Start over: nothing of the failed attempt may commit.
                        await _roll_back(trans)
                        self._batches += 1
                        batch_id = self._batches
                        trans = await begin_write(conn)
                        if turn:
                            await self._take_turn(conn, batch_id)
                        _hint(conn, batch, batch_id)
                        if len(batch) == 1 and failed is not None and not failed.split:
                            outcomes = [(failed, False, error, None)]
                        else:
                            outcomes = await self._apart(conn, batch, batch_id)
                    after = self._committed_before(conn, outcomes)
                except BaseException:
                    await _roll_back(trans)
                    raise
                async with self._commit_order:
                    # PostgreSQL applies a COMMIT it received even if the
                    # connection drops before the answer comes back, so that
                    # loss leaves the outcome open; SQLite's commit is local.
                    try:
                        await trans.commit()
                    except Exception as exc:
                        if conn.dialect.name != "sqlite" and is_unavailable(exc):
                            raise OutcomeUnknown(
                                f"connection lost while committing: {exc!r}"
                            ) from exc
                        raise
                    self._settle(outcomes, after)
            if self._observer is not None:
                self._observe(time.perf_counter() - began, outcomes)
        except Exception as exc:
            if is_unavailable(exc):
                # Expected while the database is away; readiness reports it.
                log.warning("group commit of %d writes failed: %r", len(batch), exc)
            else:
                log.exception("group commit of %d writes failed", len(batch))
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)

    async def _together(
        self, conn: AsyncConnection, batch: list[_Item[Any]], batch_id: int
    ) -> tuple[
        list[_Outcome],
        _Item[Any] | None,
        Exception | None,
    ]:
        """Every write of the group in one go; returns the item that failed, if any."""
        later = Later()
        outcomes: list[_Outcome] = []
        for item in batch:
            tx = Tx(conn, self._clock(), batch=batch_id, later_writes=later, first_pass=True)
            try:
                result = await item.work(tx)
            except Exception as exc:
                return outcomes, item, exc
            outcomes.append((item, True, result, tx))
        try:
            await later.flush(conn)
        except Exception as exc:  # e.g. a duplicate id: find out whose, one by one
            return outcomes, None, exc
        return outcomes, None, None

    async def _apart(
        self, conn: AsyncConnection, batch: list[_Item[Any]], batch_id: int
    ) -> list[_Outcome]:
        """Each write in its own savepoint, so a failure costs only its own request."""
        outcomes: list[_Outcome] = []
        for item in batch:
            tx = Tx(conn, self._clock(), batch=batch_id, later_writes=Later())
            try:
                async with conn.begin_nested():
                    result = await item.work(tx)
                    await tx.flush()
            except Exception as exc:  # one bad request must not sink the batch
                outcomes.append((item, False, exc, None))
            else:
                outcomes.append((item, True, result, tx))
        return outcomes

    @staticmethod
    async def _take_turn(conn: AsyncConnection, batch_id: int) -> None:
        """On PostgreSQL, transactions that write events take turns, first thing.

        Event cursors must commit in the order they are assigned, so event
        writers serialise on an advisory lock. Taking it before any row lock
        keeps the lock order the same everywhere, so two batches can never
        deadlock. Group commit is what keeps throughput up, not parallel writers.

        A group that writes no events skips it. It never waits for the turn,
        so it cannot close a cycle with one that holds the turn, and the
        dispatcher's claims and starts no longer make a send wait: with a
        dispatcher process beside an api process, a lone send waited about
        3 ms a write for the turn. Should such work write an event after all,
        events.py takes the turn then.
        """
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_TURN_KEY})
            conn.info["event_lock"] = batch_id

    @staticmethod
    def _committed_before(conn: AsyncConnection, outcomes: list[_Outcome]) -> int | None:
        """The highest cursor committed before this batch's events.

        The event log notes it at the group's first write of events, still
        inside the write turn, so nothing below our first cursor can commit
        later: readers of other processes' commits use it to tell a missed
        commit from a contiguous one. None (unknown: readers catch up from
        the log) if the group wrote no events.
        """
        cursors = [e.cursor for _item, ok, _value, tx in outcomes if ok and tx for e in tx.events]
        if not cursors:
            return None
        known = conn.info.get(COMMITTED_BEFORE)
        batch = next(tx.batch for _item, ok, _value, tx in outcomes if ok and tx)
        if known is None or known[0] != batch or known[1] >= min(cursors):
            log.error("no committed-before cursor noted for group %d", batch)
            return None
        return int(known[1])

    def _settle(
        self,
        outcomes: list[_Outcome],
        after: int | None = None,
    ) -> None:
        published: list[StoredEvent] = []
        webhooks = 0
        for item, ok, value, tx in outcomes:
            if ok and tx is not None:
                # Committed events are published even if the caller went away.
                published.extend(tx.events)
                webhooks += tx.webhooks
            if item.future.done():
                continue
            if ok:
                item.future.set_result(value)
            else:
                item.future.set_exception(value)
        if published:
            self._publish(CommittedEvents(published, after, webhooks))

    def _observe(self, seconds: float, outcomes: list[_Outcome]) -> None:
        assert self._observer is not None
        moves = [m for _item, ok, _value, tx in outcomes if ok and tx for m in tx.moves]
        try:
            self._observer.committed(seconds, len(outcomes), moves)
        except Exception:  # a metrics fault must never fail a commit
            log.exception("commit observer failed")


def _hint(conn: AsyncConnection, batch: list[_Item[Any]], batch_id: int) -> None:
    conn.info[GROUP_HINTS] = (batch_id, [item.hint for item in batch if item.hint is not None])


async def _roll_back(trans: AsyncTransaction) -> None:
    """Roll back, unless the transaction has already ended.

    A rollback that fails because the connection is gone still ends the
    transaction (SQLAlchemy detaches it and marks the connection invalid), and
    rolling it back again only earns a warning that it is detached.
    """
    if trans.is_active:
        await trans.rollback()
