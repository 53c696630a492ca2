"""Calls that pile up while the writer is busy become one unit of work.

The dispatcher records each provider acceptance and each receipt on its own.
Under load hundreds wait for the same commit; written together they cost a
few statements in all instead of a few each. Every caller still gets its own
outcome, and only after the commit that holds its write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from server.aio import log_failure
from server.storage.tx import Later, Tx
from server.storage.writer import Writer

A = TypeVar("A")
R = TypeVar("R")
_Outcome = tuple["asyncio.Future[Any]", bool, Any]


class Coalesced(Generic[A, R]):
    def __init__(
        self,
        writer: Writer,
        many: Callable[[Tx, Sequence[A]], Awaitable[Sequence[R]]],
        one: Callable[[Tx, A], Awaitable[R]],
        *,
        events: bool = True,
    ) -> None:
        self._writer = writer
        self._events = events
        self._many = many
        self._one = one
        self._pending: list[tuple[A, asyncio.Future[R]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, arg: A) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((arg, future))
        if len(self._pending) == 1:
            # The first of a pile sends the unit of work; it takes whatever
            # has piled up by the time the writer runs it.
            task = asyncio.create_task(self._send())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(log_failure)
        return await asyncio.shield(future)

    async def _send(self) -> None:
        taken: list[tuple[A, asyncio.Future[R]]] | None = None

        async def work(tx: Tx) -> list[_Outcome]:
            nonlocal taken
            if taken is None:  # the writer may run a unit twice (see Writer)
                taken, self._pending = self._pending, []
            return await self._run(tx, taken)

        try:
            outcomes = await self._writer.submit(work, split=True, events=self._events)
        except BaseException as exc:
            if taken is None:
                taken, self._pending = self._pending, []
            for _arg, future in taken:
                if future.done():
                    continue
                if isinstance(exc, Exception):
                    future.set_exception(exc)
                else:
                    future.cancel()
            if not isinstance(exc, Exception):
                raise
            return
        for future, ok, value in outcomes:
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    async def _run(self, tx: Tx, taken: list[tuple[A, asyncio.Future[R]]]) -> list[_Outcome]:
        if tx.first_pass:
            # A failure here reruns the group apart, and this unit with it, so
            # its writes can join the group's own: no savepoint, and what it
            # puts off is written with the rest of the group in one go.
            results = await self._many(tx, [arg for arg, _ in taken])
            return [(f, True, r) for (_arg, f), r in zip(taken, results, strict=True)]
        # Events put off by earlier writes in the group go first, so cursors
        # keep the order in which the group's writes ran.
        await tx.flush()
        together = Tx(tx.conn, tx.now, batch=tx.batch, later_writes=Later())
        try:
            async with tx.conn.begin_nested():
                results = await self._many(together, [arg for arg, _ in taken])
                await together.flush()
        except Exception:
            pass  # one of them is bad: find out which, each on its own
        else:
            tx.events.extend(together.events)
            return [(f, True, r) for (_arg, f), r in zip(taken, results, strict=True)]
        outcomes: list[_Outcome] = []
        for arg, future in taken:
            alone = Tx(tx.conn, tx.now, batch=tx.batch, later_writes=Later())
            try:
                async with tx.conn.begin_nested():
                    result = await self._one(alone, arg)
                    await alone.flush()
            except Exception as exc:
                outcomes.append((future, False, exc))
            else:
                tx.events.extend(alone.events)
                outcomes.append((future, True, result))
        return outcomes
